//! Creates the queues, bucket and table the AWS backends expect, from the
//! same environment the services read (`AWS_ENDPOINT_URL`, `SQS_QUEUE_PREFIX`,
//! `S3_BUCKET`, `DYNAMODB_TABLE`, ...). Safe to run again. Used by
//! `localstack/init/provision.sh`; `sound-creator provision` does the same.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = sound_creator_settings::Settings::from_env()?.aws;
    sound_creator_aws::provision(&settings).await?;
    println!(
        "provisioned queues {}*, bucket {}, table {}",
        settings.sqs_queue_prefix, settings.s3_bucket, settings.dynamodb_table
    );
    Ok(())
}
