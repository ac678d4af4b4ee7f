//! The HTTP server of `GET /metrics` (hyper, HTTP/1.1). A scrape renders on tokio's blocking
//! pool, never on the runtime thread that runs the agent's poll loop; a connection gets a
//! header-read timeout and a deadline for the whole exchange, at most [`MAX_CONNECTIONS`] are
//! served at once (the others wait in the kernel's backlog), and accept errors (out of file
//! descriptors, say) back off instead of spinning.

use std::{convert::Infallible, io, net::SocketAddr, sync::Arc, time::Duration};

use http_body_util::Full;
use hyper::{
    body::{Bytes, Incoming},
    header::CONTENT_TYPE,
    server::conn::http1,
    service::service_fn,
    Method, Request, Response, StatusCode,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, sync::Semaphore};

use crate::export::collector::Exporter;

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 64;
/// Time a client has to send its request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a whole connection may take, request to last byte of the answer.
const CONNECTION_DEADLINE: Duration = Duration::from_secs(60);
/// First and longest pause after an accept error.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));

/// Binds `addr` and serves until the task is dropped. Returns the bound address (port 0 picks
/// a free one).
pub async fn serve(
    addr: SocketAddr,
    exporter: Arc<Exporter>,
) -> io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(accept_loop(listener, exporter));
    Ok((bound, task))
}

async fn accept_loop(listener: TcpListener, exporter: Arc<Exporter>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut backoff = ACCEPT_BACKOFF.0;
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => {
                backoff = ACCEPT_BACKOFF.0;
                stream
            }
            Err(e) => {
                tracing::warn!("metrics: accept failed ({e}); retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF.1);
                continue;
            }
        };
        let exporter = exporter.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| answer(req, exporter.clone()));
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_DEADLINE, conn).await {
                Ok(Err(e)) => tracing::debug!("metrics connection: {e}"),
                Err(_) => tracing::debug!("metrics connection: over {CONNECTION_DEADLINE:?}"),
                Ok(Ok(())) => {}
            }
            drop(permit);
        });
    }
}

async fn answer(
    req: Request<Incoming>,
    exporter: Arc<Exporter>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, content_type: &'static str, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r.headers_mut().insert(
            CONTENT_TYPE,
            hyper::header::HeaderValue::from_static(content_type),
        );
        Ok(r)
    };
    if req.method() != Method::GET {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
    }
    match req.uri().path() {
        "/metrics" => {
            // Rendering takes up to a second at 10,000 sections: off the runtime thread.
            let body = tokio::task::spawn_blocking(move || exporter.render())
                .await
                .unwrap_or_default();
            reply(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                body,
            )
        }
        "/" => reply(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            "rseq-trace: metrics at /metrics\n".into(),
        ),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}
