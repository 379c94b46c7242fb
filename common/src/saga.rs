//! The checkout saga's shared vocabulary: its participants, its states, its records and the two
//! order-side transitions that both the order service and the log parser run.
//!
//! **The participants table** ([`PARTICIPANTS`]) is the one description of who takes part in a
//! checkout. The saga is a chain: the first participant acts on `CheckoutStarted`, each next one on
//! its predecessor's [`Participant::done`] event, and the order commits on the last one's. Any
//! participant's [`Participant::refused`] event aborts the saga; on `CheckoutAborted` every
//! participant compensates and logs [`Participant::compensated`], which the order records by
//! removing the participant from the saga's `pending` set. From the table follow the consumer
//! groups ([`groups`], [`streams_read_by`]), the order side's reactions ([`step_of`]), the abort's
//! pending set, the audit's checks and the recovery's passes — so adding a participant (a shipping
//! service, say) is its crate plus one row.

use std::collections::HashMap;
use std::fmt;
use std::sync::LazyLock;

use crate::db::Conn;
use redis::Script;

use crate::db::{Fields, RecordError, StoreError};
use crate::error::ApiError;
use crate::event::kind;
use crate::keys;
use crate::partition::Layout;

/// One participant of the checkout saga: a service that does a step and can undo it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Participant {
    /// The service's name: its consumer group, and `part` in `CompensationConfirmed`.
    pub name: &'static str,
    /// The service's log (read by the order service and by the next participant).
    pub log: &'static str,
    /// Prefix of its saga records (`ssaga:`).
    pub record_prefix: &'static str,
    /// The event it logs when it did its step (`StockReserved`).
    pub done: &'static str,
    /// The event it logs when it refuses the step (`StockRejected`, with `reason`).
    pub refused: &'static str,
    /// The event it logs when it compensated an aborted saga (`StockReleased`).
    pub compensated: &'static str,
    /// Its record's `state` while it holds the saga's resources (`RESERVED`).
    pub held: &'static str,
    /// Its record's `state` once it gave them back (`RELEASED`).
    pub released: &'static str,
    /// Which of its partitions hold its records of a saga.
    pub records_by: RecordsBy,
}

/// Where a participant keeps its records of a saga: in the partition of what its step changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordsBy {
    /// One record in each partition holding one of the order's items (stock).
    Items,
    /// One record in the partition of the order's user (payment).
    User,
    /// One record in the partition of the order id.
    Order,
}

/// Stock reserves every line of the order, all or nothing.
pub const STOCK: Participant = Participant {
    name: "stock",
    log: keys::STOCK_LOG,
    record_prefix: "ssaga:",
    done: kind::STOCK_RESERVED,
    refused: kind::STOCK_REJECTED,
    compensated: kind::STOCK_RELEASED,
    held: "RESERVED",
    released: "RELEASED",
    records_by: RecordsBy::Items,
};

/// Payment charges the order's total to its user.
pub const PAYMENT: Participant = Participant {
    name: "payment",
    log: keys::PAYMENT_LOG,
    record_prefix: "psaga:",
    done: kind::PAYMENT_CHARGED,
    refused: kind::PAYMENT_REJECTED,
    compensated: kind::PAYMENT_REFUNDED,
    held: "CHARGED",
    released: "REFUNDED",
    records_by: RecordsBy::User,
};

/// The checkout saga's participants, in the order they act.
pub static PARTICIPANTS: &[Participant] = &[STOCK, PAYMENT];

/// A participant record's `state` when it refused the step.
pub const REJECTED: &str = "REJECTED";
/// A participant record's `state` when the abort reached it before its step: it will refuse the
/// step if it arrives late.
pub const TOMBSTONE: &str = "TOMBSTONE";

/// The service that owns the order-side log and decides sagas.
pub const ORDER: &str = "order";

impl Participant {
    /// Its record of saga `sid` in partition `part` of its database (layout `l`).
    pub fn record_key(&self, l: &Layout, part: u32, sid: &str) -> String {
        keys::participant_saga(self.record_prefix, l, part, sid)
    }

    /// The partitions (of its layout `l`) that hold its records of the saga `r`, in order.
    pub fn record_parts(&self, l: &Layout, r: &SagaRecord) -> Vec<u32> {
        let mut parts: Vec<u32> = match self.records_by {
            RecordsBy::Items => decode_lines(&r.items)
                .unwrap_or_default()
                .iter()
                .map(|(item, _)| l.part(item))
                .collect(),
            RecordsBy::User => vec![l.part(&r.user)],
            RecordsBy::Order => vec![l.part(&r.order)],
        };
        parts.sort_unstable();
        parts.dedup();
        parts
    }

    /// The event this participant acts on, given the table it sits in: `CheckoutStarted` for the
    /// first, its predecessor's `done` event for the others.
    pub fn trigger(&self, parts: &[Participant]) -> (&'static str, &'static str) {
        match parts.iter().position(|p| p == self) {
            Some(i) if i > 0 => (parts[i - 1].log, parts[i - 1].done),
            _ => (keys::ORDER_LOG, kind::CHECKOUT_STARTED),
        }
    }
}

/// Finds a participant by name.
pub fn participant(parts: &'static [Participant], name: &str) -> Option<&'static Participant> {
    parts.iter().find(|p| p.name == name)
}

/// The streams the service `service` reads, each through its consumer group named `service`:
/// the order service reads every participant's log; a participant reads `log:order` (the
/// abort, and the start for the first) and its predecessor's log.
pub fn streams_read_by(parts: &[Participant], service: &str) -> Vec<&'static str> {
    if service == ORDER {
        return parts.iter().map(|p| p.log).collect();
    }
    let Some(p) = parts.iter().find(|p| p.name == service) else {
        return Vec::new();
    };
    let mut streams = vec![keys::ORDER_LOG];
    let (log, _) = p.trigger(parts);
    if !streams.contains(&log) {
        streams.push(log);
    }
    streams
}

/// The event kinds of the log `stream` that the service `service` acts on, as the table says: a
/// participant its trigger ([`Participant::trigger`]) and, on `log:order`, the abort it
/// compensates; the order side each participant's refusal and compensation, and the last one's
/// `done` (the commit). The consumers acknowledge every other entry without decoding it.
pub fn reacts_to(parts: &[Participant], service: &str, stream: &str) -> Vec<&'static str> {
    let mut kinds = Vec::new();
    if service == ORDER {
        for (i, p) in parts.iter().enumerate().filter(|(_, p)| p.log == stream) {
            kinds.extend([p.refused, p.compensated]);
            if i + 1 == parts.len() {
                kinds.push(p.done);
            }
        }
        return kinds;
    }
    let Some(p) = parts.iter().find(|p| p.name == service) else {
        return kinds;
    };
    let (log, trigger) = p.trigger(parts);
    if log == stream {
        kinds.push(trigger);
    }
    if stream == keys::ORDER_LOG {
        kinds.push(kind::CHECKOUT_ABORTED);
    }
    kinds
}

/// One consumer group of the saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Group {
    /// The service whose database holds the stream.
    pub owner: &'static str,
    /// The stream.
    pub stream: &'static str,
    /// The group (the reading service's name).
    pub group: &'static str,
}

/// Every consumer group the saga uses (what the log parser and the CLI report on).
pub fn groups(parts: &[Participant]) -> Vec<Group> {
    let owner_of = |stream: &str| {
        parts
            .iter()
            .find(|p| p.log == stream)
            .map_or(ORDER, |p| p.name)
    };
    let readers = parts.iter().map(|p| p.name).chain([ORDER]);
    let mut out = Vec::new();
    for reader in readers {
        for stream in streams_read_by(parts, reader) {
            out.push(Group {
                owner: owner_of(stream),
                stream,
                group: reader,
            });
        }
    }
    out
}

/// What a participant's log entry means to the order side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepKind {
    /// The participant did its step.
    Done,
    /// It refused, for this reason.
    Refused,
    /// It compensated an aborted saga.
    Compensated,
}

/// The participant and step an event kind stands for, if it is a saga step of the table.
pub fn step_of(
    parts: &'static [Participant],
    kind: &str,
) -> Option<(&'static Participant, StepKind)> {
    parts.iter().find_map(|p| {
        if kind == p.done {
            Some((p, StepKind::Done))
        } else if kind == p.refused {
            Some((p, StepKind::Refused))
        } else if kind == p.compensated {
            Some((p, StepKind::Compensated))
        } else {
            None
        }
    })
}

/// The names of every participant, as the abort records them pending (`stock payment`).
pub fn pending_all(parts: &[Participant]) -> String {
    parts.iter().map(|p| p.name).collect::<Vec<_>>().join(" ")
}

/// An order's state (`status` of `order:<id>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderStatus {
    /// Items may be added; checkout may start.
    Open,
    /// A saga is deciding this order.
    CheckingOut,
    /// Paid; final.
    Paid,
}

impl OrderStatus {
    /// The stored form (`OPEN`, `CHECKING_OUT`, `PAID`), which the Lua scripts also write.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Open => "OPEN",
            OrderStatus::CheckingOut => "CHECKING_OUT",
            OrderStatus::Paid => "PAID",
        }
    }

    /// Parses the stored form.
    pub fn parse(s: &str) -> Option<OrderStatus> {
        match s {
            "OPEN" => Some(OrderStatus::Open),
            "CHECKING_OUT" => Some(OrderStatus::CheckingOut),
            "PAID" => Some(OrderStatus::Paid),
            _ => None,
        }
    }
}

/// A saga's decision (`decision` of `saga:<sid>`), taken once by compare-and-set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Not decided yet.
    None,
    /// Committed: the order is paid.
    Commit,
    /// Aborted: every participant compensates.
    Abort,
}

impl Decision {
    /// The stored form (`none`, `commit`, `abort`).
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::None => "none",
            Decision::Commit => "commit",
            Decision::Abort => "abort",
        }
    }

    /// Parses the stored form.
    pub fn parse(s: &str) -> Option<Decision> {
        match s {
            "none" => Some(Decision::None),
            "commit" => Some(Decision::Commit),
            "abort" => Some(Decision::Abort),
            _ => None,
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a saga stands (derived from its decision and `done`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SagaState {
    /// No decision yet (a participant is still acting).
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

/// The order-side record of a saga, `saga:{o<k>}:<sid>` in order-db — the one reader of that
/// record (the waiting checkout, recovery, audit and the CLI all use it).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SagaRecord {
    /// The saga id.
    pub id: String,
    /// Its partition of order-db (its order's).
    pub part: u32,
    /// The order it decides.
    pub order: String,
    /// The order's user.
    pub user: String,
    /// The order's total.
    pub total: i64,
    /// The summed lines (JSON, as logged).
    pub items: String,
    /// The decision.
    pub decision: Decision,
    /// Why it was aborted.
    pub reason: String,
    /// When it started (ms since the epoch).
    pub started_ms: u64,
    /// The participants whose compensation is not confirmed yet (after an abort).
    pub pending: Vec<String>,
    /// Committed, or aborted and fully compensated.
    pub done: bool,
}

impl SagaRecord {
    /// [`SagaRecord::from_hash`] of a record held as an ordered map: as the log parser's state,
    /// the audit and `RecordsRetired` entries hold them.
    pub fn from_fields(
        l: &Layout,
        part: u32,
        id: &str,
        fields: &std::collections::BTreeMap<String, String>,
    ) -> Result<SagaRecord, RecordError> {
        let h: HashMap<String, String> =
            fields.iter().map(|(f, v)| (f.clone(), v.clone())).collect();
        SagaRecord::from_hash(l, part, id, &h)
    }

    /// Reads a record from the hash stored at `saga:{o<part>}:<id>` (order-db's layout `l`).
    pub fn from_hash(
        l: &Layout,
        part: u32,
        id: &str,
        h: &HashMap<String, String>,
    ) -> Result<SagaRecord, RecordError> {
        let key = keys::saga(l, part, id);
        let f = Fields::new(&key, h);
        Ok(SagaRecord {
            id: id.to_string(),
            part,
            order: f.text("order")?.to_string(),
            user: f.text("user")?.to_string(),
            total: f.int("total")?,
            items: f.text("items")?.to_string(),
            decision: f.parsed("decision", Decision::parse)?,
            reason: f.text("reason")?.to_string(),
            started_ms: f.int("started_ms")?,
            pending: split_pending(f.text("pending")?),
            done: f.flag("done")?,
        })
    }

    /// Where the saga stands.
    pub fn state(&self) -> SagaState {
        match (self.decision, self.done) {
            (Decision::Commit, _) => SagaState::Committed,
            (Decision::Abort, true) => SagaState::Aborted,
            (Decision::Abort, false) => SagaState::Compensating,
            (Decision::None, _) => SagaState::InFlight,
        }
    }

    /// Milliseconds since the saga started.
    pub fn age_ms(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.started_ms)
    }
}

/// Splits a stored `pending` set (`stock payment`).
pub fn split_pending(s: &str) -> Vec<String> {
    s.split_whitespace().map(String::from).collect()
}

/// Reads saga `sid`'s record; `None` when there is none.
pub async fn load(
    conn: &mut Conn,
    l: &Layout,
    part: u32,
    sid: &str,
) -> Result<Option<SagaRecord>, StoreError> {
    let h: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(keys::saga(l, part, sid))
        .query_async(conn)
        .await?;
    if h.is_empty() {
        return Ok(None);
    }
    Ok(Some(SagaRecord::from_hash(l, part, sid, &h)?))
}

/// The part of a saga record a waiting checkout needs (read with one `HMGET`, the hot path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The decision.
    pub decision: Decision,
    /// Why it was aborted.
    pub reason: String,
    /// Committed, or aborted with every compensation confirmed.
    pub done: bool,
}

/// A saga's end as announced on [`keys::DONE_CHANNEL`] by the script that made it final
/// (`order/lua/commit.lua`, `order/lua/confirm.lua`): `<sid>\n<decision>\n<reason>`. It carries
/// the [`Outcome`], so the checkout waiting for the saga answers without reading its record (a
/// round trip and an `HMGET` per checkout); decisions never change once taken, so the announced
/// one is the record's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement<'a> {
    /// The saga.
    pub saga: &'a str,
    /// Its outcome; `None` when the message names only the saga (the form of versions before
    /// this one, during a rolling upgrade): the waiter reads the record.
    pub outcome: Option<Outcome>,
}

impl<'a> Announcement<'a> {
    /// Parses a message; any payload names a saga (its first line), and only a well-formed
    /// decision of a final saga gives an outcome.
    pub fn parse(payload: &'a str) -> Announcement<'a> {
        let mut parts = payload.splitn(3, '\n');
        let saga = parts.next().unwrap_or_default();
        let decision = parts.next().and_then(Decision::parse);
        let outcome = match (decision, parts.next()) {
            (Some(decision @ (Decision::Commit | Decision::Abort)), Some(reason)) => {
                Some(Outcome {
                    decision,
                    reason: reason.to_string(),
                    done: true,
                })
            }
            _ => None,
        };
        Announcement { saga, outcome }
    }
}

/// Reads saga `sid`'s decision; `None` when there is no such saga.
pub async fn outcome(
    conn: &mut Conn,
    l: &Layout,
    order: &str,
    sid: &str,
) -> Result<Option<Outcome>, StoreError> {
    let key = keys::saga_of(l, order, sid);
    let (decision, reason, done): (Option<String>, Option<String>, Option<String>) =
        redis::cmd("HMGET")
            .arg(&key)
            .arg("decision")
            .arg("reason")
            .arg("done")
            .query_async(conn)
            .await?;
    let Some(decision) = decision else {
        return Ok(None);
    };
    // Parsed in place (the hot path of every waiting checkout): no map of the three fields.
    let bad = |field: &'static str, found: Option<&str>| RecordError {
        key: key.clone(),
        field,
        found: found.map(String::from),
    };
    let decision = Decision::parse(&decision).ok_or_else(|| bad("decision", Some(&decision)))?;
    let reason = reason.ok_or_else(|| bad("reason", None))?;
    let done = match done.as_deref() {
        Some("1") => true,
        Some("0") => false,
        other => return Err(bad("done", other).into()),
    };
    Ok(Some(Outcome {
        decision,
        reason,
        done,
    }))
}

/// What a saga transition script answered. Every saga script answers one of these status words;
/// any other answer is a decode error (a bug or a version mismatch), never a silent default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Applied and logged; script-specific data follows.
    Ok(Vec<String>),
    /// The saga was already decided (compare-and-set lost).
    Decided(String),
    /// No such saga record.
    Unknown,
    /// The order is not held by this saga (`status`, `saga`).
    Fenced(String, String),
    /// Seen before; nothing changed (the participant's record state, when any).
    Dup(String),
    /// Not applicable to the saga's decision.
    Ignored(String),
    /// Re-drive not needed (`decision`, `done`).
    Skipped(String, String),
    /// The participant refused the step, for this reason.
    Rejected(String),
}

impl Reply {
    /// Whether the script applied its change.
    pub fn applied(&self) -> bool {
        matches!(self, Reply::Ok(_))
    }

    /// A short name of the answer, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Reply::Ok(_) => "ok",
            Reply::Decided(_) => "already-decided",
            Reply::Unknown => "unknown-saga",
            Reply::Fenced(..) => "fenced",
            Reply::Dup(_) => "duplicate",
            Reply::Ignored(_) => "ignored",
            Reply::Skipped(..) => "skipped",
            Reply::Rejected(_) => "rejected",
        }
    }
}

impl redis::FromRedisValue for Reply {
    fn from_redis_value(v: redis::Value) -> Result<Self, redis::ParsingError> {
        let (status, parts) = crate::db::status_words(v)?;
        let arg = |i: usize| parts.get(i).cloned().unwrap_or_default();
        Ok(match status.as_str() {
            "OK" => Reply::Ok(parts),
            "DECIDED" => Reply::Decided(arg(0)),
            "UNKNOWN" => Reply::Unknown,
            "FENCED" => Reply::Fenced(arg(0), arg(1)),
            "DUP" => Reply::Dup(arg(0)),
            "IGNORED" => Reply::Ignored(arg(0)),
            "SKIPPED" => Reply::Skipped(arg(0), arg(1)),
            "REJECTED" => Reply::Rejected(arg(0)),
            other => return Err(format!("unknown saga script status `{other}`").into()),
        })
    }
}

static ABORT: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/saga_abort.lua")));
static REDRIVE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/saga_redrive.lua")));

/// Where a saga's order-side record and log entries live: order-db's layout and the partition
/// of the saga's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SagaHome<'a> {
    /// order-db's layout.
    pub layout: &'a Layout,
    /// The partition of the saga's order.
    pub part: u32,
}

impl SagaHome<'_> {
    /// The saga's record.
    pub fn record(&self, sid: &str) -> String {
        keys::saga(self.layout, self.part, sid)
    }

    /// The log partition its entries go to.
    pub fn log(&self) -> String {
        keys::log(keys::ORDER_LOG, self.layout, self.part)
    }
}

/// Decides `abort` with `reason` unless a decision was taken (`lua/saga_abort.lua`), recording
/// every participant of `parts` as pending compensation. Used by the order service (refusals,
/// checkout timeouts) and by the log parser (stuck sagas): one transition, one script.
pub async fn abort(
    conn: &mut Conn,
    home: SagaHome<'_>,
    parts: &[Participant],
    log_id: &str,
    saga: &str,
    reason: &str,
) -> Result<Reply, redis::RedisError> {
    ABORT
        .key(home.record(saga))
        .key(home.log())
        .arg(log_id)
        .arg(saga)
        .arg(reason)
        .arg(pending_all(parts))
        .invoke_async(conn)
        .await
}

/// Re-appends `CheckoutAborted` for an aborted saga whose compensations are not all confirmed
/// (`lua/saga_redrive.lua`), naming the participants still pending.
pub async fn redrive(
    conn: &mut Conn,
    home: SagaHome<'_>,
    log_id: &str,
    saga: &str,
) -> Result<Reply, redis::RedisError> {
    REDRIVE
        .key(home.record(saga))
        .key(home.log())
        .arg(log_id)
        .arg(saga)
        .invoke_async(conn)
        .await
}

/// An order's lines: `(item, quantity)`.
pub type Lines = Vec<(String, i64)>;

/// An order's lines with the quantities of a repeated item summed, in first-seen order.
pub fn sum_lines(lines: &[(String, i64)]) -> Result<Lines, ApiError> {
    let mut out: Lines = Vec::new();
    for (item, qty) in lines {
        match out.iter_mut().find(|(i, _)| i == item) {
            Some((_, q)) => {
                *q = q.checked_add(*qty).ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "the quantities of item `{item}` add up past {}",
                        i64::MAX
                    ))
                })?
            }
            None => out.push((item.clone(), *qty)),
        }
    }
    Ok(out)
}

/// Encodes lines as the JSON carried in orders and saga entries: `[["item", qty], ...]`.
pub fn encode_lines(lines: &[(String, i64)]) -> String {
    let parts: Vec<String> = lines
        .iter()
        .map(|(item, qty)| format!("[{},{qty}]", serde_json::Value::from(item.as_str())))
        .collect();
    format!("[{}]", parts.join(","))
}

/// Decodes lines; `None` when `json` is not a list of `[item, quantity]` pairs.
pub fn decode_lines(json: &str) -> Option<Lines> {
    serde_json::from_str(json).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_announcement_carries_the_outcome_of_a_final_saga() {
        let a = Announcement::parse("s1\ncommit\n");
        assert_eq!(a.saga, "s1");
        assert_eq!(
            a.outcome,
            Some(Outcome {
                decision: Decision::Commit,
                reason: String::new(),
                done: true
            })
        );
        let a = Announcement::parse("s2\nabort\nout of stock: item `x`\nsecond line");
        assert_eq!(a.saga, "s2");
        let o = a.outcome.unwrap();
        assert_eq!(
            (o.decision, o.reason.as_str()),
            (Decision::Abort, "out of stock: item `x`\nsecond line")
        );
        // The older form, and anything not final, name the saga only: the waiter reads it.
        assert_eq!(
            Announcement::parse("s3"),
            Announcement {
                saga: "s3",
                outcome: None
            }
        );
        assert_eq!(Announcement::parse("s4\nnone\n").outcome, None);
        assert_eq!(Announcement::parse("s5\nbogus\nx").outcome, None);
    }

    #[test]
    fn repeated_items_are_summed_in_first_seen_order() {
        let lines = vec![
            ("a".to_string(), 1),
            ("b".to_string(), 2),
            ("a".to_string(), 3),
        ];
        let summed = sum_lines(&lines).unwrap();
        assert_eq!(summed, vec![("a".to_string(), 4), ("b".to_string(), 2)]);
        assert_eq!(encode_lines(&summed), r#"[["a",4],["b",2]]"#);
        assert_eq!(decode_lines(&encode_lines(&summed)).unwrap(), summed);
        assert!(sum_lines(&[("a".into(), i64::MAX), ("a".into(), 1)]).is_err());
        assert!(decode_lines("[[1,2]]").is_none());
    }

    #[test]
    fn the_table_gives_todays_five_groups() {
        let g = groups(PARTICIPANTS);
        let names: Vec<(&str, &str, &str)> =
            g.iter().map(|g| (g.owner, g.stream, g.group)).collect();
        assert_eq!(
            names,
            vec![
                ("order", "log:order", "stock"),
                ("order", "log:order", "payment"),
                ("stock", "log:stock", "payment"),
                ("stock", "log:stock", "order"),
                ("payment", "log:payment", "order"),
            ]
        );
    }

    #[test]
    fn each_group_acts_on_the_events_its_handler_matches() {
        let kinds = |service, stream| reacts_to(PARTICIPANTS, service, stream);
        assert_eq!(
            kinds("stock", "log:order"),
            ["CheckoutStarted", "CheckoutAborted"]
        );
        assert_eq!(kinds("payment", "log:order"), ["CheckoutAborted"]);
        assert_eq!(kinds("payment", "log:stock"), ["StockReserved"]);
        // Stock's own step is the payment's trigger, not a decision: the order side skips it.
        assert_eq!(
            kinds("order", "log:stock"),
            ["StockRejected", "StockReleased"]
        );
        assert_eq!(
            kinds("order", "log:payment"),
            ["PaymentRejected", "PaymentRefunded", "PaymentCharged"]
        );
        // Every group of the table acts on something.
        for g in groups(PARTICIPANTS) {
            assert!(!kinds(g.group, g.stream).is_empty(), "{g:?}");
        }
    }

    #[test]
    fn a_record_with_a_missing_or_bad_field_is_an_error_naming_it() {
        let mut h: HashMap<String, String> = [
            ("order", "o"),
            ("user", "u"),
            ("total", "10"),
            ("items", "[]"),
            ("decision", "abort"),
            ("reason", "r"),
            ("started_ms", "5"),
            ("pending", "stock payment"),
            ("done", "0"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let l = Layout::new("order", 16);
        let r = SagaRecord::from_hash(&l, 3, "s1", &h).unwrap();
        assert_eq!(r.state(), SagaState::Compensating);
        assert_eq!(r.pending, ["stock", "payment"]);
        h.remove("started_ms");
        let e = SagaRecord::from_hash(&l, 3, "s1", &h).unwrap_err();
        assert_eq!((e.key.as_str(), e.field), ("saga:{o3.60}:s1", "started_ms"));
        h.insert("started_ms".into(), "5".into());
        h.insert("decision".into(), "maybe".into());
        let e = SagaRecord::from_hash(&l, 3, "s1", &h).unwrap_err();
        assert_eq!(e.field, "decision");
        assert!(e.to_string().contains("saga:{o3.60}:s1"));
    }
}
