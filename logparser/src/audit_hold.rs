//! An audit (and `shoplog replay --diff`) and the retirement of saga records exclude each other.
//!
//! The audit reads a partition's history, then the database; retirement deletes saga records and
//! logs them (`RecordsRetired`). A retirement between the two reads makes a record that the
//! history built look missing from the database, and an order-side record read before a
//! retirement look orphaned by its participants' records read after it: false violations, on a
//! system that archives continuously. So while an audit runs, no retirement batch does.
//!
//! The protocol (two keys in order-db; each step one command, so the steps of the two sides
//! interleave in one order):
//! - the audit adds itself to [`keys::AUDIT_HOLDS`] (score: until when, renewed every third of
//!   [`HOLD_TTL`] while it runs, removed at its end), *then* waits until [`keys::RETIRING`] is gone;
//! - a retirement batch sets [`keys::RETIRING`], *then* looks for a live hold; with one it deletes
//!   its mark and retires nothing this pass; without, it retires and deletes its mark.
//!
//! Whichever writes second sees the other's key: the audit waits for a batch that started, and a
//! batch does not start under an audit. A process that dies leaves keys that expire: a hold after
//! [`HOLD_TTL`] without renewal, the mark after [`RETIRING_TTL`].

use std::time::Duration;

use common::db::Conn;
use common::keys;

use crate::archive::db_time;

/// How long a hold lasts without renewal.
pub const HOLD_TTL: Duration = Duration::from_secs(30);
/// How long a retirement mark lasts if its pass dies (longer than any batch).
pub const RETIRING_TTL: Duration = Duration::from_secs(30);

/// An audit's hold on retirement, renewed in the background until [`Hold::release`] (or drop).
pub struct Hold {
    conn: Conn,
    id: String,
    renew: tokio::task::JoinHandle<()>,
}

/// Takes a hold for an audit and waits for a retirement batch in progress to end; `waiting` is
/// called once if it has to wait.
pub async fn hold(conn: &Conn, waiting: impl FnOnce()) -> Result<Hold, redis::RedisError> {
    let mut c = conn.clone();
    let id = ulid::Ulid::new().to_string();
    extend(&mut c, &id, false).await?;
    let renew = {
        let (mut c, id) = (c.clone(), id.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(HOLD_TTL / 3).await;
                if let Err(e) = extend(&mut c, &id, true).await {
                    tracing::warn!(error = %e, "could not renew the audit's hold on retirement");
                }
            }
        })
    };
    let hold = Hold {
        conn: c.clone(),
        id,
        renew,
    };
    let mut waiting = Some(waiting);
    loop {
        let marked: bool = redis::cmd("EXISTS")
            .arg(keys::RETIRING)
            .query_async(&mut c)
            .await?;
        if !marked {
            return Ok(hold);
        }
        if let Some(w) = waiting.take() {
            w();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn extend(conn: &mut Conn, id: &str, renewal: bool) -> Result<(), redis::RedisError> {
    let until = db_time(conn).await? + HOLD_TTL.as_millis() as u64;
    let mut zadd = redis::cmd("ZADD");
    zadd.arg(keys::AUDIT_HOLDS);
    if renewal {
        zadd.arg("XX");
    }
    let _: i64 = zadd.arg(until).arg(id).query_async(conn).await?;
    Ok(())
}

impl Hold {
    /// Ends the hold: retirement may go on.
    pub async fn release(mut self) -> Result<(), redis::RedisError> {
        self.renew.abort();
        let _: i64 = redis::cmd("ZREM")
            .arg(keys::AUDIT_HOLDS)
            .arg(&self.id)
            .query_async(&mut self.conn)
            .await?;
        Ok(())
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        // Released or not, it stops being renewed and expires.
        self.renew.abort();
    }
}

/// Marks a retirement batch as running unless an audit holds retirement off; `true` when the
/// batch may run (then [`end_retiring`] after it).
pub async fn begin_retiring(conn: &mut Conn) -> Result<bool, redis::RedisError> {
    let _: () = redis::cmd("SET")
        .arg(keys::RETIRING)
        .arg(1)
        .arg("PX")
        .arg(RETIRING_TTL.as_millis() as u64)
        .query_async(conn)
        .await?;
    let now = db_time(conn).await?;
    // Holds of audits that died unreleased, expired: forgotten.
    let _: i64 = redis::cmd("ZREMRANGEBYSCORE")
        .arg(keys::AUDIT_HOLDS)
        .arg("-inf")
        .arg(now)
        .query_async(conn)
        .await?;
    let held: u64 = redis::cmd("ZCOUNT")
        .arg(keys::AUDIT_HOLDS)
        .arg(format!("({now}"))
        .arg("+inf")
        .query_async(conn)
        .await?;
    if held > 0 {
        end_retiring(conn).await?;
        return Ok(false);
    }
    Ok(true)
}

/// Ends a retirement batch.
pub async fn end_retiring(conn: &mut Conn) -> Result<(), redis::RedisError> {
    let _: i64 = redis::cmd("DEL")
        .arg(keys::RETIRING)
        .query_async(conn)
        .await?;
    Ok(())
}
