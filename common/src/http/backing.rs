//! [`Backing`]: what the HTTP scaffolding needs of a service that keeps state behind log
//! consumers (order, stock, payment), written once so that their health, shutdown and keyed
//! requests cannot drift apart.

use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::consumer::{Consumers, SagaCtx};
use crate::db::Conn;
use crate::idempotency::{Key, Keyed};
use crate::metrics::Metrics;

use super::{Health, Method};

/// A stateful service's database, consumers, metrics and answer retention, as
/// [`super::Service::backing`] gives them to the scaffolding's defaults.
pub struct Backing {
    /// The service's own database (what `/health` pings).
    pub db: Conn,
    /// Its log consumers: a stopped one makes the service unhealthy; stopped on shutdown.
    pub consumers: Arc<Consumers>,
    /// Its metrics registry.
    pub metrics: Arc<Metrics>,
    /// How long answers to keyed requests are kept (`IDEMPOTENCY_TTL_SECS`).
    pub idempotency_ttl: Duration,
}

impl Backing {
    /// The backing of a service started by [`crate::consumer::start_saga_service`] (`ctx`,
    /// `consumers`) under `config`.
    pub fn new(ctx: &SagaCtx, consumers: Arc<Consumers>, config: &Config) -> Backing {
        Backing {
            db: ctx.db.clone(),
            consumers,
            metrics: ctx.metrics.clone(),
            idempotency_ttl: config.idempotency_ttl,
        }
    }

    /// The keyed form of a request carrying `key` (bound to its method and path), kept for
    /// this service's retention; `None` without a key.
    pub fn keyed(&self, method: &Method, segments: &[String], key: Option<Key>) -> Option<Keyed> {
        Keyed::of(key, method, segments, self.idempotency_ttl)
    }

    /// Healthy while every consumer runs and the database answers.
    pub async fn health(&self) -> Health {
        super::health(&self.db, Some(&self.consumers)).await
    }
}
