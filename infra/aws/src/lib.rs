//! AWS backends: SQS, S3, DynamoDB, plus Redis for temporary results and Postgres for statistics.
