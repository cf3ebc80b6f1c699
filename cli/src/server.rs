//! Running the service's parts: the API on a TCP listener, worker loops and
//! the completion loop, all stopped cleanly by Ctrl-C or SIGTERM (what ECS
//! and systemd send): the API stops accepting, in-flight requests finish,
//! a running job stops at its next decoding step and goes back to the queue.

use std::sync::Arc;

use anyhow::Context;
use sound_creator_aws::task_protection::{EcsTaskProtection, TaskProtectionSettings};
use sound_creator_core::audio::AudioGenerator;
use sound_creator_core::service::TaskService;
use sound_creator_core::settings::Settings;
use sound_creator_core::task::ModelFamily;
use sound_creator_functions::api::{app, AppState};
use sound_creator_worker::{CompletionLoop, Worker, WorkerConfig};
use tokio_util::sync::CancellationToken;

use crate::backends;
use crate::models::load_generator;
use crate::{BackendArgs, ServeArgs, WorkerArgs};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parts {
    All,
    ApiOnly,
}

fn settings() -> anyhow::Result<Arc<Settings>> {
    Ok(Arc::new(Settings::from_env().context("invalid settings")?))
}

/// Cancels the token on Ctrl-C or SIGTERM.
fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term = match tokio::signal::unix::signal(
                tokio::signal::unix::SignalKind::terminate(),
            ) {
                Ok(term) => term,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM; Ctrl-C still stops the service");
                    let _ = ctrl_c.await;
                    trigger.cancel();
                    return;
                }
            };
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutting down");
        trigger.cancel();
    });
    token
}

/// While the process runs, refreshes the file `LIVENESS_FILE` names (when
/// set) every few seconds: the container's health check (docker/healthcheck.sh)
/// reads its age. It starts before the model loads, so it says the process
/// and its runtime are alive, not that a job is moving (the queue's
/// visibility timeout and receive count take care of a stuck job).
fn spawn_liveness() {
    let Some(path) = std::env::var_os("LIVENESS_FILE").filter(|p| !p.is_empty()) else {
        return;
    };
    tokio::spawn(async move {
        let mut warned = false;
        loop {
            let now = unix_seconds();
            if let Err(e) = tokio::fs::write(&path, format!("{now}\n")).await {
                if !warned {
                    tracing::warn!(path = %std::path::Path::new(&path).display(), error = %e, "cannot write the liveness file");
                    warned = true;
                }
            }
            tokio::time::sleep(std::time::Duration::from_secs(10)).await;
        }
    });
}

fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// The settings `serve` and `api` run with: the environment's, and at least
/// one client key, or no one could call the API.
pub fn serving_settings() -> anyhow::Result<Arc<Settings>> {
    let settings = settings()?;
    if settings.client_keys.is_empty() {
        anyhow::bail!("no client key is configured: set MARKETPLACE_TOKEN (and optionally API_KEYS=name:token,...)");
    }
    Ok(settings)
}

pub async fn serve(args: ServeArgs, parts: Parts) -> anyhow::Result<()> {
    let settings = serving_settings()?;
    // Models first: a deployment that cannot generate should not start
    // taking tasks.
    let mut generators = Vec::new();
    if parts == Parts::All {
        for family in settings.deployed.iter().copied() {
            let (s, m) = (settings.clone(), args.model.clone());
            let generator =
                tokio::task::spawn_blocking(move || load_generator(family, &s, &m)).await??;
            generators.push((family, generator));
        }
    }
    serve_with(args, settings, parts, generators).await
}

/// Serves the API and, for `Parts::All`, a worker per given generator and the
/// completion loop, until Ctrl-C or SIGTERM. `serve` calls it with the
/// loaded models; the pipeline benchmark's harness with a no-op generator.
pub async fn serve_with(
    args: ServeArgs,
    settings: Arc<Settings>,
    parts: Parts,
    generators: Vec<(ModelFamily, Arc<dyn AudioGenerator>)>,
) -> anyhow::Result<()> {
    let port = args.port.unwrap_or(settings.port);
    let listener = tokio::net::TcpListener::bind((args.host.as_str(), port))
        .await
        .with_context(|| format!("cannot listen on {}:{port}", args.host))?;
    let bound = listener.local_addr()?;
    let public_base_url = args
        .public_base_url
        .clone()
        .unwrap_or_else(|| format!("http://127.0.0.1:{}", bound.port()));
    let backends = backends::connect(
        args.backend.backend,
        &args.backend.data_dir,
        &public_base_url,
        &settings,
    )
    .await?;

    let shutdown = shutdown_on_signal();
    let mut loops = tokio::task::JoinSet::new();
    for (family, generator) in generators {
        let mut config = WorkerConfig::new(family);
        config.max_batch = args.model.max_batch.max(1);
        config.visibility_timeout = backends.visibility_timeout;
        let worker = Worker::new(backends.ports.clone(), settings.clone(), generator, config);
        let stop = shutdown.clone();
        loops.spawn(async move { worker.run(stop.cancelled_owned()).await });
    }
    if parts == Parts::All {
        let completion = CompletionLoop::new(backends.ports.clone(), settings.clone());
        let stop = shutdown.clone();
        loops.spawn(async move { completion.run(stop.cancelled_owned()).await });
    }

    let service = Arc::new(TaskService::new(backends.ports.clone(), settings.clone()));
    let router = app(AppState::new(service, backends.downloads.clone()));
    // The first line on stdout says where to reach the service (tests and
    // scripts read it to learn the port when --port 0 was given).
    println!(
        "sound-creator listening on http://{bound} ({} backends)",
        backends.label
    );
    let stop = shutdown.clone();
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
        .context("the HTTP server failed")?;
    shutdown.cancel();
    while loops.join_next().await.is_some() {}
    Ok(())
}

pub async fn worker(args: WorkerArgs) -> anyhow::Result<()> {
    let settings = settings()?;
    // Read before the model loads, so a bad setting fails at once.
    let protection = TaskProtectionSettings::from_env().map_err(anyhow::Error::msg)?;
    spawn_liveness();
    let (s, m, family) = (settings.clone(), args.model.clone(), args.family);
    let generator = tokio::task::spawn_blocking(move || load_generator(family, &s, &m)).await??;
    let backends = backends::connect(
        args.backend.backend,
        &args.backend.data_dir,
        "http://127.0.0.1",
        &settings,
    )
    .await?;
    let mut config = WorkerConfig::new(args.family);
    config.max_batch = args.model.max_batch.max(1);
    config.visibility_timeout = backends.visibility_timeout;
    let shutdown = shutdown_on_signal();
    let mut worker = Worker::new(backends.ports, settings, generator, config);
    if let Some(protection) = protection {
        tracing::info!(
            minutes = protection.expires_in_minutes,
            "holding ECS task scale-in protection while jobs are in hand"
        );
        worker = worker.with_scale_in_protection(Arc::new(EcsTaskProtection::new(&protection)?));
    }
    worker.run(shutdown.cancelled_owned()).await;
    Ok(())
}

pub async fn completion(args: BackendArgs) -> anyhow::Result<()> {
    let settings = settings()?;
    spawn_liveness();
    let backends =
        backends::connect(args.backend, &args.data_dir, "http://127.0.0.1", &settings).await?;
    let shutdown = shutdown_on_signal();
    CompletionLoop::new(backends.ports, settings)
        .run(shutdown.cancelled_owned())
        .await;
    Ok(())
}
