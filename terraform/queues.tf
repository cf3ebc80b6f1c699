# The three queues the code names (`QueueName::as_str`), each with a
# dead-letter queue and a redrive policy, as `sound_creator_aws::provision`
# creates them for emulators.

locals {
  # Job queues: the worker's heartbeat renews visibility every third of
  # this. Completions: six times the function timeout, as AWS advises for
  # Lambda event sources, so a slow batch is not delivered twice.
  visibility_timeouts = {
    "music-jobs"  = var.job_visibility_timeout_seconds
    "audio-jobs"  = var.job_visibility_timeout_seconds
    "completions" = 6 * var.completion_lambda_timeout_seconds
  }
}

resource "aws_sqs_queue" "dead_letter" {
  for_each = local.queues

  name                      = "${local.queue_prefix}${each.key}-dlq"
  message_retention_seconds = 1209600 # 14 days, the most SQS keeps
  sqs_managed_sse_enabled   = true
}

resource "aws_sqs_queue" "main" {
  for_each = local.queues

  name                       = "${local.queue_prefix}${each.key}"
  visibility_timeout_seconds = local.visibility_timeouts[each.key]
  message_retention_seconds  = 345600 # 4 days
  receive_wait_time_seconds  = 20
  sqs_managed_sse_enabled    = true

  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.dead_letter[each.key].arn
    maxReceiveCount     = local.max_receive_count
  })
}

resource "aws_sqs_queue_redrive_allow_policy" "dead_letter" {
  for_each = local.queues

  queue_url = aws_sqs_queue.dead_letter[each.key].id
  redrive_allow_policy = jsonencode({
    redrivePermission = "byQueue"
    sourceQueueArns   = [aws_sqs_queue.main[each.key].arn]
  })
}

# Anything in a dead-letter queue needs a human: a poison message or a
# backend that stayed down through every retry.
resource "aws_cloudwatch_metric_alarm" "dead_letters" {
  for_each = local.queues

  alarm_name          = "${local.queue_prefix}${each.key}-dlq-not-empty"
  alarm_description   = "Messages reached the ${each.key} dead-letter queue."
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesVisible"
  dimensions          = { QueueName = aws_sqs_queue.dead_letter[each.key].name }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
}
