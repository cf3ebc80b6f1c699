//! Every AWS-mode adapter against the real servers `tests/env/up.sh` starts
//! on loopback (moto for SQS, S3 and DynamoDB; redis-server; PostgreSQL 15).
//! One test binary for all of them keeps the build small: each test binary
//! links the whole AWS SDK. The outage tests stop shared servers, so they
//! stay in their own binary (`tests/outages.rs`).

#[path = "../common/mod.rs"]
mod common;

mod dynamodb;
mod postgres_stats;
mod redis_cache;
mod s3;
mod sqs;
mod task_protection;
mod uploads;
