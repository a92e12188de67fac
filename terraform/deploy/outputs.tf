output "agent_invoke_url" {
  description = "POST here to chat; GET ?request_id= to poll."
  value       = module.agents.agent_invoke_url
}

output "authorizer_enabled" {
  description = "Whether requests need a token."
  value       = module.agents.authorizer_enabled
}

output "function_names" {
  description = "Lambda functions."
  value       = module.agents.function_names
}

output "input_queue_url" {
  description = "Input queue."
  value       = module.agents.input_queue_url
}

output "response_table_name" {
  description = "Response table."
  value       = module.agents.response_table_name
}

output "openai_base_url" {
  description = "base_url for OpenAI clients (protocol_endpoints with openai)."
  value       = module.agents.openai_base_url
}

output "a2a_url" {
  description = "The A2A endpoint (protocol_endpoints with a2a)."
  value       = module.agents.a2a_url
}
