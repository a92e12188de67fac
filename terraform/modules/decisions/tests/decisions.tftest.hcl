# What the module decides from its inputs, checked without any provider.

variables {
  execution_mode    = "direct"
  authorizer        = null
  response_store    = { type = "dynamodb", ttl = 3600, retry_count = 5, delay = 5 }
  session_store     = { type = "dynamodb", ttl = 3600 }
  names             = { input_queue = "ak-input.fifo", output_queue = "ak-output.fifo", response_table = "ak-responses", session_table = "ak-sessions" }
  queue_urls        = { input = "", output = "" }
  api               = { api_base_path = "api", api_version = "v1", agent_endpoint = "chat" }
  max_receive_count = 3
  log_level         = "info"
}

run "direct_mode_creates_no_queues" {
  command = plan

  assert {
    condition     = output.queue_mode == false
    error_message = "direct mode must not create queues"
  }
  assert {
    condition     = length(output.functions) == 1 && output.functions[0] == "request_handler"
    error_message = "direct mode has only the request handler"
  }
  assert {
    condition     = output.create_response_table
    error_message = "direct mode keeps a response store by default (idempotent request ids)"
  }
  assert {
    condition     = output.environment.request_handler.AK_EXECUTION__RESPONSE_STORE__DYNAMODB__TABLE_NAME == "ak-responses"
    error_message = "direct mode's request handler gets the response table"
  }
  assert {
    condition     = output.environment.request_handler.AK_EXECUTION__MODE == "direct"
    error_message = "the request handler runs in direct mode"
  }
  assert {
    condition     = output.environment.request_handler.AK_SESSION__DYNAMODB__TABLE_NAME == "ak-sessions"
    error_message = "direct mode's request handler keeps the sessions"
  }
}

run "response_streaming_reaches_the_request_handler" {
  command = plan

  variables {
    response_streaming = true
  }

  assert {
    condition     = output.environment.request_handler.AK_API__RESPONSE_STREAMING == "true"
    error_message = "the request handler answers in the streaming format when the integrations stream"
  }
}

run "direct_mode_without_a_response_store_when_asked" {
  command = plan

  variables {
    response_store = { type = "dynamodb", in_direct_mode = false }
  }

  assert {
    condition     = !output.create_response_table && !contains(keys(output.environment.request_handler), "AK_EXECUTION__RESPONSE_STORE__TYPE")
    error_message = "in_direct_mode = false creates no response table and sets no store"
  }
}

run "rest_sync_creates_queues_runner_and_response_handler" {
  command = plan

  variables {
    execution_mode = "rest_sync"
    queue_urls     = { input = "https://sqs/in.fifo", output = "https://sqs/out.fifo" }
  }

  assert {
    condition     = output.queue_mode && length(output.functions) == 3
    error_message = "queue modes create the three functions"
  }
  assert {
    condition     = output.create_response_table
    error_message = "a dynamodb response store creates its table"
  }
  assert {
    condition     = output.environment.request_handler.AK_EXECUTION__QUEUES__INPUT__URL == "https://sqs/in.fifo"
    error_message = "the request handler gets the input queue"
  }
  assert {
    condition     = output.environment.agent_runner.AK_EXECUTION__QUEUES__OUTPUT__URL == "https://sqs/out.fifo"
    error_message = "the runner gets the output queue"
  }
  assert {
    condition     = output.environment.response_handler.AK_EXECUTION__RESPONSE_STORE__DYNAMODB__TABLE_NAME == "ak-responses"
    error_message = "the response handler gets the table"
  }
  assert {
    condition     = !contains(keys(output.environment.request_handler), "AK_SESSION__TYPE")
    error_message = "in queue modes the request handler does not touch sessions"
  }
}

run "the_runner_knows_the_visibility_timeout_its_claims_must_not_outlive" {
  command = plan

  variables {
    execution_mode     = "rest_sync"
    queue_urls         = { input = "https://sqs/in.fifo", output = "https://sqs/out.fifo" }
    visibility_timeout = 540
  }

  assert {
    condition     = output.environment.agent_runner.AK_EXECUTION__QUEUES__INPUT__VISIBILITY_TIMEOUT == "540"
    error_message = "the agent runner gets the input queue's visibility timeout"
  }
}

run "rest_async_with_redis_store" {
  command = plan

  variables {
    execution_mode = "rest_async"
    response_store = { type = "redis", redis_url = "rediss://cache:6379", ttl = 600 }
  }

  assert {
    condition     = output.queue_mode && !output.create_response_table
    error_message = "a redis store creates no table"
  }
  assert {
    condition     = output.environment.agent_runner.AK_EXECUTION__RESPONSE_STORE__REDIS__URL == "rediss://cache:6379"
    error_message = "the runner gets the redis URL"
  }
  assert {
    condition     = output.environment.agent_runner.AK_EXECUTION__MODE == "rest_async"
    error_message = "the mode is passed on"
  }
}

run "authorizer_missing_a_required_field_is_not_created" {
  command = plan

  variables {
    authorizer = {
      function_name = "gtwy-auth"
      handler_path  = "bootstrap"
      package_type  = "LocalZip"
      package_path  = "../../target/lambda/authorizer/bootstrap.zip"
    }
  }

  assert {
    condition     = output.create_authorizer == false
    error_message = "module_name is missing: no authorizer"
  }
}

run "authorizer_with_every_required_field_is_created_with_ttl_150" {
  command = plan

  variables {
    authorizer = {
      function_name = "gtwy-auth"
      handler_path  = "bootstrap"
      package_type  = "LocalZip"
      package_path  = "../../target/lambda/authorizer/bootstrap.zip"
      module_name   = "authorizer"
    }
  }

  assert {
    condition     = output.create_authorizer
    error_message = "all required fields: authorizer created"
  }
  assert {
    condition     = output.authorizer_ttl == 150
    error_message = "result_ttl_in_seconds defaults to 150"
  }
  assert {
    condition     = output.authorizer_description == "API Gateway Lambda Authorizer"
    error_message = "description has its default"
  }
}

run "authorizer_ttl_can_be_set" {
  command = plan

  variables {
    authorizer = {
      function_name         = "gtwy-auth"
      handler_path          = "bootstrap"
      package_type          = "S3Zip"
      package_path          = "builds/authorizer.zip"
      module_name           = "authorizer"
      result_ttl_in_seconds = 0
    }
  }

  assert {
    condition     = output.create_authorizer && output.authorizer_ttl == 0
    error_message = "an explicit TTL wins"
  }
}

run "bedrock_permissions_name_only_the_configured_models" {
  command = plan

  variables {
    bedrock = {
      models = [
        "anthropic.claude-3-5-haiku-20241022-v1:0",
        "us.anthropic.claude-3-5-haiku-20241022-v1:0",
        "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abc",
        "",
        "anthropic.claude-3-5-haiku-20241022-v1:0",
      ]
      partition = "aws"
      region    = "us-east-1"
      account   = "123456789012"
    }
  }

  assert {
    condition = output.bedrock_arns == [
      "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-3-5-haiku-20241022-v1:0",
      "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-5-haiku-20241022-v1:0",
      "arn:aws:bedrock:*::foundation-model/anthropic.claude-3-5-haiku-20241022-v1:0",
      "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abc",
    ]
    error_message = "a model id, a cross-region inference profile (with its model everywhere it routes) and an ARN, each once"
  }
}

run "no_bedrock_models_no_bedrock_permission" {
  command = plan

  assert {
    condition     = length(output.bedrock_arns) == 0
    error_message = "without Bedrock models nothing is granted"
  }
}

run "redis_with_iam_authentication_reaches_both_stores" {
  command = plan

  variables {
    execution_mode = "rest_async"
    queue_urls     = { input = "https://sqs/in.fifo", output = "https://sqs/out.fifo" }
    response_store = { type = "redis", redis_url = "rediss://old:6379" }
    session_store  = { type = "redis" }
    redis          = { url = "rediss://cache.serverless.euw1.cache.amazonaws.com:6379", auth = "iam", iam_user_id = "ak-app", cache_name = "ak-cache", serverless = true }
  }

  assert {
    condition     = output.environment.agent_runner.AK_EXECUTION__RESPONSE_STORE__REDIS__URL == "rediss://cache.serverless.euw1.cache.amazonaws.com:6379"
    error_message = "the created cache's URL wins over redis_url"
  }
  assert {
    condition     = output.environment.agent_runner.AK_SESSION__REDIS__AUTH == "iam" && output.environment.agent_runner.AK_SESSION__REDIS__IAM__USER_ID == "ak-app"
    error_message = "the sessions authenticate with IAM too"
  }
  assert {
    condition     = output.environment.response_handler.AK_EXECUTION__RESPONSE_STORE__REDIS__IAM__CACHE_NAME == "ak-cache" && output.environment.response_handler.AK_EXECUTION__RESPONSE_STORE__REDIS__IAM__SERVERLESS == "true"
    error_message = "the response handler gets the cache and its kind"
  }
}
