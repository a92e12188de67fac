# Provider-free decisions of the module: which resources exist for the chosen mode and
# authorizer, and which environment variables each function gets. Kept apart so that
# `terraform test` can check them without an AWS provider.

terraform {
  required_version = ">= 1.6.0"
}

variable "execution_mode" {
  description = "direct, rest_sync or rest_async."
  type        = string
}

variable "authorizer" {
  description = "The authorizer object of the root module (null or partial: no authorizer)."
  type        = any
  default     = null
}

variable "response_store" {
  description = "Response store settings: type (dynamodb | redis), redis_url, ttl, retry_count, delay."
  type        = any
}

variable "session_store" {
  description = "Session store settings: type (dynamodb | redis | in_memory), redis_url, ttl."
  type        = any
}

variable "names" {
  description = "Resource names: input_queue, output_queue, response_table, session_table."
  type        = map(string)
}

variable "queue_urls" {
  description = "Queue URLs once created (input, output); empty strings in direct mode."
  type        = map(string)
  default     = { input = "", output = "" }
}

variable "api" {
  description = "api_base_path, api_version, agent_endpoint."
  type        = map(string)
}

variable "max_receive_count" {
  description = "Receives before a message is answered as a permanent failure (and the DLQ redrive)."
  type        = number
}

variable "redis" {
  description = "How the functions reach Redis: url (overrides the stores' redis_url, e.g. the cache the module created), auth (none | iam), iam_user_id, cache_name, serverless, cluster."
  type        = any
  default     = {}
}

variable "visibility_timeout" {
  description = "The input queue's visibility timeout in seconds (0: unknown). The agent runner's claims expire before a message can be delivered again, so a redelivery after a crash runs."
  type        = number
  default     = 0
}

variable "log_level" {
  description = "log.level of the functions."
  type        = string
}

variable "response_streaming" {
  description = "Whether the request handler answers through Lambda response streaming."
  type        = bool
  default     = false
}

variable "bedrock" {
  description = "Bedrock models the functions may invoke (ids, inference profile ids or ARNs), and where: partition, region and account of the deployment. Empty models: no Bedrock permission."
  type = object({
    models    = list(string)
    partition = string
    region    = string
    account   = string
  })
  default = { models = [], partition = "aws", region = "us-east-1", account = "000000000000" }
}

locals {
  # A model id is a foundation model in this region; an inference profile id (us., eu., apac.,
  # global., ...: a prefix before the provider's name) is the profile plus its model in every
  # region it routes to; an ARN is taken as it is.
  bedrock_arns = flatten([for id in distinct(compact(var.bedrock.models)) :
    startswith(id, "arn:") ? [id] :
    can(regex("^[a-z-]+\\.[a-z0-9-]+\\.", id)) ? [
      "arn:${var.bedrock.partition}:bedrock:${var.bedrock.region}:${var.bedrock.account}:inference-profile/${id}",
      "arn:${var.bedrock.partition}:bedrock:*::foundation-model/${replace(id, "/^[a-z-]+\\./", "")}",
    ] : ["arn:${var.bedrock.partition}:bedrock:${var.bedrock.region}::foundation-model/${id}"]
  ])
}

locals {
  queue_mode = contains(["rest_sync", "rest_async"], var.execution_mode)

  authorizer_required = ["function_name", "handler_path", "package_type", "package_path", "module_name"]
  authorizer_fields   = var.authorizer == null ? {} : { for k, v in var.authorizer : k => v if v != null && v != "" }
  create_authorizer   = alltrue([for f in local.authorizer_required : contains(keys(local.authorizer_fields), f)])

  # Direct mode keeps a response store too (unless turned off), so request ids stay
  # idempotency keys there and answers can be polled.
  direct_store      = !local.queue_mode && try(var.response_store.in_direct_mode, true)
  uses_store        = local.queue_mode || local.direct_store
  response_dynamodb = local.uses_store && try(var.response_store.type, "dynamodb") == "dynamodb"
  session_dynamodb  = try(var.session_store.type, "dynamodb") == "dynamodb"

  common_env = {
    API_BASE_PATH  = var.api.api_base_path
    API_VERSION    = var.api.api_version
    AGENT_ENDPOINT = var.api.agent_endpoint
    AK_LOG__LEVEL  = var.log_level
  }

  store_env = !local.uses_store ? {} : merge(
    {
      AK_EXECUTION__RESPONSE_STORE__TYPE        = try(var.response_store.type, "dynamodb")
      AK_EXECUTION__RESPONSE_STORE__RETRY_COUNT = tostring(try(var.response_store.retry_count, 5))
      AK_EXECUTION__RESPONSE_STORE__DELAY       = tostring(try(var.response_store.delay, 5))
    },
    local.response_dynamodb ? {
      AK_EXECUTION__RESPONSE_STORE__DYNAMODB__TABLE_NAME = var.names.response_table
      AK_EXECUTION__RESPONSE_STORE__DYNAMODB__TTL        = tostring(try(var.response_store.ttl, 604800))
      } : merge({
        AK_EXECUTION__RESPONSE_STORE__REDIS__URL = local.redis_url != "" ? local.redis_url : try(var.response_store.redis_url, "")
        AK_EXECUTION__RESPONSE_STORE__REDIS__TTL = tostring(try(var.response_store.ttl, 604800))
    }, local.redis_env["AK_EXECUTION__RESPONSE_STORE__REDIS__"]),
  )

  # Redis as AWS sells it: the URL of a cache the module made, IAM authentication, cluster mode.
  redis_url = try(var.redis.url, "")
  redis_env = {
    for prefix in ["AK_EXECUTION__RESPONSE_STORE__REDIS__", "AK_SESSION__REDIS__"] : prefix => merge(
      try(var.redis.auth, "none") == "iam" ? {
        "${prefix}AUTH"            = "iam"
        "${prefix}IAM__USER_ID"    = try(var.redis.iam_user_id, "")
        "${prefix}IAM__CACHE_NAME" = try(var.redis.cache_name, "")
        "${prefix}IAM__SERVERLESS" = tostring(try(var.redis.serverless, true))
      } : {},
      try(var.redis.cluster, false) ? { "${prefix}CLUSTER" = "true" } : {},
    )
  }

  session_env = merge(
    { AK_SESSION__TYPE = try(var.session_store.type, "dynamodb") },
    local.session_dynamodb ? {
      AK_SESSION__DYNAMODB__TABLE_NAME = var.names.session_table
      AK_SESSION__DYNAMODB__TTL        = tostring(try(var.session_store.ttl, 604800))
    } : {},
    try(var.session_store.type, "") == "redis" ? merge({
      AK_SESSION__REDIS__URL = local.redis_url != "" ? local.redis_url : try(var.session_store.redis_url, "")
    }, local.redis_env["AK_SESSION__REDIS__"]) : {},
  )

  queue_env = !local.queue_mode ? {} : merge(
    {
      AK_EXECUTION__MODE                             = var.execution_mode
      AK_EXECUTION__QUEUES__INPUT__URL               = var.queue_urls.input
      AK_EXECUTION__QUEUES__OUTPUT__URL              = var.queue_urls.output
      AK_EXECUTION__QUEUES__INPUT__MAX_RECEIVE_COUNT = tostring(var.max_receive_count)
    },
    var.visibility_timeout > 0 ? {
      AK_EXECUTION__QUEUES__INPUT__VISIBILITY_TIMEOUT = tostring(var.visibility_timeout)
    } : {},
  )

  function_env = {
    # Direct mode runs the agents in the request handler, which then needs the sessions.
    request_handler = merge(
      local.common_env,
      local.store_env,
      local.queue_mode ? local.queue_env : merge({ AK_EXECUTION__MODE = "direct" }, local.session_env),
      { AK_API__RESPONSE_STREAMING = tostring(var.response_streaming) },
    )
    agent_runner     = merge(local.common_env, local.queue_env, local.store_env, local.session_env)
    response_handler = merge(local.common_env, local.store_env)
  }
}

output "queue_mode" {
  description = "Whether the queues, the runner and the response handler exist."
  value       = local.queue_mode
}

output "create_authorizer" {
  description = "Whether every required authorizer field is set."
  value       = local.create_authorizer
}

output "authorizer_ttl" {
  description = "Authorizer result cache TTL in seconds."
  value       = local.create_authorizer ? try(tonumber(local.authorizer_fields.result_ttl_in_seconds), 150) : null
}

output "authorizer_description" {
  description = "Description of the authorizer function."
  value       = try(local.authorizer_fields.description, "API Gateway Lambda Authorizer")
}

output "functions" {
  description = "The functions to create."
  value       = local.queue_mode ? ["request_handler", "agent_runner", "response_handler"] : ["request_handler"]
}

output "uses_store" {
  description = "Whether the functions keep answers in a response store (queue modes, or direct mode with one)."
  value       = local.uses_store
}

output "create_response_table" {
  description = "Whether the DynamoDB response table exists."
  value       = local.response_dynamodb
}

output "create_session_table" {
  description = "Whether the DynamoDB session table exists."
  value       = local.session_dynamodb
}

output "environment" {
  description = "Environment variables per function."
  value       = local.function_env
}

output "bedrock_arns" {
  description = "The Bedrock resources the functions that run agents may invoke (InvokeModel, InvokeModelWithResponseStream)."
  value       = local.bedrock_arns
}
