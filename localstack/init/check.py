#!/usr/bin/env python3
"""Checks that an endpoint (LocalStack, moto or AWS) holds what provision.sh
creates: every queue with its dead-letter queue and redrive policy, the
bucket, and the task table keyed on `pk` with TTL on `expires_at`.

Reads the same settings as the services (AWS_ENDPOINT_URL, AWS_REGION_NAME,
AWS_ACCESS_KEY, AWS_SECRET_KEY, SQS_QUEUE_PREFIX, SQS_VISIBILITY_TIMEOUT,
JOB_MAX_ATTEMPTS, S3_BUCKET, DYNAMODB_TABLE). Needs boto3. Exits 1 with
one line per problem.
"""

import json
import os
import sys

import boto3


def setting(name, default):
    value = os.environ.get(name, "").strip()
    return value or default


def main():
    session = boto3.session.Session(
        aws_access_key_id=setting("AWS_ACCESS_KEY", "test"),
        aws_secret_access_key=setting("AWS_SECRET_KEY", "test"),
        region_name=setting("AWS_REGION_NAME", "us-east-1"),
    )
    endpoint = setting("AWS_ENDPOINT_URL", None)
    sqs = session.client("sqs", endpoint_url=endpoint)
    s3 = session.client("s3", endpoint_url=endpoint)
    dynamodb = session.client("dynamodb", endpoint_url=endpoint)

    prefix = setting("SQS_QUEUE_PREFIX", "sound-creator-")
    visibility = setting("SQS_VISIBILITY_TIMEOUT", "120")
    # The dead-letter threshold the code derives from JOB_MAX_ATTEMPTS.
    max_receive = int(setting("JOB_MAX_ATTEMPTS", "3")) + 2
    problems = []

    for queue in ("music-jobs", "audio-jobs", "completions"):
        try:
            url = sqs.get_queue_url(QueueName=prefix + queue)["QueueUrl"]
            dlq_url = sqs.get_queue_url(QueueName=prefix + queue + "-dlq")["QueueUrl"]
        except sqs.exceptions.QueueDoesNotExist as e:
            problems.append(f"queue {prefix}{queue} or its -dlq is missing: {e}")
            continue
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        if attributes.get("VisibilityTimeout") != visibility:
            problems.append(f"{prefix}{queue}: VisibilityTimeout {attributes.get('VisibilityTimeout')}, expected {visibility}")
        redrive = json.loads(attributes.get("RedrivePolicy", "{}"))
        if redrive.get("deadLetterTargetArn") != dlq_arn:
            problems.append(f"{prefix}{queue}: redrive target {redrive.get('deadLetterTargetArn')}, expected {dlq_arn}")
        if int(redrive.get("maxReceiveCount", 0)) != max_receive:
            problems.append(f"{prefix}{queue}: maxReceiveCount {redrive.get('maxReceiveCount')}, expected {max_receive}")

    bucket = setting("S3_BUCKET", "sound-creator-audio")
    try:
        s3.head_bucket(Bucket=bucket)
    except Exception as e:  # noqa: BLE001 - any failure means "not there"
        problems.append(f"bucket {bucket}: {e}")

    table = setting("DYNAMODB_TABLE", "sound-creator-tasks")
    try:
        described = dynamodb.describe_table(TableName=table)["Table"]
        keys = [(k["AttributeName"], k["KeyType"]) for k in described["KeySchema"]]
        if keys != [("pk", "HASH")]:
            problems.append(f"table {table}: key schema {keys}, expected [('pk', 'HASH')]")
        ttl = dynamodb.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
        if ttl.get("AttributeName") != "expires_at" or ttl.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
            problems.append(f"table {table}: TTL {ttl}, expected enabled on expires_at")
    except dynamodb.exceptions.ResourceNotFoundException as e:
        problems.append(f"table {table} is missing: {e}")

    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 1
    print(f"ok: queues {prefix}{{music-jobs,audio-jobs,completions}} with DLQs, bucket {bucket}, table {table}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
