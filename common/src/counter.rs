//! Entities that own one non-negative counter: stock items (`stock`) and users (`credit`).
//!
//! Stock and payment store the same shape and make the same changes to it — create, add,
//! subtract-if-enough, batch-create — so one set of Lua scripts (in `common/lua/`) serves both, and
//! a [`CounterSpec`] says which keys, fields and event types a service uses. Replay reads the same
//! spec to undo nothing and guess nothing.

use std::collections::HashMap;
use std::sync::LazyLock;

use crate::db::Conn;
use redis::Script;

use crate::db::Outcome;
use crate::error::ApiError;
use crate::event::kind as event;
use crate::http::{self, Backing, HandlerResult};
use crate::idempotency::{self, idempotent, Keyed};
use crate::keys::{self, PAYMENT_LOG, STOCK_LOG};
use crate::partition::Layout;
use crate::validate;

// The three single-entity transitions take an optional idempotency answer record
// (`crate::idempotency::idempotent`): a repeated keyed request is answered from it, in the script.
static CREATE: LazyLock<Script> =
    LazyLock::new(|| idempotent("", include_str!("../lua/create_entity.lua"), 2));
static ADD: LazyLock<Script> =
    LazyLock::new(|| idempotent("", include_str!("../lua/counter_add.lua"), 2));
static SUBTRACT: LazyLock<Script> = LazyLock::new(|| {
    idempotent(
        crate::lua::DECIMAL,
        include_str!("../lua/counter_subtract.lua"),
        2,
    )
});
static BATCH_INIT: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/counter_batch_init.lua")));

/// Where and how a service keeps its counter entities.
#[derive(Debug, Clone, Copy)]
pub struct CounterSpec {
    /// Key prefix of the entity hashes (`item:`).
    pub key_prefix: &'static str,
    /// Formats an entity's key (from [`crate::keys`]).
    pub key_of: fn(&Layout, &str) -> String,
    /// The entity's name in log entries and messages (`item`).
    pub entity: &'static str,
    /// The counter field (`stock`).
    pub field: &'static str,
    /// Other fields every entity has (`price`).
    pub extra_fields: &'static [&'static str],
    /// The service log.
    pub log: &'static str,
    /// Event types written by create / add / subtract / batch_init.
    pub created: &'static str,
    /// See [`CounterSpec::created`].
    pub added: &'static str,
    /// See [`CounterSpec::created`].
    pub subtracted: &'static str,
    /// See [`CounterSpec::created`].
    pub batch_init: &'static str,
}

impl PartialEq for CounterSpec {
    fn eq(&self, other: &Self) -> bool {
        self.key_prefix == other.key_prefix
    }
}

impl Eq for CounterSpec {}

/// Stock items in stock-db: `item:<id>` = `{stock, price}`.
pub const STOCK: CounterSpec = CounterSpec {
    key_prefix: keys::ITEM_PREFIX,
    key_of: keys::item,
    entity: "item",
    field: "stock",
    extra_fields: &["price"],
    log: STOCK_LOG,
    created: event::ITEM_CREATED,
    added: event::STOCK_ADDED,
    subtracted: event::STOCK_SUBTRACTED,
    batch_init: event::STOCK_BATCH_INIT,
};

/// Users in payment-db: `user:<id>` = `{credit}`.
pub const CREDIT: CounterSpec = CounterSpec {
    key_prefix: keys::USER_PREFIX,
    key_of: keys::user,
    entity: "user",
    field: "credit",
    extra_fields: &[],
    log: PAYMENT_LOG,
    created: event::USER_CREATED,
    added: event::FUNDS_ADDED,
    subtracted: event::PAYMENT_MADE,
    batch_init: event::USER_BATCH_INIT,
};

/// Both counter services' specs (what [`crate::event::Event::decode`] recognises).
pub static COUNTERS: [CounterSpec; 2] = [STOCK, CREDIT];

/// The four counter transitions, one per script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `create_entity.lua`.
    Create,
    /// `counter_add.lua`.
    Add,
    /// `counter_subtract.lua`.
    Subtract,
    /// `counter_batch_init.lua`.
    BatchInit,
}

impl CounterSpec {
    /// The Redis key of entity `id` (the service's layout `l`).
    pub fn key(&self, l: &Layout, id: &str) -> String {
        (self.key_of)(l, id)
    }

    /// Which transition an event type of this spec stands for.
    pub fn op_of(&self, kind: &str) -> Option<Op> {
        [
            (self.created, Op::Create),
            (self.added, Op::Add),
            (self.subtracted, Op::Subtract),
            (self.batch_init, Op::BatchInit),
        ]
        .into_iter()
        .find_map(|(k, op)| (k == kind).then_some(op))
    }

    /// Creates entity `id` with counter 0 and the given extra fields, logged as `created` in its
    /// partition's log. With `keyed` (a request's `Idempotency-Key`), a repeat finds the reply
    /// stored by the first create of `id` and creates nothing (no reset of an entity changed
    /// since); the key's record of another request is a 422.
    pub async fn create(
        &self,
        conn: &mut Conn,
        l: &Layout,
        log_id: &str,
        id: &str,
        extra: &[(&str, i64)],
        keyed: Option<&Keyed>,
    ) -> Result<Outcome, ApiError> {
        let mut inv = CREATE.prepare_invoke();
        inv.key(self.key(l, id))
            .key(keys::log(self.log, l, l.part(id)));
        inv.arg(log_id).arg(self.created).arg(self.entity).arg(id);
        inv.arg(self.field).arg(0);
        for (f, v) in extra {
            inv.arg(*f).arg(*v);
        }
        idempotency::invoke(inv, conn, l, l.part(id), keyed).await
    }

    /// Adds `amount` (> 0) to the counter of `id` (`op` [`Op::Add`]), or subtracts it if the
    /// counter holds at least that much ([`Op::Subtract`]). With `keyed` (a request's
    /// `Idempotency-Key`), the change and its stored reply are one script, so a repeat is
    /// answered the first reply and changes nothing (exactly once).
    #[allow(clippy::too_many_arguments)]
    pub async fn change(
        &self,
        op: Op,
        conn: &mut Conn,
        l: &Layout,
        log_id: &str,
        id: &str,
        amount: i64,
        keyed: Option<&Keyed>,
    ) -> Result<Outcome, ApiError> {
        let (script, kind) = match op {
            Op::Add => (&*ADD, self.added),
            Op::Subtract => (&*SUBTRACT, self.subtracted),
            Op::Create | Op::BatchInit => {
                return Err(ApiError::Internal(format!("{op:?} is not a change")))
            }
        };
        let mut inv = script.prepare_invoke();
        inv.key(self.key(l, id))
            .key(keys::log(self.log, l, l.part(id)))
            .arg(log_id)
            .arg(kind)
            .arg(self.entity)
            .arg(id)
            .arg(self.field)
            .arg(amount);
        idempotency::invoke(inv, conn, l, l.part(id), keyed).await
    }

    /// Creates or overwrites entities `"0"`..`"n-1"` with the counter at `start` and the extra
    /// fields: one script per partition, each setting that partition's entities and logging one
    /// `batch_init` entry in that partition's log (replay regenerates the partition's ids).
    pub async fn batch_init(
        &self,
        conn: &mut Conn,
        l: &Layout,
        log_id: &str,
        n: i64,
        start: i64,
        extra: &[(&str, i64)],
    ) -> Result<(), redis::RedisError> {
        for (part, ids) in batch_partitions(l, n) {
            let mut inv = BATCH_INIT.prepare_invoke();
            inv.key(keys::log(self.log, l, part));
            for id in &ids {
                inv.key(self.key(l, id));
            }
            inv.arg(log_id).arg(self.batch_init).arg(n);
            inv.arg(self.field).arg(start);
            for (f, v) in extra {
                inv.arg(*f).arg(*v);
            }
            inv.invoke_async::<Outcome>(conn).await?;
        }
        Ok(())
    }

    /// The fields of entity `id`, or `None` when it does not exist.
    pub async fn find(
        &self,
        conn: &mut Conn,
        l: &Layout,
        id: &str,
    ) -> Result<Option<HashMap<String, i64>>, redis::RedisError> {
        let map: HashMap<String, i64> = redis::cmd("HGETALL")
            .arg(self.key(l, id))
            .query_async(conn)
            .await?;
        Ok(if map.is_empty() { None } else { Some(map) })
    }
}

/// The ids `"0"`..`"n-1"` of a `batch_init`, grouped by partition (partitions without any are
/// left out), each group in id order.
pub fn batch_partitions(l: &Layout, n: i64) -> Vec<(u32, Vec<String>)> {
    let mut by_part: Vec<Vec<String>> = vec![Vec::new(); l.p as usize];
    for i in 0..n.max(0) {
        let id = i.to_string();
        by_part[l.part(&id) as usize].push(id);
    }
    by_part
        .into_iter()
        .enumerate()
        .filter(|(_, ids)| !ids.is_empty())
        .map(|(k, ids)| (k as u32, ids))
        .collect()
}

/// The HTTP-facing operations on counter entities, shared by the stock and payment services:
/// parse the path parameters, run the script, turn its outcome into an answer.
pub struct CounterService {
    /// Which entities.
    pub spec: CounterSpec,
    /// The service's database.
    pub db: Conn,
    /// Its partitions.
    pub layout: Layout,
    /// Where log ids and entity ids come from.
    pub ids: std::sync::Arc<crate::ids::IdPool>,
}

/// Largest `n` accepted by `batch_init` (one Lua script; bigger batches would block the database
/// for seconds).
pub const MAX_BATCH: i64 = 1_000_000;

impl CounterService {
    /// Starts the saga service `service` whose entities are `spec`'s (stock, payment): its
    /// database, ids and consumers (`handler` handles their entries), as
    /// [`crate::consumer::start_saga_service`] does for the participants table; answers the
    /// entities' HTTP operations and the service's [`Backing`].
    pub async fn start<F>(
        spec: CounterSpec,
        service: &'static str,
        config: &crate::config::Config,
        handler: fn(crate::consumer::SagaCtx, crate::log::LogEntry) -> F,
    ) -> anyhow::Result<(CounterService, Backing)>
    where
        F: std::future::Future<Output = Result<(), crate::consumer::HandlerError>> + Send + 'static,
    {
        let (ctx, consumers) = crate::consumer::start_saga_service(
            service,
            config,
            crate::saga::PARTICIPANTS,
            &crate::consumer::db_urls(config),
            handler,
        )
        .await?;
        let backing = Backing::new(&ctx, consumers, config);
        let entities = CounterService {
            spec,
            db: ctx.db,
            layout: ctx.layout,
            ids: ctx.ids,
        };
        Ok((entities, backing))
    }

    /// Creates an entity with counter 0 and the given extra fields; answers `{"<entity>_id": id}`.
    /// With an `Idempotency-Key`, the new id is pinned in the key's claim before the create, so
    /// a repeat creates (at most once, in the script) the same entity and answers the same id.
    pub async fn create(&self, extra: &[(&str, i64)], keyed: Option<&Keyed>) -> HandlerResult {
        let mut db = self.db.clone();
        let id = idempotency::claim_if_keyed(&mut db, &self.layout, keyed, &self.ids.next(), true)
            .await?
            .pinned;
        let log_id = self.ids.next();
        self.spec
            .create(&mut db, &self.layout, &log_id, &id, extra, keyed)
            .await?;
        db.replicated(&self.spec.key(&self.layout, &id)).await?;
        let mut body = serde_json::Map::new();
        body.insert(format!("{}_id", self.spec.entity), id.into());
        http::json(&body)
    }

    /// The fields of entity `raw_id`; 404 when unknown.
    pub async fn find(&self, raw_id: &str) -> Result<HashMap<String, i64>, ApiError> {
        let id = validate::existing_id(raw_id, self.spec.entity)?;
        self.spec
            .find(&mut self.db.clone(), &self.layout, id)
            .await?
            .ok_or_else(|| self.unknown(id))
    }

    /// A field of entity `id` as [`CounterService::find`] read it; a missing field is a 500
    /// naming the key, never a 0.
    pub fn field(
        &self,
        id: &str,
        entity: &HashMap<String, i64>,
        field: &'static str,
    ) -> Result<i64, ApiError> {
        entity.get(field).copied().ok_or_else(|| {
            ApiError::from(crate::db::RecordError {
                key: self.spec.key(&self.layout, id),
                field,
                found: None,
            })
        })
    }

    /// Adds `raw_amount` to the counter of `raw_id` (exactly once per `Idempotency-Key`).
    pub async fn add(
        &self,
        raw_id: &str,
        raw_amount: &str,
        keyed: Option<&Keyed>,
    ) -> HandlerResult {
        self.change(Op::Add, raw_id, raw_amount, keyed).await
    }

    /// Subtracts `raw_amount` from the counter of `raw_id`, refusing (400) when it holds less
    /// (exactly once per `Idempotency-Key`; a refusal is the answer repeated for the key too).
    pub async fn subtract(
        &self,
        raw_id: &str,
        raw_amount: &str,
        keyed: Option<&Keyed>,
    ) -> HandlerResult {
        self.change(Op::Subtract, raw_id, raw_amount, keyed).await
    }

    async fn change(
        &self,
        op: Op,
        raw_id: &str,
        raw_amount: &str,
        keyed: Option<&Keyed>,
    ) -> HandlerResult {
        let id = validate::existing_id(raw_id, self.spec.entity)?;
        let amount = validate::positive(raw_amount, "amount")?;
        let log_id = self.ids.next();
        let mut db = self.db.clone();
        // Binds the key to this request (422 if it names another); the answer record the
        // script keeps is what makes the repeat change nothing.
        idempotency::claim_if_keyed(&mut db, &self.layout, keyed, "", false).await?;
        let outcome = self
            .spec
            .change(op, &mut db, &self.layout, &log_id, id, amount, keyed)
            .await?;
        db.replicated(&self.spec.key(&self.layout, id)).await?;
        self.answer(id, amount, outcome)
    }

    /// Creates or overwrites entities `"0"`..`"n-1"`. With an `Idempotency-Key`, a repeat is
    /// answered from the claim once the first answered (before that, it runs again, which sets
    /// the same values: a batch is a whole overwrite).
    pub async fn batch_init(
        &self,
        raw_n: &str,
        raw_start: &str,
        extra: &[(&str, i64)],
        keyed: Option<&Keyed>,
    ) -> HandlerResult {
        let n = validate::count(raw_n, "n", 1, MAX_BATCH)?;
        let start = validate::non_negative(raw_start, self.spec.field)?;
        let mut db = self.db.clone();
        idempotency::answer_once(&mut db, &self.layout, keyed, "", false, |_| {
            self.run_batch_init(n, start, extra)
        })
        .await
    }

    async fn run_batch_init(
        &self,
        n: i64,
        start: i64,
        extra: &[(&str, i64)],
    ) -> Result<serde_json::Value, ApiError> {
        let db = &mut self.db.clone();
        let log_id = self.ids.next();
        self.spec
            .batch_init(db, &self.layout, &log_id, n, start, extra)
            .await?;
        for part in self.layout.parts() {
            db.replicated(&crate::keys::log(self.spec.log, &self.layout, part))
                .await?;
        }
        Ok(serde_json::json!({
            "msg": format!("batch init for {} {}s successful", n, self.spec.entity)
        }))
    }

    fn answer(&self, id: &str, amount: i64, outcome: Outcome) -> HandlerResult {
        let (entity, field) = (self.spec.entity, self.spec.field);
        match outcome {
            Outcome::Ok(values) => {
                let now: i64 = values
                    .first()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_default();
                let mut body = serde_json::Map::new();
                body.insert("done".into(), true.into());
                body.insert(field.into(), now.into());
                http::json(&body)
            }
            Outcome::NotFound => Err(self.unknown(id)),
            Outcome::Insufficient(have) => Err(ApiError::BadRequest(format!(
                "not enough {field}: {entity} `{id}` has {have}, asked for {amount}"
            ))),
            Outcome::Overflow => Err(ApiError::BadRequest(format!(
                "adding {amount} would take the {field} of {entity} `{id}` past {}",
                i64::MAX
            ))),
            Outcome::Conflict(state) => {
                Err(ApiError::Conflict(format!("{entity} `{id}` is {state}")))
            }
        }
    }

    fn unknown(&self, id: &str) -> ApiError {
        ApiError::NotFound(format!("unknown {} `{}`", self.spec.entity, id))
    }
}
