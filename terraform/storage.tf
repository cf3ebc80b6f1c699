# Where data lives: audio in S3, task records in DynamoDB, temporary results
# in Redis, statistics in Postgres (the seed's split, with SQS replacing
# RabbitMQ).

# ---------------------------------------------------------------------------
# S3: generated audio, private, encrypted, expired after RESULT_TTL

resource "aws_s3_bucket" "audio" {
  bucket_prefix = "${local.name}-audio-"
  force_destroy = !var.deletion_protection
}

resource "aws_s3_bucket_ownership_controls" "audio" {
  bucket = aws_s3_bucket.audio.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "audio" {
  bucket = aws_s3_bucket.audio.id

  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_server_side_encryption_configuration" "audio" {
  bucket = aws_s3_bucket.audio.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "audio" {
  bucket = aws_s3_bucket.audio.id

  rule {
    id     = "expire-task-audio"
    status = "Enabled"

    # `clip_key`: tasks/<task_id>/clip-<n>.<ext>
    filter {
      prefix = "tasks/"
    }

    expiration {
      days = local.audio_expiration_days
    }
  }

  rule {
    id     = "abort-incomplete-uploads"
    status = "Enabled"

    filter {}

    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }
}

data "aws_iam_policy_document" "audio_bucket" {
  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      aws_s3_bucket.audio.arn,
      "${aws_s3_bucket.audio.arn}/*",
    ]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "audio" {
  bucket = aws_s3_bucket.audio.id
  policy = data.aws_iam_policy_document.audio_bucket.json

  depends_on = [aws_s3_bucket_public_access_block.audio]
}

# ---------------------------------------------------------------------------
# DynamoDB: task records (`sound_creator_aws::dynamodb`: partition key `pk`,
# TTL on `expires_at`)

resource "aws_dynamodb_table" "tasks" {
  name                        = "${local.name}-tasks"
  billing_mode                = "PAY_PER_REQUEST"
  hash_key                    = "pk"
  deletion_protection_enabled = var.deletion_protection

  attribute {
    name = "pk"
    type = "S"
  }

  ttl {
    attribute_name = "expires_at"
    enabled        = true
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled = true
  }
}

# ---------------------------------------------------------------------------
# ElastiCache Redis: temporary stage and final results (REDIS_HOST)

resource "aws_elasticache_subnet_group" "cache" {
  name       = "${local.name}-cache"
  subnet_ids = local.private_subnet_ids
}

# In-transit encryption stays off because the Redis client connects with
# plain `redis://` (REDIS_HOST/REDIS_PORT carry no TLS setting); the cluster
# is reachable only from the functions' and workers' security groups.
resource "aws_elasticache_replication_group" "cache" {
  replication_group_id       = "${local.name}-cache"
  description                = "sound-creator temporary task results"
  engine                     = "redis"
  engine_version             = "7.1"
  node_type                  = var.redis_node_type
  num_cache_clusters         = 1
  port                       = 6379
  parameter_group_name       = "default.redis7"
  subnet_group_name          = aws_elasticache_subnet_group.cache.name
  security_group_ids         = [aws_security_group.redis.id]
  at_rest_encryption_enabled = true
  transit_encryption_enabled = false
  automatic_failover_enabled = false
  apply_immediately          = true
}

# ---------------------------------------------------------------------------
# RDS Postgres: request statistics (POSTGRES_*), private subnets only

resource "aws_db_subnet_group" "stats" {
  name       = "${local.name}-stats"
  subnet_ids = local.private_subnet_ids
}

# Postgres 15+ on RDS forces TLS by default; the stats client connects
# without TLS (sqlx is built without a TLS backend), inside the VPC only.
resource "aws_db_parameter_group" "stats" {
  name_prefix = "${local.name}-stats-"
  family      = "postgres${var.postgres_engine_version}"

  parameter {
    name  = "rds.force_ssl"
    value = "0"
  }

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_db_instance" "stats" {
  identifier     = "${local.name}-stats"
  engine         = "postgres"
  engine_version = var.postgres_engine_version
  instance_class = var.postgres_instance_class

  db_name  = var.postgres_db
  username = var.postgres_user
  # RDS generates the password and keeps it in Secrets Manager (rotated);
  # the services get it through that secret's ARN, never in plain text.
  manage_master_user_password = true

  allocated_storage     = var.postgres_allocated_storage_gb
  max_allocated_storage = var.postgres_allocated_storage_gb * 10
  storage_type          = "gp3"
  storage_encrypted     = true

  db_subnet_group_name   = aws_db_subnet_group.stats.name
  vpc_security_group_ids = [aws_security_group.postgres.id]
  parameter_group_name   = aws_db_parameter_group.stats.name
  publicly_accessible    = false
  multi_az               = false

  backup_retention_period    = 7
  auto_minor_version_upgrade = true
  deletion_protection        = var.deletion_protection
  skip_final_snapshot        = !var.deletion_protection
  final_snapshot_identifier  = var.deletion_protection ? "${local.name}-stats-final" : null
  apply_immediately          = true
}
