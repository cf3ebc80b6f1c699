# sound-creator on AWS: the HTTP API and the completion step as Lambda
# functions, the GPU workers as an ECS service on GPU EC2 instances, and the
# backends the code expects (SQS, S3, DynamoDB, ElastiCache Redis, RDS
# Postgres). Names and environment variables follow the settings that
# `sound_creator_core::settings` and `sound_creator_aws::settings` read.
#
# Secrets are never literal here: the marketplace token, client keys,
# webhook secret and callback URL are Secrets Manager ARNs given as
# variables, and the Postgres password is generated and kept by RDS itself.

terraform {
  required_version = ">= 1.6"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.70, < 7.0"
    }
  }
}

provider "aws" {
  region = var.region

  default_tags {
    tags = merge(var.tags, {
      Project   = "sound-creator"
      Stack     = var.name_prefix
      ManagedBy = "terraform"
    })
  }
}

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_availability_zones" "available" {
  #checkov:skip=CKV_AWS_394:Only the first two zones are used (network.tf slices them); a zone AWS adds later changes nothing.
  state = "available"
}

locals {
  name = var.name_prefix

  # `<SQS_QUEUE_PREFIX><queue>`: the names `sound_creator_aws::sqs` builds.
  queue_prefix = "${local.name}-"
  queues       = toset(["music-jobs", "audio-jobs", "completions"])

  # S3 keeps clips one day past RESULT_TTL; the API stops handing out links
  # at RESULT_TTL (404 `expired_result`), so no link ever points at nothing.
  audio_expiration_days = ceil(var.result_ttl_seconds / 86400) + 1

  # The worker fails a job's stage after job_max_attempts receives; one more
  # covers a crash while it does, and then the message is dead-lettered
  # (the same rule as WorkerSettings::max_receives in the code).
  max_receive_count = var.job_max_attempts + 2

  # Settings every process reads, as plain environment variables.
  common_environment = {
    API_NAME               = var.api_name
    API_VERSION            = var.api_version
    AWS_REGION_NAME        = var.region
    SQS_QUEUE_PREFIX       = local.queue_prefix
    SQS_VISIBILITY_TIMEOUT = tostring(var.job_visibility_timeout_seconds)
    JOB_MAX_ATTEMPTS       = tostring(var.job_max_attempts)
    S3_BUCKET              = aws_s3_bucket.audio.bucket
    DYNAMODB_TABLE         = aws_dynamodb_table.tasks.name
    REDIS_HOST             = aws_elasticache_replication_group.cache.primary_endpoint_address
    REDIS_PORT             = "6379"
    REDIS_DB_NAME          = "0"
    POSTGRES_HOST          = aws_db_instance.stats.address
    POSTGRES_PORT          = tostring(aws_db_instance.stats.port)
    POSTGRES_USER          = var.postgres_user
    POSTGRES_DB            = var.postgres_db
    MAX_DURATION           = tostring(var.max_duration)
    MAX_PROMPT_LEN         = tostring(var.max_prompt_len)
    RESULT_TTL             = tostring(var.result_ttl_seconds)
    DEPLOYED_TYPES         = join(",", keys(var.worker_families))
    CALLBACK_ALLOWED_HOSTS = join(",", var.callback_allowed_hosts)
    MUSIC_GEN_MODEL        = var.music_gen_model
    MUSIC_GEN_MODELS       = join(",", var.music_gen_models)
    AUDIO_GEN_MODEL        = var.audio_gen_model
    RUST_LOG               = var.log_level
  }

  # The Lambda functions resolve `<NAME>_SECRET_ARN` at cold start
  # (`sound_creator_functions::lambda::resolve_secrets`); `#password` picks
  # the field of the JSON secret RDS manages.
  lambda_secret_environment = merge(
    {
      POSTGRES_PASSWORD_SECRET_ARN = "${aws_db_instance.stats.master_user_secret[0].secret_arn}#password"
      MARKETPLACE_TOKEN_SECRET_ARN = var.marketplace_token_secret_arn
    },
    var.api_keys_secret_arn == null ? {} : { API_KEYS_SECRET_ARN = var.api_keys_secret_arn },
    var.webhook_secret_arn == null ? {} : { WEBHOOK_SECRET_SECRET_ARN = var.webhook_secret_arn },
    var.marketplace_callback_secret_arn == null ? {} : { MARKETPLACE_CALLBACK_SECRET_ARN = var.marketplace_callback_secret_arn },
  )

  lambda_secret_arns = compact([
    aws_db_instance.stats.master_user_secret[0].secret_arn,
    var.marketplace_token_secret_arn,
    var.api_keys_secret_arn,
    var.webhook_secret_arn,
    var.marketplace_callback_secret_arn,
  ])
}
