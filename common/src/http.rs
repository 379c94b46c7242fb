//! The HTTP server scaffolding every service shares.
//!
//! A service implements [`Service::handle`] (or [`Service::handle_request`], when it reads the
//! request's `Idempotency-Key`) as one `match` over the path segments ([`path`]: slice patterns
//! read like a route table); each arm first checks the method with [`allow`], so a route is
//! written once and a known path asked with another method answers 405, never 404. A service that
//! keeps state behind log consumers hands its [`Backing`] to [`Service::backing`] and gets its
//! health and shutdown from it. This module adds what every service needs around it:
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

mod backing;

pub use backing::Backing;

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
    /// included, e.g. `["stock", "add", "<id>", "5"]`. Unknown paths answer [`not_found`]. The
    /// default answers every path so: a service that routes in [`Service::handle_request`]
    /// instead need not write this one too.
    fn handle(
        self: Arc<Self>,
        method: Method,
        segments: Vec<String>,
    ) -> impl Future<Output = HandlerResult> + Send {
        let _ = method;
        async move { Err(not_found(&segments)) }
    }

    /// Answers one request with what the headers said about it ([`Meta`]: its
    /// `Idempotency-Key`, when it reached the gateway). Services that store answers
    /// ([`crate::idempotency`]) implement this and route from it; the default ignores `meta`,
    /// for a service that keeps nothing to replay (the ID service: a repeated id batch leases
    /// other ids, which is harmless).
    fn handle_request(
        self: Arc<Self>,
        method: Method,
        segments: Vec<String>,
        meta: Meta,
    ) -> impl Future<Output = HandlerResult> + Send {
        let _ = meta;
        self.handle(method, segments)
    }

    /// The database, consumers and retention of a service that keeps state behind log
    /// consumers (order, stock, payment), from which the defaults of [`Service::healthy`] and
    /// [`Service::stop`] work; `None` (the default) for a service without them.
    fn backing(&self) -> Option<&Backing> {
        None
    }

    /// Whether the service can do its work (its database answers, its consumers run); `Err`
    /// says what is wrong. Drives `/health` (503 when `Err`). The default asks the
    /// [`Service::backing`], and is `Ok` for a service without one.
    fn healthy(self: Arc<Self>) -> impl Future<Output = Health> + Send {
        async move {
            match self.backing() {
                Some(b) => b.health().await,
                None => Ok(()),
            }
        }
    }

    /// Stops the service's background work (the consumers of its [`Service::backing`], by
    /// default) once the server stopped accepting requests.
    fn stop(self: Arc<Self>) -> impl Future<Output = ()> + Send {
        async move {
            if let Some(b) = self.backing() {
                b.consumers.stop().await
            }
        }
    }

    /// The process's metrics registry.
    fn metrics(&self) -> &Metrics;
}

/// What a request's headers say, read once when it arrives.
#[derive(Debug, Clone)]
pub struct Meta {
    /// The POST's `Idempotency-Key`, valid (an invalid one was answered 400 already).
    pub key: Option<crate::idempotency::Key>,
    /// When the request reached the system: when the gateway first received it, by the
    /// gateway's `X-Request-Start: t=<seconds.millis>` ([`REQUEST_START`]), so that a request
    /// the gateway moved to this replica after another one died keeps its first deadline (a
    /// checkout is answered within `CHECKOUT_TIMEOUT_MS` + 1 s of this); else now.
    pub arrived: tokio::time::Instant,
}

impl Meta {
    /// A request that arrived now, without a key (tests, internal calls).
    pub fn now() -> Meta {
        Meta {
            key: None,
            arrived: tokio::time::Instant::now(),
        }
    }
}

/// The header the gateway stamps with the time it received a request (`t=<seconds.millis>`,
/// nginx's `$msec`; the convention of `X-Request-Start`). nginx evaluates it once, so a retry on
/// another replica carries the first attempt's time.
pub const REQUEST_START: &str = "x-request-start";

/// The most a request's [`REQUEST_START`] may lie in the past: older (a wrong clock, a forged
/// header) counts as this old, so a header can shorten a deadline, never hold a handler longer.
const MAX_REQUEST_AGE: std::time::Duration = std::time::Duration::from_secs(60);

/// How long ago a request with `X-Request-Start: value` reached the gateway (`now`: the wall
/// clock), within `[0, MAX_REQUEST_AGE]`; `None` for a value that does not parse. A time in the
/// future (clocks apart) counts as now.
fn request_age(value: &[u8], now: std::time::SystemTime) -> Option<std::time::Duration> {
    let text = std::str::from_utf8(value).ok()?.trim();
    let secs: f64 = text.strip_prefix("t=").unwrap_or(text).parse().ok()?;
    if !secs.is_finite() || secs < 0.0 {
        return None;
    }
    let start =
        std::time::UNIX_EPOCH.checked_add(std::time::Duration::try_from_secs_f64(secs).ok()?)?;
    Some(
        now.duration_since(start)
            .unwrap_or_default()
            .min(MAX_REQUEST_AGE),
    )
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

/// The path segments as `&str`, for a route table's slice patterns (`["stock", "find", id]`).
pub fn path(segments: &[String]) -> Vec<&str> {
    segments.iter().map(String::as_str).collect()
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

/// Answers one request whose body has been read (`body`) and whose `Idempotency-Key` has been
/// parsed (`key`), which reached the system at `arrived`: refused for its body or its key, or
/// routed.
async fn dispatch<S: Service>(
    svc: Arc<S>,
    method: Method,
    path: String,
    body: Body,
    key: Result<Option<crate::idempotency::Key>, ApiError>,
    arrived: tokio::time::Instant,
) -> Response {
    let started = Instant::now();
    let segments: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let mut route = route_label(&segments);
    let span = tracing::info_span!("request", %method, path = %path, saga = tracing::field::Empty);
    let (refusal, key) = match (body_refusal(&body), key) {
        (Some(err), _) | (None, Err(err)) => (Some(err), None),
        (None, Ok(key)) => (None, key),
    };
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
                svc.clone()
                    .handle_request(method.clone(), segments.clone(), Meta { key, arrived })
                    .await
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

/// Routes a process serves beside its [`Service`]: tried first, and a request they reject goes
/// on to the service. The log parser serves its operator console (`/console/`) this way, which
/// needs what [`Service::handle`] does not see: the query, the headers, a form body.
pub type Extra = warp::filters::BoxedFilter<(Response,)>;

/// Serves `svc` on `addr` until SIGTERM or Ctrl-C, then finishes in-flight requests and returns.
pub async fn serve<S: Service>(svc: Arc<S>, addr: SocketAddr) -> anyhow::Result<()> {
    let none = warp::any()
        .and_then(|| async { Err::<Response, _>(warp::reject::not_found()) })
        .boxed();
    serve_with(svc, addr, none).await
}

/// [`serve`], with `extra` routes tried before the service's (see [`Extra`]).
pub async fn serve_with<S: Service>(
    svc: Arc<S>,
    addr: SocketAddr,
    extra: Extra,
) -> anyhow::Result<()> {
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
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .then(
            move |method: Method,
                  path: warp::path::FullPath,
                  headers: warp::http::HeaderMap,
                  body| {
                let svc = svc.clone();
                async move {
                    let now = tokio::time::Instant::now();
                    let age = headers
                        .get(REQUEST_START)
                        .and_then(|v| request_age(v.as_bytes(), std::time::SystemTime::now()))
                        .unwrap_or_default();
                    let arrived = now.checked_sub(age).unwrap_or(now);
                    let body = drain(body).await;
                    // Only a POST changes anything, so only a POST's key is read (API.md).
                    let key = if method == Method::POST {
                        crate::idempotency::Key::parse(
                            headers
                                .get_all(crate::idempotency::HEADER)
                                .iter()
                                .map(|v| v.as_bytes()),
                        )
                    } else {
                        Ok(None)
                    };
                    dispatch(svc, method, path.as_str().to_string(), body, key, arrived).await
                }
            },
        );
    warp::serve(extra.or(routes).unify())
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

    #[test]
    fn the_gateway_s_request_start_gives_the_age_within_bounds() {
        use std::time::{Duration, UNIX_EPOCH};
        let now = UNIX_EPOCH + Duration::from_millis(1_700_000_010_500);
        let age = |v: &str| request_age(v.as_bytes(), now);
        assert_eq!(age("t=1700000010.000"), Some(Duration::from_millis(500)));
        assert_eq!(age("1700000009.500"), Some(Duration::from_secs(1)));
        assert_eq!(
            age("t=1700000099.000"),
            Some(Duration::ZERO),
            "in the future: now"
        );
        assert_eq!(age("t=1.000"), Some(MAX_REQUEST_AGE), "ancient: capped");
        for bad in ["", "t=", "t=abc", "t=-1", "t=NaN", "t=inf"] {
            assert_eq!(age(bad), None, "{bad}");
        }
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
