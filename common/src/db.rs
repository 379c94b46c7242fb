//! Connecting to a service's Redis and running its Lua scripts.
//!
//! Connections are `ConnectionManager`s: one multiplexed connection per database, shared by all
//! requests, reconnecting by itself after the database restarts. Scripts are `redis::Script`s,
//! which call `EVALSHA` and upload the script only when Redis answers `NOSCRIPT`.

use std::time::Duration;

use std::collections::HashMap;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::error::ApiError;

pub use redis::aio::ConnectionManager as Conn;

/// Connects to `url`, retrying every second until it answers (a service may start before its
/// database). `what` names the database in log lines.
pub async fn connect(url: &str, what: &str) -> anyhow::Result<ConnectionManager> {
    let client = redis::Client::open(url)
        .map_err(|e| anyhow::anyhow!("{what}: `{url}` is not a Redis URL: {e}"))?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(10)))
        .set_number_of_retries(3)
        .set_max_delay(Duration::from_millis(500));
    let mut attempt = 0u32;
    loop {
        match ConnectionManager::new_with_config(client.clone(), config.clone()).await {
            Ok(conn) => {
                tracing::info!(database = what, url, "connected");
                return Ok(conn);
            }
            Err(e) => {
                attempt += 1;
                if attempt == 1 || attempt.is_multiple_of(10) {
                    tracing::warn!(database = what, url, error = %e, attempt, "cannot connect yet; retrying every second");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Whether the database answers `PING` within a second.
pub async fn ping(conn: &ConnectionManager) -> bool {
    let mut conn = conn.clone();
    let cmd = redis::cmd("PING");
    let ping = cmd.query_async::<String>(&mut conn);
    matches!(
        tokio::time::timeout(Duration::from_secs(1), ping).await,
        Ok(Ok(_))
    )
}

/// What a transition script answers: a status word, then data.
///
/// Scripts never raise errors for business outcomes; they return `{"OK", ...}`, `{"NOT_FOUND"}`,
/// `{"INSUFFICIENT", have}`, `{"OVERFLOW"}` or `{"CONFLICT", state}`, and change nothing unless
/// the status is `OK`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Applied and logged; the payload is script-specific.
    Ok(Vec<String>),
    /// The entity does not exist.
    NotFound,
    /// Not enough stock or credit; carries the current amount.
    Insufficient(String),
    /// The result would not fit in a signed 64-bit integer.
    Overflow,
    /// The entity's state forbids the change; carries the state.
    Conflict(String),
}

/// A script's answer split into its status word and the data after it (every transition script
/// answers `{STATUS, data...}`); an empty answer is an error.
pub fn status_words(v: redis::Value) -> Result<(String, Vec<String>), redis::ParsingError> {
    let mut parts: Vec<String> = redis::FromRedisValue::from_redis_value(v)?;
    if parts.is_empty() {
        return Err("empty script answer".into());
    }
    let status = parts.remove(0);
    Ok((status, parts))
}

impl redis::FromRedisValue for Outcome {
    fn from_redis_value(v: redis::Value) -> Result<Self, redis::ParsingError> {
        let (status, parts) = status_words(v)?;
        let first = parts.first().cloned().unwrap_or_default();
        Ok(match status.as_str() {
            "OK" => Outcome::Ok(parts),
            "NOT_FOUND" => Outcome::NotFound,
            "INSUFFICIENT" => Outcome::Insufficient(first),
            "OVERFLOW" => Outcome::Overflow,
            "CONFLICT" => Outcome::Conflict(first),
            other => return Err(format!("unknown script status `{other}`").into()),
        })
    }
}

/// Connects to `url` once, giving up after `timeout` — for command-line tools, which should say
/// what is wrong instead of waiting forever.
pub async fn connect_once(
    url: &str,
    what: &str,
    timeout: Duration,
) -> anyhow::Result<ConnectionManager> {
    let client = redis::Client::open(url)
        .map_err(|e| anyhow::anyhow!("{what}: `{url}` is not a Redis URL: {e}"))?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(Duration::from_secs(60)))
        .set_number_of_retries(0);
    match tokio::time::timeout(timeout, ConnectionManager::new_with_config(client, config)).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(anyhow::anyhow!(
            "cannot reach {what} at {url}: {e} (is the stack up? `shoplog status`; or set the *_DB_URL variables)"
        )),
        Err(_) => Err(anyhow::anyhow!(
            "{what} at {url} did not answer within {} s (is the stack up? `shoplog status`)",
            timeout.as_secs()
        )),
    }
}

/// A stored record that cannot be read: names the key and the field, never a default.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{key}` has no valid `{field}` field (found {found:?}); the record was edited by hand or written by another version")]
pub struct RecordError {
    /// The Redis key.
    pub key: String,
    /// The missing or malformed field.
    pub field: &'static str,
    /// What is there (`None`: missing).
    pub found: Option<String>,
}

impl From<RecordError> for ApiError {
    fn from(e: RecordError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

/// Reads typed fields of one stored hash, each failure naming the key and field.
pub struct Fields<'a> {
    key: &'a str,
    hash: &'a HashMap<String, String>,
}

impl<'a> Fields<'a> {
    /// The fields of `hash`, stored at `key`.
    pub fn new(key: &'a str, hash: &'a HashMap<String, String>) -> Fields<'a> {
        Fields { key, hash }
    }

    fn bad(&self, field: &'static str) -> RecordError {
        RecordError {
            key: self.key.to_string(),
            field,
            found: self.hash.get(field).cloned(),
        }
    }

    /// A required text field (may be empty).
    pub fn text(&self, field: &'static str) -> Result<&'a str, RecordError> {
        self.hash
            .get(field)
            .map(String::as_str)
            .ok_or_else(|| self.bad(field))
    }

    /// A required field parsed by `parse`.
    pub fn parsed<T>(
        &self,
        field: &'static str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<T, RecordError> {
        parse(self.text(field)?).ok_or_else(|| self.bad(field))
    }

    /// A required integer field.
    pub fn int<T: std::str::FromStr>(&self, field: &'static str) -> Result<T, RecordError> {
        self.parsed(field, |s| s.parse().ok())
    }

    /// A required `0`/`1` flag.
    pub fn flag(&self, field: &'static str) -> Result<bool, RecordError> {
        self.parsed(field, |s| match s {
            "0" => Some(false),
            "1" => Some(true),
            _ => None,
        })
    }
}

/// Why reading or changing a stored record failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database did not answer, or answered an error.
    #[error("database error: {0}")]
    Redis(#[from] redis::RedisError),
    /// A stored record is malformed.
    #[error(transparent)]
    Record(#[from] RecordError),
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Redis(r) => ApiError::from(r),
            StoreError::Record(r) => ApiError::from(r),
        }
    }
}
