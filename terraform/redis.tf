# Redis as AWS sells it: optionally an ElastiCache Serverless cache (Valkey, TLS only) in the
# functions' VPC, IAM authentication (an ElastiCache user with authentication mode IAM, and
# elasticache:Connect for the functions), and VPC interface endpoints so functions in the VPC
# reach SQS, DynamoDB and Bedrock without a NAT gateway.

locals {
  redis_cache = var.redis.create_serverless_cache
  redis_iam   = var.redis.auth == "iam"
  # The user's id and name are the same for IAM users.
  redis_user_id    = var.redis.iam_user_id != "" ? var.redis.iam_user_id : "${var.name}-app"
  redis_cache_name = local.redis_cache ? aws_elasticache_serverless_cache.this[0].name : var.redis.cache_name
  redis_url        = local.redis_cache ? "rediss://${aws_elasticache_serverless_cache.this[0].endpoint[0].address}:${aws_elasticache_serverless_cache.this[0].endpoint[0].port}" : ""
  redis_settings = {
    url         = local.redis_url
    auth        = var.redis.auth
    iam_user_id = local.redis_user_id
    cache_name  = local.redis_cache_name
    serverless  = local.redis_cache || var.redis.serverless
    cluster     = var.redis.cluster
  }
  # Functions that touch Redis: those with a Redis response or session store.
  redis_store = module.decisions.uses_store && var.response_store.type == "redis" || var.session_store.type == "redis"
  redis_connect_statement = local.redis_iam ? [{
    Effect = "Allow"
    Action = ["elasticache:Connect"]
    Resource = [
      local.redis_cache ? aws_elasticache_serverless_cache.this[0].arn : "arn:${data.aws_partition.current.partition}:elasticache:${data.aws_region.current.region}:${data.aws_caller_identity.current.account_id}:${var.redis.serverless ? "serverlesscache" : "replicationgroup"}:${local.redis_cache_name}",
      "arn:${data.aws_partition.current.partition}:elasticache:${data.aws_region.current.region}:${data.aws_caller_identity.current.account_id}:user:${local.redis_user_id}",
    ]
  }] : []
  vpc_endpoints = var.vpc != null && var.redis.create_vpc_endpoints ? toset(concat(
    module.decisions.queue_mode ? ["sqs"] : [],
    module.decisions.create_response_table || module.decisions.create_session_table ? ["dynamodb"] : [],
    local.bedrock ? ["bedrock-runtime"] : [],
  )) : toset([])
}

data "aws_subnet" "first" {
  count = var.vpc != null ? 1 : 0
  id    = var.vpc.subnet_ids[0]
}

resource "aws_security_group" "cache" {
  count = local.redis_cache ? 1 : 0

  name        = "${var.name}-cache"
  description = "ElastiCache Serverless cache of ${var.name}: Redis/Valkey from the functions only"
  vpc_id      = data.aws_subnet.first[0].vpc_id

  ingress {
    description     = "Valkey (primary and reader endpoints) from the functions"
    from_port       = 6379
    to_port         = 6380
    protocol        = "tcp"
    security_groups = var.vpc.security_group_ids
  }

  tags = var.tags

  lifecycle {
    precondition {
      condition     = var.vpc != null
      error_message = "redis.create_serverless_cache needs var.vpc (the subnets and security groups of the functions): the cache lives in that VPC."
    }
  }
}

resource "aws_elasticache_user" "iam" {
  count = local.redis_cache && local.redis_iam ? 1 : 0

  user_id       = local.redis_user_id
  user_name     = local.redis_user_id
  engine        = "valkey"
  access_string = "on ~* &* +@all -@dangerous"

  authentication_mode {
    type = "iam"
  }

  tags = var.tags
}

resource "aws_elasticache_user_group" "this" {
  count = local.redis_cache && local.redis_iam ? 1 : 0

  engine        = "valkey"
  user_group_id = "${var.name}-users"
  user_ids      = [aws_elasticache_user.iam[0].user_id]

  tags = var.tags
}

resource "aws_elasticache_serverless_cache" "this" {
  count = local.redis_cache ? 1 : 0

  #checkov:skip=CKV_AWS_191:Encrypted at rest with the AWS owned key; a customer key is optional.
  name                 = var.name
  engine               = "valkey"
  major_engine_version = var.redis.major_engine_version
  description          = "Responses, event logs and sessions of ${var.name}"
  subnet_ids           = var.vpc.subnet_ids
  security_group_ids   = [aws_security_group.cache[0].id]
  user_group_id        = local.redis_iam ? aws_elasticache_user_group.this[0].user_group_id : null

  tags = var.tags
}

# Functions in a VPC have no internet route: SQS, DynamoDB and Bedrock through interface
# endpoints (a model outside AWS, such as OpenAI's, needs a NAT gateway the module does not make).
resource "aws_security_group" "endpoints" {
  count = length(local.vpc_endpoints) > 0 ? 1 : 0

  name        = "${var.name}-endpoints"
  description = "VPC endpoints of ${var.name}: HTTPS from the functions"
  vpc_id      = data.aws_subnet.first[0].vpc_id

  ingress {
    description     = "HTTPS from the functions"
    from_port       = 443
    to_port         = 443
    protocol        = "tcp"
    security_groups = var.vpc.security_group_ids
  }

  tags = var.tags
}

resource "aws_vpc_endpoint" "this" {
  for_each = local.vpc_endpoints

  vpc_id              = data.aws_subnet.first[0].vpc_id
  service_name        = "com.amazonaws.${data.aws_region.current.region}.${each.key}"
  vpc_endpoint_type   = "Interface"
  subnet_ids          = var.vpc.subnet_ids
  security_group_ids  = [aws_security_group.endpoints[0].id]
  private_dns_enabled = true

  tags = var.tags
}
