# The optional function URL of the request handler: a second front door beside the REST API,
# streaming (RESPONSE_STREAM) when response_streaming is on.

resource "aws_lambda_function_url" "request_handler" {
  count = var.function_url.create ? 1 : 0

  #checkov:skip=CKV_AWS_258:The authorization type is the deployment's choice (AWS_IAM by default); NONE is for public chat APIs behind their own auth.
  function_name      = aws_lambda_function.this["request_handler"].function_name
  authorization_type = var.function_url.authorization_type
  invoke_mode        = var.response_streaming ? "RESPONSE_STREAM" : "BUFFERED"

  lifecycle {
    precondition {
      condition     = !(var.response_streaming && var.vpc != null)
      error_message = "A function URL does not stream for a function in a VPC (AWS's rule). With var.vpc set, stream through the REST API (response_streaming with function_url.create = false: its integrations use STREAM), or leave response_streaming off for the function URL."
    }
  }

  dynamic "cors" {
    for_each = length(var.function_url.allow_origins) > 0 ? [1] : []
    content {
      allow_origins = var.function_url.allow_origins
      allow_methods = ["GET", "POST"]
      allow_headers = ["content-type", "authorization", "accept", "last-event-id"]
    }
  }
}
