//! The ID service: hands out ULIDs.
//!
//! ULIDs are unique without coordination, so this service owns nothing durable. It exists so that
//! ids handed out by one process are strictly increasing (a monotonic generator), which keeps the
//! log ids of a service in the order they were leased, and so that services lease ids in blocks
//! instead of each inventing its own scheme.

use std::sync::{Arc, Mutex};

use common::error::ApiError;
use common::http::{self, HandlerResult, Method, Service};
use common::metrics::Metrics;
use common::validate;
use ulid::Generator;

/// Most ids one `batch` call hands out.
pub const MAX_BATCH: i64 = 100_000;

/// The ID service's state: one monotonic generator.
pub struct Ids {
    generator: Mutex<Generator>,
    metrics: Metrics,
}

impl Default for Ids {
    fn default() -> Self {
        Ids {
            generator: Mutex::new(Generator::new()),
            metrics: Metrics::new("ids"),
        }
    }
}

impl Ids {
    /// `n` new ids, strictly increasing, and greater than every id handed out before.
    pub fn batch(&self, n: usize) -> Result<Vec<String>, ApiError> {
        let mut g = self.generator.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            match g.generate() {
                Ok(id) => out.push(id.to_string()),
                // The random part overflowed within one millisecond: wait for the next one.
                Err(_) => {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                    let id = g.generate().map_err(|e| {
                        ApiError::Internal(format!("ULID generator exhausted: {e}"))
                    })?;
                    out.push(id.to_string());
                }
            }
        }
        Ok(out)
    }
}

impl Service for Ids {
    const PREFIX: &'static str = "ids";

    async fn handle(self: Arc<Self>, method: Method, segments: Vec<String>) -> HandlerResult {
        match http::path(&segments).as_slice() {
            ["ids", "create"] => {
                http::allow(&method, Method::GET)?;
                let id = self.batch(1)?.pop().unwrap_or_default();
                Ok(http::text(id, "text/plain"))
            }
            ["ids", "batch", n] => {
                http::allow(&method, Method::POST)?;
                let n = validate::count(n, "n", 1, MAX_BATCH)?;
                http::json(&serde_json::json!({ "ids": self.batch(n as usize)? }))
            }
            _ => Err(http::not_found(&segments)),
        }
    }

    fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_strictly_increasing_across_calls() {
        let ids = Ids::default();
        let mut all = ids.batch(5000).unwrap();
        all.extend(ids.batch(5000).unwrap());
        assert!(all.windows(2).all(|w| w[0] < w[1]));
    }
}
