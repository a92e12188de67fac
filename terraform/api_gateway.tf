resource "aws_api_gateway_rest_api" "this" {
  name = var.name
  endpoint_configuration {
    types = ["REGIONAL"]
  }

  lifecycle {
    create_before_destroy = true
  }

  tags = var.tags
}

resource "aws_api_gateway_resource" "base" {
  rest_api_id = aws_api_gateway_rest_api.this.id
  parent_id   = aws_api_gateway_rest_api.this.root_resource_id
  path_part   = var.api_base_path
}

resource "aws_api_gateway_resource" "version" {
  rest_api_id = aws_api_gateway_rest_api.this.id
  parent_id   = aws_api_gateway_resource.base.id
  path_part   = var.api_version
}

resource "aws_api_gateway_resource" "chat" {
  rest_api_id = aws_api_gateway_rest_api.this.id
  parent_id   = aws_api_gateway_resource.version.id
  path_part   = var.agent_endpoint
}

# GET .../chat/stream follows a run's event log (the queue modes keep one per request).
resource "aws_api_gateway_resource" "chat_stream" {
  count = module.decisions.queue_mode ? 1 : 0

  rest_api_id = aws_api_gateway_rest_api.this.id
  parent_id   = aws_api_gateway_resource.chat.id
  path_part   = "stream"
}

# POST .../chat/approvals decides on runs paused for a person's approval of tool calls.
resource "aws_api_gateway_resource" "chat_approvals" {
  rest_api_id = aws_api_gateway_rest_api.this.id
  parent_id   = aws_api_gateway_resource.chat.id
  path_part   = "approvals"
}

# /{api_base_path}/{api_version}/mcp: the API as an MCP server (streamable HTTP), when enabled.
resource "aws_api_gateway_resource" "mcp" {
  count = var.mcp_endpoint ? 1 : 0

  rest_api_id = aws_api_gateway_rest_api.this.id
  parent_id   = aws_api_gateway_resource.version.id
  path_part   = "mcp"

  lifecycle {
    precondition {
      condition     = !contains(keys(var.gateway_endpoints), "mcp")
      error_message = "gateway_endpoints must not name mcp while mcp_endpoint is on: that path is the MCP endpoint."
    }
  }
}

# The protocol surfaces of var.protocol_endpoints, each under /{api_base_path}/{api_version}:
# openai/v1/{models, models/{model}, chat/completions} (Chat Completions and Models), agui and
# agui/{agent} (AG-UI), ai-sdk/chat and ai-sdk/chat/{id}/stream (the AI SDK's UI message stream),
# a2a, a2a/{agent} and their .well-known/agent-card.json (A2A; also .well-known/agent-card.json
# under the version, where clients resolving the card relative to the endpoint look).
locals {
  protocol_paths = { openai = ["openai"], agui = ["agui"], ai_sdk = ["ai-sdk"], a2a = ["a2a", ".well-known"] }
  a2a            = contains(var.protocol_endpoints, "a2a") ? 1 : 0
}

resource "aws_api_gateway_resource" "openai" {
  count = contains(var.protocol_endpoints, "openai") ? 1 : 0

  rest_api_id = aws_api_gateway_rest_api.this.id
  parent_id   = aws_api_gateway_resource.version.id
  path_part   = "openai"
}

resource "aws_api_gateway_resource" "openai_v1" {
  count = contains(var.protocol_endpoints, "openai") ? 1 : 0

  rest_api_id = aws_api_gateway_rest_api.this.id
  parent_id   = aws_api_gateway_resource.openai[0].id
  path_part   = "v1"
}

resource "aws_api_gateway_resource" "openai_models" {
  count = contains(var.protocol_endpoints, "openai") ? 1 : 0

  rest_api_id = aws_api_gateway_rest_api.this.id
  parent_id   = aws_api_gateway_resource.openai_v1[0].id
  path_part   = "models"
}

resource "aws_api_gateway_resource" "openai_model" {
  count = contains(var.protocol_endpoints, "openai") ? 1 : 0

  rest_api_id = aws_api_gateway_rest_api.this.id
  parent_id   = aws_api_gateway_resource.openai_models[0].id
  path_part   = "{model}"
}

resource "aws_api_gateway_resource" "openai_chat" {
  count = contains(var.protocol_endpoints, "openai") ? 1 : 0

  rest_api_id = aws_api_gateway_rest_api.this.id
  parent_id   = aws_api_gateway_resource.openai_v1[0].id
  path_part   = "chat"
}

resource "aws_api_gateway_resource" "openai_completions" {
  count = contains(var.protocol_endpoints, "openai") ? 1 : 0

  rest_api_id = aws_api_gateway_rest_api.this.id
  parent_id   = aws_api_gateway_resource.openai_chat[0].id
  path_part   = "completions"
}

resource "aws_api_gateway_resource" "agui" {
  count = contains(var.protocol_endpoints, "agui") ? 1 : 0

  rest_api_id = aws_api_gateway_rest_api.this.id
  parent_id   = aws_api_gateway_resource.version.id
  path_part   = "agui"
}

resource "aws_api_gateway_resource" "agui_agent" {
  count = contains(var.protocol_endpoints, "agui") ? 1 : 0

  rest_api_id = aws_api_gateway_rest_api.this.id
  parent_id   = aws_api_gateway_resource.agui[0].id
  path_part   = "{agent}"
}

resource "aws_api_gateway_resource" "ai_sdk" {
  count = contains(var.protocol_endpoints, "ai-sdk") ? 1 : 0

  rest_api_id = aws_api_gateway_rest_api.this.id
  parent_id   = aws_api_gateway_resource.version.id
  path_part   = "ai-sdk"
}

resource "aws_api_gateway_resource" "ai_sdk_chat" {
  count = contains(var.protocol_endpoints, "ai-sdk") ? 1 : 0

  rest_api_id = aws_api_gateway_rest_api.this.id
  parent_id   = aws_api_gateway_resource.ai_sdk[0].id
  path_part   = "chat"
}

resource "aws_api_gateway_resource" "ai_sdk_chat_id" {
  count = contains(var.protocol_endpoints, "ai-sdk") ? 1 : 0

  rest_api_id = aws_api_gateway_rest_api.this.id
  parent_id   = aws_api_gateway_resource.ai_sdk_chat[0].id
  path_part   = "{id}"
}

resource "aws_api_gateway_resource" "ai_sdk_stream" {
  count = contains(var.protocol_endpoints, "ai-sdk") ? 1 : 0

  rest_api_id = aws_api_gateway_rest_api.this.id
  parent_id   = aws_api_gateway_resource.ai_sdk_chat_id[0].id
  path_part   = "stream"
}

resource "aws_api_gateway_resource" "a2a" {
  count = local.a2a

  rest_api_id = aws_api_gateway_rest_api.this.id
  parent_id   = aws_api_gateway_resource.version.id
  path_part   = "a2a"
}

resource "aws_api_gateway_resource" "a2a_agent" {
  count = local.a2a

  rest_api_id = aws_api_gateway_rest_api.this.id
  parent_id   = aws_api_gateway_resource.a2a[0].id
  path_part   = "{agent}"
}

# .well-known/agent-card.json under the version, a2a and a2a/{agent}.
resource "aws_api_gateway_resource" "a2a_well_known" {
  for_each = local.a2a == 1 ? {
    base  = aws_api_gateway_resource.version.id
    a2a   = aws_api_gateway_resource.a2a[0].id
    agent = aws_api_gateway_resource.a2a_agent[0].id
  } : {}

  rest_api_id = aws_api_gateway_rest_api.this.id
  parent_id   = each.value
  path_part   = ".well-known"
}

resource "aws_api_gateway_resource" "a2a_card" {
  for_each = aws_api_gateway_resource.a2a_well_known

  rest_api_id = aws_api_gateway_rest_api.this.id
  parent_id   = each.value.id
  path_part   = "agent-card.json"
}

resource "aws_api_gateway_resource" "custom" {
  for_each = var.gateway_endpoints

  rest_api_id = aws_api_gateway_rest_api.this.id
  parent_id   = aws_api_gateway_resource.version.id
  path_part   = each.key

  lifecycle {
    precondition {
      condition     = !contains(flatten([for p in var.protocol_endpoints : local.protocol_paths[replace(p, "-", "_")]]), each.key)
      error_message = "gateway_endpoints must not name a path of protocol_endpoints (openai, agui, ai-sdk, a2a and .well-known): those paths are the protocol surfaces."
    }
  }
}

resource "aws_api_gateway_authorizer" "this" {
  count = module.decisions.create_authorizer ? 1 : 0

  name                             = "${var.name}-authorizer"
  rest_api_id                      = aws_api_gateway_rest_api.this.id
  type                             = "REQUEST"
  identity_source                  = "method.request.header.${local.authorizer_header}"
  authorizer_uri                   = aws_lambda_function.authorizer[0].invoke_arn
  authorizer_result_ttl_in_seconds = module.decisions.authorizer_ttl
}

locals {
  routes = merge(
    { for m in ["POST", "GET"] : "chat-${m}" => { resource_id = aws_api_gateway_resource.chat.id, method = m } },
    { for r in aws_api_gateway_resource.chat_stream : "chat-stream-GET" => { resource_id = r.id, method = "GET" } },
    { "chat-approvals-POST" = { resource_id = aws_api_gateway_resource.chat_approvals.id, method = "POST" } },
    # Streamable HTTP: POST carries the messages; GET and DELETE are answered by the transport
    # (405 in its stateless form), as clients probe them.
    merge([for r in aws_api_gateway_resource.mcp : { for m in ["POST", "GET", "DELETE"] : "mcp-${m}" => { resource_id = r.id, method = m } }]...),
    { for r in aws_api_gateway_resource.openai_models : "openai-models-GET" => { resource_id = r.id, method = "GET" } },
    { for r in aws_api_gateway_resource.openai_model : "openai-model-GET" => { resource_id = r.id, method = "GET" } },
    # Streamed answers need response_streaming to arrive piece by piece.
    { for r in aws_api_gateway_resource.openai_completions : "openai-completions-POST" => { resource_id = r.id, method = "POST" } },
    { for r in aws_api_gateway_resource.agui : "agui-POST" => { resource_id = r.id, method = "POST" } },
    { for r in aws_api_gateway_resource.agui_agent : "agui-agent-POST" => { resource_id = r.id, method = "POST" } },
    { for r in aws_api_gateway_resource.ai_sdk_chat : "ai-sdk-chat-POST" => { resource_id = r.id, method = "POST" } },
    { for r in aws_api_gateway_resource.ai_sdk_stream : "ai-sdk-stream-GET" => { resource_id = r.id, method = "GET" } },
    { for r in aws_api_gateway_resource.a2a : "a2a-POST" => { resource_id = r.id, method = "POST" } },
    { for r in aws_api_gateway_resource.a2a_agent : "a2a-agent-POST" => { resource_id = r.id, method = "POST" } },
    { for k, r in aws_api_gateway_resource.a2a_card : "a2a-card-${k}-GET" => { resource_id = r.id, method = "GET" } },
    merge([for path, methods in var.gateway_endpoints : {
      for m in methods : "${path}-${m}" => { resource_id = aws_api_gateway_resource.custom[path].id, method = m }
    }]...),
  )
}

resource "aws_api_gateway_method" "route" {
  for_each = local.routes

  #checkov:skip=CKV_AWS_59:Public unless the authorizer object is complete, as the reference specifies; set it to require tokens.
  #checkov:skip=CKV2_AWS_53:The request handler validates bodies and answers 400/413 with what is wrong.
  rest_api_id   = aws_api_gateway_rest_api.this.id
  resource_id   = each.value.resource_id
  http_method   = each.value.method
  authorization = module.decisions.create_authorizer ? "CUSTOM" : "NONE"
  authorizer_id = module.decisions.create_authorizer ? aws_api_gateway_authorizer.this[0].id : null
}

locals {
  # Response streaming: Lambda's InvokeWithResponseStream behind the integration, and up to 15
  # minutes (the function's timeout) instead of API Gateway's 29 seconds.
  request_handler_timeout_ms = 1000 * try(var.functions.request_handler.timeout, 30)
  streaming_invoke_uri       = "arn:aws:apigateway:${data.aws_region.current.region}:lambda:path/2021-11-15/functions/${aws_lambda_function.this["request_handler"].arn}/response-streaming-invocations"
}

resource "aws_api_gateway_integration" "route" {
  for_each = local.routes

  rest_api_id             = aws_api_gateway_rest_api.this.id
  resource_id             = each.value.resource_id
  http_method             = aws_api_gateway_method.route[each.key].http_method
  integration_http_method = "POST"
  type                    = "AWS_PROXY"
  # Every route of the request handler streams or none does: the function answers all of
  # them in the streaming format when AK_API__RESPONSE_STREAMING is on.
  uri                    = var.response_streaming ? local.streaming_invoke_uri : aws_lambda_function.this["request_handler"].invoke_arn
  response_transfer_mode = var.response_streaming ? "STREAM" : "BUFFERED"
  timeout_milliseconds   = var.response_streaming ? min(max(local.request_handler_timeout_ms, 29000), 900000) : 29000
}

resource "aws_api_gateway_deployment" "this" {
  rest_api_id = aws_api_gateway_rest_api.this.id

  triggers = {
    redeployment = sha1(jsonencode([local.routes, module.decisions.create_authorizer, aws_api_gateway_integration.route]))
  }

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_cloudwatch_log_group" "access" {
  #checkov:skip=CKV_AWS_158:Log data is encrypted at rest by CloudWatch Logs; a customer key is optional.
  #checkov:skip=CKV_AWS_338:Retention is a deployment choice (log_retention_days).
  name              = "/aws/apigateway/${var.name}-access"
  retention_in_days = var.log_retention_days
  tags              = var.tags
}

resource "aws_api_gateway_stage" "this" {
  #checkov:skip=CKV_AWS_120:Chat answers are per user and per request; caching them would be wrong.
  #checkov:skip=CKV2_AWS_29:A WAF is a per-account choice; throttling is configured on the stage.
  #checkov:skip=CKV2_AWS_51:Client certificates are for backends that verify API Gateway; the backend is Lambda.
  #checkov:skip=CKV_AWS_73:X-Ray tracing is on unless the deployment turns it off (tracing.xray_active).
  rest_api_id          = aws_api_gateway_rest_api.this.id
  deployment_id        = aws_api_gateway_deployment.this.id
  stage_name           = var.stage_name
  xray_tracing_enabled = var.tracing.xray_active

  access_log_settings {
    destination_arn = aws_cloudwatch_log_group.access.arn
    format = jsonencode({
      requestId = "$context.requestId", ip = "$context.identity.sourceIp", method = "$context.httpMethod",
      path      = "$context.path", status = "$context.status", latencyMs = "$context.responseLatency",
      user      = "$context.authorizer.principalId", error = "$context.error.message"
    })
  }

  tags = var.tags
}

resource "aws_api_gateway_method_settings" "all" {
  rest_api_id = aws_api_gateway_rest_api.this.id
  stage_name  = aws_api_gateway_stage.this.stage_name
  method_path = "*/*"

  settings {
    #checkov:skip=CKV_AWS_225:See CKV_AWS_120: answers must not be cached.
    metrics_enabled        = true
    logging_level          = "INFO"
    data_trace_enabled     = false
    throttling_burst_limit = var.throttling.burst_limit
    throttling_rate_limit  = var.throttling.rate_limit
  }
}

resource "aws_lambda_permission" "api" {
  statement_id  = "AllowApiGateway"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.this["request_handler"].function_name
  principal     = "apigateway.amazonaws.com"
  source_arn    = "${aws_api_gateway_rest_api.this.execution_arn}/*/*"
}

resource "aws_lambda_permission" "authorizer" {
  count = module.decisions.create_authorizer ? 1 : 0

  statement_id  = "AllowApiGatewayAuthorizer"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.authorizer[0].function_name
  principal     = "apigateway.amazonaws.com"
  source_arn    = "${aws_api_gateway_rest_api.this.execution_arn}/authorizers/${aws_api_gateway_authorizer.this[0].id}"
}
