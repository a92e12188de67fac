# What users edit. deploy.sh builds the zips these paths point at (target/lambda/<fn>/bootstrap.zip).
region         = "us-east-1"
name           = "agent-kernel"
execution_mode = "rest_sync" # direct | rest_sync | rest_async
stage_name     = "agents"
architecture   = "arm64"

functions = {
  # With response_streaming (the default) the request handler's timeout bounds a streamed answer
  # (up to 900 s); buffered answers stay within API Gateway's 29 s.
  request_handler  = { package_path = "../../target/lambda/request-handler/bootstrap.zip", memory_size = 128, timeout = 120 }
  agent_runner     = { package_path = "../../target/lambda/agent-runner/bootstrap.zip", memory_size = 128, timeout = 120 }
  response_handler = { package_path = "../../target/lambda/response-handler/bootstrap.zip", memory_size = 128, timeout = 30 }
}

queue = {
  fifo              = true
  max_receive_count = 3
  batch_size        = 10
}

response_store = { type = "dynamodb", ttl = 604800, retry_count = 5, delay = 5 }

# Models: an OpenAI-compatible server (pass the key as TF_VAR_openai_api_key), or Amazon Bedrock
# authorised by the functions' role (no key):
# model_provider = "bedrock"
# model_name     = "us.anthropic.claude-3-5-haiku-20241022-v1:0"   # model id, inference profile or ARN

# The agents as an MCP server at /api/v1/mcp (behind the authorizer when it is on).
mcp_endpoint = false

# Protocol surfaces: "openai" (/api/v1/openai/v1: point an OpenAI SDK, Open WebUI or LibreChat at
# it), "agui" (/api/v1/agui: CopilotKit's HttpAgent), "ai-sdk" (/api/v1/ai-sdk/chat: useChat),
# "a2a" (/api/v1/a2a: A2A 1.0 clients and orchestrators).
protocol_endpoints = []

# Traces of every run (OpenTelemetry GenAI spans) in CloudWatch / X-Ray through the ADOT
# collector layer (its ARN for your region and architecture: aws-otel.github.io/docs/getting-started/lambda),
# or to any OTLP endpoint. Unset: X-Ray active tracing only, no spans exported.
# tracing = { collector_layer_arn = "arn:aws:lambda:<region>:901920570463:layer:aws-otel-collector-<arch>-ver-<version>:<n>" }
# tracing = { otlp_endpoint = "https://otlp.example.com", environment = { OTEL_EXPORTER_OTLP_HEADERS = "authorization=Bearer%20..." } }

# Answers stream as server-sent events when a client asks (Accept: text/event-stream).
response_streaming = true
# function_url = { create = true, authorization_type = "NONE", allow_origins = ["https://app.example.com"] }
session_store = { type = "dynamodb", ttl = 604800 }

# Uncomment to protect the API with the JWT authorizer (every field below but the last two is required).
# authorizer = {
#   function_name         = "agent-kernel-authorizer"
#   handler_path          = "bootstrap"
#   package_type          = "LocalZip"
#   package_path          = "../../target/lambda/authorizer/bootstrap.zip"
#   module_name           = "authorizer"
#   result_ttl_in_seconds = 150
#   identity_header       = "Authorization"   # the header carrying the token
#   environment_variables = { AK_AUTH__JWT__JWKS_URL = "https://issuer.example/.well-known/jwks.json", AK_AUTH__JWT__ALGORITHMS = "RS256" }
# }

# keep_warm = "rate(5 minutes)"
