output "api_url" {
  description = "Base URL of the public API (GET <api_url>/health)."
  value       = aws_apigatewayv2_api.http.api_endpoint
}

output "queue_urls" {
  description = "SQS queue URLs by queue name."
  value       = { for q, queue in aws_sqs_queue.main : q => queue.url }
}

output "dead_letter_queue_urls" {
  description = "Dead-letter queue URLs by queue name."
  value       = { for q, queue in aws_sqs_queue.dead_letter : q => queue.url }
}

output "audio_bucket" {
  description = "S3_BUCKET."
  value       = aws_s3_bucket.audio.bucket
}

output "task_table" {
  description = "DYNAMODB_TABLE."
  value       = aws_dynamodb_table.tasks.name
}

output "redis_host" {
  description = "REDIS_HOST (reachable from inside the VPC only)."
  value       = aws_elasticache_replication_group.cache.primary_endpoint_address
}

output "postgres_host" {
  description = "POSTGRES_HOST (reachable from inside the VPC only)."
  value       = aws_db_instance.stats.address
}

output "postgres_password_secret_arn" {
  description = "Secrets Manager secret RDS keeps the Postgres master password in (JSON field `password`)."
  value       = aws_db_instance.stats.master_user_secret[0].secret_arn
}

output "worker_cluster" {
  description = "ECS cluster of the GPU workers."
  value       = aws_ecs_cluster.workers.name
}

output "worker_services" {
  description = "ECS service of the GPU workers, by model family."
  value       = { for f, service in aws_ecs_service.worker : f => service.name }
}

output "worker_autoscaling_groups" {
  description = "GPU Auto Scaling group, by model family."
  value       = { for f, group in aws_autoscaling_group.gpu : f => group.name }
}
