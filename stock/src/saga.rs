//! The stock side of the checkout saga, the first participant ([`common::saga::STOCK`]): reacts to
//! `log:order` (read through the consumer group `stock`). `CheckoutStarted` → reserve all lines or
//! none; `CheckoutAborted` → release, or leave tombstones.
//!
//! An order's items may live in several stock partitions, and one script touches one partition
//! (one hash slot). So:
//! - **one partition** (the fast path): one script reserves everything and logs the outcome
//!   (`lua/reserve.lua`, mode `whole`), as a release does (`lua/release.lua`);
//! - **several partitions**: each partition's lines are reserved atomically by that partition's
//!   script, in partition order, each logging `StockPartReserved` with the saga id, except the
//!   last, the saga's home partition (the highest), whose script logs the outcome `StockReserved`
//!   itself once it reserved (mode `last`: one script and one entry fewer per checkout than a
//!   separate outcome step). If one refuses, every partition already reserved is released
//!   (`StockPartReleased`) before the outcome `StockRejected` is logged in the home partition
//!   (`lua/finish.lua`). Every step is idempotent, so a crash anywhere is finished by the
//!   redelivery of `CheckoutStarted` (or by the abort the log parser decides), and tombstones make
//!   a reservation that an abort overtook in some partition refuse there.

use std::sync::LazyLock;
use std::time::Duration;

use common::consumer::{run_step, HandlerError, SagaCtx, StepFuture};
use common::db::Conn;
use common::event::{Event, Items};
use common::ids::IdPool;
use common::keys::{self, STOCK_LOG};
use common::log::LogEntry;
use common::partition::Layout;
use common::saga::{encode_lines, Lines, Reply, STOCK};
use redis::Script;

static RESERVE: LazyLock<Script> =
    LazyLock::new(|| common::lua::with_decimal(include_str!("../lua/reserve.lua")));
static RELEASE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/release.lua")));
static FINISH: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../lua/finish.lua")));

/// Test-only: `SHOPLOG_TEST_PAUSE_BETWEEN_PARTITIONS_MS` makes a multi-partition reservation pause
/// after each partition but the last, so that a test can kill the process in between.
static TEST_PAUSE: LazyLock<Option<Duration>> = LazyLock::new(|| {
    std::env::var("SHOPLOG_TEST_PAUSE_BETWEEN_PARTITIONS_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)
});

/// Handles one `log:order` entry; entries that are not for stock are acknowledged as they are.
pub async fn on_entry(ctx: SagaCtx, e: LogEntry) -> Result<(), HandlerError> {
    let event = e.decode()?;
    let step: StepFuture = match &event {
        Event::CheckoutStarted {
            saga,
            order,
            user,
            total,
            items,
            ..
        } => Box::pin(reserve_all(&ctx, saga, order, user, *total, items)),
        Event::CheckoutAborted {
            saga, order, items, ..
        } => Box::pin(release_all(&ctx, saga, order, items)),
        _ => return Ok(()),
    };
    run_step(STOCK.name, &e, &event, step).await
}

/// A saga's lines grouped by stock partition, in partition order.
pub fn by_partition(l: &Layout, lines: &Lines) -> Vec<(u32, Items)> {
    let mut groups: Vec<(u32, Lines)> = Vec::new();
    for (item, qty) in lines {
        let part = l.part(item);
        match groups.iter_mut().find(|(p, _)| *p == part) {
            Some((_, g)) => g.push((item.clone(), *qty)),
            None => groups.push((part, vec![(item.clone(), *qty)])),
        }
    }
    groups.sort_by_key(|(p, _)| *p);
    groups
        .into_iter()
        .map(|(p, lines)| {
            let json = encode_lines(&lines);
            (p, Items { json, lines })
        })
        .collect()
}

/// One saga's stock side at work: the database, the partitions, the log ids, the saga and its
/// order — what every script call of the saga shares.
struct Steps<'a> {
    conn: Conn,
    l: &'a Layout,
    ids: &'a std::sync::Arc<IdPool>,
    saga: &'a str,
    order: &'a str,
}

impl<'a> Steps<'a> {
    /// The steps of saga `saga` of `order` over `ctx`, the saga's lines grouped by partition, and
    /// its home partition (the highest, reserved last, where a multi-partition outcome is logged).
    fn start(
        ctx: &'a SagaCtx,
        saga: &'a str,
        order: &'a str,
        items: &Items,
    ) -> (Steps<'a>, Vec<(u32, Items)>, u32) {
        let groups = by_partition(&ctx.layout, &items.lines);
        let home = groups.last().map_or(0, |(p, _)| *p);
        let steps = Steps {
            conn: ctx.db.clone(),
            l: &ctx.layout,
            ids: &ctx.ids,
            saga,
            order,
        };
        (steps, groups, home)
    }

    /// `reserve.lua` on partition `part`, in `mode` (`whole` | `part` | `last`), for a saga whose
    /// items span `parts` partitions.
    #[allow(clippy::too_many_arguments)]
    async fn reserve(
        &mut self,
        part: u32,
        items: &Items,
        mode: &str,
        parts: usize,
        user: &str,
        total: &str,
    ) -> Result<Reply, redis::RedisError> {
        let args = [self.order, user, total];
        let parts = parts.to_string();
        self.run(&RESERVE, part, &args, items, &[mode, &parts])
            .await
    }

    /// `release.lua` on partition `part`, in `mode`.
    async fn release(
        &mut self,
        part: u32,
        items: &Items,
        mode: &str,
    ) -> Result<Reply, redis::RedisError> {
        let args = [self.order];
        self.run(&RELEASE, part, &args, items, &[mode]).await
    }

    /// Runs `reserve.lua` or `release.lua` on partition `part`: keys the saga record, the
    /// partition's log and every line's item; arguments the log id, the saga id, `args`, the
    /// lines' JSON, `then` (the mode, ...), then every line's quantity.
    async fn run(
        &mut self,
        script: &Script,
        part: u32,
        args: &[&str],
        items: &Items,
        then: &[&str],
    ) -> Result<Reply, redis::RedisError> {
        let mut inv = script.prepare_invoke();
        inv.key(STOCK.record_key(self.l, part, self.saga))
            .key(keys::log(STOCK_LOG, self.l, part));
        for (item, _) in &items.lines {
            inv.key(keys::item(self.l, item));
        }
        inv.arg(self.ids.next()).arg(self.saga);
        for a in args {
            inv.arg(*a);
        }
        inv.arg(&items.json);
        for a in then {
            inv.arg(*a);
        }
        for (_, qty) in &items.lines {
            inv.arg(*qty);
        }
        let reply = inv.invoke_async(&mut self.conn).await?;
        // On the replicas before the entry that triggered it is acknowledged.
        self.conn
            .replicated(&keys::log(STOCK_LOG, self.l, part))
            .await?;
        Ok(reply)
    }

    /// `finish.lua`: logs a multi-partition saga's outcome `kind` in its home partition.
    async fn finish(
        &mut self,
        home: u32,
        kind: &str,
        parts: usize,
        fields: &[(&str, &str)],
    ) -> Result<Reply, redis::RedisError> {
        let mut inv = FINISH.prepare_invoke();
        inv.key(STOCK.record_key(self.l, home, self.saga))
            .key(keys::log(STOCK_LOG, self.l, home));
        inv.arg(self.ids.next())
            .arg(self.saga)
            .arg(kind)
            .arg(parts)
            .arg(self.order);
        for (k, v) in fields {
            inv.arg(*k).arg(*v);
        }
        let reply = inv.invoke_async(&mut self.conn).await?;
        self.conn
            .replicated(&keys::log(STOCK_LOG, self.l, home))
            .await?;
        Ok(reply)
    }
}

/// Reserves every line of the saga, all or nothing, across its partitions; answers the outcome
/// (`Ok`, `Rejected(reason)`, or `Dup` when it was decided before).
pub async fn reserve_all(
    ctx: &SagaCtx,
    saga: &str,
    order: &str,
    user: &str,
    total: i64,
    items: &Items,
) -> Result<Reply, redis::RedisError> {
    let total = total.to_string();
    let (mut steps, groups, home) = Steps::start(ctx, saga, order, items);
    let n = groups.len();
    let Some(((_, home_lines), before)) = groups.split_last().filter(|_| n > 1) else {
        return steps.reserve(home, items, "whole", 1, user, &total).await;
    };
    for (i, (part, lines)) in before.iter().enumerate() {
        let reply = steps.reserve(*part, lines, "part", n, user, &total).await?;
        if let Some(reason) = refusal(&reply, *part)? {
            return reject(&mut steps, &groups[..i], home, n, reason).await;
        }
        if let Some(pause) = *TEST_PAUSE {
            tracing::warn!(saga, part, ?pause, "test pause between partitions");
            tokio::time::sleep(pause).await;
        }
    }
    // The home partition's reservation logs the outcome with it (now, or before a crash when
    // this is a redelivery).
    let reply = steps
        .reserve(home, home_lines, "last", n, user, &total)
        .await?;
    match refusal(&reply, home)? {
        None => Ok(reply),
        Some(reason) => reject(&mut steps, before, home, n, reason).await,
    }
}

/// What one partition's reservation answered: `None` when it holds the saga's lines (reserved
/// now, or the first time, before a crash), or why it refused (now, before a crash, or because an
/// abort overtook the reservation there and left a tombstone).
fn refusal(reply: &Reply, part: u32) -> Result<Option<String>, redis::RedisError> {
    match reply {
        Reply::Ok(_) => Ok(None),
        Reply::Dup(state) if state == STOCK.held => Ok(None),
        Reply::Rejected(reason) => Ok(Some(reason.clone())),
        Reply::Dup(state) => Ok(Some(format!(
            "the stock of this order was already {} (partition {part}) when the checkout was delivered again",
            state.to_lowercase()
        ))),
        other => Err(redis::RedisError::from(std::io::Error::other(format!(
            "reserve.lua answered {other:?}"
        )))),
    }
}

/// A refused multi-partition reservation: releases the partitions `reserved` before the refusal,
/// then logs the outcome `StockRejected` in the home partition.
async fn reject(
    steps: &mut Steps<'_>,
    reserved: &[(u32, Items)],
    home: u32,
    parts: usize,
    reason: String,
) -> Result<Reply, redis::RedisError> {
    for (part, lines) in reserved {
        steps.release(*part, lines, "part").await?;
    }
    let fields = [("reason", reason.as_str())];
    steps.finish(home, "StockRejected", parts, &fields).await?;
    Ok(Reply::Rejected(reason))
}

/// Releases the saga's reservations in every partition of its items (tombstones where it holds
/// none), then confirms with `StockReleased`; answers `Ok([released])` or `Dup(state)`.
pub async fn release_all(
    ctx: &SagaCtx,
    saga: &str,
    order: &str,
    items: &Items,
) -> Result<Reply, redis::RedisError> {
    let (mut steps, groups, home) = Steps::start(ctx, saga, order, items);
    if groups.len() <= 1 {
        return steps.release(home, items, "whole").await;
    }
    let mut released = false;
    for (part, lines) in &groups {
        let reply = steps.release(*part, lines, "part").await?;
        released |= reply == Reply::Ok(vec!["1".to_string()]);
    }
    let released = if released { "1" } else { "0" };
    let fields = [("items", items.json.as_str()), ("released", released)];
    steps
        .finish(home, "StockReleased", groups.len(), &fields)
        .await?;
    Ok(Reply::Ok(vec![released.to_string()]))
}
