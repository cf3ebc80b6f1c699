# The HTTP API (API Gateway HTTP API -> api-lambda) and the completion step
# (completions queue -> completion-lambda). Both are Rust binaries of the
# `sound-creator-functions` crate on the `provided.al2023` runtime; see
# docs/deploy.md for building the zips.

locals {
  api_function_name        = "${local.name}-api"
  completion_function_name = "${local.name}-completion"
}

resource "aws_cloudwatch_log_group" "api_lambda" {
  #checkov:skip=CKV_AWS_158:CloudWatch Logs encrypts at rest with its own keys; these logs carry task ids and errors, never secrets or audio (set kms_key_id for a CMK).
  #checkov:skip=CKV_AWS_338:Retention is var.log_retention_days (30 days by default): enough to operate the service without keeping a year of logs.
  name              = "/aws/lambda/${local.api_function_name}"
  retention_in_days = var.log_retention_days
}

resource "aws_cloudwatch_log_group" "completion_lambda" {
  #checkov:skip=CKV_AWS_158:CloudWatch Logs encrypts at rest with its own keys; these logs carry task ids and errors, never secrets or audio (set kms_key_id for a CMK).
  #checkov:skip=CKV_AWS_338:Retention is var.log_retention_days (30 days by default): enough to operate the service without keeping a year of logs.
  name              = "/aws/lambda/${local.completion_function_name}"
  retention_in_days = var.log_retention_days
}

resource "aws_lambda_function" "api" {
  #checkov:skip=CKV_AWS_116:API Gateway invokes it synchronously; a dead-letter queue only applies to asynchronous invocations.
  #checkov:skip=CKV_AWS_115:The API Gateway stage throttles (100 rps, burst 200); reserving concurrency would take it from the account's pool for nothing.
  #checkov:skip=CKV_AWS_272:The zip is built and deployed by the same pipeline (source_code_hash); add a code-signing config where the account requires one.
  #checkov:skip=CKV_AWS_173:The environment holds names and Secrets Manager ARNs only, never secret values; the default AWS-managed key encrypts it.
  #checkov:skip=CKV_AWS_50:The functions emit no X-Ray segments; requests are traced by task id in the JSON logs.
  function_name    = local.api_function_name
  description      = "sound-creator HTTP API (v1)"
  role             = aws_iam_role.api_lambda.arn
  runtime          = "provided.al2023"
  handler          = "bootstrap"
  architectures    = [var.lambda_architecture]
  filename         = var.api_lambda_zip
  source_code_hash = filebase64sha256(var.api_lambda_zip)
  memory_size      = var.api_lambda_memory_mb
  # API Gateway HTTP APIs stop waiting after 30 s, so /v1/generate callers
  # should keep wait_seconds under about 25 behind it.
  timeout = 29

  vpc_config {
    subnet_ids         = local.private_subnet_ids
    security_group_ids = [aws_security_group.lambda.id]
  }

  environment {
    variables = merge(local.common_environment, local.lambda_secret_environment)
  }

  logging_config {
    log_format = "Text" # the function writes JSON lines itself
    log_group  = aws_cloudwatch_log_group.api_lambda.name
  }

  depends_on = [
    aws_iam_role_policy.api_lambda,
    aws_iam_role_policy_attachment.api_lambda_vpc,
  ]
}

resource "aws_lambda_function" "completion" {
  #checkov:skip=CKV_AWS_116:Invoked by the SQS event source mapping: failed records go back to the completions queue and its redrive policy moves them to the dead-letter queue.
  #checkov:skip=CKV_AWS_115:Concurrency is bounded by the event source mapping's maximum_concurrency (var.completion_max_concurrency).
  #checkov:skip=CKV_AWS_272:The zip is built and deployed by the same pipeline (source_code_hash); add a code-signing config where the account requires one.
  #checkov:skip=CKV_AWS_173:The environment holds names and Secrets Manager ARNs only, never secret values; the default AWS-managed key encrypts it.
  #checkov:skip=CKV_AWS_50:The functions emit no X-Ray segments; requests are traced by task id in the JSON logs.
  function_name    = local.completion_function_name
  description      = "sound-creator completion step: stage aggregation, stats, client callbacks"
  role             = aws_iam_role.completion_lambda.arn
  runtime          = "provided.al2023"
  handler          = "bootstrap"
  architectures    = [var.lambda_architecture]
  filename         = var.completion_lambda_zip
  source_code_hash = filebase64sha256(var.completion_lambda_zip)
  memory_size      = 256
  timeout          = var.completion_lambda_timeout_seconds

  vpc_config {
    subnet_ids         = local.private_subnet_ids
    security_group_ids = [aws_security_group.lambda.id]
  }

  environment {
    variables = merge(local.common_environment, local.lambda_secret_environment)
  }

  logging_config {
    log_format = "Text"
    log_group  = aws_cloudwatch_log_group.completion_lambda.name
  }

  depends_on = [
    aws_iam_role_policy.completion_lambda,
    aws_iam_role_policy_attachment.completion_lambda_vpc,
  ]
}

# Only the records the function names in batchItemFailures come back; the
# rest of the batch is deleted. A record that keeps failing moves to the
# dead-letter queue after job_max_attempts + 2 receives.
resource "aws_lambda_event_source_mapping" "completions" {
  event_source_arn                   = aws_sqs_queue.main["completions"].arn
  function_name                      = aws_lambda_function.completion.arn
  batch_size                         = 10
  maximum_batching_window_in_seconds = 0
  function_response_types            = ["ReportBatchItemFailures"]

  scaling_config {
    maximum_concurrency = var.completion_max_concurrency
  }
}

# ---------------------------------------------------------------------------
# API Gateway HTTP API: every route goes to the function, so unknown paths
# get the contract's JSON 404 rather than API Gateway's own answer.

resource "aws_apigatewayv2_api" "http" {
  name          = "${local.name}-api"
  protocol_type = "HTTP"
  description   = "sound-creator public API"
}

resource "aws_apigatewayv2_integration" "api" {
  api_id                 = aws_apigatewayv2_api.http.id
  integration_type       = "AWS_PROXY"
  integration_uri        = aws_lambda_function.api.invoke_arn
  payload_format_version = "2.0"
  timeout_milliseconds   = 30000
}

resource "aws_apigatewayv2_route" "default" {
  #checkov:skip=CKV_AWS_309:The API authenticates every route but /health and /v1/openapi.json itself (bearer client keys, contract errors); an API Gateway authorizer would answer in another error shape.
  api_id    = aws_apigatewayv2_api.http.id
  route_key = "$default"
  target    = "integrations/${aws_apigatewayv2_integration.api.id}"
}

resource "aws_cloudwatch_log_group" "api_access" {
  #checkov:skip=CKV_AWS_158:CloudWatch Logs encrypts at rest with its own keys; these logs carry task ids and errors, never secrets or audio (set kms_key_id for a CMK).
  #checkov:skip=CKV_AWS_338:Retention is var.log_retention_days (30 days by default): enough to operate the service without keeping a year of logs.
  name              = "/aws/apigateway/${local.name}-api"
  retention_in_days = var.log_retention_days
}

resource "aws_apigatewayv2_stage" "default" {
  api_id      = aws_apigatewayv2_api.http.id
  name        = "$default"
  auto_deploy = true

  default_route_settings {
    throttling_burst_limit = 200
    throttling_rate_limit  = 100
  }

  access_log_settings {
    destination_arn = aws_cloudwatch_log_group.api_access.arn
    format = jsonencode({
      requestId      = "$context.requestId"
      ip             = "$context.identity.sourceIp"
      requestTime    = "$context.requestTime"
      httpMethod     = "$context.httpMethod"
      path           = "$context.path"
      status         = "$context.status"
      responseLength = "$context.responseLength"
      latencyMs      = "$context.integrationLatency"
      error          = "$context.integrationErrorMessage"
    })
  }
}

resource "aws_lambda_permission" "api_gateway" {
  statement_id  = "AllowApiGatewayInvoke"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.api.function_name
  principal     = "apigateway.amazonaws.com"
  source_arn    = "${aws_apigatewayv2_api.http.execution_arn}/*/*"
}
