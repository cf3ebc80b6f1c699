# GPU workers: per model family (var.worker_families), an ECS service on GPU
# EC2 instances from its own Auto Scaling group of ECS GPU-optimized AMIs,
# behind its own capacity provider. Each task holds one GPU and runs
# `sound-creator worker --backend aws --family <family>`. The task count is
# set by the scaling policies in autoscaling.tf; the capacity provider's
# managed scaling then brings instances up and down with the tasks.

resource "aws_ecs_cluster" "workers" {
  name = "${local.name}-workers"

  setting {
    # Container Insights publishes RunningTaskCount and DesiredTaskCount,
    # which the scaling policies divide the queue backlog by.
    name  = "containerInsights"
    value = "enabled"
  }
}

resource "aws_cloudwatch_log_group" "worker" {
  #checkov:skip=CKV_AWS_158:CloudWatch Logs encrypts at rest with its own keys; these logs carry task ids and errors, never secrets or audio (set kms_key_id for a CMK).
  #checkov:skip=CKV_AWS_338:Retention is var.log_retention_days (30 days by default): enough to operate the service without keeping a year of logs.
  name              = "/ecs/${local.name}-worker"
  retention_in_days = var.log_retention_days
}

data "aws_ssm_parameter" "ecs_gpu_ami" {
  name = var.ecs_gpu_ami_ssm_parameter
}

resource "aws_launch_template" "gpu" {
  for_each = var.worker_families

  name_prefix   = "${local.name}-${each.key}-gpu-"
  image_id      = nonsensitive(data.aws_ssm_parameter.ecs_gpu_ami.value)
  instance_type = each.value.instance_type

  iam_instance_profile {
    arn = aws_iam_instance_profile.gpu_instance.arn
  }

  vpc_security_group_ids = [aws_security_group.worker.id]

  # The model cache (CACHE_MODEL_DIR) lives here, so a replaced task on the
  # same instance does not download the weights again.
  block_device_mappings {
    device_name = "/dev/xvda"

    ebs {
      volume_size           = var.worker_root_volume_gb
      volume_type           = "gp3"
      encrypted             = true
      delete_on_termination = true
    }
  }

  # Only the instance (ECS agent, SSM) uses the instance metadata service:
  # tasks run in awsvpc mode and get the task role from the ECS agent, so
  # one hop keeps containers away from the instance role.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  # ECS_CONTAINER_STOP_TIMEOUT matches the container's stopTimeout below.
  user_data = base64encode(<<-EOT
    #!/bin/bash
    cat >>/etc/ecs/ecs.config <<CONFIG
    ECS_CLUSTER=${aws_ecs_cluster.workers.name}
    ECS_ENABLE_GPU_SUPPORT=true
    ECS_ENABLE_TASK_IAM_ROLE=true
    ECS_CONTAINER_STOP_TIMEOUT=${local.worker_stop_timeout_seconds}s
    ECS_WARM_POOLS_CHECK=${each.value.warm_pool}
    CONFIG
    # The worker image runs as uid 10001 (docker/Dockerfile.worker).
    mkdir -p /var/lib/sound-creator/models
    chown 10001:10001 /var/lib/sound-creator/models
  EOT
  )

  tag_specifications {
    resource_type = "instance"
    tags          = { Name = "${local.name}-${each.key}-gpu-worker" }
  }
}

resource "aws_autoscaling_group" "gpu" {
  for_each = var.worker_families

  name_prefix         = "${local.name}-${each.key}-gpu-"
  vpc_zone_identifier = local.private_subnet_ids
  min_size            = 0
  # One worker task per instance (one GPU each).
  max_size                  = each.value.max_tasks
  desired_capacity          = each.value.min_tasks
  health_check_type         = "EC2"
  protect_from_scale_in     = true # required by managed termination protection
  capacity_rebalance        = false
  wait_for_capacity_timeout = "0"

  launch_template {
    id      = aws_launch_template.gpu[each.key].id
    version = aws_launch_template.gpu[each.key].latest_version
  }

  # Stopped instances that have run a worker keep the image and the model
  # cache on their root volume; managed scaling starts them first.
  dynamic "warm_pool" {
    for_each = each.value.warm_pool ? [1] : []

    content {
      pool_state                  = "Stopped"
      min_size                    = 0
      max_group_prepared_capacity = each.value.max_tasks

      instance_reuse_policy {
        reuse_on_scale_in = true
      }
    }
  }

  # The capacity provider owns the size from here on.
  lifecycle {
    ignore_changes = [desired_capacity]
  }

  tag {
    key                 = "AmazonECSManaged"
    value               = "true"
    propagate_at_launch = true
  }
}

# Managed scaling keeps the group at the instances the family's tasks need
# (target_capacity 100: no idle spare), launching them when tasks wait in
# PROVISIONING. Managed termination protection keeps it from terminating an
# instance that still runs a task; managed draining stops tasks gracefully
# (SIGTERM, stopTimeout) before an instance goes for any other reason.
resource "aws_ecs_capacity_provider" "gpu" {
  for_each = var.worker_families

  name = "${local.name}-${each.key}-gpu"

  auto_scaling_group_provider {
    auto_scaling_group_arn         = aws_autoscaling_group.gpu[each.key].arn
    managed_termination_protection = "ENABLED"
    managed_draining               = "ENABLED"

    managed_scaling {
      status                    = "ENABLED"
      target_capacity           = 100
      minimum_scaling_step_size = 1
      maximum_scaling_step_size = each.value.max_tasks
      instance_warmup_period    = var.gpu_instance_warmup_seconds
    }
  }
}

resource "aws_ecs_cluster_capacity_providers" "workers" {
  cluster_name       = aws_ecs_cluster.workers.name
  capacity_providers = [for f in keys(var.worker_families) : aws_ecs_capacity_provider.gpu[f].name]

  default_capacity_provider_strategy {
    capacity_provider = aws_ecs_capacity_provider.gpu[keys(var.worker_families)[0]].name
    weight            = 1
  }
}

locals {
  # A stopped worker stops its batch at the next decoding step and hands the
  # messages back (or finishes recording a batch already generated): well
  # under a minute. Scale-in never gets here for a busy task, which holds
  # task scale-in protection while it has a job (docs/deploy.md).
  worker_stop_timeout_seconds = 120

  worker_environment = merge(local.common_environment, {
    CACHE_MODEL_DIR = "/model_hub"
    MODEL_DEVICE    = "cuda"
    LOG_JSON        = "true"
    # The worker asks the ECS agent ($ECS_AGENT_URI) for task scale-in
    # protection while it holds a job.
    WORKER_TASK_PROTECTION         = "true"
    WORKER_TASK_PROTECTION_MINUTES = tostring(var.worker_task_protection_minutes)
  })

  worker_secrets = concat(
    [{
      name      = "POSTGRES_PASSWORD"
      valueFrom = "${aws_db_instance.stats.master_user_secret[0].secret_arn}:password::"
    }],
    var.hf_token_secret_arn == null ? [] : [{ name = "HF_TOKEN", valueFrom = var.hf_token_secret_arn }],
  )
}

resource "aws_ecs_task_definition" "worker" {
  for_each = var.worker_families

  family                   = "${local.name}-worker-${each.key}"
  requires_compatibilities = ["EC2"]
  network_mode             = "awsvpc"
  cpu                      = each.value.cpu
  memory                   = each.value.memory_mb
  task_role_arn            = aws_iam_role.worker_task[each.key].arn
  execution_role_arn       = aws_iam_role.worker_execution.arn

  volume {
    name      = "model-cache"
    host_path = "/var/lib/sound-creator/models"
  }

  # Scratch space for the read-only root filesystem: the liveness file and
  # the CUDA and libtorch caches (HOME=/tmp in the image).
  volume {
    name = "scratch"

    docker_volume_configuration {
      scope  = "task"
      driver = "local"
    }
  }

  container_definitions = jsonencode([{
    name      = "worker"
    image     = var.worker_image
    essential = true
    command   = ["worker", "--backend", "aws", "--family", each.key]

    resourceRequirements = [{ type = "GPU", value = "1" }]

    environment = [for k, v in merge(local.worker_environment, { WORKER_MAX_BATCH = tostring(each.value.max_batch) }) : { name = k, value = v }]
    secrets     = local.worker_secrets

    mountPoints = [
      {
        sourceVolume  = "model-cache"
        containerPath = "/model_hub"
        readOnly      = false
      },
      {
        sourceVolume  = "scratch"
        containerPath = "/tmp"
        readOnly      = false
      },
    ]

    readonlyRootFilesystem = true
    privileged             = false

    # Liveness, as in the image: the process's runtime refreshes the file
    # every few seconds, from before the model loads.
    healthCheck = {
      command     = ["CMD", "/usr/local/bin/healthcheck"]
      interval    = 30
      timeout     = 5
      retries     = 3
      startPeriod = 60
    }

    # SIGTERM makes the worker stop its batch at the next decoding step and
    # hand the messages back.
    stopTimeout = local.worker_stop_timeout_seconds

    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.worker.name
        awslogs-region        = var.region
        awslogs-stream-prefix = "worker-${each.key}"
      }
    }
  }])
}

resource "aws_ecs_service" "worker" {
  for_each = var.worker_families

  name            = "${local.name}-worker-${each.key}"
  cluster         = aws_ecs_cluster.workers.id
  task_definition = aws_ecs_task_definition.worker[each.key].arn
  desired_count   = each.value.min_tasks

  # One GPU per task and no spare instance: a deployment stops an old task
  # before starting its replacement; queued jobs simply wait.
  deployment_minimum_healthy_percent = 0
  deployment_maximum_percent         = 100

  capacity_provider_strategy {
    capacity_provider = aws_ecs_capacity_provider.gpu[each.key].name
    weight            = 1
  }

  network_configuration {
    subnets          = local.private_subnet_ids
    security_groups  = [aws_security_group.worker.id]
    assign_public_ip = false
  }

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  # The scaling policies own the task count once the service exists.
  lifecycle {
    ignore_changes = [desired_count]
  }

  depends_on = [aws_ecs_cluster_capacity_providers.workers]
}
