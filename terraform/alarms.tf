resource "aws_cloudwatch_metric_alarm" "dlq_depth" {
  for_each = module.decisions.queue_mode ? {
    input  = aws_sqs_queue.input_dlq[0].name
    output = aws_sqs_queue.output_dlq[0].name
  } : {}

  alarm_name          = "${var.name}-${each.key}-dlq-not-empty"
  alarm_description   = "Messages reached the ${each.key} dead-letter queue: requests that could not be processed."
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesVisible"
  dimensions          = { QueueName = each.value }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_sns_topic_arn == null ? [] : [var.alarm_sns_topic_arn]
  tags                = var.tags
}

resource "aws_cloudwatch_metric_alarm" "function_errors" {
  for_each = aws_lambda_function.this

  alarm_name          = "${each.value.function_name}-errors"
  alarm_description   = "${each.value.function_name} failed invocations."
  namespace           = "AWS/Lambda"
  metric_name         = "Errors"
  dimensions          = { FunctionName = each.value.function_name }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_sns_topic_arn == null ? [] : [var.alarm_sns_topic_arn]
  tags                = var.tags
}

resource "aws_cloudwatch_event_rule" "keep_warm" {
  count = var.keep_warm == null ? 0 : 1

  name                = "${var.name}-keep-warm"
  description         = "Pings the request handler so an instance stays warm."
  schedule_expression = var.keep_warm
  tags                = var.tags
}

resource "aws_cloudwatch_event_target" "keep_warm" {
  count = var.keep_warm == null ? 0 : 1

  rule  = aws_cloudwatch_event_rule.keep_warm[0].name
  arn   = aws_lambda_function.this["request_handler"].arn
  input = jsonencode({ warmup = true })
}

resource "aws_lambda_permission" "keep_warm" {
  count = var.keep_warm == null ? 0 : 1

  statement_id  = "AllowKeepWarm"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.this["request_handler"].function_name
  principal     = "events.amazonaws.com"
  source_arn    = aws_cloudwatch_event_rule.keep_warm[0].arn
}
