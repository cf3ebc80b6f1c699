//! `GET /v1/events/{task_id}`: a task's events as server-sent events. The
//! events themselves come from `sound_creator_core::events`; this module only
//! frames them, either as a stream held open until the result event, or (for
//! a gateway that buffers responses) as the events so far with `retry:` so an
//! EventSource client reconnects for the next ones.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use sound_creator_core::events::{TaskEvent, TaskEvents};
use sound_creator_core::task::Tenant;
use sound_creator_core::view::ErrorDocument;

use super::error::ApiError;
use super::extract::TaskIdPath;
use super::{AppState, EventDelivery};

/// How long an EventSource client waits before it reconnects: after a
/// snapshot, the polling period of a buffered deployment.
const RETRY: Duration = Duration::from_secs(2);

/// Server-sent events for one task: `status` on every change, `progress`
/// while it runs, then `result` with the result document, and the stream ends.
#[utoipa::path(
    get, path = "/v1/events/{task_id}", tag = "tasks",
    params(("task_id" = String, Path, description = "The id /v1/call returned")),
    responses(
        (status = 200, description = "`text/event-stream`: `event: status` (`{task_id, status, queue?}`), \
            `event: progress` (`{progress, step, steps}`), then `event: result` (the result document) and the end. \
            Where the deployment cannot stream, the events so far with `retry:` set.",
            content_type = "text/event-stream", body = String),
        (status = 401, body = ErrorDocument),
        (status = 404, description = "Unknown or not yours (`task_not_found`), or past RESULT_TTL (`expired_result`)", body = ErrorDocument),
        (status = 503, body = ErrorDocument),
    ),
    security(("bearer" = []))
)]
pub async fn events(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    TaskIdPath(id): TaskIdPath,
) -> Result<Response, ApiError> {
    // Opening reads the task: another key's task is a 404 here, before any
    // event is sent.
    let mut events = TaskEvents::open(state.service.clone(), tenant, &id).await?;
    if state.events == EventDelivery::Snapshot {
        return Ok(snapshot(events.ready()));
    }
    let shutdown = state.shutdown.clone();
    let mut first = true;
    let stream = futures_util::stream::unfold(Some(events), move |events| {
        let shutdown = shutdown.clone();
        let retry = std::mem::take(&mut first);
        async move {
            let mut events = events?;
            let event = tokio::select! {
                event = events.next() => event?,
                () = shutdown.cancelled() => return None,
            };
            let mut frame = sse_event(&event);
            if retry {
                frame = frame.retry(RETRY);
            }
            Some((Ok::<_, Infallible>(frame), Some(events)))
        }
    });
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response();
    // Proxies (nginx) must pass the events on as they come.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

fn sse_event(event: &TaskEvent) -> Event {
    Event::default().event(event.name()).data(event.data())
}

/// The events ready now as one complete `text/event-stream` body.
fn snapshot(events: Vec<TaskEvent>) -> Response {
    let mut body = format!("retry: {}\n\n", RETRY.as_millis());
    for event in &events {
        body.push_str(&format!(
            "event: {}\ndata: {}\n\n",
            event.name(),
            event.data()
        ));
    }
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}
