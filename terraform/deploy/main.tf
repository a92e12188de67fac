# The root configuration deploy.sh applies: the module with the values of terraform.tfvars.

provider "aws" {
  region = var.region
}

module "agents" {
  source = "../"

  name              = var.name
  execution_mode    = var.execution_mode
  stage_name        = var.stage_name
  architecture      = var.architecture
  functions         = var.functions
  authorizer        = var.authorizer
  queue             = var.queue
  response_store    = var.response_store
  session_store     = var.session_store
  keep_warm         = var.keep_warm
  model             = { provider = var.model_provider, api_key = var.openai_api_key, base_url = var.openai_base_url, name = var.model_name, bedrock_models = var.bedrock_models }
  gateway_endpoints = var.gateway_endpoints
  tags              = var.tags

  response_streaming = var.response_streaming
  mcp_endpoint       = var.mcp_endpoint
  protocol_endpoints = var.protocol_endpoints
  tracing            = var.tracing
  function_url       = var.function_url
}
