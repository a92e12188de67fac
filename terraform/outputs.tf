output "agent_invoke_url" {
  description = "The chat endpoint: POST to ask, GET ?request_id= to poll."
  value       = "${aws_api_gateway_stage.this.invoke_url}/${var.api_base_path}/${var.api_version}/${var.agent_endpoint}"
}

output "openai_base_url" {
  description = "The base_url to give an OpenAI client (protocol_endpoints with openai): Chat Completions and Models of the agents."
  value       = contains(var.protocol_endpoints, "openai") ? "${aws_api_gateway_stage.this.invoke_url}/${var.api_base_path}/${var.api_version}/openai/v1" : null
}

output "a2a_url" {
  description = "The A2A endpoint (protocol_endpoints with a2a): give it to an A2A client; its card is <url>/.well-known/agent-card.json."
  value       = contains(var.protocol_endpoints, "a2a") ? "${aws_api_gateway_stage.this.invoke_url}/${var.api_base_path}/${var.api_version}/a2a" : null
}

output "function_url" {
  description = "The request handler's function URL (when function_url.create); chat at <url>api/v1/chat."
  value       = try(aws_lambda_function_url.request_handler[0].function_url, null)
}

output "api_id" {
  description = "REST API id."
  value       = aws_api_gateway_rest_api.this.id
}

output "function_names" {
  description = "Lambda function names by role."
  value       = { for k, f in aws_lambda_function.this : k => f.function_name }
}

output "function_arns" {
  description = "Lambda function ARNs by role."
  value       = { for k, f in aws_lambda_function.this : k => f.arn }
}

output "input_queue_url" {
  description = "Input queue (queue modes)."
  value       = try(aws_sqs_queue.input[0].url, null)
}

output "output_queue_url" {
  description = "Output queue (queue modes)."
  value       = try(aws_sqs_queue.output[0].url, null)
}

output "response_table_name" {
  description = "DynamoDB response table, when created."
  value       = try(aws_dynamodb_table.responses[0].name, null)
}

output "session_table_name" {
  description = "DynamoDB session table, when created."
  value       = try(aws_dynamodb_table.sessions[0].name, null)
}

output "authorizer_enabled" {
  description = "Whether the Lambda authorizer protects the API."
  value       = module.decisions.create_authorizer
}
