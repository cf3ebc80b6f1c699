#!/bin/sh
# Creates the queues (each with a dead-letter queue and a redrive policy),
# the audio bucket and the task table (TTL on `expires_at`) on the endpoint
# in AWS_ENDPOINT_URL: LocalStack, moto, or real AWS. It runs the project's
# own provisioning code (`sound_creator_aws::provision`), so the resources are
# exactly what the services expect. Safe to run again.
#
# Settings: the services' own (AWS_ENDPOINT_URL, AWS_REGION_NAME,
# AWS_ACCESS_KEY, AWS_SECRET_KEY, SQS_QUEUE_PREFIX, SQS_VISIBILITY_TIMEOUT,
# JOB_MAX_ATTEMPTS, S3_BUCKET, DYNAMODB_TABLE). PROVISION_BIN names the
# program (default: sound-creator-provision, else `sound-creator provision`).
set -eu

endpoint="${AWS_ENDPOINT_URL:-}"
attempts="${PROVISION_WAIT_ATTEMPTS:-60}"

if [ -n "${PROVISION_BIN:-}" ]; then
    command -v "$PROVISION_BIN" >/dev/null 2>&1 || { echo "provision: PROVISION_BIN=$PROVISION_BIN is not a program" >&2; exit 2; }
    set -- "$PROVISION_BIN"
elif command -v sound-creator-provision >/dev/null 2>&1; then
    set -- sound-creator-provision
elif command -v sound-creator >/dev/null 2>&1; then
    set -- sound-creator provision
else
    echo "provision: neither sound-creator-provision nor sound-creator is on PATH" >&2
    exit 2
fi

# The emulator may still be starting: retry until it answers. Provisioning
# is idempotent, so a half-done earlier attempt is simply completed.
i=1
while :; do
    if "$@"; then
        exit 0
    fi
    if [ "$i" -ge "$attempts" ]; then
        echo "provision: gave up after $attempts attempts against ${endpoint:-the default AWS endpoints}" >&2
        exit 1
    fi
    echo "provision: attempt $i failed; retrying in 2 s" >&2
    i=$((i + 1))
    sleep 2
done
