//! The HTTP server scaffolding every service shares.
//!
//! A service implements [`Service::handle`] as one `match` over the path segments (slice patterns
//! read like a route table); each arm first checks the method with [`allow`], so a route is
//! written once and a known path asked with another method answers 405, never 404. This module adds what every service needs around it:
//! `GET /<prefix>/health` and `GET /<prefix>/metrics`, a tracing span per request, request metrics,
//! JSON error bodies for every failure (unknown routes included) and graceful shutdown on SIGTERM or
//! Ctrl-C.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use tracing::Instrument;
use warp::Filter;

pub use warp::http::{Method, StatusCode};

use crate::error::ApiError;
use crate::metrics::Metrics;

/// An HTTP response.
pub type Response = warp::reply::Response;

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

async fn dispatch<S: Service>(svc: Arc<S>, method: Method, path: String) -> Response {
    let started = Instant::now();
    let segments: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let mut route = route_label(&segments);
    let span = tracing::info_span!("request", %method, path = %path, saga = tracing::field::Empty);
    let result = async {
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
    let resp = match result {
        Ok(resp) => resp,
        Err(err) => {
            if matches!(err, ApiError::NoRoute(_) | ApiError::MethodNotAllowed(_)) {
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
    let routes = warp::method().and(warp::path::full()).then(
        move |method: Method, path: warp::path::FullPath| {
            let svc = svc.clone();
            async move { dispatch(svc, method, path.as_str().to_string()).await }
        },
    );
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
