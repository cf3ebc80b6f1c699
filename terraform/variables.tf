# ---------------------------------------------------------------------------
# Placement and naming

variable "region" {
  description = "AWS region to deploy into (also AWS_REGION_NAME for the services)."
  type        = string
  default     = "us-east-1"
}

variable "name_prefix" {
  description = "Prefix of every resource name; queues are named <name_prefix>-music-jobs etc."
  type        = string
  default     = "sound-creator"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}$", var.name_prefix))
    error_message = "name_prefix must be 2-31 lowercase letters, digits or dashes, starting with a letter."
  }
}

variable "tags" {
  description = "Extra tags for every resource."
  type        = map(string)
  default     = {}
}

# ---------------------------------------------------------------------------
# Network: a new VPC, or an existing one

variable "create_vpc" {
  description = "Create a VPC (two AZs, public + private subnets, one NAT gateway). false: use vpc_id and the subnet ids below."
  type        = bool
  default     = true
}

variable "vpc_cidr" {
  description = "CIDR of the created VPC."
  type        = string
  default     = "10.40.0.0/16"
}

variable "vpc_id" {
  description = "Existing VPC (create_vpc = false)."
  type        = string
  default     = null
}

variable "private_subnet_ids" {
  description = "Existing private subnets with a route to the internet through NAT (create_vpc = false); at least two AZs."
  type        = list(string)
  default     = []
}

# ---------------------------------------------------------------------------
# Artifacts

variable "worker_image" {
  description = "GPU worker image URI (built from docker/Dockerfile.worker), e.g. 123456789012.dkr.ecr.us-east-1.amazonaws.com/sound-creator-worker:0.1.0."
  type        = string
}

variable "api_lambda_zip" {
  description = "Path to the api-lambda zip (bootstrap inside), built with `cargo lambda build --release --bin api-lambda --output-format zip`."
  type        = string
  default     = "../target/lambda/api-lambda/bootstrap.zip"
}

variable "completion_lambda_zip" {
  description = "Path to the completion-lambda zip (bootstrap inside)."
  type        = string
  default     = "../target/lambda/completion-lambda/bootstrap.zip"
}

variable "lambda_architecture" {
  description = "Architecture the Lambda zips were built for: arm64 (cargo lambda --arm64) or x86_64."
  type        = string
  default     = "arm64"

  validation {
    condition     = contains(["arm64", "x86_64"], var.lambda_architecture)
    error_message = "lambda_architecture must be arm64 or x86_64."
  }
}

# ---------------------------------------------------------------------------
# Secrets: ARNs only, never values

variable "marketplace_token_secret_arn" {
  description = "Secrets Manager ARN of MARKETPLACE_TOKEN (a plain-string secret)."
  type        = string
}

variable "api_keys_secret_arn" {
  description = "Secrets Manager ARN of API_KEYS (name:token pairs separated by commas), or null."
  type        = string
  default     = null
}

variable "webhook_secret_arn" {
  description = "Secrets Manager ARN of WEBHOOK_SECRET (whsec_ + base64), or null to send unsigned callbacks."
  type        = string
  default     = null
}

variable "marketplace_callback_secret_arn" {
  description = "Secrets Manager ARN of MARKETPLACE_CALLBACK (the default callback URL), or null."
  type        = string
  default     = null
}

variable "hf_token_secret_arn" {
  description = "Secrets Manager ARN of a Hugging Face token (HF_TOKEN) for gated models, or null."
  type        = string
  default     = null
}

# ---------------------------------------------------------------------------
# Service settings (the seed's names where it has one)

variable "api_name" {
  description = "API_NAME."
  type        = string
  default     = "AudioCraft"
}

variable "api_version" {
  description = "API_VERSION reported by /health and the OpenAPI document."
  type        = string
  default     = "0.1.0"
}

variable "max_duration" {
  description = "MAX_DURATION: the longest clip a request may ask for, in seconds."
  type        = number
  default     = 30
}

variable "max_prompt_len" {
  description = "MAX_PROMPT_LEN: the longest prompt, in Unicode characters."
  type        = number
  default     = 100
}

variable "result_ttl_seconds" {
  description = "RESULT_TTL: how long a finished task stays readable; the S3 lifecycle expires audio one day later."
  type        = number
  default     = 604800
}

variable "callback_allowed_hosts" {
  description = "CALLBACK_ALLOWED_HOSTS: hosts a per-task callback_url may name."
  type        = list(string)
  default     = []
}

variable "music_gen_model" {
  description = "MUSIC_GEN_MODEL: a Hugging Face hub id or a directory inside the worker container."
  type        = string
  default     = "facebook/musicgen-small"
}

variable "audio_gen_model" {
  description = "AUDIO_GEN_MODEL."
  type        = string
  default     = "facebook/audiogen-medium"
}

variable "log_level" {
  description = "RUST_LOG filter for every process."
  type        = string
  default     = "info"
}

# ---------------------------------------------------------------------------
# Queues

variable "job_visibility_timeout_seconds" {
  description = "Visibility timeout of the job queues (SQS_VISIBILITY_TIMEOUT). The worker's heartbeat renews it every third of this, so it must exceed a few heartbeats, not a whole generation."
  type        = number
  default     = 120

  validation {
    condition     = var.job_visibility_timeout_seconds >= 30 && var.job_visibility_timeout_seconds <= 43200
    error_message = "job_visibility_timeout_seconds must be between 30 and 43200."
  }
}

variable "max_receive_count" {
  description = "Receives before a message moves to its dead-letter queue (SQS_MAX_RECEIVE_COUNT)."
  type        = number
  default     = 5
}

# ---------------------------------------------------------------------------
# Lambda

variable "api_lambda_memory_mb" {
  description = "Memory of the API function (CPU scales with it)."
  type        = number
  default     = 512
}

variable "completion_lambda_timeout_seconds" {
  description = "Timeout of the completion function; a batch may make up to 10 callbacks of CALLBACK_TIMEOUT_MS each. The completions queue's visibility timeout is six times this, as AWS advises."
  type        = number
  default     = 120
}

variable "completion_max_concurrency" {
  description = "Most concurrent completion functions the SQS event source may start (2-1000)."
  type        = number
  default     = 10
}

variable "log_retention_days" {
  description = "CloudWatch log retention."
  type        = number
  default     = 30
}

# ---------------------------------------------------------------------------
# GPU workers

variable "worker_family" {
  description = "Model family the GPU workers serve (music or audio); also DEPLOYED_TYPES for the API."
  type        = string
  default     = "music"

  validation {
    condition     = contains(["music", "audio"], var.worker_family)
    error_message = "worker_family must be music or audio."
  }
}

variable "gpu_instance_type" {
  description = "GPU instance type of the worker ASG (one worker per GPU)."
  type        = string
  default     = "g5.xlarge"
}

variable "worker_desired_count" {
  description = "Number of GPU worker tasks (one GPU each)."
  type        = number
  default     = 1
}

variable "worker_max_instances" {
  description = "Upper bound of the GPU ASG."
  type        = number
  default     = 4
}

variable "worker_cpu" {
  description = "CPU units reserved for a worker task (g5.xlarge has 4096)."
  type        = number
  default     = 3072
}

variable "worker_memory_mb" {
  description = "Memory reserved for a worker task (g5.xlarge has 16 GiB, part of it for the ECS agent and OS)."
  type        = number
  default     = 14336
}

variable "worker_root_volume_gb" {
  description = "Root volume of a GPU instance; the model cache (CACHE_MODEL_DIR) lives on it."
  type        = number
  default     = 100
}

variable "ecs_gpu_ami_ssm_parameter" {
  description = "SSM parameter holding the ECS GPU-optimized AMI id."
  type        = string
  default     = "/aws/service/ecs/optimized-ami/amazon-linux-2/gpu/recommended/image_id"
}

# ---------------------------------------------------------------------------
# Data stores

variable "redis_node_type" {
  description = "ElastiCache node type for temporary results."
  type        = string
  default     = "cache.t4g.small"
}

variable "postgres_instance_class" {
  description = "RDS instance class for the statistics database."
  type        = string
  default     = "db.t4g.micro"
}

variable "postgres_engine_version" {
  description = "RDS Postgres major version (the parameter group family follows it)."
  type        = string
  default     = "16"
}

variable "postgres_user" {
  description = "POSTGRES_USER (master user; RDS generates and keeps its password in Secrets Manager)."
  type        = string
  default     = "sound_creator"
}

variable "postgres_db" {
  description = "POSTGRES_DB."
  type        = string
  default     = "sound_creator"
}

variable "postgres_allocated_storage_gb" {
  description = "Initial RDS storage; it grows automatically up to ten times this."
  type        = number
  default     = 20
}

variable "deletion_protection" {
  description = "Protect RDS and DynamoDB from deletion and take a final RDS snapshot. Turn off only for throwaway stacks."
  type        = bool
  default     = true
}
