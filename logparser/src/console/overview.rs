//! The live numbers of the overview: the services' own metrics (`GET /<prefix>/metrics`,
//! Prometheus text) scraped every [`SAMPLE_EVERY`] into a ring buffer of the last
//! [`KEEP`] samples, turned into checkouts/s, latency percentiles and error rates.

use std::collections::VecDeque;
use std::time::Duration;

/// How often the daemon scrapes the services.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// How many samples it keeps: 10 minutes.
pub const KEEP: usize = 300;
/// The route label of a checkout in the order service's metrics.
pub const CHECKOUT_ROUTE: &str = "/orders/checkout";
/// The latency buckets' upper bounds (s), as `common::metrics` renders them, then `+Inf`.
pub const BUCKETS: [f64; 13] = [
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    10.0,
    f64::INFINITY,
];

/// The counters of one scrape of every service, summed over replicas.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Sample {
    /// When it was taken (ms since the epoch).
    pub at_ms: u64,
    /// Checkout requests answered.
    pub checkouts: u64,
    /// Checkout requests answered 5xx.
    pub checkout_errors: u64,
    /// Checkout requests answered 4xx (refused: no stock, no credit, bad input).
    pub checkout_refused: u64,
    /// Requests answered by every service.
    pub requests: u64,
    /// Requests answered 5xx by every service.
    pub errors: u64,
    /// Per service (its metrics' `service` label): requests answered, and answered 5xx.
    pub by_service: std::collections::BTreeMap<String, (u64, u64)>,
    /// Cumulative checkout latency histogram over [`BUCKETS`].
    pub buckets: Vec<u64>,
    /// Services that did not answer the scrape.
    pub unreachable: Vec<String>,
}

/// One label's value in a Prometheus series name (`name{a="x",b="y"}`).
fn label<'a>(labels: &'a str, key: &str) -> Option<&'a str> {
    labels.split(',').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"'))
    })
}

/// Adds one service's metrics text to `s`.
pub fn add_text(s: &mut Sample, text: &str) {
    if s.buckets.len() != BUCKETS.len() {
        s.buckets = vec![0; BUCKETS.len()];
    }
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        let value = value.max(0.0) as u64;
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let route = label(labels, "route");
        let status: u16 = label(labels, "status")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        match name {
            "shoplog_http_requests_total" => {
                s.requests += value;
                let service = s
                    .by_service
                    .entry(label(labels, "service").unwrap_or("unknown").to_string())
                    .or_default();
                service.0 += value;
                if status >= 500 {
                    s.errors += value;
                    service.1 += value;
                }
                if route == Some(CHECKOUT_ROUTE) {
                    s.checkouts += value;
                    if status >= 500 {
                        s.checkout_errors += value;
                    } else if status >= 400 {
                        s.checkout_refused += value;
                    }
                }
            }
            "shoplog_http_request_duration_seconds_bucket" if route == Some(CHECKOUT_ROUTE) => {
                let le = label(labels, "le").unwrap_or("");
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap_or(f64::NAN)
                };
                if let Some(i) = BUCKETS.iter().position(|b| *b == le) {
                    s.buckets[i] += value;
                }
            }
            _ => {}
        }
    }
}

/// One service's request rate and 5xx share between two samples.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ServiceRates {
    /// The service (its metrics' `service` label).
    pub service: String,
    /// Requests answered per second.
    pub requests_per_s: f64,
    /// The share of them answered 5xx (0..1).
    pub error_rate: f64,
}

/// Rates between two samples (a counter that went down — a restarted replica — counts as 0).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Rates {
    /// When the later sample was taken.
    pub at_ms: u64,
    /// Checkouts answered per second.
    pub checkouts_per_s: f64,
    /// Checkouts answered 4xx per second.
    pub refused_per_s: f64,
    /// Checkouts answered 5xx per second.
    pub checkout_errors_per_s: f64,
    /// The share of all requests answered 5xx (0..1).
    pub error_rate: f64,
    /// Median checkout latency (ms; the upper bound of its bucket); `None` without checkouts.
    pub p50_ms: Option<f64>,
    /// 99th percentile of checkout latency (ms).
    pub p99_ms: Option<f64>,
    /// Each service's request rate and 5xx share.
    pub services: Vec<ServiceRates>,
}

/// The `q` quantile (0..1) of a cumulative histogram over [`BUCKETS`], in ms (the upper bound
/// of the bucket that holds it; the last finite bound for the `+Inf` bucket).
pub fn quantile_ms(cumulative: &[u64], q: f64) -> Option<f64> {
    let total = *cumulative.last()?;
    if total == 0 {
        return None;
    }
    let rank = (q * total as f64).ceil().max(1.0) as u64;
    let i = cumulative.iter().position(|c| *c >= rank)?;
    let bound = if BUCKETS[i].is_finite() {
        BUCKETS[i]
    } else {
        BUCKETS[BUCKETS.len() - 2]
    };
    Some(bound * 1000.0)
}

/// The rates between `a` and a later `b`.
pub fn rates(a: &Sample, b: &Sample) -> Rates {
    let secs = (b.at_ms.saturating_sub(a.at_ms) as f64 / 1000.0).max(1e-3);
    let d = |x: u64, y: u64| y.saturating_sub(x);
    let requests = d(a.requests, b.requests);
    let buckets: Vec<u64> = if a.buckets.len() == b.buckets.len() {
        a.buckets
            .iter()
            .zip(&b.buckets)
            .map(|(x, y)| d(*x, *y))
            .collect()
    } else {
        b.buckets.clone()
    };
    Rates {
        at_ms: b.at_ms,
        checkouts_per_s: d(a.checkouts, b.checkouts) as f64 / secs,
        refused_per_s: d(a.checkout_refused, b.checkout_refused) as f64 / secs,
        checkout_errors_per_s: d(a.checkout_errors, b.checkout_errors) as f64 / secs,
        error_rate: if requests == 0 {
            0.0
        } else {
            d(a.errors, b.errors) as f64 / requests as f64
        },
        p50_ms: quantile_ms(&buckets, 0.5),
        p99_ms: quantile_ms(&buckets, 0.99),
        services: b
            .by_service
            .iter()
            .map(|(name, (req, err))| {
                let (req0, err0) = a.by_service.get(name).copied().unwrap_or_default();
                let requests = d(req0, *req);
                ServiceRates {
                    service: name.clone(),
                    requests_per_s: requests as f64 / secs,
                    error_rate: if requests == 0 {
                        0.0
                    } else {
                        d(err0, *err) as f64 / requests as f64
                    },
                }
            })
            .collect(),
    }
}

/// The last [`KEEP`] samples.
#[derive(Debug, Default)]
pub struct History {
    samples: VecDeque<Sample>,
}

impl History {
    /// Adds a sample, dropping the oldest past [`KEEP`].
    pub fn push(&mut self, s: Sample) {
        self.samples.push_back(s);
        while self.samples.len() > KEEP {
            self.samples.pop_front();
        }
    }

    /// The rates between consecutive samples, oldest first (the charts).
    pub fn series(&self) -> Vec<Rates> {
        self.samples
            .iter()
            .zip(self.samples.iter().skip(1))
            .map(|(a, b)| rates(a, b))
            .collect()
    }

    /// The rates over the last `window` samples (the overview's current numbers); `None` before
    /// two samples exist.
    pub fn recent(&self, window: usize) -> Option<Rates> {
        let n = self.samples.len();
        if n < 2 {
            return None;
        }
        let from = n.saturating_sub(window + 1);
        Some(rates(&self.samples[from], &self.samples[n - 1]))
    }

    /// The latest sample.
    pub fn latest(&self) -> Option<&Sample> {
        self.samples.back()
    }
}

/// Scrapes every `(prefix, base url)` once into a sample.
pub async fn scrape(http: &reqwest::Client, targets: &[(String, String)], at_ms: u64) -> Sample {
    let mut s = Sample {
        at_ms,
        buckets: vec![0; BUCKETS.len()],
        ..Sample::default()
    };
    let fetches = targets.iter().map(|(prefix, base)| async move {
        let url = format!("{base}/{prefix}/metrics");
        let text = match http.get(&url).send().await {
            Ok(r) if r.status().is_success() => r.text().await.ok(),
            _ => None,
        };
        (format!("{prefix}@{base}"), text)
    });
    for (name, text) in futures::future::join_all(fetches).await {
        match text {
            Some(t) => add_text(&mut s, &t),
            None => s.unreachable.push(name),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# TYPE shoplog_http_requests_total counter
shoplog_http_requests_total{service="order",route="/orders/checkout",status="200"} 8
shoplog_http_requests_total{service="order",route="/orders/checkout",status="400"} 1
shoplog_http_requests_total{service="order",route="/orders/checkout",status="503"} 1
shoplog_http_requests_total{service="order",route="/orders/create",status="201"} 10
shoplog_http_request_duration_seconds_bucket{service="order",route="/orders/checkout",status="200",le="0.005"} 4
shoplog_http_request_duration_seconds_bucket{service="order",route="/orders/checkout",status="200",le="0.01"} 7
shoplog_http_request_duration_seconds_bucket{service="order",route="/orders/checkout",status="200",le="0.025"} 8
shoplog_http_request_duration_seconds_bucket{service="order",route="/orders/checkout",status="200",le="+Inf"} 8
shoplog_checkouts_committed_total{service="order"} 8
"#;

    #[test]
    fn a_scrape_sums_checkouts_errors_and_latency() {
        let mut s = Sample::default();
        add_text(&mut s, TEXT);
        add_text(
            &mut s,
            "garbage line\nshoplog_http_requests_total{route=\"/stock/add\",status=\"500\"} 2\n",
        );
        assert_eq!(
            (s.checkouts, s.checkout_errors, s.checkout_refused),
            (10, 1, 1)
        );
        assert_eq!((s.requests, s.errors), (22, 3));
        assert_eq!(s.by_service.get("order"), Some(&(20, 1)));
        assert_eq!(s.by_service.get("unknown"), Some(&(2, 2)));
        assert_eq!(s.buckets[2], 4); // le=0.005
        assert_eq!(s.buckets[3], 7);
        assert_eq!(*s.buckets.last().unwrap(), 8);
    }

    #[test]
    fn rates_and_percentiles_come_from_the_differences() {
        let mut a = Sample {
            at_ms: 1_000,
            ..Sample::default()
        };
        add_text(&mut a, "");
        let mut b = Sample {
            at_ms: 3_000,
            ..Sample::default()
        };
        add_text(&mut b, TEXT);
        let r = rates(&a, &b);
        assert_eq!(r.checkouts_per_s, 5.0);
        assert_eq!(r.checkout_errors_per_s, 0.5);
        assert!((r.error_rate - 1.0 / 20.0).abs() < 1e-9);
        assert_eq!(r.p50_ms, Some(5.0), "the 4th of 8 is in the 5 ms bucket");
        assert_eq!(r.p99_ms, Some(25.0));
        let order = r.services.iter().find(|s| s.service == "order").cloned();
        assert_eq!(
            order.map(|o| (o.requests_per_s, o.error_rate)),
            Some((10.0, 0.05))
        );
        // A restarted replica's counters went down: no negative rates.
        let r = rates(
            &b,
            &Sample {
                at_ms: 4_000,
                buckets: vec![0; 13],
                ..Sample::default()
            },
        );
        assert_eq!((r.checkouts_per_s, r.p50_ms), (0.0, None));
    }

    #[test]
    fn the_history_keeps_the_last_ten_minutes() {
        let mut h = History::default();
        assert!(h.recent(5).is_none());
        for i in 0..(KEEP as u64 + 10) {
            h.push(Sample {
                at_ms: i * 2_000,
                checkouts: i * 4,
                buckets: vec![0; 13],
                ..Sample::default()
            });
        }
        assert_eq!(h.series().len(), KEEP - 1);
        assert_eq!(h.recent(5).map(|r| r.checkouts_per_s), Some(2.0));
    }
}
