//! The long-running side of sound-creator: the GPU worker's job loop and the
//! completion loop. Both work through the domain's ports only, so they run
//! unchanged on the embedded backends and on SQS/S3/DynamoDB/Redis/Postgres.

pub mod completion_loop;
pub mod job_loop;
mod media;
mod protection;

pub use completion_loop::CompletionLoop;
pub use job_loop::{ExecutionOutcome, Worker, WorkerConfig};
