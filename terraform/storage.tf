resource "aws_dynamodb_table" "responses" {
  count = module.decisions.create_response_table ? 1 : 0

  #checkov:skip=CKV_AWS_119:Encrypted at rest with the AWS owned key; a customer key is optional.
  name         = local.names.response_table
  billing_mode = "PAY_PER_REQUEST"
  hash_key     = "request_id"

  attribute {
    name = "request_id"
    type = "S"
  }

  ttl {
    attribute_name = "expiry_time"
    enabled        = true
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled = true
  }

  tags = var.tags
}

resource "aws_dynamodb_table" "sessions" {
  count = module.decisions.create_session_table ? 1 : 0

  #checkov:skip=CKV_AWS_119:Encrypted at rest with the AWS owned key; a customer key is optional.
  name         = local.names.session_table
  billing_mode = "PAY_PER_REQUEST"
  hash_key     = "session_id"
  range_key    = "key"

  attribute {
    name = "session_id"
    type = "S"
  }

  attribute {
    name = "key"
    type = "S"
  }

  ttl {
    attribute_name = "expiry_time"
    enabled        = true
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled = true
  }

  tags = var.tags
}
