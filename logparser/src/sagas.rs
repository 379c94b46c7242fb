//! The order-side saga records (`saga:<sid>` in order-db), read for recovery, audit and the CLI.

use std::collections::BTreeMap;

use redis::aio::ConnectionManager;

/// Where a saga stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SagaState {
    /// No decision yet (stock or payment still acting).
    InFlight,
    /// Decided commit: the order is paid.
    Committed,
    /// Decided abort; some compensation not confirmed yet.
    Compensating,
    /// Decided abort; every compensation confirmed.
    Aborted,
}

impl SagaState {
    /// Parses `in-flight`, `committed`, `compensating` or `aborted`.
    pub fn parse(s: &str) -> Option<SagaState> {
        match s {
            "in-flight" | "inflight" | "checking-out" => Some(SagaState::InFlight),
            "committed" => Some(SagaState::Committed),
            "compensating" => Some(SagaState::Compensating),
            "aborted" => Some(SagaState::Aborted),
            _ => None,
        }
    }

    /// The state's name.
    pub fn name(self) -> &'static str {
        match self {
            SagaState::InFlight => "in-flight",
            SagaState::Committed => "committed",
            SagaState::Compensating => "compensating",
            SagaState::Aborted => "aborted",
        }
    }
}

/// One order-side saga record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SagaRecord {
    /// The saga id.
    pub id: String,
    /// The order it decides.
    pub order: String,
    /// The order's user.
    pub user: String,
    /// The order's total.
    pub total: i64,
    /// The summed lines (JSON).
    pub items: String,
    /// `none`, `commit` or `abort`.
    pub decision: String,
    /// Why it was aborted.
    pub reason: String,
    /// When it started (ms since the epoch).
    pub started_ms: u64,
    /// Stock confirmed its compensation.
    pub stock_ok: bool,
    /// Payment confirmed its compensation.
    pub payment_ok: bool,
    /// Committed, or aborted and fully compensated.
    pub done: bool,
}

impl SagaRecord {
    /// Builds a record from the hash of `saga:<id>`.
    pub fn from_hash(id: &str, h: &BTreeMap<String, String>) -> SagaRecord {
        let get = |f: &str| h.get(f).cloned().unwrap_or_default();
        SagaRecord {
            id: id.to_string(),
            order: get("order"),
            user: get("user"),
            total: get("total").parse().unwrap_or(0),
            items: get("items"),
            decision: get("decision"),
            reason: get("reason"),
            started_ms: get("started_ms").parse().unwrap_or(0),
            stock_ok: get("stock_ok") == "1",
            payment_ok: get("payment_ok") == "1",
            done: get("done") == "1",
        }
    }

    /// Where the saga stands.
    pub fn state(&self) -> SagaState {
        match (self.decision.as_str(), self.done) {
            ("commit", _) => SagaState::Committed,
            ("abort", true) => SagaState::Aborted,
            ("abort", false) => SagaState::Compensating,
            _ => SagaState::InFlight,
        }
    }

    /// Milliseconds since the saga started.
    pub fn age_ms(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.started_ms)
    }
}

/// Now, in ms since the epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Loads the records of `ids` (pipelined); `None` for ids without a record.
pub async fn load_many(
    conn: &mut ConnectionManager,
    ids: &[String],
) -> Result<Vec<Option<SagaRecord>>, redis::RedisError> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(500) {
        let mut pipe = redis::pipe();
        for id in chunk {
            pipe.cmd("HGETALL").arg(common::saga::order_saga_key(id));
        }
        let hashes: Vec<BTreeMap<String, String>> = pipe.query_async(conn).await?;
        for (id, h) in chunk.iter().zip(hashes) {
            out.push((!h.is_empty()).then(|| SagaRecord::from_hash(id, &h)));
        }
    }
    Ok(out)
}

/// Calls `f` on every saga record, scanning order-db in pages (SCAN; the database keeps serving).
pub async fn scan(
    conn: &mut ConnectionManager,
    mut f: impl FnMut(SagaRecord),
) -> Result<u64, redis::RedisError> {
    let mut cursor: u64 = 0;
    let mut seen = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg("saga:*")
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await?;
        let ids: Vec<String> = keys
            .iter()
            .filter_map(|k| k.strip_prefix("saga:").map(String::from))
            .collect();
        for r in load_many(conn, &ids).await?.into_iter().flatten() {
            seen += 1;
            f(r);
        }
        if next == 0 {
            return Ok(seen);
        }
        cursor = next;
    }
}
