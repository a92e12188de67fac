locals {
  # SQS's largest message (1 MiB since 2025; the provider's default is still 256 KiB): long
  # prompts and answers fit, and the dead-letter queues take whatever their queue held.
  max_message_size = 1048576
}

resource "aws_sqs_queue" "input_dlq" {
  count = module.decisions.queue_mode ? 1 : 0

  name                      = "${var.name}-input-dlq${local.fifo_suffix}"
  fifo_queue                = var.queue.fifo
  message_retention_seconds = 1209600
  max_message_size          = local.max_message_size
  sqs_managed_sse_enabled   = true
  tags                      = var.tags
}

resource "aws_sqs_queue" "input" {
  count = module.decisions.queue_mode ? 1 : 0

  name                        = local.names.input_queue
  fifo_queue                  = var.queue.fifo
  content_based_deduplication = false
  visibility_timeout_seconds  = local.visibility_timeout
  message_retention_seconds   = var.queue.message_retention_seconds
  max_message_size            = local.max_message_size
  sqs_managed_sse_enabled     = true
  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.input_dlq[0].arn
    maxReceiveCount     = var.queue.max_receive_count + 1
  })
  tags = var.tags

  lifecycle {
    # Stops the plan (a `check` block would only warn): a message hidden for less time than
    # the runner may work on it is delivered again while still in work.
    precondition {
      condition     = local.visibility_timeout >= local.runner_timeout
      error_message = "queue.visibility_timeout must be at least the agent runner's timeout (functions.agent_runner.timeout), or messages are delivered twice while still in work; 0 picks six times the runner timeout."
    }
  }
}

resource "aws_sqs_queue" "output_dlq" {
  count = module.decisions.queue_mode ? 1 : 0

  name                      = "${var.name}-output-dlq${local.fifo_suffix}"
  fifo_queue                = var.queue.fifo
  message_retention_seconds = 1209600
  max_message_size          = local.max_message_size
  sqs_managed_sse_enabled   = true
  tags                      = var.tags
}

resource "aws_sqs_queue" "output" {
  count = module.decisions.queue_mode ? 1 : 0

  name                        = local.names.output_queue
  fifo_queue                  = var.queue.fifo
  content_based_deduplication = false
  visibility_timeout_seconds  = 6 * try(var.functions.response_handler.timeout, 30)
  message_retention_seconds   = var.queue.message_retention_seconds
  max_message_size            = local.max_message_size
  sqs_managed_sse_enabled     = true
  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.output_dlq[0].arn
    maxReceiveCount     = var.queue.max_receive_count
  })
  tags = var.tags
}

resource "aws_lambda_event_source_mapping" "agent_runner" {
  count = module.decisions.queue_mode ? 1 : 0

  event_source_arn        = aws_sqs_queue.input[0].arn
  function_name           = aws_lambda_function.this["agent_runner"].arn
  batch_size              = var.queue.batch_size
  function_response_types = ["ReportBatchItemFailures"]

  scaling_config {
    maximum_concurrency = max(2, var.queue.maximum_concurrency)
  }
}

resource "aws_lambda_event_source_mapping" "response_handler" {
  count = module.decisions.queue_mode ? 1 : 0

  event_source_arn        = aws_sqs_queue.output[0].arn
  function_name           = aws_lambda_function.this["response_handler"].arn
  batch_size              = var.queue.batch_size
  function_response_types = ["ReportBatchItemFailures"]

  scaling_config {
    maximum_concurrency = max(2, var.queue.maximum_concurrency)
  }
}
