//! The operator console: `/console/` through the gateway, served by the log-parser daemon (which
//! already reaches every database, the lock nodes, the ID service and the archive, and runs the
//! fenced recovery scripts).
//!
//! | module | job |
//! |---|---|
//! | this one | routing, the request's facts, errors as JSON (API) or HTML (pages) |
//! | [`pages`] | the HTML (maud templates), the embedded script and style sheet |
//! | [`overview`] | the services' metrics, scraped into a ring buffer of the last 10 minutes |
//! | [`filters`] | the saga list's query string |
//! | [`charts`] | SVG line charts |
//! | [`auth`] | the operator token and the same-origin check |
//! | [`actions`] | the recovery pass and a saga's re-drive, through the fenced scripts |
//!
//! Pages: `/console/` (overview), `/console/sagas` (list, filters, pages), `/console/sagas/<id>`
//! (one saga's timeline; an order id shows each of its sagas), `/console/login`. The JSON API the
//! pages' script polls, and scripts may call: `GET /console/api/overview`, `GET
//! /console/api/sagas?…`, `GET /console/api/sagas/<id>` (the document of `shoplog saga <id>
//! --json`), `POST /console/api/recover`, `POST /console/api/sagas/<id>/redrive`.

pub mod actions;
pub mod auth;
pub mod charts;
pub mod filters;
pub mod overview;
pub mod pages;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use common::db::Conn;
use common::ids::IdPool;
use common::metrics::Metrics;
use futures::{Stream, StreamExt};
use warp::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use warp::{Buf, Filter};

use crate::archive::ArchiveReport;
use crate::dbs::Dbs;
use crate::lease::Leadership;
use crate::recovery::{PassReport, Settings};

/// The HTTP response type of the console.
pub type Response = common::http::Response;

/// Where the active log parser says who it is (order-db, beside its checkpoints; a few
/// seconds' expiry, renewed every sample while it holds the lease), so that every instance's
/// overview, and a standby refusing an action, can name it.
pub const ACTIVE_KEY: &str = "logparser:active";

/// The largest request body the console reads (a login form): 16 KiB.
pub const MAX_BODY: usize = 16 * 1024;

/// What the daemon knows about itself, shared with the console: its name, whether it holds the
/// lease, and what its last passes did.
#[derive(Debug)]
pub struct DaemonStatus {
    /// `INSTANCE`.
    pub instance: String,
    /// Whether this instance holds the lease.
    pub leadership: Arc<Leadership>,
    /// The last recovery pass's report.
    pub last_pass: Mutex<Option<PassReport>>,
    /// The last archiving pass's report.
    pub last_archive: Mutex<Option<ArchiveReport>>,
    /// `LOG_RETAIN` in ms (`None`: archiving off).
    pub log_retain_ms: Option<u64>,
    /// `LEASE_TTL_MS`.
    pub lease_ttl_ms: u64,
}

impl DaemonStatus {
    /// The last recovery pass's report.
    pub fn last_pass(&self) -> Option<PassReport> {
        self.last_pass
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The last archiving pass's report.
    pub fn last_archive(&self) -> Option<ArchiveReport> {
        self.last_archive
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Why a console request is answered with an error; the status says which.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// Bad input: a malformed id, filter or page (400).
    #[error("{0}")]
    BadRequest(String),
    /// No token, or a wrong one (401).
    #[error("{0}")]
    Unauthorized(String),
    /// Read-only console, or a cross-site request (403).
    #[error("{0}")]
    Forbidden(String),
    /// No such page, saga or order (404).
    #[error("{0}")]
    NotFound(String),
    /// The route exists with another method (405).
    #[error("method not allowed: {0}")]
    MethodNotAllowed(String),
    /// The action does not apply to the saga in its state (409).
    #[error("{0}")]
    Conflict(String),
    /// The body is larger than [`MAX_BODY`] (413).
    #[error("request body too large (at most {MAX_BODY} bytes)")]
    TooLarge,
    /// A database or the lock nodes did not answer, or this instance is a standby (503: the
    /// gateway tries another instance).
    #[error("{0}")]
    Unavailable(String),
}

impl ConsoleError {
    /// The HTTP status of the error.
    pub fn status(&self) -> StatusCode {
        match self {
            ConsoleError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ConsoleError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ConsoleError::Forbidden(_) => StatusCode::FORBIDDEN,
            ConsoleError::NotFound(_) => StatusCode::NOT_FOUND,
            ConsoleError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ConsoleError::Conflict(_) => StatusCode::CONFLICT,
            ConsoleError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ConsoleError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl From<auth::Refusal> for ConsoleError {
    fn from(r: auth::Refusal) -> ConsoleError {
        match r {
            auth::Refusal::Missing | auth::Refusal::Wrong => {
                ConsoleError::Unauthorized(r.to_string())
            }
            auth::Refusal::ReadOnly | auth::Refusal::CrossSite(_) => {
                ConsoleError::Forbidden(r.to_string())
            }
        }
    }
}

/// What a handler answers.
pub type Answer = Result<Response, ConsoleError>;

/// One request, with what the console reads of it.
#[derive(Debug)]
pub struct Request {
    /// The method.
    pub method: Method,
    /// The path segments after `/console/`, percent-encoded as received.
    pub segments: Vec<String>,
    /// The raw query string (no `?`).
    pub query: String,
    /// The headers.
    pub headers: HeaderMap,
    /// The peer's address (the gateway's, behind it: see [`Request::who`]).
    pub remote: Option<SocketAddr>,
    /// The body (`None`: larger than [`MAX_BODY`]).
    pub body: Option<Vec<u8>>,
}

impl Request {
    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Who sent it, for the action log: the client the gateway saw (`X-Forwarded-For`), else
    /// the peer.
    pub fn who(&self) -> String {
        self.header("x-forwarded-for")
            .map(|f| f.split(',').next().unwrap_or("").trim().to_string())
            .filter(|f| !f.is_empty())
            .or_else(|| self.remote.map(|a| a.ip().to_string()))
            .unwrap_or_else(|| "unknown".into())
    }

    /// Whether the request is for the JSON API (errors answered as JSON, else HTML).
    pub fn is_api(&self) -> bool {
        self.segments.first().is_some_and(|s| s == "api")
    }

    /// The token the request presents.
    pub fn token(&self) -> Option<String> {
        auth::presented(self.header("authorization"), self.header("cookie"))
    }
}

/// The console: its settings, the daemon's state, and what it keeps (metrics history, the delivery report).
pub struct Console {
    status: Arc<DaemonStatus>,
    token: Option<String>,
    settings: Settings,
    scrape: Vec<(String, String)>,
    lock_urls: Vec<String>,
    ids_url: String,
    metrics: Arc<Metrics>,
    dbs: OnceLock<Dbs>,
    ids: OnceLock<Arc<IdPool>>,
    history: Mutex<overview::History>,
    /// The last delivery report and when it was read.
    groups: tokio::sync::Mutex<Option<(std::time::Instant, Vec<crate::delivery::GroupReport>)>>,
    /// One action at a time.
    acting: tokio::sync::Mutex<()>,
    http: reqwest::Client,
}

impl Console {
    /// A console for the daemon whose state is `status`, configured by `config`.
    pub fn new(
        config: &common::config::Config,
        status: Arc<DaemonStatus>,
        metrics: Arc<Metrics>,
    ) -> Console {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(2))
            .build()
            .unwrap_or_default();
        Console {
            status,
            token: config.console_token.clone(),
            settings: Settings {
                saga_timeout: config.saga_timeout,
                redrive_after: config.redrive_after,
            },
            scrape: config.console_scrape.clone(),
            lock_urls: config.lock_urls.clone(),
            ids_url: config.ids_url.clone(),
            metrics,
            dbs: OnceLock::new(),
            ids: OnceLock::new(),
            history: Mutex::new(overview::History::default()),
            groups: tokio::sync::Mutex::new(None),
            acting: tokio::sync::Mutex::new(()),
            http,
        }
    }

    /// Gives the console its database connections once the daemon has them (pages that need
    /// them answer 503 until then).
    pub async fn attach(&self, dbs: Dbs) {
        let ids = IdPool::new(&self.ids_url, 100, self.metrics.clone());
        ids.prefill().await;
        let _ = self.ids.set(ids);
        let _ = self.dbs.set(dbs);
    }

    /// Whether actions are possible at all (`CONSOLE_TOKEN` set).
    pub fn read_only(&self) -> bool {
        self.token.is_none()
    }

    fn dbs(&self) -> Result<&Dbs, ConsoleError> {
        self.dbs.get().ok_or_else(|| {
            ConsoleError::Unavailable(
                "the log parser has not reached the databases yet; retry in a moment".into(),
            )
        })
    }

    fn saga_timeout_ms(&self) -> u64 {
        self.settings.saga_timeout.as_millis() as u64
    }

    /// Scrapes the services every [`overview::SAMPLE_EVERY`] into the history, forever.
    pub async fn sample_forever(self: Arc<Self>) {
        let mut tick = tokio::time::interval(overview::SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            let sample = overview::scrape(&self.http, &self.scrape, crate::sagas::now_ms()).await;
            self.history
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(sample);
            if self.status.leadership.is_active() {
                if let Some(dbs) = self.dbs.get() {
                    let ttl = (self.status.lease_ttl_ms)
                        .max(3 * overview::SAMPLE_EVERY.as_millis() as u64);
                    let said: Result<(), _> = redis::cmd("SET")
                        .arg(ACTIVE_KEY)
                        .arg(&self.status.instance)
                        .arg("PX")
                        .arg(ttl)
                        .query_async(&mut dbs.order.clone())
                        .await;
                    if let Err(e) = said {
                        tracing::debug!(error = %e, "cannot say which log parser is active");
                    }
                }
            }
        }
    }

    /// The instance that last said it holds the lease ([`ACTIVE_KEY`]), and for how much
    /// longer that word holds (ms).
    async fn active_instance(&self) -> Option<(String, i64)> {
        let dbs = self.dbs.get()?;
        let mut conn = dbs.order.clone();
        let (name, ttl): (Option<String>, i64) = redis::pipe()
            .cmd("GET")
            .arg(ACTIVE_KEY)
            .cmd("PTTL")
            .arg(ACTIVE_KEY)
            .query_async(&mut conn)
            .await
            .ok()?;
        name.map(|n| (n, ttl))
    }

    /// Answers one console request.
    pub async fn handle(self: Arc<Self>, req: Request) -> Response {
        let api = req.is_api();
        let answer = if req.body.is_none() {
            Err(ConsoleError::TooLarge)
        } else {
            self.route(&req).await
        };
        match answer {
            Ok(resp) => resp,
            Err(e) => {
                if e.status().is_server_error() {
                    tracing::warn!(error = %e, "console request failed");
                }
                if api {
                    error_json(&e)
                } else {
                    pages::error_page(&self, &req, &e)
                }
            }
        }
    }

    async fn route(self: &Arc<Self>, req: &Request) -> Answer {
        let seg: Vec<&str> = req.segments.iter().map(String::as_str).collect();
        let get = |m: &Method| -> Result<(), ConsoleError> { allow(m, Method::GET) };
        let post = |m: &Method| -> Result<(), ConsoleError> { allow(m, Method::POST) };
        match seg.as_slice() {
            [] => {
                get(&req.method)?;
                Ok(pages::overview(self, req, &self.overview().await?))
            }
            ["sagas"] => {
                get(&req.method)?;
                let q = filters::parse(&req.query).map_err(ConsoleError::BadRequest)?;
                let list = self.list(&q).await?;
                Ok(pages::sagas(self, req, &q, &list))
            }
            ["sagas", id] => {
                get(&req.method)?;
                let id = saga_id(id)?;
                Ok(pages::saga(self, req, &id, &self.saga(&id).await?))
            }
            ["login"] if req.method == Method::GET => Ok(pages::login(self, req, None)),
            ["login"] => {
                post(&req.method)?;
                self.login(req)
            }
            ["logout"] => {
                post(&req.method)?;
                auth::same_origin(
                    req.header("host"),
                    req.header("origin"),
                    req.header("sec-fetch-site"),
                )?;
                Ok(redirect("/console/", Some(&clear_cookie())))
            }
            ["assets", "console.js"] => {
                get(&req.method)?;
                Ok(asset(pages::SCRIPT, "text/javascript; charset=utf-8"))
            }
            ["assets", "console.css"] => {
                get(&req.method)?;
                Ok(asset(pages::STYLE, "text/css; charset=utf-8"))
            }
            ["api", "overview"] => {
                get(&req.method)?;
                json(&self.overview().await?)
            }
            ["api", "chart", name] => {
                get(&req.method)?;
                let svg = self.chart(name)?;
                Ok(asset_owned(svg, "image/svg+xml"))
            }
            ["api", "sagas"] => {
                get(&req.method)?;
                let q = filters::parse(&req.query).map_err(ConsoleError::BadRequest)?;
                json(&self.list(&q).await?)
            }
            ["api", "sagas", id] => {
                get(&req.method)?;
                let id = saga_id(id)?;
                let views = self.saga(&id).await?;
                let docs: Vec<_> = views
                    .iter()
                    .map(crate::timeline::SagaView::to_json)
                    .collect();
                json(&docs)
            }
            ["api", "recover"] => {
                post(&req.method)?;
                actions::recover(self, req).await
            }
            ["api", "sagas", id, "redrive"] => {
                post(&req.method)?;
                let id = saga_id(id)?;
                actions::redrive(self, req, &id).await
            }
            _ => Err(ConsoleError::NotFound(format!(
                "no console page /console/{}",
                req.segments.join("/")
            ))),
        }
    }

    /// The login form's answer: the cookie on the right token, the form again otherwise.
    fn login(&self, req: &Request) -> Answer {
        auth::same_origin(
            req.header("host"),
            req.header("origin"),
            req.header("sec-fetch-site"),
        )?;
        let body = req.body.as_deref().unwrap_or_default();
        let form = filters::parse_pairs(&String::from_utf8_lossy(body))
            .map_err(ConsoleError::BadRequest)?;
        let token = form.get("token").map(String::as_str);
        match auth::check(self.token.as_deref(), token) {
            Ok(()) => {
                tracing::info!(who = %req.who(), token = %auth::fingerprint(token), "console login");
                let cookie = format!(
                    "{}={}; Path=/console/; HttpOnly; SameSite=Strict",
                    auth::COOKIE,
                    auth::cookie_value(token.unwrap_or_default())
                );
                Ok(redirect("/console/", Some(&cookie)))
            }
            Err(r) => {
                tracing::warn!(who = %req.who(), token = %auth::fingerprint(token), refused = %r, "console login refused");
                let err = ConsoleError::from(r);
                let mut resp = pages::login(self, req, Some(&err.to_string()));
                *resp.status_mut() = err.status();
                Ok(resp)
            }
        }
    }

    /// The saga index as this view reads it (`crate::saga_index`: order-db's index and the
    /// unindexed tail of `log:order`), read per view: a few range reads, never a scan.
    async fn saga_index(&self) -> Result<(Conn, crate::saga_index::Snapshot), ConsoleError> {
        let dbs = self.dbs()?;
        let mut conn = dbs.order.clone();
        let snap = crate::saga_index::Snapshot::read(&mut conn, &dbs.order_layout)
            .await
            .map_err(index_error)?;
        Ok((conn, snap))
    }

    /// The delivery report (lag, pending, dead letters per stream and group), read at most
    /// once per [`overview::SAMPLE_EVERY`] however many pages poll it.
    async fn delivery(&self, dbs: &Dbs) -> (Vec<crate::delivery::GroupReport>, Option<String>) {
        let mut cached = self.groups.lock().await;
        if let Some((at, groups)) = cached.as_ref() {
            if at.elapsed() < overview::SAMPLE_EVERY {
                return (groups.clone(), None);
            }
        }
        match crate::delivery::report(dbs).await {
            Ok(g) => {
                *cached = Some((std::time::Instant::now(), g.clone()));
                (g, None)
            }
            Err(e) => (Vec::new(), Some(e.to_string())),
        }
    }

    /// The overview's data (also `GET /console/api/overview`).
    pub async fn overview(self: &Arc<Self>) -> Result<serde_json::Value, ConsoleError> {
        let (current, series, unreachable) = {
            let h = self.history.lock().unwrap_or_else(|p| p.into_inner());
            (
                h.recent(5),
                h.series(),
                h.latest()
                    .map(|s| s.unreachable.clone())
                    .unwrap_or_default(),
            )
        };
        let dbs = self.dbs()?;
        // Without an index yet (no pass has run), the rest of the overview still answers.
        let (counts, counts_error) = match self.saga_index().await {
            Ok((mut conn, snap)) => match snap.counts(&mut conn, self.saga_timeout_ms()).await {
                Ok(c) => (Some(c), None),
                Err(e) => (None, Some(e.to_string())),
            },
            Err(e) => (None, Some(e.to_string())),
        };
        let (groups, group_error) = self.delivery(dbs).await;
        let dead_letters: i64 = groups.iter().map(|g| g.dead_letters).sum();
        let last_audit = crate::audit::last_summary(&mut dbs.order.clone())
            .await
            .ok()
            .flatten();
        let s = &self.status;
        let (active_instance, active_for_ms) = match self.active_instance().await {
            Some((name, ttl)) => (Some(name), Some(ttl)),
            None => (None, None),
        };
        Ok(serde_json::json!({
            "instance": s.instance,
            "active": s.leadership.is_active(),
            "active_instance": active_instance,
            "active_for_ms": active_for_ms,
            "lease_ttl_ms": s.lease_ttl_ms,
            "read_only": self.read_only(),
            "saga_timeout_ms": self.saga_timeout_ms(),
            "now": current,
            "series": series,
            "unreachable": unreachable,
            "sagas": counts,
            "sagas_error": counts_error,
            "groups": groups,
            "groups_error": group_error,
            "dead_letters": dead_letters,
            "last_pass": s.last_pass(),
            "archive": {
                "log_retain_ms": s.log_retain_ms,
                "last": s.last_archive(),
            },
            "last_audit": last_audit,
        }))
    }

    /// One chart of the overview, as SVG.
    fn chart(&self, name: &str) -> Result<String, ConsoleError> {
        let series = self
            .history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .series();
        let now = crate::sagas::now_ms() as f64;
        let pick = |f: &dyn Fn(&overview::Rates) -> Option<f64>| -> Vec<(f64, f64)> {
            series
                .iter()
                .filter_map(|r| f(r).map(|v| ((r.at_ms as f64 - now) / 1000.0, v)))
                .collect()
        };
        let (title, unit, points) = match name {
            "checkouts.svg" => ("checkouts", "/s", pick(&|r| Some(r.checkouts_per_s))),
            "p50.svg" => ("p50", "ms", pick(&|r| r.p50_ms)),
            "p99.svg" => ("p99", "ms", pick(&|r| r.p99_ms)),
            "errors.svg" => ("5xx share", "%", pick(&|r| Some(r.error_rate * 100.0))),
            "refused.svg" => ("refused checkouts", "/s", pick(&|r| Some(r.refused_per_s))),
            _ => {
                return Err(ConsoleError::NotFound(format!(
                    "no chart `{name}` (checkouts, p50, p99, errors, refused)"
                )))
            }
        };
        Ok(charts::line_chart(title, unit, &points, 320, 110))
    }

    /// A page of the saga list (also `GET /console/api/sagas`): newest first, older than the
    /// query's cursor (keyset paging: no page costs more than its own rows).
    pub async fn list(self: &Arc<Self>, q: &filters::ListQuery) -> Result<SagaList, ConsoleError> {
        let (mut conn, snap) = self.saga_index().await?;
        let timeout = self.saga_timeout_ms();
        let walk = snap
            .walk(
                &mut conn,
                &q.filter,
                timeout,
                q.before.as_deref(),
                q.per_page,
                crate::saga_index::WALK_LIMIT,
            )
            .await
            .map_err(index_error)?;
        let total = snap
            .count(&mut conn, &q.filter, timeout)
            .await
            .map_err(index_error)?;
        let now = snap.as_of_ms;
        let items = walk
            .items
            .into_iter()
            .map(|r| ListedSaga {
                state: r.state().name(),
                stuck: crate::sagas::is_stuck(&r, now, timeout),
                age_ms: r.age_ms(now),
                record: r,
            })
            .collect();
        let mut malformed = snap.malformed.clone();
        malformed.extend(walk.malformed);
        Ok(SagaList {
            items,
            total,
            per_page: q.per_page,
            before: q.before.as_deref().map(crate::saga_index::cursor_text),
            next: walk.next.as_deref().map(crate::saga_index::cursor_text),
            as_of_ms: snap.as_of_ms,
            behind: snap.behind.clone(),
            malformed,
        })
    }

    /// The sagas `id` names (a saga, or an order's sagas), with their timelines; 404 when none.
    pub async fn saga(&self, id: &str) -> Result<Vec<crate::timeline::SagaView>, ConsoleError> {
        let dbs = self.dbs()?;
        let views = crate::timeline::lookup(dbs, id)
            .await
            .map_err(|e| ConsoleError::Unavailable(e.to_string()))?;
        if views.is_empty() {
            return Err(ConsoleError::NotFound(format!(
                "no saga or order with the id `{id}`"
            )));
        }
        Ok(views)
    }
}

/// One row of the saga list.
#[derive(Debug, serde::Serialize)]
pub struct ListedSaga {
    /// The record, as `shoplog sagas --json` prints it.
    #[serde(flatten)]
    pub record: common::saga::SagaRecord,
    /// Its state's name.
    pub state: &'static str,
    /// Undecided past `SAGA_TIMEOUT`.
    pub stuck: bool,
    /// How long ago it started (ms).
    pub age_ms: u64,
}

/// A page of the saga list.
#[derive(Debug, serde::Serialize)]
pub struct SagaList {
    /// The rows, newest first.
    pub items: Vec<ListedSaga>,
    /// How many sagas pass the filter (`null` when the index cannot count them cheaply: a
    /// state with a user or order filter over more than `saga_index::COUNT_LIMIT` sagas).
    pub total: Option<u64>,
    /// Rows per page.
    pub per_page: usize,
    /// The cursor this page started below (`<started_ms>-<saga>`), `null` on the first page.
    pub before: Option<String>,
    /// The cursor of the next (older) page, `null` when this is the last.
    pub next: Option<String>,
    /// When the index and its tail were read (ms since the epoch).
    pub as_of_ms: u64,
    /// Partitions whose unindexed tail is too long to merge (the log parser is behind).
    pub behind: Vec<u32>,
    /// Malformed records met.
    pub malformed: Vec<String>,
}

/// The saga index's errors as the console's: no index yet, or order-db unreachable, are 503s.
fn index_error(e: crate::saga_index::IndexError) -> ConsoleError {
    ConsoleError::Unavailable(e.to_string())
}

/// A saga or order id from a path segment: decoded, and checked ([`filters::valid_id`]).
fn saga_id(raw: &str) -> Result<String, ConsoleError> {
    let id = filters::decode(raw).unwrap_or_default();
    if filters::valid_id(&id) {
        Ok(id)
    } else {
        Err(ConsoleError::BadRequest(format!(
            "`{}` is not a saga or order id (1-128 letters, digits, - or _)",
            charts::escape(&raw.chars().take(64).collect::<String>())
        )))
    }
}

fn allow(method: &Method, allowed: Method) -> Result<(), ConsoleError> {
    if *method == allowed {
        Ok(())
    } else {
        Err(ConsoleError::MethodNotAllowed(format!(
            "{method} (use {allowed})"
        )))
    }
}

/// Headers every console answer carries: no caching, no framing, scripts and styles from the
/// console only.
fn secure(resp: &mut Response) {
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; frame-ancestors 'none'; form-action 'self'",
        ),
    );
}

fn with_type(body: Vec<u8>, content_type: &'static str, status: StatusCode) -> Response {
    let mut resp = Response::new(body.into());
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    secure(&mut resp);
    resp
}

/// An HTML answer.
pub fn html(body: String, status: StatusCode) -> Response {
    with_type(body.into_bytes(), "text/html; charset=utf-8", status)
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    with_type(body.as_bytes().to_vec(), content_type, StatusCode::OK)
}

fn asset_owned(body: String, content_type: &'static str) -> Response {
    with_type(body.into_bytes(), content_type, StatusCode::OK)
}

/// A JSON answer with `status`.
pub fn json_status<T: serde::Serialize>(status: StatusCode, body: &T) -> Answer {
    let bytes = serde_json::to_vec(body)
        .map_err(|e| ConsoleError::Unavailable(format!("cannot encode the answer: {e}")))?;
    Ok(with_type(bytes, "application/json", status))
}

/// A 200 JSON answer.
pub fn json<T: serde::Serialize>(body: &T) -> Answer {
    json_status(StatusCode::OK, body)
}

fn error_json(e: &ConsoleError) -> Response {
    let body = serde_json::json!({ "error": e.to_string() }).to_string();
    with_type(body.into_bytes(), "application/json", e.status())
}

fn redirect(to: &'static str, cookie: Option<&str>) -> Response {
    let mut resp = with_type(Vec::new(), "text/plain", StatusCode::SEE_OTHER);
    resp.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(to));
    if let Some(c) = cookie.and_then(|c| HeaderValue::from_str(c).ok()) {
        resp.headers_mut().insert(header::SET_COOKIE, c);
    }
    resp
}

fn clear_cookie() -> String {
    format!(
        "{}=; Path=/console/; HttpOnly; SameSite=Strict; Max-Age=0",
        auth::COOKIE
    )
}

/// Reads a body up to [`MAX_BODY`] (`None` beyond).
async fn read_body<B: Buf>(body: impl Stream<Item = Result<B, warp::Error>>) -> Option<Vec<u8>> {
    let mut body = std::pin::pin!(body);
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.ok()?;
        while chunk.has_remaining() {
            let part = chunk.chunk();
            if out.len() + part.len() > MAX_BODY {
                return None;
            }
            out.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
    }
    Some(out)
}

/// The console's routes, for [`common::http::serve_with`]: everything under `/console`.
pub fn routes(console: Arc<Console>) -> common::http::Extra {
    warp::path("console")
        .and(warp::method())
        .and(warp::path::full())
        .and(warp::path::tail())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::header::headers_cloned())
        .and(warp::addr::remote())
        .and(warp::body::stream())
        .then(
            move |method: Method,
                  full: warp::path::FullPath,
                  tail: warp::path::Tail,
                  query: String,
                  headers: HeaderMap,
                  remote: Option<SocketAddr>,
                  body| {
                let console = console.clone();
                async move {
                    if full.as_str() == "/console" {
                        return redirect("/console/", None);
                    }
                    let body = read_body(body).await;
                    let segments = tail
                        .as_str()
                        .split('/')
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect();
                    console
                        .handle(Request {
                            method,
                            segments,
                            query,
                            headers,
                            remote,
                            body,
                        })
                        .await
                }
            },
        )
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A console without databases (a log parser that has not reached them yet), standing by.
    fn console(token: Option<&str>) -> Arc<Console> {
        let mut config = common::config::Config::from_lookup(0, |_| None).expect("defaults");
        config.console_token = token.map(String::from);
        let status = Arc::new(DaemonStatus {
            instance: "test".into(),
            leadership: Arc::new(Leadership::default()),
            last_pass: Mutex::new(None),
            last_archive: Mutex::new(None),
            log_retain_ms: None,
            lease_ttl_ms: 5_000,
        });
        Arc::new(Console::new(
            &config,
            status,
            Arc::new(Metrics::new("logparser")),
        ))
    }

    fn request(method: Method, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Request {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let mut map = HeaderMap::new();
        map.insert("host", HeaderValue::from_static("127.0.0.1:8000"));
        for (k, v) in headers {
            map.insert(
                header::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        Request {
            method,
            segments: path
                .trim_start_matches("/console/")
                .split('/')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
            query: query.to_string(),
            headers: map,
            remote: None,
            body: (body.len() <= MAX_BODY).then(|| body.to_vec()),
        }
    }

    async fn answer(c: &Arc<Console>, req: Request) -> (u16, String) {
        let resp = c.clone().handle(req).await;
        let kind = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .to_string();
        (resp.status().as_u16(), kind)
    }

    const JSON: &str = "application/json";
    const HTML: &str = "text/html";

    #[tokio::test]
    async fn without_a_token_the_console_is_read_only() {
        let c = console(None);
        let bearer = [("authorization", "Bearer anything")];
        let r = request(Method::POST, "/console/api/recover", &bearer, b"");
        assert_eq!(answer(&c, r).await, (403, JSON.into()));
        let r = request(Method::POST, "/console/api/sagas/s1/redrive", &bearer, b"");
        assert_eq!(answer(&c, r).await, (403, JSON.into()));
        let r = request(Method::POST, "/console/login", &[], b"token=anything");
        assert_eq!(answer(&c, r).await.0, 403);
        let r = request(Method::GET, "/console/login", &[], b"");
        assert_eq!(answer(&c, r).await, (200, HTML.into()));
    }

    #[tokio::test]
    async fn actions_need_the_token_and_the_same_origin() {
        let c = console(Some("s3cret"));
        let post = |h: &[(&str, &str)]| request(Method::POST, "/console/api/recover", h, b"");
        assert_eq!(answer(&c, post(&[])).await, (401, JSON.into()));
        assert_eq!(
            answer(&c, post(&[("authorization", "Bearer nope")]))
                .await
                .0,
            401
        );
        assert_eq!(
            answer(&c, post(&[("cookie", "shoplog_console=nope")]))
                .await
                .0,
            401
        );
        let cross = [
            ("authorization", "Bearer s3cret"),
            ("origin", "http://evil.example"),
        ];
        assert_eq!(answer(&c, post(&cross)).await.0, 403);
        let cross = [
            ("cookie", "shoplog_console=s3cret"),
            ("sec-fetch-site", "cross-site"),
        ];
        assert_eq!(answer(&c, post(&cross)).await.0, 403);
        // Past every check, this standby (it holds no lease) refuses with 503, changing nothing.
        let ok = [
            ("cookie", "shoplog_console=s3cret"),
            ("origin", "http://127.0.0.1:8000"),
        ];
        assert_eq!(answer(&c, post(&ok)).await, (503, JSON.into()));
        assert_eq!(
            answer(&c, post(&[("authorization", "Bearer s3cret")]))
                .await
                .0,
            503
        );
        // The login form sets the cookie on the right token only, same origin only.
        let form = |t: &str, h: &[(&str, &str)]| {
            request(
                Method::POST,
                "/console/login",
                h,
                format!("token={t}").as_bytes(),
            )
        };
        let resp = c.clone().handle(form("s3cret", &[])).await;
        assert_eq!(resp.status().as_u16(), 303);
        let cookie = resp
            .headers()
            .get(header::SET_COOKIE)
            .and_then(|v| v.to_str().ok());
        assert_eq!(
            cookie,
            Some("shoplog_console=s3cret; Path=/console/; HttpOnly; SameSite=Strict")
        );
        assert_eq!(answer(&c, form("nope", &[])).await, (401, HTML.into()));
        let evil = [("origin", "http://evil.example")];
        assert_eq!(answer(&c, form("s3cret", &evil)).await.0, 403);
    }

    #[tokio::test]
    async fn bad_input_is_a_4xx_in_the_requests_language() {
        let c = console(Some("s3cret"));
        let get = |t: &str| request(Method::GET, t, &[], b"");
        assert_eq!(
            answer(&c, get("/console/sagas?state=paid")).await,
            (400, HTML.into())
        );
        assert_eq!(
            answer(&c, get("/console/api/sagas?page=0")).await,
            (400, JSON.into())
        );
        assert_eq!(
            answer(&c, get("/console/api/sagas/%3Cx%3E")).await,
            (400, JSON.into())
        );
        assert_eq!(
            answer(&c, get("/console/sagas/a%2Fb")).await,
            (400, HTML.into())
        );
        assert_eq!(answer(&c, get("/console/nope")).await, (404, HTML.into()));
        assert_eq!(
            answer(&c, get("/console/api/nope")).await,
            (404, JSON.into())
        );
        assert_eq!(answer(&c, get("/console/api/chart/x.svg")).await.0, 404);
        assert_eq!(
            answer(&c, get("/console/api/recover")).await,
            (405, JSON.into())
        );
        let big = vec![b'x'; MAX_BODY + 1];
        let r = request(Method::POST, "/console/login", &[], &big);
        assert_eq!(answer(&c, r).await.0, 413);
        // Without databases yet: 503, saying so.
        assert_eq!(
            answer(&c, get("/console/api/overview")).await,
            (503, JSON.into())
        );
        assert_eq!(
            answer(&c, get("/console/api/chart/p99.svg")).await,
            (200, "image/svg+xml".into())
        );
        let resp = c.clone().handle(get("/console/assets/console.js")).await;
        assert_eq!(resp.status().as_u16(), 200);
        let csp = resp
            .headers()
            .get("content-security-policy")
            .and_then(|v| v.to_str().ok());
        assert!(csp.is_some_and(|p| p.contains("script-src 'self'")));
    }
}
