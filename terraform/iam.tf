# Least privilege: each function may write its own logs and traces, and touch only the queues
# and tables its role needs.

locals {
  response_table_arn = try(aws_dynamodb_table.responses[0].arn, null)
  session_table_arn  = try(aws_dynamodb_table.sessions[0].arn, null)
  # Turns are appended with TransactWriteItems, which IAM checks as one PutItem per item.
  session_actions = ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query", "dynamodb:DescribeTable"]

  bedrock_statement = local.bedrock ? [{
    Effect   = "Allow"
    Action   = ["bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream"]
    Resource = module.decisions.bedrock_arns
  }] : []

  function_statements = {
    request_handler = concat(
      module.decisions.queue_mode ? [{ Effect = "Allow", Action = ["sqs:SendMessage"], Resource = [aws_sqs_queue.input[0].arn] }] : [],
      # Registers request ids (idempotency keys), reads answers and follows event logs
      # (BatchGetItem), forgets failed answers with their logs (DeleteItem); in direct mode
      # also claims the request and stores its answer.
      local.response_table_arn != null ? [{ Effect = "Allow", Action = ["dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"], Resource = [local.response_table_arn] }] : [],
      !module.decisions.queue_mode && local.session_table_arn != null ? [{ Effect = "Allow", Action = local.session_actions, Resource = [local.session_table_arn] }] : [],
      # Agents run here in direct mode.
      !module.decisions.queue_mode ? local.bedrock_statement : [],
    )
    agent_runner = concat(
      local.bedrock_statement,
      module.decisions.queue_mode ? [
        { Effect = "Allow", Action = ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ChangeMessageVisibility"], Resource = [aws_sqs_queue.input[0].arn] },
        { Effect = "Allow", Action = ["sqs:SendMessage"], Resource = [aws_sqs_queue.output[0].arn] },
      ] : [],
      # Claims, the event log (PutItem, one transaction per batch; GetItem and BatchGetItem to
      # find where a retry continues) and, when the output queue is down, the answer itself
      # (an update; answers over 350 KB add items of their own).
      local.response_table_arn != null ? [{ Effect = "Allow", Action = ["dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"], Resource = [local.response_table_arn] }] : [],
      local.session_table_arn != null ? [{ Effect = "Allow", Action = local.session_actions, Resource = [local.session_table_arn] }] : [],
    )
    response_handler = concat(
      module.decisions.queue_mode ? [{ Effect = "Allow", Action = ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ChangeMessageVisibility"], Resource = [aws_sqs_queue.output[0].arn] }] : [],
      # The answer is added to the request's item by a conditional update; one over 350 KB
      # puts its other parts in items of their own.
      local.response_table_arn != null ? [{ Effect = "Allow", Action = ["dynamodb:PutItem", "dynamodb:UpdateItem"], Resource = [local.response_table_arn] }] : [],
    )
    authorizer = []
  }
}

resource "aws_iam_role_policy" "function" {
  for_each = aws_iam_role.function

  name = "least-privilege"
  role = each.value.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = concat(
      [
        { Effect = "Allow", Action = ["logs:CreateLogStream", "logs:PutLogEvents"], Resource = ["${aws_cloudwatch_log_group.function[each.key].arn}:*"] },
        { Effect = "Allow", Action = ["xray:PutTraceSegments", "xray:PutTelemetryRecords"], Resource = ["*"] },
      ],
      local.function_statements[each.key],
      # ElastiCache IAM authentication: every function with a Redis store connects as the user.
      each.key != "authorizer" && local.redis_store ? local.redis_connect_statement : [],
    )
  })
}

resource "aws_iam_role_policy_attachment" "vpc" {
  for_each = var.vpc == null ? {} : aws_iam_role.function

  role       = each.value.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"
}
