//! Serving the API's [`Router`] on a TCP listener with the limits a public
//! server needs, which `axum::serve` does not set: a connection must send
//! its request headers within `header_timeout` (or it is closed: no
//! slowloris), bodies are read within the body timeout (the extractors,
//! `HTTP_BODY_TIMEOUT_MS`), and at most `max_connections` are served at once
//! (further ones wait in the listen backlog).
//!
//! hyper answers a request it cannot parse (a bad request line, a URI or
//! headers too large) itself, with an empty body. [`ContractErrors`] turns
//! those answers into the contract's error shape on their way out, so every
//! answer a client gets reads the same way.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use sound_creator_core::error_code::ErrorCode;
use sound_creator_core::view::{ErrorBody, ErrorDocument};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// What one server instance allows its clients.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub header_timeout: Duration,
    pub max_connections: usize,
    /// How long a stopping server waits for requests in flight.
    pub drain_timeout: Duration,
}

impl ConnectionLimits {
    pub fn of(api: &sound_creator_settings::ApiSettings) -> Self {
        Self {
            header_timeout: api.header_timeout,
            max_connections: api.max_connections,
            // Within the 30 s that ECS and Docker give before SIGKILL.
            drain_timeout: Duration::from_secs(20),
        }
    }
}

/// Serves `router` until `shutdown` resolves, then stops accepting and lets
/// the requests in flight finish (within `drain_timeout`).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait, not spin.
                    tracing::warn!(error = %e, "could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(router.clone());
        let connection = http.serve_connection(TokioIo::new(ContractErrors::new(stream)), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still in flight after the drain timeout; stopping anyway");
    }
}

/// A connection whose hyper-made error answers (400, 414, 431 with an empty
/// body) are rewritten into the contract's JSON error shape. The router's
/// own answers always carry a `content-type`, so an empty-bodied one of
/// these statuses can only be hyper's.
pub struct ContractErrors<T> {
    inner: T,
    /// A rewritten answer not yet all written, and how much of it was.
    pending: Vec<u8>,
    written: usize,
}

impl<T> ContractErrors<T> {
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            pending: Vec::new(),
            written: 0,
        }
    }
}

/// The contract's answer for a head hyper wrote itself, if `buf` is one.
fn rewrite(buf: &[u8]) -> Option<Vec<u8>> {
    let code = match buf.get(..13)? {
        b"HTTP/1.1 400 " | b"HTTP/1.0 400 " => ErrorCode::BadRequest,
        b"HTTP/1.1 414 " | b"HTTP/1.0 414 " => ErrorCode::UriTooLong,
        b"HTTP/1.1 431 " | b"HTTP/1.0 431 " => ErrorCode::HeadersTooLarge,
        _ => return None,
    };
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    if head.contains("\r\ncontent-type:") || !head.contains("\r\ncontent-length: 0") {
        return None;
    }
    let message = match code {
        ErrorCode::UriTooLong => "the request URI is too long",
        ErrorCode::HeadersTooLarge => "the request headers are too large",
        _ => "the request line or headers cannot be read",
    };
    let body = serde_json::to_vec(&ErrorDocument {
        error: ErrorBody {
            code,
            message: message.into(),
            field: None,
        },
    })
    .ok()?;
    let status_line = &buf[..buf.windows(2).position(|w| w == b"\r\n")?];
    let mut answer = Vec::with_capacity(200 + body.len());
    answer.extend_from_slice(status_line);
    answer.extend_from_slice(
        format!(
            "\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    answer.extend_from_slice(&body);
    Some(answer)
}

impl<T: AsyncWrite + Unpin> ContractErrors<T> {
    /// Writes out a rewritten answer; `Ready(Ok)` once none is left.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let n = std::task::ready!(
                Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.written..])
            )?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.pending.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ContractErrors<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ContractErrors<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        std::task::ready!(self.poll_pending(cx))?;
        if let Some(answer) = rewrite(buf) {
            self.pending = answer;
            self.written = 0;
            // The rewritten answer stands for all of hyper's; the rest is
            // written by the flush that follows.
            let _ = self.poll_pending(cx)?;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    // Not vectored, so that hyper writes each head in one buffer, which
    // `rewrite` can recognise whole.
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hyper_s_empty_error_answers_get_the_contract_shape() {
        let hyper_431 =
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let answer = String::from_utf8(rewrite(hyper_431).expect("rewritten")).expect("utf-8");
        assert!(answer.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        let (_, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
        let doc: serde_json::Value = serde_json::from_str(body).expect("json");
        assert_eq!(doc["error"]["code"], "headers_too_large");
        assert!(answer.contains(&format!("content-length: {}\r\n", body.len())));
    }

    #[test]
    fn the_router_s_own_answers_pass_untouched() {
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
        assert!(rewrite(ours).is_none());
        assert!(rewrite(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(rewrite(b"{\"partial\": \"body\"}").is_none());
    }
}
