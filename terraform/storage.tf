# Where data lives: audio in S3, task records in DynamoDB, temporary results
# in Redis, statistics in Postgres (the seed's split, with SQS replacing
# RabbitMQ).

# ---------------------------------------------------------------------------
# S3: generated audio, private, encrypted, expired after RESULT_TTL

resource "aws_s3_bucket" "audio" {
  #checkov:skip=CKV_AWS_18:Access logging needs a second bucket; the API logs every download link it signs, and CloudTrail data events can be enabled where required.
  #checkov:skip=CKV2_AWS_62:Nothing reacts to uploads: the worker tells the completion step over SQS.
  #checkov:skip=CKV_AWS_144:The audio is temporary (expires RESULT_TTL + 1 day) and can be generated again; replication would double storage for nothing.
  #checkov:skip=CKV_AWS_145:Encrypted with SSE-S3; SSE-KMS would add a KMS call (and kms:Decrypt for every presigned download) per object.
  #checkov:skip=CKV_AWS_21:A rerun of a job overwrites its own key by design, and objects expire; old versions would only keep expired audio.
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
    id     = "expire-uploads"
    status = "Enabled"

    # `upload_key`: uploads/<upload_id>, usable by tasks for RESULT_TTL.
    filter {
      prefix = "uploads/"
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
  #checkov:skip=CKV_AWS_119:Encrypted at rest with the AWS-owned key (server_side_encryption enabled); a customer-managed key adds cost and a key policy to maintain, and no requirement asks for it.
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
  #checkov:skip=CKV_AWS_31:The Redis client connects without TLS or AUTH today (docs/deploy.md, known limits); only the functions' and workers' security groups reach it.
  #checkov:skip=CKV_AWS_30:As CKV_AWS_31: no TLS in the client yet.
  #checkov:skip=CKV_AWS_191:Encrypted at rest with the AWS-managed key; it holds temporary results only.
  #checkov:skip=CKV2_AWS_50:Temporary results only: the task records in DynamoDB are the source of truth, so a lost node costs a cache refill, not data.
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

# RDS writes the Postgres log here (enabled_cloudwatch_logs_exports); made
# beforehand so it gets a retention instead of keeping logs forever.
resource "aws_cloudwatch_log_group" "stats" {
  #checkov:skip=CKV_AWS_158:CloudWatch Logs encrypts at rest with its own keys; the Postgres log carries no statistics data.
  #checkov:skip=CKV_AWS_338:Retention is var.log_retention_days (30 days by default).
  name              = "/aws/rds/instance/${local.name}-stats/postgresql"
  retention_in_days = var.log_retention_days
}

resource "aws_db_instance" "stats" {
  #checkov:skip=CKV_AWS_157:Request statistics, backed up daily; a standby doubles the cost. Set multi_az for a stricter availability target.
  #checkov:skip=CKV_AWS_353:Performance Insights is not needed for a small statistics table (and not offered on every micro class).
  #checkov:skip=CKV_AWS_118:Enhanced monitoring needs its own IAM role and costs per instance; the CloudWatch RDS metrics suffice here.
  #checkov:skip=CKV_AWS_161:The stats client authenticates with the RDS-managed password from Secrets Manager; IAM tokens are not implemented in it.
  #checkov:skip=CKV2_AWS_69:The stats client connects without TLS today (docs/deploy.md, known limits); only the functions' and workers' security groups reach it.
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
  copy_tags_to_snapshot      = true

  enabled_cloudwatch_logs_exports = ["postgresql"]

  depends_on = [aws_cloudwatch_log_group.stats]
}
