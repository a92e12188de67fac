locals {
  functions = { for f in module.decisions.functions : f => var.functions[f] if contains(keys(var.functions), f) }
  # Functions that run agents need the model settings.
  runs_agents = var.execution_mode == "direct" ? ["request_handler"] : ["agent_runner"]
  # Where spans go: the collector layer's local endpoint unless another is named.
  otlp_endpoint = var.tracing.otlp_endpoint != null ? var.tracing.otlp_endpoint : (var.tracing.collector_layer_arn == null ? "" : "http://localhost:4318")
  tracing_env = merge(
    local.otlp_endpoint == "" ? {} : { OTEL_EXPORTER_OTLP_ENDPOINT = local.otlp_endpoint },
    var.tracing.capture_content ? { OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT = "true" } : {},
    var.tracing.environment,
  )
}

resource "aws_cloudwatch_log_group" "function" {
  for_each = merge(local.functions, module.decisions.create_authorizer ? { authorizer = null } : {})

  #checkov:skip=CKV_AWS_158:Log data is encrypted at rest by CloudWatch Logs; a customer key is optional and left to the deployment.
  #checkov:skip=CKV_AWS_338:Retention is a deployment choice (log_retention_days, default 30 days).
  name              = "/aws/lambda/${var.name}-${replace(each.key, "_", "-")}"
  retention_in_days = var.log_retention_days
  tags              = var.tags
}

resource "aws_iam_role" "function" {
  for_each = merge(local.functions, module.decisions.create_authorizer ? { authorizer = null } : {})

  name = "${var.name}-${replace(each.key, "_", "-")}"
  assume_role_policy = jsonencode({
    Version   = "2012-10-17"
    Statement = [{ Effect = "Allow", Principal = { Service = "lambda.amazonaws.com" }, Action = "sts:AssumeRole" }]
  })
  tags = var.tags
}

resource "aws_lambda_function" "this" {
  for_each = local.functions

  #checkov:skip=CKV_AWS_116:Synchronous (API Gateway) and SQS-triggered functions have no async invocations to dead-letter; the SQS queues have DLQs.
  #checkov:skip=CKV_AWS_272:Code signing needs a signing profile the deployment owns; packages come from this repository's build.
  #checkov:skip=CKV_AWS_173:Environment variables are encrypted with the AWS managed key; a customer key is optional.
  #checkov:skip=CKV_AWS_117:A VPC is needed only to reach ElastiCache; set var.vpc for that.
  #checkov:skip=CKV_AWS_115:Concurrency limits are per deployment (functions.*.reserved_concurrency).
  #checkov:skip=CKV_AWS_50:X-Ray tracing is Active unless the deployment turns it off (tracing.xray_active).
  function_name = "${var.name}-${replace(each.key, "_", "-")}"
  role          = aws_iam_role.function[each.key].arn
  architectures = [var.architecture]
  memory_size   = each.value.memory_size
  timeout       = each.value.timeout
  package_type  = each.value.package_type == "Image" ? "Image" : "Zip"
  runtime       = each.value.package_type == "Image" ? null : "provided.al2023"
  handler       = each.value.package_type == "Image" ? null : "bootstrap"

  filename         = each.value.package_type == "LocalZip" ? each.value.package_path : null
  source_code_hash = each.value.package_type == "LocalZip" ? filebase64sha256(each.value.package_path) : null
  s3_bucket        = each.value.package_type == "S3Zip" ? each.value.s3_bucket : null
  s3_key           = each.value.package_type == "S3Zip" ? each.value.package_path : null
  image_uri        = each.value.package_type == "Image" ? each.value.package_path : null

  reserved_concurrent_executions = each.value.reserved_concurrency
  publish                        = each.value.provisioned_concurrency > 0

  environment {
    variables = merge(
      module.decisions.environment[each.key],
      contains(local.runs_agents, each.key) ? local.model_env : {},
      local.tracing_env,
      each.value.environment,
    )
  }

  # Layers go with zip packages; an image carries its collector itself.
  layers = var.tracing.collector_layer_arn != null && each.value.package_type != "Image" ? [var.tracing.collector_layer_arn] : null

  tracing_config {
    mode = var.tracing.xray_active ? "Active" : "PassThrough"
  }

  dynamic "vpc_config" {
    for_each = var.vpc == null ? [] : [var.vpc]
    content {
      subnet_ids         = vpc_config.value.subnet_ids
      security_group_ids = vpc_config.value.security_group_ids
    }
  }

  depends_on = [aws_cloudwatch_log_group.function]
  tags       = var.tags
}

resource "aws_lambda_provisioned_concurrency_config" "this" {
  for_each = { for k, f in local.functions : k => f if f.provisioned_concurrency > 0 }

  function_name                     = aws_lambda_function.this[each.key].function_name
  qualifier                         = aws_lambda_function.this[each.key].version
  provisioned_concurrent_executions = each.value.provisioned_concurrency
}

resource "aws_lambda_function" "authorizer" {
  count = module.decisions.create_authorizer ? 1 : 0

  #checkov:skip=CKV_AWS_116:Called synchronously by API Gateway; nothing to dead-letter.
  #checkov:skip=CKV_AWS_272:Code signing needs a signing profile the deployment owns.
  #checkov:skip=CKV_AWS_173:Environment variables are encrypted with the AWS managed key; a customer key is optional.
  #checkov:skip=CKV_AWS_117:The authorizer needs no private network.
  #checkov:skip=CKV_AWS_115:API Gateway caches its results (result_ttl_in_seconds); a limit is a deployment choice.
  #checkov:skip=CKV_AWS_50:X-Ray tracing is Active unless the deployment turns it off (tracing.xray_active).
  function_name = var.authorizer.function_name
  description   = module.decisions.authorizer_description
  role          = aws_iam_role.function["authorizer"].arn
  architectures = [var.architecture]
  memory_size   = 128
  timeout       = 10
  package_type  = var.authorizer.package_type == "Image" ? "Image" : "Zip"
  runtime       = var.authorizer.package_type == "Image" ? null : "provided.al2023"
  handler       = var.authorizer.package_type == "Image" ? null : var.authorizer.handler_path

  filename         = var.authorizer.package_type == "LocalZip" ? var.authorizer.package_path : null
  source_code_hash = var.authorizer.package_type == "LocalZip" ? filebase64sha256(var.authorizer.package_path) : null
  s3_bucket        = var.authorizer.package_type == "S3Zip" ? var.authorizer.s3_bucket : null
  s3_key           = var.authorizer.package_type == "S3Zip" ? var.authorizer.package_path : null
  image_uri        = var.authorizer.package_type == "Image" ? var.authorizer.package_path : null

  environment {
    variables = merge(
      { AK_LOG__LEVEL = var.log_level, AK_AUTH__TOKEN_HEADER = local.authorizer_header },
      var.authorizer.environment_variables,
    )
  }

  tracing_config {
    mode = var.tracing.xray_active ? "Active" : "PassThrough"
  }

  depends_on = [aws_cloudwatch_log_group.function]
  tags       = var.tags
}
