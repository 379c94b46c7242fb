//! How the saga's deliveries are doing: lag and pending entries of every consumer group, entries
//! stuck on consumers that stopped reading, and dead letters.

use std::collections::HashMap;

use common::keys;
use redis::Value;

use crate::dbs::Dbs;

/// Entries counted exactly when measuring a group's lag; past this, Redis's estimate is used.
const LAG_PAGE: usize = 1000;

/// Consumers idle this long with entries pending are reported as stuck.
pub const STUCK_IDLE_MS: i64 = 30_000;

/// One consumer group's state on one partition of a log.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GroupReport {
    /// The log (`log:order`).
    pub log: String,
    /// The partition's stream (`log:order:{o3.60}`).
    pub stream: String,
    /// The group (`stock`).
    pub group: String,
    /// Entries not yet delivered to the group.
    pub lag: i64,
    /// Entries delivered, not acknowledged.
    pub pending: i64,
    /// Consumers idle for over 30 s with pending entries: `(name, pending, idle ms)`.
    pub stuck: Vec<(String, i64, i64)>,
    /// Entries in the group's dead-letter stream.
    pub dead_letters: i64,
}

fn int(v: Option<&Value>) -> i64 {
    match v {
        Some(Value::Int(n)) => *n,
        Some(Value::BulkString(b)) => String::from_utf8_lossy(b).parse().unwrap_or(0),
        _ => 0,
    }
}

fn text(v: Option<&Value>) -> String {
    match v {
        Some(Value::BulkString(b)) => String::from_utf8_lossy(b).to_string(),
        Some(Value::SimpleString(s)) => s.clone(),
        _ => String::new(),
    }
}

async fn infos(
    conn: &mut common::db::Conn,
    args: &[&str],
) -> Result<Vec<HashMap<String, Value>>, redis::RedisError> {
    let mut cmd = redis::cmd("XINFO");
    for a in args {
        cmd.arg(*a);
    }
    let rows: Result<Vec<HashMap<String, Value>>, _> = cmd.query_async(conn).await;
    match rows {
        Ok(r) => Ok(r),
        // No such stream or group yet: nothing to report.
        Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError) => {
            Ok(Vec::new())
        }
        Err(e) => Err(e),
    }
}

/// Reports every consumer group of the saga.
pub async fn report(dbs: &Dbs) -> Result<Vec<GroupReport>, redis::RedisError> {
    let mut out = Vec::new();
    for g in common::saga::groups(dbs.parts) {
        let (Some(mut conn), Some(layout)) = (dbs.by_name(g.owner), dbs.layout(g.owner)) else {
            continue;
        };
        for stream in common::keys::logs(g.stream, &layout) {
            if let Some(r) = report_one(&mut conn, g.stream, &stream, g.group).await? {
                out.push(r);
            }
        }
    }
    Ok(out)
}

/// One group on one stream; `None` when the group does not exist there yet.
async fn report_one(
    conn: &mut common::db::Conn,
    log: &str,
    stream: &str,
    group: &str,
) -> Result<Option<GroupReport>, redis::RedisError> {
    let groups = infos(conn, &["GROUPS", stream]).await?;
    let Some(g) = groups.iter().find(|g| text(g.get("name")) == group) else {
        return Ok(None);
    };
    let consumers = infos(conn, &["CONSUMERS", stream, group]).await?;
    let stuck = consumers
        .iter()
        .filter(|c| int(c.get("pending")) > 0 && int(c.get("idle")) > STUCK_IDLE_MS)
        .map(|c| {
            (
                text(c.get("name")),
                int(c.get("pending")),
                int(c.get("idle")),
            )
        })
        .collect();
    // Redis's own `lag` counter is best effort (it is wrong after an AOF reload, for one):
    // count the entries past the group's last delivered id instead, up to a page.
    let last_delivered = text(g.get("last-delivered-id"));
    let after: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(stream)
        .arg(format!("({last_delivered}"))
        .arg("+")
        .arg("COUNT")
        .arg(LAG_PAGE)
        .query_async(conn)
        .await?;
    let lag = if after.len() < LAG_PAGE {
        after.len() as i64
    } else {
        int(g.get("lag")).max(LAG_PAGE as i64)
    };
    let dead_letters: i64 = redis::cmd("XLEN")
        .arg(keys::dead_letter(group, stream))
        .query_async(conn)
        .await?;
    Ok(Some(GroupReport {
        log: log.to_string(),
        stream: stream.to_string(),
        group: group.to_string(),
        lag,
        pending: int(g.get("pending")),
        stuck,
        dead_letters,
    }))
}
