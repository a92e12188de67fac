variable "name" {
  description = "Prefix of every resource name."
  type        = string
  default     = "agent-kernel"

  validation {
    condition     = can(regex("^[a-zA-Z0-9-]{1,40}$", var.name))
    error_message = "name: 1-40 letters, digits and hyphens."
  }
}

variable "execution_mode" {
  description = "direct (agents in the request handler), rest_sync or rest_async (through SQS)."
  type        = string
  default     = "rest_sync"

  validation {
    condition     = contains(["direct", "rest_sync", "rest_async"], var.execution_mode)
    error_message = "execution_mode: direct, rest_sync or rest_async."
  }
}

variable "api_base_path" {
  description = "First path segment of the API (API_BASE_PATH)."
  type        = string
  default     = "api"
}

variable "api_version" {
  description = "Second path segment (API_VERSION)."
  type        = string
  default     = "v1"
}

variable "agent_endpoint" {
  description = "The chat path segment (AGENT_ENDPOINT)."
  type        = string
  default     = "chat"
}

variable "stage_name" {
  description = "API Gateway stage; the chat URL is .../<stage>/<api_base_path>/<api_version>/<agent_endpoint>."
  type        = string
  default     = "agents"
}

variable "gateway_endpoints" {
  description = "Custom routes served by the request handler under /<api_base_path>/<api_version>: path (without leading slash) => HTTP methods."
  type        = map(list(string))
  default     = { app = ["GET"], app_info = ["POST"] }
}

variable "architecture" {
  description = "Lambda architecture: arm64 or x86_64 (must match how the packages were built)."
  type        = string
  default     = "arm64"

  validation {
    condition     = contains(["arm64", "x86_64"], var.architecture)
    error_message = "architecture: arm64 or x86_64."
  }
}

variable "functions" {
  description = <<-EOT
    Per function (request_handler, agent_runner, response_handler): package_type (LocalZip | S3Zip | Image),
    package_path (zip path, S3 key or image URI), s3_bucket (S3Zip), memory_size, timeout, reserved_concurrency
    (-1: unreserved), provisioned_concurrency (0: none), environment (extra variables).
  EOT
  type = map(object({
    package_type            = optional(string, "LocalZip")
    package_path            = string
    s3_bucket               = optional(string)
    memory_size             = optional(number, 128)
    timeout                 = optional(number, 30)
    reserved_concurrency    = optional(number, -1)
    provisioned_concurrency = optional(number, 0)
    environment             = optional(map(string), {})
  }))

  validation {
    condition     = alltrue([for f in values(var.functions) : contains(["LocalZip", "S3Zip", "Image"], f.package_type)])
    error_message = "package_type: LocalZip, S3Zip or Image."
  }
  validation {
    condition     = contains(keys(var.functions), "request_handler")
    error_message = "functions.request_handler is required."
  }
}

variable "response_streaming" {
  description = "Stream answers (server-sent events) through Lambda response streaming: the REST API's integrations use transfer mode STREAM (timeout up to the request handler's timeout, at most 15 minutes) and the optional function URL invoke mode RESPONSE_STREAM. Off: buffered answers within API Gateway's 29 seconds."
  type        = bool
  default     = true
}

variable "function_url" {
  description = "Optional function URL for the request handler (create = true), with its authorization type (AWS_IAM or NONE; NONE makes it public) and CORS allowed origins. Its invoke mode follows response_streaming."
  type = object({
    create             = optional(bool, false)
    authorization_type = optional(string, "AWS_IAM")
    allow_origins      = optional(list(string), [])
  })
  default = {}

  validation {
    condition     = contains(["AWS_IAM", "NONE"], var.function_url.authorization_type)
    error_message = "function_url.authorization_type: AWS_IAM or NONE."
  }
}

variable "authorizer" {
  description = "Optional Lambda authorizer, created only when every required field (function_name, handler_path, package_type, package_path, module_name) is set. identity_header names the header carrying the token (default Authorization)."
  type = object({
    function_name         = optional(string)
    handler_path          = optional(string)
    package_type          = optional(string)
    package_path          = optional(string)
    module_name           = optional(string)
    s3_bucket             = optional(string)
    description           = optional(string, "API Gateway Lambda Authorizer")
    result_ttl_in_seconds = optional(number, 150)
    identity_header       = optional(string, "Authorization")
    environment_variables = optional(map(string), {})
  })
  default = null

  validation {
    condition     = var.authorizer == null || can(regex("^[A-Za-z0-9-]+$", coalesce(try(var.authorizer.identity_header, null), "Authorization")))
    error_message = "authorizer.identity_header is an HTTP header name (letters, digits, -), e.g. Authorization or X-Api-Token."
  }
}

variable "queue" {
  description = "Queue settings: fifo, max_receive_count (then the DLQ), batch_size, maximum_concurrency of the runner's event source, visibility_timeout (0: six times the runner timeout), message_retention_seconds."
  type = object({
    fifo                      = optional(bool, true)
    max_receive_count         = optional(number, 3)
    batch_size                = optional(number, 10)
    maximum_concurrency       = optional(number, 10)
    visibility_timeout        = optional(number, 0)
    message_retention_seconds = optional(number, 345600)
  })
  default = {}

  validation {
    condition     = var.queue.max_receive_count >= 1 && var.queue.batch_size >= 1 && var.queue.batch_size <= 10
    error_message = "queue.max_receive_count >= 1 and queue.batch_size 1-10."
  }
}

variable "response_store" {
  description = "Response store: type (dynamodb | redis), redis_url (an existing Redis, e.g. ElastiCache), ttl, retry_count, delay, in_direct_mode (direct mode keeps one too, for idempotent request ids and polls; default true)."
  type = object({
    type           = optional(string, "dynamodb")
    in_direct_mode = optional(bool, true)
    redis_url      = optional(string, "")
    ttl            = optional(number, 604800)
    retry_count    = optional(number, 5)
    delay          = optional(number, 5)
  })
  default = {}

  validation {
    condition     = contains(["dynamodb", "redis"], var.response_store.type)
    error_message = "response_store.type: dynamodb or redis."
  }
}

variable "session_store" {
  description = "Session store: type (dynamodb | redis | in_memory), redis_url, ttl."
  type = object({
    type      = optional(string, "dynamodb")
    redis_url = optional(string, "")
    ttl       = optional(number, 604800)
  })
  default = {}
}

variable "vpc" {
  description = "Optional VPC attachment for functions that must reach ElastiCache: subnet_ids and security_group_ids."
  type = object({
    subnet_ids         = list(string)
    security_group_ids = list(string)
  })
  default = null
}

variable "redis" {
  description = "Redis as AWS sells it, for a redis response or session store: create_serverless_cache (an ElastiCache Serverless Valkey cache in var.vpc, TLS only; its URL replaces the stores' redis_url), major_engine_version, auth (none | iam: ElastiCache IAM authentication with the functions' role), iam_user_id (default <name>-app; created with IAM authentication with the cache), cache_name and serverless (an existing cache, for iam), cluster (node-based cluster mode with several shards: the cluster client), create_vpc_endpoints (SQS, DynamoDB and Bedrock interface endpoints for functions in var.vpc; default true)."
  type = object({
    create_serverless_cache = optional(bool, false)
    major_engine_version    = optional(string, "8")
    auth                    = optional(string, "none")
    iam_user_id             = optional(string, "")
    cache_name              = optional(string, "")
    serverless              = optional(bool, true)
    cluster                 = optional(bool, false)
    create_vpc_endpoints    = optional(bool, true)
  })
  default = {}

  validation {
    condition     = contains(["none", "iam"], var.redis.auth)
    error_message = "redis.auth: none or iam."
  }
  validation {
    condition     = var.redis.auth != "iam" || var.redis.create_serverless_cache || var.redis.cache_name != ""
    error_message = "redis.auth = iam with an existing cache needs redis.cache_name (and redis.iam_user_id, the ElastiCache user with IAM authentication)."
  }
}

variable "log_level" {
  description = "log.level of the functions."
  type        = string
  default     = "info"
}

variable "log_retention_days" {
  description = "CloudWatch Logs retention of every log group."
  type        = number
  default     = 30
}

variable "throttling" {
  description = "API Gateway stage throttling: burst_limit and rate_limit."
  type = object({
    burst_limit = optional(number, 100)
    rate_limit  = optional(number, 50)
  })
  default = {}
}

variable "keep_warm" {
  description = "Optional EventBridge schedule pinging the request handler (e.g. rate(5 minutes)); null: none."
  type        = string
  default     = null
}

variable "alarm_sns_topic_arn" {
  description = "Optional SNS topic for the alarms (DLQ depth, function errors)."
  type        = string
  default     = null
}

variable "model" {
  description = "Model settings passed to the functions that run agents: provider (openai | bedrock), OPENAI_API_KEY (sensitive; openai only), OPENAI_BASE_URL, the model name (with bedrock: a model id, an inference profile id or an ARN), and bedrock_models: more Bedrock model ids or ARNs the functions may invoke (agents' own `model` overrides)."
  type = object({
    provider       = optional(string, "openai")
    api_key        = optional(string, "")
    base_url       = optional(string, "")
    name           = optional(string, "")
    bedrock_models = optional(list(string), [])
  })
  default   = {}
  sensitive = true

  validation {
    condition     = contains(["openai", "bedrock"], var.model.provider)
    error_message = "model.provider must be openai or bedrock."
  }
  validation {
    condition     = var.model.provider != "bedrock" || var.model.name != ""
    error_message = "With model.provider = bedrock, set model.name to a Bedrock model id (anthropic.claude-3-5-haiku-20241022-v1:0), an inference profile id (us.anthropic.claude-3-5-haiku-20241022-v1:0) or an ARN: the functions' role may invoke only the models named."
  }
}

variable "mcp_endpoint" {
  description = "Route /{api_base_path}/{api_version}/mcp (POST, GET, DELETE) to the request handler: the agents as an MCP server (streamable HTTP, stateless), behind the authorizer like the chat endpoint."
  type        = bool
  default     = false
}

variable "protocol_endpoints" {
  description = "Protocol surfaces to route to the request handler, behind the authorizer like the chat endpoint: openai (/openai/v1: Chat Completions and Models for OpenAI clients and chat UIs; base_url <invoke URL>/api/v1/openai/v1), agui (/agui and /agui/{agent}: AG-UI for CopilotKit), ai-sdk (/ai-sdk/chat and /ai-sdk/chat/{id}/stream: the Vercel AI SDK's useChat, resumable), a2a (/a2a, /a2a/{agent} and their .well-known/agent-card.json: A2A 1.0 JSON-RPC). Streams arrive piece by piece with response_streaming on."
  type        = set(string)
  default     = []

  validation {
    condition     = alltrue([for p in var.protocol_endpoints : contains(["openai", "agui", "ai-sdk", "a2a"], p)])
    error_message = "protocol_endpoints takes openai, agui, ai-sdk and a2a."
  }
}

variable "tracing" {
  description = "Traces (OpenTelemetry). xray_active: X-Ray active tracing on the functions and the API Gateway stage (Lambda's and API Gateway's segments; the functions' spans join their trace). collector_layer_arn: a Lambda layer with an OTLP collector (the ADOT collector layer: it receives on localhost:4318 and sends to X-Ray, signing for you) added to the request handler, agent runner and response handler. otlp_endpoint: OTEL_EXPORTER_OTLP_ENDPOINT for those functions (default http://localhost:4318 when a collector layer is set; unset and no layer: tracing off). capture_content: prompts, answers and tool arguments/results on spans (OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT). environment: more OTEL_* variables (OTEL_EXPORTER_OTLP_HEADERS, OTEL_TRACES_SAMPLER, OTEL_EXPORTER_OTLP_TRACES_TIMEOUT, ...)."
  type = object({
    xray_active         = optional(bool, true)
    collector_layer_arn = optional(string)
    otlp_endpoint       = optional(string)
    capture_content     = optional(bool, false)
    environment         = optional(map(string), {})
  })
  default = {}

  validation {
    condition     = alltrue([for k in keys(var.tracing.environment) : startswith(k, "OTEL_")])
    error_message = "tracing.environment takes OTEL_* variables only."
  }
}

variable "tags" {
  description = "Tags on every resource."
  type        = map(string)
  default     = {}
}
