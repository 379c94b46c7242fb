//! Prometheus metrics in text format: per-route request counts and latency histograms, plus named
//! counters and gauges that services bump for their own events (saga outcomes, id fallbacks, ...).
//!
//! Kept dependency-free on purpose: a handful of `Mutex`-guarded maps whose critical sections are a
//! few additions, rendered on demand by `GET /<prefix>/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// The metrics registry of one process.
pub struct Metrics {
    service: &'static str,
    requests: Mutex<BTreeMap<(String, u16), Histogram>>,
    counters: Mutex<BTreeMap<&'static str, u64>>,
    gauges: Mutex<BTreeMap<String, i64>>,
}

impl Metrics {
    /// A registry whose series carry `service="<service>"`.
    pub fn new(service: &'static str) -> Metrics {
        Metrics {
            service,
            requests: Mutex::new(BTreeMap::new()),
            counters: Mutex::new(BTreeMap::new()),
            gauges: Mutex::new(BTreeMap::new()),
        }
    }

    /// Records one answered request.
    pub fn observe_request(&self, route: &str, status: u16, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let mut map = lock(&self.requests);
        let h = map.entry((route.to_string(), status)).or_default();
        h.count += 1;
        h.sum += secs;
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                h.counts[i] += 1;
            }
        }
    }

    /// Adds `n` to the counter `shoplog_<name>`.
    pub fn incr(&self, name: &'static str, n: u64) {
        *lock(&self.counters).entry(name).or_default() += n;
    }

    /// Sets the gauge `shoplog_<name>` (the name may carry labels: `lag{log="stock"}`).
    pub fn set_gauge(&self, name: impl Into<String>, value: i64) {
        lock(&self.gauges).insert(name.into(), value);
    }

    /// The current value of a counter (tests and the CLI read these).
    pub fn counter(&self, name: &str) -> u64 {
        lock(&self.counters).get(name).copied().unwrap_or(0)
    }

    /// Renders everything in Prometheus text exposition format.
    pub fn render(&self) -> String {
        let svc = self.service;
        let mut out = String::new();
        out.push_str("# TYPE shoplog_http_requests_total counter\n");
        out.push_str("# TYPE shoplog_http_request_duration_seconds histogram\n");
        for ((route, status), h) in lock(&self.requests).iter() {
            let labels = format!("service=\"{svc}\",route=\"{route}\",status=\"{status}\"");
            let _ = writeln!(out, "shoplog_http_requests_total{{{labels}}} {}", h.count);
            for (i, le) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "shoplog_http_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "shoplog_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "shoplog_http_request_duration_seconds_sum{{{labels}}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "shoplog_http_request_duration_seconds_count{{{labels}}} {}",
                h.count
            );
        }
        for (name, v) in lock(&self.counters).iter() {
            let _ = writeln!(out, "# TYPE shoplog_{name} counter");
            let _ = writeln!(out, "shoplog_{name}{{service=\"{svc}\"}} {v}");
        }
        for (name, v) in lock(&self.gauges).iter() {
            let (base, labels) = match name.split_once('{') {
                Some((b, rest)) => (
                    b,
                    format!("service=\"{svc}\",{}", rest.trim_end_matches('}')),
                ),
                None => (name.as_str(), format!("service=\"{svc}\"")),
            };
            let _ = writeln!(out, "shoplog_{base}{{{labels}}} {v}");
        }
        out
    }
}

/// Locks a metrics map; a panic elsewhere while holding it leaves plain numbers, safe to keep using.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_requests_counters_and_gauges() {
        let m = Metrics::new("stock");
        m.observe_request("/stock/add", 200, Duration::from_millis(3));
        m.observe_request("/stock/add", 200, Duration::from_millis(300));
        m.incr("ids_local_fallback_total", 2);
        m.set_gauge("lag{log=\"order\"}", 7);
        let text = m.render();
        assert!(text.contains(
            "shoplog_http_requests_total{service=\"stock\",route=\"/stock/add\",status=\"200\"} 2"
        ));
        assert!(text.contains("le=\"0.005\"} 1"));
        assert!(text.contains("shoplog_ids_local_fallback_total{service=\"stock\"} 2"));
        assert!(text.contains("shoplog_lag{service=\"stock\",log=\"order\"} 7"));
        assert_eq!(m.counter("ids_local_fallback_total"), 2);
    }
}
