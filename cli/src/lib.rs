//! The `sound-creator` command line.
//!
//! - `serve`: API + GPU worker(s) + completion in one process, on the
//!   embedded backends (SQLite + local files) by default or on the AWS ones
//!   (`--backend aws`: SQS, S3, DynamoDB, Redis, Postgres or their emulators).
//! - `api`, `worker`, `completion`: each part alone (the shapes deployed on
//!   Lambda and ECS).
//! - `generate`: one clip from the command line, no service.
//! - `provision`: create the queues, bucket and table on an AWS endpoint.

pub mod backends;
pub mod models;
pub mod server;
pub mod telemetry;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use sound_creator_core::task::ModelFamily;

#[derive(Parser, Debug)]
#[command(
    name = "sound-creator",
    version,
    about = "Text to music and sound effects with MusicGen and AudioGen, as a job runner."
)]
pub struct Cli {
    /// Log JSON lines instead of text.
    #[arg(long, global = true, env = "LOG_JSON")]
    pub log_json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the API, the worker(s) and the completion step in one process.
    Serve(ServeArgs),
    /// Run the HTTP API alone.
    Api(ServeArgs),
    /// Run a GPU worker for one model family alone.
    Worker(WorkerArgs),
    /// Run the completion step alone (aggregation, stats, callbacks).
    Completion(BackendArgs),
    /// Generate one clip to a file, without the service.
    Generate(sound_creator_audiocraft::cli::GenerateArgs),
    /// Create the queues, bucket and table on the configured AWS endpoint.
    Provision,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    /// SQLite and local files under --data-dir: no outside services.
    Embedded,
    /// SQS, S3, DynamoDB, Redis and Postgres (or LocalStack/moto).
    Aws,
}

#[derive(Args, Debug, Clone)]
pub struct BackendArgs {
    #[arg(long, value_enum, env = "BACKEND", default_value = "embedded")]
    pub backend: BackendKind,
    /// Where the embedded backends keep their database and audio files.
    #[arg(long, env = "DATA_DIR", default_value = ".data/sound-creator")]
    pub data_dir: PathBuf,
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Port to listen on (default: APP_API_PORT, 8007); 0 picks a free one.
    #[arg(long)]
    pub port: Option<u16>,
    /// Address to listen on.
    #[arg(long, env = "BIND_HOST", default_value = "0.0.0.0")]
    pub host: String,
    /// Base of the download links the embedded mode signs (default: http://127.0.0.1:<port>).
    #[arg(long, env = "PUBLIC_BASE_URL")]
    pub public_base_url: Option<String>,
    #[command(flatten)]
    pub backend: BackendArgs,
    #[command(flatten)]
    pub model: models::ModelArgs,
}

#[derive(Args, Debug, Clone)]
pub struct WorkerArgs {
    #[arg(long, value_parser = parse_family, default_value = "music")]
    pub family: ModelFamily,
    #[command(flatten)]
    pub backend: BackendArgs,
    #[command(flatten)]
    pub model: models::ModelArgs,
}

fn parse_family(raw: &str) -> Result<ModelFamily, String> {
    ModelFamily::parse(raw)
        .ok_or_else(|| format!("{raw:?} is not a model family; use music or audio"))
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Generate(args) => sound_creator_audiocraft::cli::run_generate(&args),
        command => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                match command {
                    Command::Serve(args) => server::serve(args, server::Parts::All).await,
                    Command::Api(args) => server::serve(args, server::Parts::ApiOnly).await,
                    Command::Worker(args) => server::worker(args).await,
                    Command::Completion(args) => server::completion(args).await,
                    Command::Provision => backends::provision().await,
                    Command::Generate(_) => unreachable!("handled above"),
                }
            })
        }
    }
}
