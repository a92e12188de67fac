# What users edit. deploy.sh builds the zips these paths point at (target/lambda/<fn>/bootstrap.zip).
region         = "us-east-1"
name           = "agent-kernel"
execution_mode = "rest_sync" # direct | rest_sync | rest_async
stage_name     = "agents"
architecture   = "arm64"

functions = {
  request_handler  = { package_path = "../../target/lambda/request-handler/bootstrap.zip", memory_size = 128, timeout = 30 }
  agent_runner     = { package_path = "../../target/lambda/agent-runner/bootstrap.zip", memory_size = 128, timeout = 120 }
  response_handler = { package_path = "../../target/lambda/response-handler/bootstrap.zip", memory_size = 128, timeout = 30 }
}

queue = {
  fifo              = true
  max_receive_count = 3
  batch_size        = 10
}

response_store = { type = "dynamodb", ttl = 604800, retry_count = 5, delay = 5 }
session_store  = { type = "dynamodb", ttl = 604800 }

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
