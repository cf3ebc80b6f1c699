//! The completion step as a Lambda function: consumes the completions queue
//! through an SQS event source mapping with `ReportBatchItemFailures`, so
//! only the records that failed are delivered again. Metrics leave as
//! CloudWatch EMF log lines, flushed after every batch.

use std::convert::Infallible;
use std::sync::Arc;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{service_fn, LambdaEvent};
use sound_creator_functions::lambda::{handle_completion_batch, init_tracing, FunctionEnvironment};
use sound_creator_metrics::emf::EmfRecorder;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    init_tracing();
    let emf = EmfRecorder::install()?;
    let environment = Arc::new(FunctionEnvironment::from_env().await.inspect_err(|e| {
        tracing::error!(error = %format!("{e:#}"), "the completion function cannot start");
    })?);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| {
        let environment = environment.clone();
        let emf = emf.clone();
        async move {
            let response: SqsBatchResponse = handle_completion_batch(
                &environment.ports,
                &environment.settings.service,
                event.payload,
            )
            .await;
            emf.flush();
            Ok::<_, Infallible>(response)
        }
    }))
    .await
}
