//! Running the service's parts: the API on a TCP listener, worker loops and
//! the completion loop, all stopped cleanly by Ctrl-C or SIGTERM (what ECS
//! and systemd send): the API stops accepting, in-flight requests finish,
//! a running job stops at its next decoding step and goes back to the queue,
//! and a `/v1/generate` waiter gets its `202` at once.

use std::sync::Arc;

use anyhow::Context;
use sound_creator_aws::task_protection::EcsTaskProtection;
use sound_creator_core::audio::AudioGenerator;
use sound_creator_core::models::{DeployedModel, DeployedModels};
use sound_creator_core::service::TaskService;
use sound_creator_core::task::ModelFamily;
use sound_creator_functions::api::{app, AppState};
use sound_creator_functions::connections::{self, ConnectionLimits};
use sound_creator_settings::Settings;
use sound_creator_worker::{CompletionLoop, Worker, WorkerConfig};
use tokio_util::sync::CancellationToken;

use crate::backends;
use crate::models::load_generators;
use crate::telemetry::start_metrics;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parts {
    All,
    ApiOnly,
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

/// While the process runs, refreshes `LIVENESS_FILE` (when set) every few
/// seconds: the container's health check (docker/healthcheck.sh) reads its
/// age. It starts before the model loads, so it says the process and its
/// runtime are alive, not that a job is moving (the queue's visibility
/// timeout and receive count take care of a stuck job).
fn spawn_liveness(settings: &Settings) {
    let Some(path) = settings.worker.liveness_file.clone() else {
        return;
    };
    tokio::spawn(async move {
        let mut warned = false;
        loop {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default();
            if let Err(e) = tokio::fs::write(&path, format!("{now}\n")).await {
                if !warned {
                    tracing::warn!(path = %path.display(), error = %e, "cannot write the liveness file");
                    warned = true;
                }
            }
            tokio::time::sleep(std::time::Duration::from_secs(10)).await;
        }
    });
}

/// `serve` and `api` need at least one client key, or no one could call
/// the API.
pub fn check_serving(settings: &Settings) -> anyhow::Result<()> {
    if settings.api.client_keys.is_empty() {
        anyhow::bail!("no client key is configured: set MARKETPLACE_TOKEN (and optionally API_KEYS=name:token,...)");
    }
    Ok(())
}

pub async fn serve(mut settings: Settings, parts: Parts) -> anyhow::Result<()> {
    check_serving(&settings)?;
    // Models first: a deployment that cannot generate should not start
    // taking tasks.
    let mut generators = Vec::new();
    if parts == Parts::All {
        for family in settings.service.deployed.clone() {
            let models = settings.models.clone();
            match tokio::task::spawn_blocking(move || load_generators(family, &models)).await? {
                Ok(loaded) => generators.extend(loaded.into_iter().map(|g| (family, g))),
                // DEPLOYED_TYPES unset means "what this machine can serve":
                // a MusicGen box needs no AudioGen weights to start.
                Err(e) if !settings.models.deployed_types_set => {
                    tracing::warn!(
                        %family,
                        error = %format!("{e:#}"),
                        "not serving this family: its model did not load; its tasks answer \
                         model_not_deployed (set DEPLOYED_TYPES to make this fatal)"
                    );
                    settings.service.deployed.remove(&family);
                }
                Err(e) => return Err(e),
            }
        }
        let served: Vec<&str> = settings
            .service
            .deployed
            .iter()
            .map(|f| f.as_str())
            .collect();
        tracing::info!(families = ?served, "serving");
    }
    serve_with(settings, parts, generators).await
}

/// The deployment's models as `GET /v1/models` and the submit-time checks
/// see them: for each family with loaded generators, those generators' own
/// description (the first of a family is its default); the settings' view
/// for the others.
fn describe_models(
    configured: &DeployedModels,
    generators: &[(ModelFamily, Arc<dyn AudioGenerator>)],
) -> DeployedModels {
    let mut models: Vec<DeployedModel> = Vec::new();
    for family in ModelFamily::ALL {
        let loaded: Vec<_> = generators.iter().filter(|(f, _)| *f == family).collect();
        if loaded.is_empty() {
            models.extend(
                configured
                    .all()
                    .iter()
                    .filter(|m| m.family == family)
                    .cloned(),
            );
        } else {
            models.extend(
                loaded
                    .iter()
                    .enumerate()
                    .map(|(i, (_, g))| DeployedModel::loaded(family, i == 0, &g.info())),
            );
        }
    }
    DeployedModels::new(models)
}

/// Serves the API and, for `Parts::All`, a worker per family of the given
/// generators (the first of a family is its default model) and the
/// completion loop, until Ctrl-C or SIGTERM. `serve` calls it with the
/// loaded models; the pipeline benchmark's harness with a no-op generator.
pub async fn serve_with(
    mut settings: Settings,
    parts: Parts,
    generators: Vec<(ModelFamily, Arc<dyn AudioGenerator>)>,
) -> anyhow::Result<()> {
    settings.service.models = describe_models(&settings.service.models, &generators);
    let api = &settings.api;
    let listener = tokio::net::TcpListener::bind((api.bind_host.as_str(), api.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", api.bind_host, api.port))?;
    let bound = listener.local_addr()?;
    let public_base_url = api
        .public_base_url
        .clone()
        .unwrap_or_else(|| format!("http://127.0.0.1:{}", bound.port()));
    let backends = backends::connect(&settings, &public_base_url).await?;
    let service_settings = Arc::new(settings.service.clone());

    let shutdown = shutdown_on_signal();
    let metrics = start_metrics(
        &settings.telemetry,
        backends.ports.queue.clone(),
        shutdown.clone(),
    )
    .await?;
    let mut loops = tokio::task::JoinSet::new();
    for family in ModelFamily::ALL {
        let mut models = generators
            .iter()
            .filter(|(f, _)| *f == family)
            .map(|(_, g)| g.clone());
        let Some(default) = models.next() else {
            continue;
        };
        let config = WorkerConfig::new(
            family,
            settings.worker.max_batch,
            settings.worker.max_attempts,
            backends.visibility_timeout,
        );
        let worker = Worker::new(
            backends.ports.clone(),
            service_settings.clone(),
            default,
            config,
        )
        .with_more_models(models.collect());
        let stop = shutdown.clone();
        loops.spawn(async move { worker.run(stop.cancelled_owned()).await });
    }
    if parts == Parts::All {
        // `/v1/generate` waiters in this process can sleep until this loop
        // signals their task final instead of polling the store.
        backends.ports.finals.mark_completion_local();
        let completion = CompletionLoop::new(backends.ports.clone(), service_settings.clone());
        let stop = shutdown.clone();
        loops.spawn(async move { completion.run(stop.cancelled_owned()).await });
    }

    let service = Arc::new(TaskService::new(backends.ports.clone(), service_settings));
    {
        // A pending `/v1/generate` answers its 202 at once on SIGTERM,
        // instead of holding the shutdown up for up to a minute.
        let (service, stop) = (service.clone(), shutdown.clone());
        tokio::spawn(async move {
            stop.cancelled().await;
            service.stop_waiting();
        });
    }
    let mut state = AppState::new(
        service,
        Arc::new(settings.api.clone()),
        backends.downloads.clone(),
    );
    if let Some(uploads) = backends.uploads.clone() {
        state = state.with_signed_uploads(uploads);
    }
    let router = app(state.with_shutdown(shutdown.clone()));
    // The first and only line on stdout says where to reach the service
    // (tests and scripts read it to learn the ports when 0 was given).
    let metrics = metrics.map_or(String::new(), |addr| {
        format!("; metrics on http://{addr}/metrics")
    });
    println!(
        "sound-creator listening on http://{bound} ({} backends{metrics})",
        backends.label
    );
    let stop = shutdown.clone();
    connections::serve(
        listener,
        router,
        ConnectionLimits::of(&settings.api),
        async move { stop.cancelled().await },
    )
    .await;
    shutdown.cancel();
    while loops.join_next().await.is_some() {}
    Ok(())
}

pub async fn worker(settings: Settings, family: ModelFamily) -> anyhow::Result<()> {
    spawn_liveness(&settings);
    let models = settings.models.clone();
    let mut generators =
        tokio::task::spawn_blocking(move || load_generators(family, &models)).await??;
    let generator = generators.remove(0);
    let backends = backends::connect(&settings, "http://127.0.0.1").await?;
    let config = WorkerConfig::new(
        family,
        settings.worker.max_batch,
        settings.worker.max_attempts,
        backends.visibility_timeout,
    );
    let shutdown = shutdown_on_signal();
    start_metrics(
        &settings.telemetry,
        backends.ports.queue.clone(),
        shutdown.clone(),
    )
    .await?;
    let mut worker = Worker::new(
        backends.ports,
        Arc::new(settings.service),
        generator,
        config,
    )
    .with_more_models(generators);
    if let Some(protection) = &settings.worker.task_protection {
        tracing::info!(
            minutes = protection.expires_in_minutes,
            "holding ECS task scale-in protection while jobs are in hand"
        );
        worker = worker.with_scale_in_protection(Arc::new(EcsTaskProtection::new(protection)?));
    }
    worker.run(shutdown.cancelled_owned()).await;
    Ok(())
}

pub async fn completion(settings: Settings) -> anyhow::Result<()> {
    spawn_liveness(&settings);
    let backends = backends::connect(&settings, "http://127.0.0.1").await?;
    let shutdown = shutdown_on_signal();
    start_metrics(
        &settings.telemetry,
        backends.ports.queue.clone(),
        shutdown.clone(),
    )
    .await?;
    CompletionLoop::new(backends.ports, Arc::new(settings.service))
        .run(shutdown.cancelled_owned())
        .await;
    Ok(())
}
