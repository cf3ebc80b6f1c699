# Scaling of each family's worker service on its queue's backlog per task,
# AWS's documented pattern for SQS consumers:
#
#   backlog per task = (visible + in-flight messages) / running tasks
#
# computed with CloudWatch metric math inside the target-tracking policy, so
# no function has to publish a metric (and nothing lags behind a publisher).
# In-flight messages count because a worker holds its batch invisible while
# it generates: a busy fleet with an empty queue still needs its tasks.
#
# Three policies per family (bench/autoscale_sim.py simulates them; the
# defaults and the table are in docs/deploy.md):
#  - backlog: target tracking, scale-out only. It holds the backlog per task at
#    `target_backlog_per_task`. It scales in proportion to the running count,
#    so it cannot leave zero: that is the next policy's job.
#  - wake: a step policy that sets the count to one as soon as a message is
#    visible while the service wants no task.
#  - idle: a step policy that removes the tasks the backlog does not need once
#    there have been too many for `idle_minutes` in a row, down to zero when
#    the queue is empty. Busy tasks hold ECS task scale-in protection, so a
#    scale-in only ever stops a worker with no job in hand.
#
# The capacity providers' managed scaling (ecs.tf) follows the task count with
# instances.

locals {
  # Container Insights publishes the task counts per service.
  service_dimensions = {
    for f, _ in var.worker_families : f => {
      ClusterName = aws_ecs_cluster.workers.name
      ServiceName = aws_ecs_service.worker[f].name
    }
  }
  job_queue_names = { for f, _ in var.worker_families : f => aws_sqs_queue.main["${f}-jobs"].name }
}

resource "aws_appautoscaling_target" "worker" {
  for_each = var.worker_families

  service_namespace  = "ecs"
  scalable_dimension = "ecs:service:DesiredCount"
  resource_id        = "service/${aws_ecs_cluster.workers.name}/${aws_ecs_service.worker[each.key].name}"
  min_capacity       = each.value.min_tasks
  max_capacity       = each.value.max_tasks
}

resource "aws_appautoscaling_policy" "backlog" {
  for_each = var.worker_families

  name               = "${local.name}-${each.key}-backlog-per-task"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.worker[each.key].service_namespace
  scalable_dimension = aws_appautoscaling_target.worker[each.key].scalable_dimension
  resource_id        = aws_appautoscaling_target.worker[each.key].resource_id

  target_tracking_scaling_policy_configuration {
    target_value = each.value.target_backlog_per_task
    # Scale-in is the idle policy's, so the idle time is one setting.
    disable_scale_in   = true
    scale_out_cooldown = 60

    customized_metric_specification {
      metrics {
        id          = "visible"
        label       = "messages waiting"
        return_data = false

        metric_stat {
          metric {
            namespace   = "AWS/SQS"
            metric_name = "ApproximateNumberOfMessagesVisible"
            dimensions {
              name  = "QueueName"
              value = local.job_queue_names[each.key]
            }
          }
          stat = "Maximum"
        }
      }

      metrics {
        id          = "in_flight"
        label       = "messages being generated"
        return_data = false

        metric_stat {
          metric {
            namespace   = "AWS/SQS"
            metric_name = "ApproximateNumberOfMessagesNotVisible"
            dimensions {
              name  = "QueueName"
              value = local.job_queue_names[each.key]
            }
          }
          stat = "Maximum"
        }
      }

      metrics {
        id          = "running"
        label       = "running worker tasks"
        return_data = false

        metric_stat {
          metric {
            namespace   = "ECS/ContainerInsights"
            metric_name = "RunningTaskCount"
            dimensions {
              name  = "ClusterName"
              value = local.service_dimensions[each.key].ClusterName
            }
            dimensions {
              name  = "ServiceName"
              value = local.service_dimensions[each.key].ServiceName
            }
          }
          stat = "Average"
        }
      }

      metrics {
        id = "backlog_per_task"
        # Zero while no task runs: target tracking scales in proportion to
        # the running count, so it cannot leave zero; the wake policy does.
        expression  = "IF(running > 0, (visible + in_flight) / running, 0)"
        label       = "backlog per running task"
        return_data = true
      }
    }
  }
}

# ---------------------------------------------------------------------------
# From zero to one on the first visible message

resource "aws_appautoscaling_policy" "wake" {
  for_each = var.worker_families

  name               = "${local.name}-${each.key}-wake-from-zero"
  policy_type        = "StepScaling"
  service_namespace  = aws_appautoscaling_target.worker[each.key].service_namespace
  scalable_dimension = aws_appautoscaling_target.worker[each.key].scalable_dimension
  resource_id        = aws_appautoscaling_target.worker[each.key].resource_id

  step_scaling_policy_configuration {
    adjustment_type         = "ExactCapacity"
    cooldown                = 60
    metric_aggregation_type = "Maximum"

    step_adjustment {
      metric_interval_lower_bound = 0
      scaling_adjustment          = max(1, each.value.min_tasks)
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "wake" {
  for_each = var.worker_families

  alarm_name          = "${local.name}-${each.key}-jobs-waiting-without-workers"
  alarm_description   = "A ${each.key} job is waiting and the service wants no task: start one (step policy wake-from-zero)."
  comparison_operator = "GreaterThanOrEqualToThreshold"
  threshold           = 1
  evaluation_periods  = 1
  datapoints_to_alarm = 1
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_appautoscaling_policy.wake[each.key].arn]

  metric_query {
    id          = "visible"
    return_data = false

    metric {
      namespace   = "AWS/SQS"
      metric_name = "ApproximateNumberOfMessagesVisible"
      dimensions  = { QueueName = local.job_queue_names[each.key] }
      period      = 60
      stat        = "Maximum"
    }
  }

  metric_query {
    id          = "desired"
    return_data = false

    metric {
      namespace   = "ECS/ContainerInsights"
      metric_name = "DesiredTaskCount"
      dimensions  = local.service_dimensions[each.key]
      period      = 60
      stat        = "Maximum"
    }
  }

  metric_query {
    id = "waiting_without_workers"
    # A service scaled to zero may publish no task count at all: no data
    # counts as zero tasks.
    expression  = "IF(FILL(desired, 0) == 0 AND visible > 0, 1, 0)"
    label       = "jobs waiting with no task wanted"
    return_data = true
  }
}

# ---------------------------------------------------------------------------
# Back down (to zero) once the tasks have been more than the backlog needs
# for idle_minutes in a row

resource "aws_appautoscaling_policy" "idle" {
  for_each = var.worker_families

  name               = "${local.name}-${each.key}-remove-idle"
  policy_type        = "StepScaling"
  service_namespace  = aws_appautoscaling_target.worker[each.key].service_namespace
  scalable_dimension = aws_appautoscaling_target.worker[each.key].scalable_dimension
  resource_id        = aws_appautoscaling_target.worker[each.key].resource_id

  step_scaling_policy_configuration {
    adjustment_type         = "ChangeInCapacity"
    cooldown                = 60
    metric_aggregation_type = "Maximum"

    # The alarm's metric is the number of tasks too many (an integer, at
    # least 1 in alarm; the threshold is 0.5): remove exactly that many.
    dynamic "step_adjustment" {
      for_each = range(1, each.value.max_tasks + 1)

      content {
        metric_interval_lower_bound = step_adjustment.value - 1
        metric_interval_upper_bound = step_adjustment.value == each.value.max_tasks ? null : step_adjustment.value
        scaling_adjustment          = -step_adjustment.value
      }
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "idle" {
  for_each = var.worker_families

  alarm_name          = "${local.name}-${each.key}-workers-idle"
  alarm_description   = "The ${each.key} service has had more tasks than its backlog needs for ${each.value.idle_minutes} minutes: remove the excess (step policy remove-idle)."
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0.5
  evaluation_periods  = each.value.idle_minutes
  datapoints_to_alarm = each.value.idle_minutes
  # Missing data never removes a task.
  treat_missing_data = "notBreaching"
  alarm_actions      = [aws_appautoscaling_policy.idle[each.key].arn]

  metric_query {
    id          = "visible"
    return_data = false

    metric {
      namespace   = "AWS/SQS"
      metric_name = "ApproximateNumberOfMessagesVisible"
      dimensions  = { QueueName = local.job_queue_names[each.key] }
      period      = 60
      stat        = "Maximum"
    }
  }

  metric_query {
    id          = "in_flight"
    return_data = false

    metric {
      namespace   = "AWS/SQS"
      metric_name = "ApproximateNumberOfMessagesNotVisible"
      dimensions  = { QueueName = local.job_queue_names[each.key] }
      period      = 60
      stat        = "Maximum"
    }
  }

  metric_query {
    id          = "desired"
    return_data = false

    metric {
      namespace   = "ECS/ContainerInsights"
      metric_name = "DesiredTaskCount"
      dimensions  = local.service_dimensions[each.key]
      period      = 60
      stat        = "Minimum"
    }
  }

  metric_query {
    id = "tasks_too_many"
    # What target tracking would ask for, ceil(backlog / target), never below
    # the service's minimum; the excess over what the service wants now.
    expression  = "FILL(desired, 0) - MAX([CEIL((FILL(visible, 0) + FILL(in_flight, 0)) / ${each.value.target_backlog_per_task}), FILL(desired, 0) * 0 + ${each.value.min_tasks}])"
    label       = "tasks more than the backlog needs"
    return_data = true
  }
}
