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

variable "music_gen_models" {
  description = "MUSIC_GEN_MODELS: more MusicGen models served beside music_gen_model (a request picks one with `model`); every music worker loads them all."
  type        = list(string)
  default     = []
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

variable "job_max_attempts" {
  description = "Times a job is started before its stage fails job_failed_repeatedly (JOB_MAX_ATTEMPTS); every queue dead-letters a message after this many receives plus two."
  type        = number
  default     = 3

  validation {
    condition     = var.job_max_attempts >= 1 && var.job_max_attempts <= 50
    error_message = "job_max_attempts must be between 1 and 50."
  }
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

variable "worker_families" {
  description = <<-EOT
    Model families the GPU workers serve, each with its own queue
    (<name_prefix>-<family>-jobs), ECS service, Auto Scaling group and
    scaling policies; the keys are also DEPLOYED_TYPES for the API. Per family:
    - instance_type: GPU instance type (one worker task, one GPU, per instance);
    - min_tasks / max_tasks: bounds of the service's task count (0 lets an idle
      family cost nothing; max_tasks also bounds the Auto Scaling group);
    - target_backlog_per_task: jobs (visible + in flight) per running task the
      target-tracking policy holds; lower means more tasks sooner;
    - idle_minutes: minutes the service must have more tasks than the backlog
      needs before the excess is removed (down to zero when the queue is empty);
    - max_batch: WORKER_MAX_BATCH, jobs generated together in one forward pass
      (its KV cache must fit the GPU: 16 x 30 s clips of musicgen-small take
      about 10 GB in f32, which a 24 GB A10G holds);
    - warm_pool: keep up to max_tasks stopped instances in the Auto Scaling
      group's warm pool, reused on scale-in with the image and the model still
      on their volumes: a start takes about a minute instead of five, for the
      price of the stopped volumes;
    - cpu / memory_mb: what a task reserves on its instance.
    The defaults come from bench/autoscale_sim.py (docs/deploy.md, "Autoscaling").
  EOT
  type = map(object({
    instance_type           = optional(string, "g5.xlarge")
    min_tasks               = optional(number, 0)
    max_tasks               = optional(number, 8)
    target_backlog_per_task = optional(number, 16)
    idle_minutes            = optional(number, 10)
    max_batch               = optional(number, 16)
    warm_pool               = optional(bool, true)
    cpu                     = optional(number, 3072)
    memory_mb               = optional(number, 14336)
  }))
  default = { music = {} }

  validation {
    condition     = length(var.worker_families) > 0 && alltrue([for f in keys(var.worker_families) : contains(["music", "audio"], f)])
    error_message = "worker_families needs at least one key, each music or audio."
  }

  validation {
    condition = alltrue([for f in values(var.worker_families) :
      f.min_tasks >= 0 && f.max_tasks >= 1 && f.min_tasks <= f.max_tasks && f.max_tasks <= 100
    ])
    error_message = "Each family needs 0 <= min_tasks <= max_tasks, 1 <= max_tasks <= 100."
  }

  validation {
    condition = alltrue([for f in values(var.worker_families) :
      f.target_backlog_per_task > 0 && f.idle_minutes >= 1 && f.idle_minutes <= 1440 && f.max_batch >= 1
    ])
    error_message = "Each family needs target_backlog_per_task > 0, 1 <= idle_minutes <= 1440 and max_batch >= 1."
  }
}

variable "worker_task_protection_minutes" {
  description = "How long the ECS task scale-in protection a worker sets while it holds a job lasts before ECS drops it on its own (the worker renews it per batch and clears it when its queue is empty). Bounds the harm of a worker that hangs."
  type        = number
  default     = 60

  validation {
    condition     = var.worker_task_protection_minutes >= 1 && var.worker_task_protection_minutes <= 2880
    error_message = "worker_task_protection_minutes must be between 1 and 2880 (ECS's limit)."
  }
}

variable "gpu_instance_warmup_seconds" {
  description = "Seconds a new GPU instance is given before the capacity provider counts it toward the cluster's metrics (boot, ECS agent, image pull)."
  type        = number
  default     = 300
}

variable "worker_root_volume_gb" {
  description = "Root volume of a GPU instance; the model cache (CACHE_MODEL_DIR) lives on it."
  type        = number
  default     = 100
}

variable "ecs_gpu_ami_ssm_parameter" {
  description = "SSM parameter holding the ECS GPU-optimized AMI id. Its NVIDIA driver must be 580 or newer for the CUDA 13 libraries in the worker image (docs/deploy.md)."
  type        = string
  default     = "/aws/service/ecs/optimized-ami/amazon-linux-2023/gpu/recommended/image_id"
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
