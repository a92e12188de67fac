# Agent runtime on AWS: API Gateway REST API -> request handler, and in the queue modes
# SQS input -> agent runner -> SQS output -> response handler -> DynamoDB (or Redis).

data "aws_region" "current" {}
data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

locals {
  fifo_suffix = var.queue.fifo ? ".fifo" : ""
  names = {
    input_queue    = "${var.name}-input${local.fifo_suffix}"
    output_queue   = "${var.name}-output${local.fifo_suffix}"
    response_table = "${var.name}-responses"
    session_table  = "${var.name}-sessions"
  }
  runner_timeout = try(var.functions.agent_runner.timeout, 60)
  # SQS must hide a message longer than the runner may work on it.
  visibility_timeout = var.queue.visibility_timeout > 0 ? var.queue.visibility_timeout : 6 * local.runner_timeout

  # The header the authorizer reads the token from (API Gateway's identity source).
  authorizer_header = coalesce(try(var.authorizer.identity_header, null), "Authorization")

  bedrock = var.model.provider == "bedrock"
  model_env = merge(
    { AK_MODEL__PROVIDER = var.model.provider },
    # With Bedrock the function's role authorises the calls: no key.
    !local.bedrock && var.model.api_key != "" ? { OPENAI_API_KEY = var.model.api_key } : {},
    !local.bedrock && var.model.base_url != "" ? { OPENAI_BASE_URL = var.model.base_url } : {},
    local.bedrock && var.model.base_url != "" ? { AK_MODEL__BASE_URL = var.model.base_url } : {},
    var.model.name != "" ? { AK_MODEL__NAME = var.model.name } : {},
  )
}

module "decisions" {
  source = "./modules/decisions"

  execution_mode     = var.execution_mode
  authorizer         = var.authorizer
  response_store     = var.response_store
  session_store      = var.session_store
  names              = local.names
  max_receive_count  = var.queue.max_receive_count
  visibility_timeout = local.visibility_timeout
  redis              = local.redis_settings
  log_level          = var.log_level
  response_streaming = var.response_streaming
  api = {
    api_base_path  = var.api_base_path
    api_version    = var.api_version
    agent_endpoint = var.agent_endpoint
  }
  queue_urls = {
    input  = try(aws_sqs_queue.input[0].url, "")
    output = try(aws_sqs_queue.output[0].url, "")
  }
  bedrock = {
    models    = local.bedrock ? concat([var.model.name], var.model.bedrock_models) : []
    partition = data.aws_partition.current.partition
    region    = data.aws_region.current.region
    account   = data.aws_caller_identity.current.account_id
  }
}
