# GPU workers: an ECS service on GPU EC2 instances from an Auto Scaling
# group of ECS GPU-optimized AMIs, scaled by an ECS capacity provider. Each
# task holds one GPU and runs `sound-creator worker --backend aws`.

resource "aws_ecs_cluster" "workers" {
  name = "${local.name}-workers"

  setting {
    name  = "containerInsights"
    value = "enabled"
  }
}

resource "aws_cloudwatch_log_group" "worker" {
  name              = "/ecs/${local.name}-worker"
  retention_in_days = var.log_retention_days
}

data "aws_ssm_parameter" "ecs_gpu_ami" {
  name = var.ecs_gpu_ami_ssm_parameter
}

resource "aws_launch_template" "gpu" {
  name_prefix   = "${local.name}-gpu-"
  image_id      = nonsensitive(data.aws_ssm_parameter.ecs_gpu_ami.value)
  instance_type = var.gpu_instance_type

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

  metadata_options {
    http_tokens                 = "required"
    http_put_response_hop_limit = 2
  }

  user_data = base64encode(<<-EOT
    #!/bin/bash
    cat >>/etc/ecs/ecs.config <<CONFIG
    ECS_CLUSTER=${aws_ecs_cluster.workers.name}
    ECS_ENABLE_GPU_SUPPORT=true
    ECS_ENABLE_TASK_IAM_ROLE=true
    ECS_CONTAINER_STOP_TIMEOUT=120s
    CONFIG
    # The worker image runs as uid 10001 (docker/Dockerfile.worker).
    mkdir -p /var/lib/sound-creator/models
    chown 10001:10001 /var/lib/sound-creator/models
  EOT
  )

  tag_specifications {
    resource_type = "instance"
    tags          = { Name = "${local.name}-gpu-worker" }
  }
}

resource "aws_autoscaling_group" "gpu" {
  name_prefix               = "${local.name}-gpu-"
  vpc_zone_identifier       = local.private_subnet_ids
  min_size                  = 0
  max_size                  = var.worker_max_instances
  desired_capacity          = var.worker_desired_count
  health_check_type         = "EC2"
  protect_from_scale_in     = true
  capacity_rebalance        = false
  wait_for_capacity_timeout = "0"

  launch_template {
    id      = aws_launch_template.gpu.id
    version = aws_launch_template.gpu.latest_version
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

resource "aws_ecs_capacity_provider" "gpu" {
  name = "${local.name}-gpu"

  auto_scaling_group_provider {
    auto_scaling_group_arn         = aws_autoscaling_group.gpu.arn
    managed_termination_protection = "ENABLED"

    managed_scaling {
      status                    = "ENABLED"
      target_capacity           = 100
      minimum_scaling_step_size = 1
      maximum_scaling_step_size = 2
    }
  }
}

resource "aws_ecs_cluster_capacity_providers" "workers" {
  cluster_name       = aws_ecs_cluster.workers.name
  capacity_providers = [aws_ecs_capacity_provider.gpu.name]

  default_capacity_provider_strategy {
    capacity_provider = aws_ecs_capacity_provider.gpu.name
    weight            = 1
  }
}

locals {
  worker_environment = merge(local.common_environment, {
    CACHE_MODEL_DIR = "/model_hub"
    MODEL_DEVICE    = "cuda"
    LOG_JSON        = "true"
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
  family                   = "${local.name}-worker-${var.worker_family}"
  requires_compatibilities = ["EC2"]
  network_mode             = "awsvpc"
  cpu                      = var.worker_cpu
  memory                   = var.worker_memory_mb
  task_role_arn            = aws_iam_role.worker_task.arn
  execution_role_arn       = aws_iam_role.worker_execution.arn

  volume {
    name      = "model-cache"
    host_path = "/var/lib/sound-creator/models"
  }

  container_definitions = jsonencode([{
    name      = "worker"
    image     = var.worker_image
    essential = true
    command   = ["worker", "--backend", "aws", "--family", var.worker_family]

    resourceRequirements = [{ type = "GPU", value = "1" }]

    environment = [for k, v in local.worker_environment : { name = k, value = v }]
    secrets     = local.worker_secrets

    mountPoints = [{
      sourceVolume  = "model-cache"
      containerPath = "/model_hub"
      readOnly      = false
    }]

    # SIGTERM makes the worker finish or hand back the job in hand.
    stopTimeout = 120

    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.worker.name
        awslogs-region        = var.region
        awslogs-stream-prefix = "worker"
      }
    }
  }])
}

resource "aws_ecs_service" "worker" {
  name            = "${local.name}-worker-${var.worker_family}"
  cluster         = aws_ecs_cluster.workers.id
  task_definition = aws_ecs_task_definition.worker.arn
  desired_count   = var.worker_desired_count

  # One GPU per task and no spare instance: a deployment stops an old task
  # before starting its replacement; queued jobs simply wait.
  deployment_minimum_healthy_percent = 0
  deployment_maximum_percent         = 100

  capacity_provider_strategy {
    capacity_provider = aws_ecs_capacity_provider.gpu.name
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

  depends_on = [aws_ecs_cluster_capacity_providers.workers]
}
