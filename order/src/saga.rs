//! The order side of the checkout saga: admission (`lua/checkout_start.lua`), the decision
//! (`lua/commit.lua` and `common/lua/saga_abort.lua` — both compare-and-set on the saga record's
//! `decision`; the abort is shared with the log parser), and the confirmations of compensations
//! (`lua/confirm.lua`).
//!
//! [`on_entry`] reacts to every participant's log (consumer group `order`), as the
//! participants table says: the last participant's `done` event → commit; any `refused` event →
//! abort; a `compensated` event → confirm that participant.

use std::sync::LazyLock;

use common::consumer::{HandlerError, SagaCtx};
use common::db::Conn;
use common::event::Event;
use common::keys::{self, DONE_CHANNEL, ORDER_LOG};
use common::log::LogEntry;
use common::partition::Layout;
use common::saga::{Participant, Reply, SagaHome, StepKind};
use redis::Script;
use tracing::Instrument;

static START: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/checkout_start.lua")));
static COMMIT: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../lua/commit.lua")));
static CONFIRM: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/confirm.lua")));

/// What admission answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// A new saga started.
    Started(String),
    /// The order is already paid (by this saga).
    Paid(String),
    /// A saga is already deciding the order: join it.
    Join(String),
    /// No such order.
    NotFound,
    /// The order is open with no items.
    Empty,
    /// An item repeats in the order's lines (`items`, as stored): the caller sums them and admits
    /// again with both (the fast path passes the stored lines on as they are).
    Sum(String),
    /// The order's items changed since they were read: read again.
    Changed,
}

impl redis::FromRedisValue for Admission {
    fn from_redis_value(v: redis::Value) -> Result<Self, redis::ParsingError> {
        let (status, data) = common::db::status_words(v)?;
        let sid = || {
            data.first()
                .cloned()
                .ok_or("admission answer without a saga id")
        };
        Ok(match status.as_str() {
            "OK" => Admission::Started(sid()?),
            "PAID" => Admission::Paid(sid()?),
            "JOIN" => Admission::Join(sid()?),
            "NOT_FOUND" => Admission::NotFound,
            "EMPTY" => Admission::Empty,
            "SUM" => Admission::Sum(
                data.into_iter()
                    .next()
                    .ok_or("admission answer SUM without the items")?,
            ),
            "CHANGED" => Admission::Changed,
            other => return Err(format!("unknown admission answer `{other}`").into()),
        })
    }
}

/// Starts saga `saga` for order `order` if it is open. `read` is `None` on the fast path (the
/// caller has not read the order: its stored lines become the saga's when no item repeats), or
/// the `items` field as the caller read it and its summed lines (compare-and-set).
#[allow(clippy::too_many_arguments)]
pub async fn start(
    conn: &mut Conn,
    l: &Layout,
    log_id: &str,
    order: &str,
    saga: &str,
    read: Option<&SummedLines>,
    now_ms: u64,
) -> Result<Admission, redis::RedisError> {
    let (items_read, summed) = read.map_or(("", ""), |r| (r.items.as_str(), r.summed.as_str()));
    START
        .key(keys::order(l, order))
        .key(keys::saga_of(l, order, saga))
        .key(keys::log(ORDER_LOG, l, l.part(order)))
        .arg(log_id)
        .arg(order)
        .arg(saga)
        .arg(items_read)
        .arg(summed)
        .arg(now_ms)
        .invoke_async(conn)
        .await
}

/// An order's `items` field as read, and its lines summed by item (`common::saga::sum_lines`),
/// for the admission's compare-and-set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SummedLines {
    /// The field exactly as stored.
    pub items: String,
    /// The summed lines, encoded (`common::saga::encode_lines`).
    pub summed: String,
}

/// Decides `commit` unless a decision was taken.
pub async fn commit(
    conn: &mut Conn,
    l: &Layout,
    log_id: &str,
    saga: &str,
    order: &str,
) -> Result<Reply, redis::RedisError> {
    COMMIT
        .key(keys::saga_of(l, order, saga))
        .key(keys::order(l, order))
        .key(keys::log(ORDER_LOG, l, l.part(order)))
        .arg(log_id)
        .arg(saga)
        .arg(DONE_CHANNEL)
        .invoke_async(conn)
        .await
}

/// Records that participant `part` finished compensating.
pub async fn confirm(
    conn: &mut Conn,
    l: &Layout,
    log_id: &str,
    saga: &str,
    order: &str,
    part: &str,
) -> Result<Reply, redis::RedisError> {
    CONFIRM
        .key(keys::saga_of(l, order, saga))
        .key(keys::order(l, order))
        .key(keys::log(ORDER_LOG, l, l.part(order)))
        .arg(log_id)
        .arg(saga)
        .arg(part)
        .arg(DONE_CHANNEL)
        .invoke_async(conn)
        .await
}

/// Handles one entry of a participant's log; entries that are not for the order side are
/// acknowledged as they are.
pub async fn on_entry(ctx: SagaCtx, e: LogEntry) -> Result<(), HandlerError> {
    Decider { ctx }.on_entry(e).await
}

/// The order side's reactions to the participants' logs.
struct Decider {
    ctx: SagaCtx,
}

impl Decider {
    async fn on_entry(&self, e: LogEntry) -> Result<(), HandlerError> {
        let event = e.decode()?;
        let Some((saga, order)) = event.saga() else {
            return Ok(());
        };
        let Some((part, step)) = common::saga::step_of(self.ctx.parts, event.kind()) else {
            return Ok(());
        };
        let span = tracing::debug_span!("saga_entry", saga, order, event = event.kind(), entry = %e.stream_id);
        self.react(&event, part, step, saga, order)
            .instrument(span)
            .await
    }

    async fn react(
        &self,
        event: &Event,
        part: &Participant,
        step: StepKind,
        saga: &str,
        order: &str,
    ) -> Result<(), HandlerError> {
        let mut conn = self.ctx.db.clone();
        let log_id = self.ctx.ids.next();
        let last = self.ctx.parts.last() == Some(part);
        let l = &self.ctx.layout;
        let reply = match step {
            StepKind::Done if last => commit(&mut conn, l, &log_id, saga, order).await?,
            StepKind::Done => {
                tracing::debug!(
                    participant = part.name,
                    "a step the next participant acts on"
                );
                return Ok(());
            }
            StepKind::Refused => {
                let reason = event
                    .reason()
                    .map_or_else(|| format!("{} refused", part.name), str::to_string);
                let home = SagaHome {
                    layout: l,
                    part: l.part(order),
                };
                common::saga::abort(&mut conn, home, self.ctx.parts, &log_id, saga, &reason).await?
            }
            StepKind::Compensated => confirm(&mut conn, l, &log_id, saga, order, part.name).await?,
        };
        // On the replicas before the entry that triggered it is acknowledged.
        conn.replicated(&keys::order(l, order)).await?;
        match &reply {
            Reply::Ok(_) => tracing::debug!(participant = part.name, ?step, "saga advanced"),
            Reply::Fenced(status, holder) => {
                // Cannot happen while every transition checks the saga id; make it loud if it does.
                tracing::error!(%status, %holder, "commit refused: the order is not held by this saga");
            }
            other => tracing::debug!(
                participant = part.name,
                ?step,
                reply = other.name(),
                "nothing to do"
            ),
        }
        Ok(())
    }
}
