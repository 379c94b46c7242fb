//! `POST /orders/checkout/{id}`: admit the checkout under the order's Redlock, then wait for the
//! saga's outcome and answer it.
//!
//! 1. Take `lock:order:{id}` (bounded wait), run the admission script, release the lock on every
//!    path. The script reads the order itself (no read before it: one round trip): unknown →
//!    404, paid → 200, empty → 400; it starts a new saga, or says which saga already decides the
//!    order (join it). When an item repeats in the order, the lines are summed here
//!    (`common::saga::sum_lines`) and admitted again with them. When the lock cannot be had, the
//!    order is read without it, so that what needs no lock (unknown, paid, empty) is still answered.
//! 2. Wait until the saga is done: woken by its announcement on pub/sub, which carries the
//!    outcome (a started saga is waited for from before its admission, so it is never read
//!    while in flight), re-reading the record as a fallback.
//! 4. Still undecided after `CHECKOUT_TIMEOUT`: abort through the same compare-and-set the
//!    participants use, and answer whichever decision won.
//!
//! **No checkout waits longer than its timeout plus [`GRACE`]** from the request's arrival,
//! whatever stalls: the admission lock's wait is cut to the time left, the wait after a timeout
//! abort to the grace, and a database that stops answering (cut off, frozen) gets a 503 when the
//! time is up ("may still complete; retry to learn the outcome": a retry joins the same saga)
//! instead of holding the client until the Redis response timeout.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::error::ApiError;
use common::http::HandlerResult;
use common::idempotency::{self, Keyed};
use common::keys;
use common::lock::LockFailure;
use common::saga::{decode_lines, encode_lines, sum_lines, Decision, OrderStatus, Outcome};
use tokio::time::Instant;

use crate::saga::{self, Admission, SummedLines};
use crate::waiters::Waiter;
use crate::{store, Order};

/// TTL of the admission lock: far above the admission's few milliseconds, so that only a paused
/// process lets it expire (and then the fenced scripts keep the saga safe).
pub const LOCK_TTL: Duration = Duration::from_secs(10);
/// How long a checkout waits for the admission lock before answering 503.
pub const LOCK_WAIT: Duration = Duration::from_secs(5);
/// How long past `CHECKOUT_TIMEOUT` a checkout may take to answer: the abort and its answer.
pub const GRACE: Duration = common::config::CHECKOUT_GRACE;
/// The time a checkout gets that reaches this replica already past its deadline: the gateway
/// moved it here after the replica it went to first said nothing for
/// [`common::config::checkout_read_timeout`] (a frozen process). Instead of a 503 at once, it
/// gets this long to find or reach the outcome (the saga the frozen replica started is usually
/// decided by then, by the other replicas' consumers or the log parser; an order with no saga
/// gets one), then the [`GRACE`] like any checkout (an undecided saga is aborted, as the timeout
/// says, and that refusal is the answer).
pub const LATE_BUDGET: Duration = Duration::from_millis(500);
/// How far under timeout + [`GRACE`] a checkout stops waiting: the answer still has to be written.
const ANSWER_MARGIN: Duration = Duration::from_millis(100);
/// How much earlier than the gateway's full wait a checkout may arrive and still count as moved
/// off a frozen replica (clock steps between the gateway's stamp and this replica's reading).
const FROZEN_MARGIN: Duration = Duration::from_millis(300);
/// How often a waiting checkout re-reads its saga when no wake-up came.
const POLL: Duration = Duration::from_millis(500);

impl Order {
    /// Handles `POST /orders/checkout/{raw_id}`, which reached the system at `arrived` (at the
    /// gateway: a checkout the gateway moved here after another replica died keeps its first
    /// deadline). With an `Idempotency-Key` the first final answer is kept in the key's claim
    /// and answered to a repeat (a checkout is idempotent by itself: a repeat joins the same
    /// saga or finds the order paid; the key adds that a refusal stays the answer).
    pub(crate) async fn checkout(
        &self,
        raw_id: &str,
        keyed: Option<&Keyed>,
        arrived: Instant,
    ) -> HandlerResult {
        let id = common::validate::existing_id(raw_id, "order")?;
        let arrived = self.late_arrival(arrived);
        let mut db = self.db.clone();
        idempotency::answer_once(&mut db, &self.layout, keyed, "", false, |_| {
            self.checkout_by(id, arrived)
        })
        .await
    }

    /// The arrival to count a checkout's deadline from: `arrived`, unless the checkout comes from
    /// a replica that said nothing for the gateway's whole wait
    /// ([`common::config::checkout_read_timeout`]: a frozen process); then as if it had arrived
    /// just late enough to have [`LATE_BUDGET`] left for its saga, and the [`GRACE`] after it. A checkout retried after another replica
    /// answered 503 at its deadline comes earlier than that and keeps its deadline (past: a 503
    /// at once), so that a stalled database still costs no more than timeout + [`GRACE`].
    fn late_arrival(&self, arrived: Instant) -> Instant {
        let silent_for = common::config::checkout_read_timeout(self.checkout_timeout);
        if arrived.elapsed() + FROZEN_MARGIN < silent_for {
            return arrived;
        }
        let Some(latest) = (Instant::now() + LATE_BUDGET).checked_sub(self.checkout_timeout) else {
            return arrived;
        };
        self.backing.metrics.incr("checkouts_late_total", 1);
        tracing::info!(
            waited_ms = arrived.elapsed().as_millis() as u64,
            "checkout moved here off a replica that said nothing past its deadline"
        );
        latest.max(arrived)
    }

    /// The checkout of `id` answered by its deadline: `arrived` + `CHECKOUT_TIMEOUT` + [`GRACE`].
    async fn checkout_by(&self, id: &str, arrived: Instant) -> Result<serde_json::Value, ApiError> {
        let limit =
            (self.checkout_timeout + GRACE - ANSWER_MARGIN).saturating_sub(arrived.elapsed());
        // Already past its deadline (the gateway moved it here after another replica answered
        // 503 at that deadline): answered at once, starting nothing that no one would wait for.
        let answer = if limit.is_zero() {
            None
        } else {
            tokio::time::timeout(limit, self.checkout_within(id, arrived))
                .await
                .ok()
        };
        match answer {
            Some(answer) => answer,
            None => {
                self.backing
                    .metrics
                    .incr("checkouts_past_deadline_total", 1);
                tracing::warn!(
                    order = id,
                    "checkout not answered within its timeout; answering 503"
                );
                Err(ApiError::Unavailable(format!(
                    "the checkout of order `{id}` could not be decided within {} ms (a database \
                     or service is not answering): it may still complete; retry to learn its \
                     outcome (a retry joins the same checkout)",
                    self.checkout_timeout.as_millis()
                )))
            }
        }
    }

    /// The checkout of `id`, which arrived at `arrived`.
    async fn checkout_within(
        &self,
        id: &str,
        arrived: Instant,
    ) -> Result<serde_json::Value, ApiError> {
        let sid = self.ids.next();
        // Waiting for the saga this checkout may start begins before it can end.
        let mut started = Some(self.waiters.register(&sid));
        let mut read: Option<SummedLines> = None;
        let (saga, waiter) = loop {
            let wait = LOCK_WAIT
                .min((arrived + self.checkout_timeout).saturating_duration_since(Instant::now()));
            let admission = match self.admit(id, &sid, read.as_ref(), wait).await? {
                Ok(admission) => admission,
                Err(locked_out) => return self.answer_unlocked(id, locked_out).await,
            };
            match admission {
                Admission::Started(s) => break (s, started.take()),
                Admission::Join(s) => break (s, None),
                Admission::Paid(s) => return paid(id, &s),
                Admission::NotFound => return Err(unknown(id)),
                Admission::Empty => return Err(empty(id)),
                Admission::Sum(items) => {
                    let lines = decode_lines(&items).ok_or_else(|| {
                        ApiError::Internal(format!(
                            "order `{id}`: its `items` field is not a list of [item, quantity] lines"
                        ))
                    })?;
                    let summed = encode_lines(&sum_lines(&lines)?);
                    read = Some(SummedLines { items, summed });
                }
                Admission::Changed => read = None,
            }
        };
        tracing::Span::current().record("saga", saga.as_str());
        let outcome = self.await_outcome(id, &saga, arrived, waiter).await?;
        // The decision and the admission before it are on the replicas before the answer, also
        // when another order replica's consumer made the decision.
        self.db
            .clone()
            .replicated_all(&keys::order(&self.layout, id))
            .await?;
        self.answer(id, &saga, outcome)
    }

    /// The answer when the admission lock could not be had: what a read of the order decides
    /// without it (unknown, paid, empty), else the lock's 503.
    async fn answer_unlocked(
        &self,
        id: &str,
        locked_out: ApiError,
    ) -> Result<serde_json::Value, ApiError> {
        let order = store::find(&mut self.db.clone(), &self.layout, id)
            .await?
            .ok_or_else(|| unknown(id))?;
        if order.paid() {
            return paid(id, &order.saga);
        }
        if order.status == OrderStatus::Open && order.items.is_empty() {
            return Err(empty(id));
        }
        Err(locked_out)
    }

    /// Runs the admission script under the order's Redlock, releasing it on every path — also
    /// when the checkout's deadline cancels the wait for it: the admission runs in a task of its
    /// own, which a dropped wait does not stop. (Cancelled midway, between taking the lock and
    /// releasing it, it left the lock held for its whole TTL, and every checkout of the order
    /// meanwhile a 503.) The inner `Err` is the 503 of a lock that could not be had.
    async fn admit(
        &self,
        id: &str,
        sid: &str,
        read: Option<&SummedLines>,
        wait: Duration,
    ) -> Result<Result<Admission, ApiError>, ApiError> {
        let (locks, mut db, layout, ids) = (
            self.locks.clone(),
            self.db.clone(),
            self.layout,
            self.ids.clone(),
        );
        let (id, sid, read) = (id.to_string(), sid.to_string(), read.cloned());
        let admission = tokio::spawn(async move {
            let lease = match locks
                .lock_within(&keys::order_lock(&id), LOCK_TTL, wait)
                .await
            {
                Ok(lease) => lease,
                Err(e) => {
                    return Ok(Err(match e {
                        LockFailure::Busy(_) => ApiError::Unavailable(format!(
                            "cannot admit the checkout of order `{id}` now ({e}); retry"
                        )),
                        LockFailure::Nodes { .. } => {
                            ApiError::Unavailable(format!("{e}; retry later"))
                        }
                    }))
                }
            };
            let now_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            let started = saga::start(
                &mut db,
                &layout,
                &ids.next(),
                &id,
                &sid,
                read.as_ref(),
                now_ms,
            )
            .await;
            locks.release(lease).await;
            Ok(Ok(started?))
        });
        admission
            .await
            .map_err(|e| ApiError::Internal(format!("the admission task failed: {e}")))?
    }

    /// Waits for saga `sid` to be done, until `CHECKOUT_TIMEOUT` after the request `arrived`;
    /// then aborts it. Answers the final view (or, when a timeout abort's compensations are still
    /// running after the grace, the abort decision).
    /// `started`: this checkout started the saga, and waits for it from before its admission.
    async fn await_outcome(
        &self,
        id: &str,
        sid: &str,
        arrived: Instant,
        started: Option<Waiter>,
    ) -> Result<Outcome, ApiError> {
        if let Some(done) = self
            .wait_done(id, sid, arrived + self.checkout_timeout, started)
            .await?
        {
            return Ok(done);
        }
        self.backing.metrics.incr("checkouts_timed_out_total", 1);
        tracing::warn!(
            saga = sid,
            "checkout undecided after the timeout; aborting it"
        );
        let home = common::saga::SagaHome {
            layout: &self.layout,
            part: self.layout.part(id),
        };
        let reply = common::saga::abort(
            &mut self.db.clone(),
            home,
            self.parts,
            &self.ids.next(),
            sid,
            "checkout timed out and was aborted; retry",
        )
        .await?;
        tracing::debug!(saga = sid, reply = reply.name(), "timeout abort");
        // Compensations confirmed within the grace, or the decision as it stands.
        if let Some(done) = self
            .wait_done(id, sid, arrived + self.checkout_timeout + GRACE / 2, None)
            .await?
        {
            return Ok(done);
        }
        // Decided, compensations still running (a participant is down): answer the decision.
        common::saga::outcome(&mut self.db.clone(), &self.layout, id, sid)
            .await?
            .ok_or_else(|| ApiError::Internal(format!("saga `{sid}` vanished")))
    }

    /// Waits for saga `sid` to be done by `deadline`: its announcement's outcome, or a read of
    /// its record (first, unless `started` says this checkout started it and so it is in flight;
    /// then after every wait that the announcement did not end).
    async fn wait_done(
        &self,
        id: &str,
        sid: &str,
        deadline: Instant,
        started: Option<Waiter>,
    ) -> Result<Option<Outcome>, ApiError> {
        let skip_read = started.is_some();
        let mut waiter = started.unwrap_or_else(|| self.waiters.register(sid));
        if !skip_read {
            if let Some(done) = self.read_done(id, sid).await? {
                return Ok(Some(done));
            }
        }
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            if let Some(done) = waiter.done_within((deadline - now).min(POLL)).await {
                return Ok(Some(done));
            }
            if let Some(done) = self.read_done(id, sid).await? {
                return Ok(Some(done));
            }
        }
    }

    /// The saga's outcome when it is done, from its record.
    async fn read_done(&self, id: &str, sid: &str) -> Result<Option<Outcome>, ApiError> {
        Ok(
            common::saga::outcome(&mut self.db.clone(), &self.layout, id, sid)
                .await?
                .filter(|v| v.done),
        )
    }

    fn answer(&self, id: &str, sid: &str, v: Outcome) -> Result<serde_json::Value, ApiError> {
        if v.decision == Decision::Commit {
            self.backing.metrics.incr("checkouts_committed_total", 1);
            return paid(id, sid);
        }
        self.backing.metrics.incr("checkouts_refused_total", 1);
        let reason = if v.reason.is_empty() {
            "checkout aborted".to_string()
        } else {
            v.reason
        };
        Err(ApiError::BadRequest(format!(
            "checkout of order `{id}` refused: {reason}"
        )))
    }
}

fn unknown(id: &str) -> ApiError {
    ApiError::NotFound(format!("unknown order `{id}`"))
}

fn empty(id: &str) -> ApiError {
    ApiError::BadRequest(format!(
        "order `{id}` is empty: add items before checking out"
    ))
}

fn paid(id: &str, saga: &str) -> Result<serde_json::Value, ApiError> {
    Ok(serde_json::json!({ "order_id": id, "paid": true, "saga": saga }))
}
