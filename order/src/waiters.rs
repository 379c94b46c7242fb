//! Waking checkouts that wait for their saga's outcome.
//!
//! The scripts that finish a saga publish its id on [`common::keys::DONE_CHANNEL`] in order-db.
//! Every order replica subscribes and wakes its local waiters for that id, so the replica that
//! holds the HTTP request answers as soon as the saga is done, whichever replica's consumer decided
//! it. A waiter also re-reads the saga record periodically, so a lost message (a reconnect of the
//! subscription) costs latency, never an answer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::oneshot;

/// The local waiter map: saga id → the checkouts waiting on it.
#[derive(Default)]
pub struct Waiters {
    map: Mutex<HashMap<String, Vec<oneshot::Sender<()>>>>,
}

impl Waiters {
    /// Registers interest in `saga`; the receiver resolves when it is announced done.
    pub fn register(&self, saga: &str) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let list = map.entry(saga.to_string()).or_default();
        list.retain(|s| !s.is_closed());
        list.push(tx);
        rx
    }

    /// Wakes everyone waiting on `saga`.
    pub fn wake(&self, saga: &str) {
        let senders = self
            .map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(saga)
            .unwrap_or_default();
        for s in senders {
            let _ = s.send(());
        }
    }

    /// Subscribes to the done channel of order-db at `db_url`, forever, resubscribing after
    /// connection losses. On a Redis Cluster, whose nodes deliver every `PUBLISH` to the
    /// subscribers of all nodes, it subscribes on one seed node and moves to the next when that
    /// one fails.
    pub fn spawn_listener(self: Arc<Self>, db_url: String) {
        let nodes = match common::db::DbUrl::parse(&db_url) {
            Ok(url) => url.nodes(),
            Err(e) => {
                // The service's own connection to the same URL fails first, saying the same.
                tracing::error!(error = %e, "no saga wake-ups: checkouts wait for the fallback poll");
                return;
            }
        };
        tokio::spawn(async move {
            for node in nodes.iter().cycle() {
                if let Err(e) = self.listen(node).await {
                    tracing::warn!(error = %e, node, "saga wake-up subscription lost; resubscribing in 1 s");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }

    async fn listen(&self, db_url: &str) -> redis::RedisResult<()> {
        let client = redis::Client::open(db_url)?;
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(common::keys::DONE_CHANNEL).await?;
        tracing::info!("subscribed to saga wake-ups");
        let mut messages = pubsub.on_message();
        while let Some(msg) = messages.next().await {
            if let Ok(saga) = msg.get_payload::<String>() {
                self.wake(&saga);
            }
        }
        Ok(())
    }
}
