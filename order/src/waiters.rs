//! Waking checkouts that wait for their saga's outcome.
//!
//! The scripts that finish a saga announce it on [`common::keys::DONE_CHANNEL`] in order-db, with
//! its outcome ([`Announcement`]). Every order replica subscribes and hands the outcome to its
//! local waiters for that saga, so the replica that holds the HTTP request answers as soon as the
//! saga is done, whichever replica's consumer decided it, without reading the saga again. A waiter
//! also re-reads the saga record periodically, so a lost message (a reconnect of the
//! subscription) costs latency, never an answer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::saga::{Announcement, Outcome};
use futures::StreamExt;
use tokio::sync::oneshot;

/// What a waiter is woken with: the saga's outcome when the announcement carried it.
type Wake = Option<Outcome>;

/// The local waiter map: saga id → the checkouts waiting on it.
#[derive(Default)]
pub struct Waiters {
    map: Mutex<HashMap<String, Vec<oneshot::Sender<Wake>>>>,
}

/// One checkout's interest in one saga's end, from [`Waiters::register`]. Dropping it removes
/// the registration, so a checkout that stops waiting (answered from a read, or cancelled by its
/// deadline) leaves nothing behind in the map of a long-running service.
pub struct Waiter {
    waiters: Arc<Waiters>,
    saga: String,
    rx: oneshot::Receiver<Wake>,
}

impl Waiter {
    /// Waits up to `within` for the saga's announcement. `Some(outcome)` when it came with the
    /// outcome; `None` when it did not come in time, or came without one (then this registration
    /// is renewed, and the caller reads the record).
    pub async fn done_within(&mut self, within: Duration) -> Option<Outcome> {
        match tokio::time::timeout(within, &mut self.rx).await {
            Ok(Ok(Some(outcome))) => Some(outcome),
            Ok(_) => {
                // Woken without the outcome (or the sender went away): wait anew next time.
                self.rx = self.waiters.channel(&self.saga);
                None
            }
            Err(_) => None,
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.rx.close();
        let mut map = self.waiters.lock();
        if let Some(list) = map.get_mut(&self.saga) {
            list.retain(|s| !s.is_closed());
            if list.is_empty() {
                map.remove(&self.saga);
            }
        }
    }
}

impl Waiters {
    /// Registers interest in `saga`; the waiter resolves when the saga is announced done. Register
    /// before anything that could finish the saga, so that its announcement cannot be missed.
    pub fn register(self: &Arc<Self>, saga: &str) -> Waiter {
        Waiter {
            waiters: self.clone(),
            saga: saga.to_string(),
            rx: self.channel(saga),
        }
    }

    fn channel(&self, saga: &str) -> oneshot::Receiver<Wake> {
        let (tx, rx) = oneshot::channel();
        let mut map = self.lock();
        let list = map.entry(saga.to_string()).or_default();
        list.retain(|s| !s.is_closed());
        list.push(tx);
        rx
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<oneshot::Sender<Wake>>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes everyone waiting on the announced saga, handing them its outcome.
    pub fn wake(&self, a: Announcement<'_>) {
        let senders = self.lock().remove(a.saga).unwrap_or_default();
        for s in senders {
            let _ = s.send(a.outcome.clone());
        }
    }

    /// How many sagas have waiters registered (a gauge of the map's size).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no saga has waiters.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Publishes the number of sagas with waiters as the gauge `shoplog_checkout_waiters`, every
    /// second: checkouts in flight on this replica. A number that grows while the load does not
    /// is a leak (one entry per checkout was, before waiters removed themselves).
    pub fn spawn_gauge(self: Arc<Self>, metrics: Arc<common::metrics::Metrics>) {
        let waiters = Arc::downgrade(&self);
        drop(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(w) = waiters.upgrade() else { return };
                metrics.set_gauge("checkout_waiters", w.len() as i64);
            }
        });
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
            if let Ok(payload) = msg.get_payload::<String>() {
                self.wake(Announcement::parse(&payload));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::saga::Decision;

    #[tokio::test]
    async fn a_waiter_gets_the_announced_outcome_and_leaves_nothing_behind() {
        let w = Arc::new(Waiters::default());
        let mut a = w.register("s1");
        let b = w.register("s2");
        assert_eq!(w.len(), 2);
        w.wake(Announcement::parse("s1\nabort\nno stock"));
        let got = a.done_within(Duration::from_secs(1)).await.unwrap();
        assert_eq!(
            (got.decision, got.reason.as_str(), got.done),
            (Decision::Abort, "no stock", true)
        );
        drop(a);
        drop(b);
        assert!(w.is_empty(), "dropped waiters must not stay in the map");
    }

    #[tokio::test]
    async fn a_wake_without_the_outcome_renews_the_registration() {
        let w = Arc::new(Waiters::default());
        let mut a = w.register("s1");
        w.wake(Announcement::parse("s1"));
        assert_eq!(a.done_within(Duration::from_secs(1)).await, None);
        // Registered again: the next announcement reaches it.
        w.wake(Announcement::parse("s1\ncommit\n"));
        let got = a.done_within(Duration::from_secs(1)).await.unwrap();
        assert_eq!(got.decision, Decision::Commit);
        // A timeout keeps the registration.
        let mut b = w.register("s2");
        assert_eq!(b.done_within(Duration::from_millis(10)).await, None);
        w.wake(Announcement::parse("s2\ncommit\n"));
        assert!(b.done_within(Duration::from_secs(1)).await.is_some());
    }
}
