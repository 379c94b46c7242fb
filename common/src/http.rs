//! The HTTP server scaffolding every service shares.
//!
//! A service implements [`Service::handle`] as one `match` over the path segments (slice patterns
//! read like a route table); each arm first checks the method with [`allow`], so a route is
//! written once and a known path asked with another method answers 405, never 404. This module adds what every service needs around it:
//! `GET /<prefix>/health` and `GET /<prefix>/metrics`, a tracing span per request, request metrics,
//! JSON error bodies for every failure (unknown routes included) and graceful shutdown on SIGTERM or
//! Ctrl-C.
//!
//! **Request bodies.** No endpoint takes a body: every parameter is in the path. A body is still
//! read to its end, and thrown away, before the request is handled (see [`MAX_BODY_BYTES`]):
//! hyper closes a connection whose request body was left unread, and the gateway, still writing
//! that body into its keep-alive connection, then met a broken pipe and answered 503 for what was
//! only hostile input (issue 13).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use futures::{Stream, StreamExt};
use serde::Serialize;
use tracing::Instrument;
// `Buf`: warp's re-export of `bytes::Buf`, the type of a body chunk (common has no `bytes` dependency).
use warp::{Buf, Filter};

pub use warp::http::{Method, StatusCode};

use crate::error::ApiError;
use crate::metrics::Metrics;

/// An HTTP response.
pub type Response = warp::reply::Response;

/// The largest request body a service accepts, and ignores: 16 KiB. No endpoint takes a body, so
/// this only bounds what a careless client may send along (an empty JSON object, a form); a
/// larger body is refused with 413 before the request is handled, so it changes nothing. The
/// gateway refuses larger bodies itself with the same limit (`cli/src/nginx.rs` renders it from
/// this constant), so a body it lets through is never refused behind it.
pub const MAX_BODY_BYTES: u64 = 16 * 1024;

/// How much of a body larger than [`MAX_BODY_BYTES`] a service still reads (and throws away)
/// before it answers 413. Reading it keeps the connection clean: a client, or the gateway, still
/// writing a body into a connection the server closed gets a reset instead of the answer. Past
/// this the 413 goes out with `Connection: close` and the rest is left unread, so that one
/// request costs at most this much reading. Only a client talking to a service directly can get
/// there: the gateway refuses such a body itself.
const DRAIN_LIMIT_BYTES: u64 = 1024 * 1024;

/// What reading a request's body found.
#[derive(Debug, PartialEq)]
enum Body {
    /// Read to its end; this many bytes, thrown away.
    Read(u64),
    /// Longer than [`DRAIN_LIMIT_BYTES`]: reading stopped, the rest is still in the connection.
    Unread,
    /// The body broke off: the client closed early or sent a malformed chunk.
    Broken(String),
}

/// Reads a request body to its end without keeping it (memory stays one chunk), stopping after
/// [`DRAIN_LIMIT_BYTES`].
async fn drain<B: Buf>(body: impl Stream<Item = Result<B, warp::Error>>) -> Body {
    let mut body = std::pin::pin!(body);
    let mut read: u64 = 0;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(chunk) => {
                read = read.saturating_add(chunk.remaining() as u64);
                if read > DRAIN_LIMIT_BYTES {
                    return Body::Unread;
                }
            }
            Err(e) => return Body::Broken(e.to_string()),
        }
    }
    Body::Read(read)
}

/// The refusal of a request for its body, if any: 413 for a body over [`MAX_BODY_BYTES`], 400
/// for one that broke off. A request so refused is never handled.
fn body_refusal(body: &Body) -> Option<ApiError> {
    let too_large = |size: String| {
        ApiError::PayloadTooLarge(format!(
            "request body too large ({size}): no endpoint takes a body, and one of at most \
             {MAX_BODY_BYTES} bytes is ignored"
        ))
    };
    match body {
        Body::Read(n) if *n <= MAX_BODY_BYTES => None,
        Body::Read(n) => Some(too_large(format!("{n} bytes"))),
        Body::Unread => Some(too_large(format!("over {DRAIN_LIMIT_BYTES} bytes"))),
        Body::Broken(e) => Some(ApiError::BadRequest(format!(
            "cannot read the request body: {e}"
        ))),
    }
}

/// What a handler returns.
pub type HandlerResult = Result<Response, ApiError>;

/// One shoplog HTTP service.
pub trait Service: Send + Sync + 'static {
    /// The path prefix (`"stock"`), also the service's name in metrics.
    const PREFIX: &'static str;

    /// Answers one request. `segments` are the raw (still percent-encoded) path segments, prefix
    /// included, e.g. `["stock", "add", "<id>", "5"]`. Unknown paths answer [`not_found`].
    fn handle(
        self: Arc<Self>,
        method: Method,
        segments: Vec<String>,
    ) -> impl Future<Output = HandlerResult> + Send;

    /// Whether the service can do its work (its database answers, its consumers run); `Err`
    /// says what is wrong. Drives `/health` (503 when `Err`).
    fn healthy(self: Arc<Self>) -> impl Future<Output = Health> + Send;

    /// Stops the service's background work (its consumers) once the server stopped accepting
    /// requests.
    fn stop(self: Arc<Self>) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// The process's metrics registry.
    fn metrics(&self) -> &Metrics;
}

/// A service's health: `Err` names what is wrong.
pub type Health = Result<(), &'static str>;

/// The health of a service whose work needs `db` (and, when it has consumers, `consumers`).
pub async fn health(
    db: &crate::db::Conn,
    consumers: Option<&crate::consumer::Consumers>,
) -> Health {
    if consumers.is_some_and(|c| !c.alive()) {
        return Err("a log consumer stopped");
    }
    if !crate::db::ping(db).await {
        return Err("database unreachable");
    }
    Ok(())
}

/// Checks a route's method: `Err(405)` naming the allowed one when `method` is another.
pub fn allow(method: &Method, allowed: Method) -> Result<(), ApiError> {
    if *method == allowed {
        Ok(())
    } else {
        Err(ApiError::MethodNotAllowed(format!(
            "{method} (use {allowed})"
        )))
    }
}

/// A 200 answer with a JSON body.
pub fn json<T: Serialize>(body: &T) -> HandlerResult {
    json_status(StatusCode::OK, body)
}

/// An answer with the given status and JSON body.
pub fn json_status<T: Serialize>(status: StatusCode, body: &T) -> HandlerResult {
    let bytes = serde_json::to_vec(body)
        .map_err(|e| ApiError::Internal(format!("cannot encode the answer: {e}")))?;
    let mut resp = Response::new(bytes.into());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        warp::http::header::CONTENT_TYPE,
        warp::http::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

/// A plain-text 200 answer.
pub fn text(body: String, content_type: &'static str) -> Response {
    let mut resp = Response::new(body.into());
    resp.headers_mut().insert(
        warp::http::header::CONTENT_TYPE,
        warp::http::HeaderValue::from_static(content_type),
    );
    resp
}

/// The error for a path no route matches.
pub fn not_found(segments: &[String]) -> ApiError {
    ApiError::NoRoute(format!("no route for /{}", segments.join("/")))
}

/// Renders an [`ApiError`] as `{"error": "..."}` with its status.
pub fn error_response(err: &ApiError) -> Response {
    #[derive(Serialize)]
    struct Body<'a> {
        error: &'a str,
    }
    let message = err.to_string();
    match json_status(err.status(), &Body { error: &message }) {
        Ok(resp) => resp,
        Err(_) => {
            let mut resp = Response::new(message.into());
            *resp.status_mut() = err.status();
            resp
        }
    }
}

/// The metrics label of a request: the prefix and the action, never the ids (bounded cardinality).
fn route_label(segments: &[String]) -> String {
    match segments {
        [] => "/".to_string(),
        [one] => format!("/{one}"),
        [prefix, action, ..] => format!("/{prefix}/{action}"),
    }
}

/// Answers one request whose body has been read (`body`): refused for its body, or routed.
async fn dispatch<S: Service>(svc: Arc<S>, method: Method, path: String, body: Body) -> Response {
    let started = Instant::now();
    let segments: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let mut route = route_label(&segments);
    let span = tracing::info_span!("request", %method, path = %path, saga = tracing::field::Empty);
    let refusal = body_refusal(&body);
    let refused_for_body = refusal.is_some();
    let result = async {
        if let Some(err) = refusal {
            return Err(err);
        }
        match (segments.as_slice(), &method) {
            ([p, h], &Method::GET) if p == S::PREFIX && h == "health" => {
                match svc.clone().healthy().await {
                    Ok(()) => json(&serde_json::json!({"status": "ok"})),
                    Err(problem) => json_status(
                        StatusCode::SERVICE_UNAVAILABLE,
                        &serde_json::json!({"status": "unavailable", "error": problem}),
                    ),
                }
            }
            ([p, m], &Method::GET) if p == S::PREFIX && m == "metrics" => {
                Ok(text(svc.metrics().render(), "text/plain; version=0.0.4"))
            }
            ([p, ..], _) if p == S::PREFIX => {
                svc.clone().handle(method.clone(), segments.clone()).await
            }
            _ => Err(not_found(&segments)),
        }
    }
    .instrument(span.clone())
    .await;
    let mut resp = match result {
        Ok(resp) => resp,
        Err(err) => {
            // The path of a request no handler saw may be anything: one label for all of them
            // keeps the metrics' series bounded.
            if refused_for_body
                || matches!(err, ApiError::NoRoute(_) | ApiError::MethodNotAllowed(_))
            {
                route = "unmatched".to_string();
            }
            let _enter = span.enter();
            if err.status().is_server_error() {
                tracing::error!(error = %err, "request failed");
            } else {
                tracing::debug!(error = %err, status = err.status().as_u16(), "request refused");
            }
            error_response(&err)
        }
    };
    if matches!(body, Body::Unread | Body::Broken(_)) {
        // Part of the body is still in the connection (or its framing is lost): it cannot carry
        // another request. Saying so lets the client expect the close.
        resp.headers_mut().insert(
            warp::http::header::CONNECTION,
            warp::http::HeaderValue::from_static("close"),
        );
    }
    svc.metrics()
        .observe_request(&route, resp.status().as_u16(), started.elapsed());
    resp
}

/// Serves `svc` on `addr` until SIGTERM or Ctrl-C, then finishes in-flight requests and returns.
pub async fn serve<S: Service>(svc: Arc<S>, addr: SocketAddr) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on {addr}: {e} (is another process using the port? set PORT)"
        )
    })?;
    tracing::info!(%addr, service = S::PREFIX, "listening");
    let stopper = svc.clone();
    // The body is read before anything else (see the module's doc): a request is answered only
    // once its body is out of the connection, so hyper keeps the connection alive.
    let routes = warp::method()
        .and(warp::path::full())
        .and(warp::body::stream())
        .then(move |method: Method, path: warp::path::FullPath, body| {
            let svc = svc.clone();
            async move {
                let body = drain(body).await;
                dispatch(svc, method, path.as_str().to_string(), body).await
            }
        });
    warp::serve(routes)
        .incoming(listener)
        .graceful(shutdown_signal())
        .run()
        .await;
    stopper.stop().await;
    tracing::info!(service = S::PREFIX, "stopped");
    Ok(())
}

/// Resolves on SIGTERM (what `shoplog down` sends) or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(
        sizes: &[usize],
    ) -> impl Stream<Item = Result<std::io::Cursor<Vec<u8>>, warp::Error>> {
        let chunks: Vec<_> = sizes
            .iter()
            .map(|n| Ok(std::io::Cursor::new(vec![b'x'; *n])))
            .collect();
        futures::stream::iter(chunks)
    }

    #[tokio::test]
    async fn a_body_is_read_to_its_end_and_counted() {
        assert_eq!(drain(chunks(&[])).await, Body::Read(0));
        assert_eq!(drain(chunks(&[3, 0, 4])).await, Body::Read(7));
        let limit = DRAIN_LIMIT_BYTES as usize;
        assert_eq!(drain(chunks(&[limit])).await, Body::Read(DRAIN_LIMIT_BYTES));
        assert_eq!(drain(chunks(&[limit, 1, 1 << 20])).await, Body::Unread);
    }

    #[test]
    fn a_body_over_the_limit_is_a_413_and_a_broken_one_a_400() {
        assert!(body_refusal(&Body::Read(0)).is_none());
        assert!(body_refusal(&Body::Read(MAX_BODY_BYTES)).is_none());
        for body in [Body::Read(MAX_BODY_BYTES + 1), Body::Unread] {
            let err = body_refusal(&body).map(|e| e.status());
            assert_eq!(err, Some(StatusCode::PAYLOAD_TOO_LARGE), "{body:?}");
        }
        let err = body_refusal(&Body::Broken("early eof".into())).map(|e| e.status());
        assert_eq!(err, Some(StatusCode::BAD_REQUEST));
    }
}
