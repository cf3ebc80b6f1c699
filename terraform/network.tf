# The VPC: private subnets for everything (Lambda, GPU instances, Redis,
# Postgres), public subnets only for the NAT gateway that lets the workers
# pull images and model weights. S3 and DynamoDB are reached through gateway
# endpoints, so audio and task records never cross the NAT.

locals {
  azs = slice(data.aws_availability_zones.available.names, 0, 2)

  vpc_id             = var.create_vpc ? aws_vpc.main[0].id : var.vpc_id
  private_subnet_ids = var.create_vpc ? aws_subnet.private[*].id : var.private_subnet_ids
  private_route_table_ids = var.create_vpc ? [aws_route_table.private[0].id] : [
    for s in data.aws_route_table.existing_private : s.id
  ]
}

resource "aws_vpc" "main" {
  #checkov:skip=CKV2_AWS_11:Flow logs cost per GB and nothing here needs them; turn them on with an aws_flow_log where an audit asks for it.
  count = var.create_vpc ? 1 : 0

  cidr_block           = var.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true

  tags = { Name = local.name }
}

# Nothing uses the default security group; with no rules it admits nothing.
resource "aws_default_security_group" "main" {
  count = var.create_vpc ? 1 : 0

  vpc_id = aws_vpc.main[0].id
  tags   = { Name = "${local.name}-default-unused" }
}

resource "aws_internet_gateway" "main" {
  count = var.create_vpc ? 1 : 0

  vpc_id = aws_vpc.main[0].id
  tags   = { Name = local.name }
}

resource "aws_subnet" "public" {
  count = var.create_vpc ? length(local.azs) : 0

  vpc_id            = aws_vpc.main[0].id
  availability_zone = local.azs[count.index]
  cidr_block        = cidrsubnet(var.vpc_cidr, 8, count.index)

  tags = { Name = "${local.name}-public-${local.azs[count.index]}" }
}

resource "aws_subnet" "private" {
  count = var.create_vpc ? length(local.azs) : 0

  vpc_id            = aws_vpc.main[0].id
  availability_zone = local.azs[count.index]
  cidr_block        = cidrsubnet(var.vpc_cidr, 4, count.index + 1)

  tags = { Name = "${local.name}-private-${local.azs[count.index]}" }
}

resource "aws_eip" "nat" {
  count = var.create_vpc ? 1 : 0

  domain = "vpc"
  tags   = { Name = "${local.name}-nat" }
}

# One NAT gateway keeps the bill down; a zone outage then stops new image
# and model pulls, not the queues.
resource "aws_nat_gateway" "main" {
  count = var.create_vpc ? 1 : 0

  allocation_id = aws_eip.nat[0].id
  subnet_id     = aws_subnet.public[0].id
  tags          = { Name = local.name }

  depends_on = [aws_internet_gateway.main]
}

resource "aws_route_table" "public" {
  count = var.create_vpc ? 1 : 0

  vpc_id = aws_vpc.main[0].id

  route {
    cidr_block = "0.0.0.0/0"
    gateway_id = aws_internet_gateway.main[0].id
  }

  tags = { Name = "${local.name}-public" }
}

resource "aws_route_table_association" "public" {
  count = var.create_vpc ? length(local.azs) : 0

  subnet_id      = aws_subnet.public[count.index].id
  route_table_id = aws_route_table.public[0].id
}

resource "aws_route_table" "private" {
  count = var.create_vpc ? 1 : 0

  vpc_id = aws_vpc.main[0].id

  route {
    cidr_block     = "0.0.0.0/0"
    nat_gateway_id = aws_nat_gateway.main[0].id
  }

  tags = { Name = "${local.name}-private" }
}

resource "aws_route_table_association" "private" {
  count = var.create_vpc ? length(local.azs) : 0

  subnet_id      = aws_subnet.private[count.index].id
  route_table_id = aws_route_table.private[0].id
}

data "aws_route_table" "existing_private" {
  for_each = var.create_vpc ? toset([]) : toset(var.private_subnet_ids)

  subnet_id = each.value
}

resource "aws_vpc_endpoint" "s3" {
  vpc_id            = local.vpc_id
  service_name      = "com.amazonaws.${var.region}.s3"
  vpc_endpoint_type = "Gateway"
  route_table_ids   = distinct(local.private_route_table_ids)
  tags              = { Name = "${local.name}-s3" }
}

resource "aws_vpc_endpoint" "dynamodb" {
  vpc_id            = local.vpc_id
  service_name      = "com.amazonaws.${var.region}.dynamodb"
  vpc_endpoint_type = "Gateway"
  route_table_ids   = distinct(local.private_route_table_ids)
  tags              = { Name = "${local.name}-dynamodb" }
}

# ---------------------------------------------------------------------------
# Security groups: the functions and workers only call out; Redis and
# Postgres accept them and nothing else.

resource "aws_security_group" "lambda" {
  #checkov:skip=CKV_AWS_382:The completion function calls clients back at the URLs they name (CALLBACK_ALLOWED_HOSTS), on any port, besides AWS APIs, Redis and Postgres.
  name        = "${local.name}-lambda"
  description = "sound-creator Lambda functions (outbound only)"
  vpc_id      = local.vpc_id

  egress {
    description = "AWS APIs, Redis, Postgres, client callbacks"
    from_port   = 0
    to_port     = 0
    protocol    = "-1"
    cidr_blocks = ["0.0.0.0/0"]
  }
}

# The workers and their instances reach HTTPS (AWS APIs, ECR, the model
# hub), Redis and Postgres, and nothing else. The rules are resources of
# their own because Redis and Postgres name this group in turn. (The ECS
# agent, credential and time endpoints are link-local and not filtered.)
resource "aws_security_group" "worker" {
  name        = "${local.name}-worker"
  description = "sound-creator GPU worker tasks and instances (outbound only)"
  vpc_id      = local.vpc_id
}

resource "aws_vpc_security_group_egress_rule" "worker_https" {
  security_group_id = aws_security_group.worker.id
  description       = "AWS APIs, ECR, the model hub"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_egress_rule" "worker_redis" {
  security_group_id            = aws_security_group.worker.id
  description                  = "Redis"
  ip_protocol                  = "tcp"
  from_port                    = 6379
  to_port                      = 6379
  referenced_security_group_id = aws_security_group.redis.id
}

resource "aws_vpc_security_group_egress_rule" "worker_postgres" {
  security_group_id            = aws_security_group.worker.id
  description                  = "Postgres"
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
  referenced_security_group_id = aws_security_group.postgres.id
}

resource "aws_security_group" "redis" {
  name        = "${local.name}-redis"
  description = "ElastiCache Redis for temporary results"
  vpc_id      = local.vpc_id

  ingress {
    description     = "Redis from the functions and workers"
    from_port       = 6379
    to_port         = 6379
    protocol        = "tcp"
    security_groups = [aws_security_group.lambda.id, aws_security_group.worker.id]
  }
}

resource "aws_security_group" "postgres" {
  name        = "${local.name}-postgres"
  description = "RDS Postgres for statistics"
  vpc_id      = local.vpc_id

  ingress {
    description     = "Postgres from the functions and workers"
    from_port       = 5432
    to_port         = 5432
    protocol        = "tcp"
    security_groups = [aws_security_group.lambda.id, aws_security_group.worker.id]
  }
}
