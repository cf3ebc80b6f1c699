# One role per process, each allowed exactly what its code calls:
# `sound_creator_aws::{sqs, s3, dynamodb}` plus logs and its secrets.

locals {
  queue_arns = { for q, queue in aws_sqs_queue.main : q => queue.arn }
  job_queue_arns = [
    aws_sqs_queue.main["music-jobs"].arn,
    aws_sqs_queue.main["audio-jobs"].arn,
  ]

  # Item-level actions of the task store (TransactWriteItems needs the
  # actions of its items) and DescribeTable for /health.
  task_table_actions = [
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:ConditionCheckItem",
    "dynamodb:DescribeTable",
  ]
}

data "aws_iam_policy_document" "lambda_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "ecs_tasks_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }

    condition {
      test     = "ArnLike"
      variable = "aws:SourceArn"
      values   = ["arn:${data.aws_partition.current.partition}:ecs:${var.region}:${data.aws_caller_identity.current.account_id}:*"]
    }
  }
}

data "aws_iam_policy_document" "ec2_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

# ---------------------------------------------------------------------------
# API function: submits jobs, reads tasks and presigns audio links

resource "aws_iam_role" "api_lambda" {
  name               = "${local.name}-api-lambda"
  assume_role_policy = data.aws_iam_policy_document.lambda_assume.json
}

resource "aws_iam_role_policy_attachment" "api_lambda_vpc" {
  role       = aws_iam_role.api_lambda.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"
}

data "aws_iam_policy_document" "api_lambda" {
  statement {
    sid       = "Logs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.api_lambda.arn}:*"]
  }

  statement {
    sid       = "EnqueueAndCount"
    actions   = ["sqs:SendMessage", "sqs:GetQueueUrl", "sqs:GetQueueAttributes"]
    resources = values(local.queue_arns)
  }

  statement {
    sid       = "Tasks"
    actions   = local.task_table_actions
    resources = [aws_dynamodb_table.tasks.arn]
  }

  statement {
    sid       = "PresignAudio"
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.audio.arn}/tasks/*"]
  }

  # POST /v1/uploads presigns the client's PUT (a presigned URL carries the
  # signer's permissions); a task naming the upload HEADs it.
  statement {
    sid       = "PresignUploads"
    actions   = ["s3:PutObject", "s3:GetObject"]
    resources = ["${aws_s3_bucket.audio.arn}/uploads/*"]
  }

  statement {
    sid       = "PingBucket"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.audio.arn]
  }

  statement {
    sid       = "Secrets"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = local.lambda_secret_arns
  }
}

resource "aws_iam_role_policy" "api_lambda" {
  name   = "sound-creator-api"
  role   = aws_iam_role.api_lambda.id
  policy = data.aws_iam_policy_document.api_lambda.json
}

# ---------------------------------------------------------------------------
# Completion function: consumes the completions queue, re-queues callback
# retries, finalises tasks and presigns the links in callback documents

resource "aws_iam_role" "completion_lambda" {
  name               = "${local.name}-completion-lambda"
  assume_role_policy = data.aws_iam_policy_document.lambda_assume.json
}

resource "aws_iam_role_policy_attachment" "completion_lambda_vpc" {
  role       = aws_iam_role.completion_lambda.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"
}

data "aws_iam_policy_document" "completion_lambda" {
  statement {
    sid       = "Logs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.completion_lambda.arn}:*"]
  }

  statement {
    sid = "ConsumeAndRequeueCompletions"
    actions = [
      "sqs:ReceiveMessage",
      "sqs:DeleteMessage",
      "sqs:ChangeMessageVisibility",
      "sqs:GetQueueAttributes",
      "sqs:GetQueueUrl",
      "sqs:SendMessage",
    ]
    resources = [local.queue_arns["completions"]]
  }

  statement {
    sid       = "Tasks"
    actions   = local.task_table_actions
    resources = [aws_dynamodb_table.tasks.arn]
  }

  statement {
    sid       = "PresignAudio"
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.audio.arn}/tasks/*"]
  }

  statement {
    sid       = "Secrets"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = local.lambda_secret_arns
  }
}

resource "aws_iam_role_policy" "completion_lambda" {
  name   = "sound-creator-completion"
  role   = aws_iam_role.completion_lambda.id
  policy = data.aws_iam_policy_document.completion_lambda.json
}

# ---------------------------------------------------------------------------
# GPU worker task: takes jobs of its family, uploads clips, reports stages

resource "aws_iam_role" "worker_task" {
  for_each = var.worker_families

  name               = "${local.name}-worker-${each.key}-task"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

data "aws_iam_policy_document" "worker_task" {
  for_each = var.worker_families

  statement {
    sid = "TakeJobs"
    actions = [
      "sqs:ReceiveMessage",
      "sqs:DeleteMessage",
      "sqs:ChangeMessageVisibility",
      "sqs:GetQueueAttributes",
      "sqs:GetQueueUrl",
    ]
    resources = [local.queue_arns["${each.key}-jobs"]]
  }

  statement {
    sid       = "ReportStages"
    actions   = ["sqs:SendMessage", "sqs:GetQueueUrl", "sqs:GetQueueAttributes"]
    resources = [local.queue_arns["completions"]]
  }

  statement {
    sid       = "Tasks"
    actions   = local.task_table_actions
    resources = [aws_dynamodb_table.tasks.arn]
  }

  statement {
    sid       = "Audio"
    actions   = ["s3:PutObject", "s3:GetObject"]
    resources = ["${aws_s3_bucket.audio.arn}/tasks/*"]
  }

  # A melody-conditioned job reads the client's upload.
  statement {
    sid       = "ReadMelodies"
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.audio.arn}/uploads/*"]
  }

  statement {
    sid       = "PingBucket"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.audio.arn]
  }

  # The ECS agent's task-protection endpoint acts with the task's role.
  statement {
    sid       = "ScaleInProtection"
    actions   = ["ecs:UpdateTaskProtection", "ecs:GetTaskProtection"]
    resources = ["arn:${data.aws_partition.current.partition}:ecs:${var.region}:${data.aws_caller_identity.current.account_id}:task/${aws_ecs_cluster.workers.name}/*"]
  }
}

resource "aws_iam_role_policy" "worker_task" {
  for_each = var.worker_families

  name   = "sound-creator-worker-${each.key}"
  role   = aws_iam_role.worker_task[each.key].id
  policy = data.aws_iam_policy_document.worker_task[each.key].json
}

# The execution role is what ECS itself uses to start the task: pull the
# image, create log streams, and read the secrets it injects.
resource "aws_iam_role" "worker_execution" {
  name               = "${local.name}-worker-execution"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

resource "aws_iam_role_policy_attachment" "worker_execution" {
  role       = aws_iam_role.worker_execution.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
}

data "aws_iam_policy_document" "worker_execution_secrets" {
  statement {
    sid     = "InjectSecrets"
    actions = ["secretsmanager:GetSecretValue"]
    resources = compact([
      aws_db_instance.stats.master_user_secret[0].secret_arn,
      var.hf_token_secret_arn,
    ])
  }
}

resource "aws_iam_role_policy" "worker_execution_secrets" {
  name   = "sound-creator-worker-secrets"
  role   = aws_iam_role.worker_execution.id
  policy = data.aws_iam_policy_document.worker_execution_secrets.json
}

# ---------------------------------------------------------------------------
# GPU instances: join the ECS cluster; SSM for shell access without SSH

resource "aws_iam_role" "gpu_instance" {
  name               = "${local.name}-gpu-instance"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json
}

resource "aws_iam_role_policy_attachment" "gpu_instance_ecs" {
  role       = aws_iam_role.gpu_instance.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/service-role/AmazonEC2ContainerServiceforEC2Role"
}

resource "aws_iam_role_policy_attachment" "gpu_instance_ssm" {
  role       = aws_iam_role.gpu_instance.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

resource "aws_iam_instance_profile" "gpu_instance" {
  name = "${local.name}-gpu-instance"
  role = aws_iam_role.gpu_instance.name
}
