//! `shoplog bench`: a load generator for checkouts through the gateway.
//!
//! Populates with `batch_init` (items with ample stock, users with ample credit, orders of two
//! items), checks out *distinct* orders from `--concurrency` connections for `--duration` or until
//! `--orders` are done, records every latency in an HDR histogram, prints throughput, percentiles
//! and status counts, then runs `audit` over the stack's databases.
//!
//! On the local stack (the data directory's components are running) it also reports what a
//! checkout cost ([`crate::cost`]): each component's CPU seconds per 1,000 checkouts, each Redis's
//! commands per checkout, and the round trips, from snapshots taken right after the populate and
//! [`SETTLE`] after the last answer (before the audit, which reads every database).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::{exit, ops, StackArgs};
use crate::cost::{self, CostReport};
use crate::output::{self, Tone};

/// How long after the last answer the cost is measured: the consumers' acknowledgements and the
/// log parser's pass over the last sagas belong to the run (the same second `bench/checkout.sh`
/// waits).
pub const SETTLE: Duration = Duration::from_secs(1);

/// Arguments of `shoplog bench`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    shoplog bench                                   64 connections for 30 s through the local gateway\n  \
    shoplog bench --concurrency 16 --orders 20000\n  \
    shoplog bench --duration 10s --json | jq .throughput\n  \
    shoplog bench --orders 20000 --json | jq .cost.total_cpu_s_per_1k\n\n\
    On the local stack it also prints the cost per checkout: CPU seconds per 1,000 checkouts of\n\
    each component (/proc), Redis commands per checkout (INFO commandstats), round trips.\n\n\
    Exit status: 0 when every answer was 2xx/4xx and the audit is clean, 1 otherwise.")]
pub struct BenchArgs {
    /// Concurrent connections.
    #[arg(long, short = 'c', default_value_t = 64)]
    pub concurrency: usize,
    /// How long to run (ignored when --orders is given).
    #[arg(long, short = 'd', default_value = "30s", value_parser = ops::parse_duration)]
    pub duration: Duration,
    /// Check out exactly this many orders instead of running for --duration.
    #[arg(long)]
    pub orders: Option<u64>,
    /// Items and users to populate.
    #[arg(long, default_value_t = 100_000)]
    pub population: u64,
    /// Gateway URL (default: the local stack's gateway).
    #[arg(long)]
    pub url: Option<String>,
    /// Skip the audit after the run.
    #[arg(long)]
    pub no_audit: bool,
    /// Skip the cost report (CPU and Redis commands per checkout).
    #[arg(long)]
    pub no_cost: bool,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub stack: StackArgs,
}

/// What a run measured.
#[derive(Debug, serde::Serialize)]
pub struct BenchReport {
    /// Concurrent connections.
    pub concurrency: usize,
    /// Checkouts answered.
    pub checkouts: u64,
    /// Wall time of the load phase.
    pub seconds: f64,
    /// Checkouts per second.
    pub throughput: f64,
    /// Latency percentiles, ms.
    pub p50_ms: f64,
    /// 90th percentile, ms.
    pub p90_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Slowest, ms.
    pub max_ms: f64,
    /// Answers by class.
    pub status_2xx: u64,
    /// 4xx answers (refusals).
    pub status_4xx: u64,
    /// 5xx answers and transport errors.
    pub status_5xx: u64,
    /// Whether the audit after the run was clean (`None`: skipped).
    pub audit_clean: Option<bool>,
    /// What a checkout cost, per component (`None`: `--no-cost`, or the stack is not local).
    pub cost: Option<CostReport>,
}

/// Runs `shoplog bench`.
pub async fn run(args: BenchArgs) -> anyhow::Result<u8> {
    let settings = args.stack.settings(None, 0);
    let base = args
        .url
        .clone()
        .unwrap_or_else(|| format!("http://127.0.0.1:{}", settings.gateway_port));
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .timeout(Duration::from_secs(60))
        .build()?;
    let n_orders = args.orders.unwrap_or(1_000_000).clamp(1, 1_000_000);
    let pop = args.population.clamp(1, 1_000_000);
    if !args.json {
        eprintln!("populating {base}: {pop} items, {pop} users, {n_orders} orders (batch_init)");
    }
    for path in [
        format!("/stock/batch_init/{pop}/1000000000/1"),
        format!("/payment/batch_init/{pop}/1000000000000"),
        format!("/orders/batch_init/{n_orders}/{pop}/{pop}/1"),
    ] {
        let resp = http.post(format!("{base}{path}")).send().await?;
        if !resp.status().is_success() {
            anyhow::bail!(
                "{path} answered {}: {}",
                resp.status(),
                resp.text().await.unwrap_or_default()
            );
        }
    }

    // The cost is measured on the stack of this data directory, when it runs here.
    let before = if args.no_cost {
        None
    } else {
        Some(cost::snapshot(&settings).await).filter(|s| s.any_running())
    };
    let own_before = cost::own_cpu_seconds();

    let next = Arc::new(AtomicU64::new(0));
    let deadline = args
        .orders
        .is_none()
        .then(|| Instant::now() + args.duration);
    let bar = progress_bar(&args, n_orders);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let (http, base, next, bar) = (http.clone(), base.clone(), next.clone(), bar.clone());
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).ok();
            let mut counts = [0u64; 3];
            loop {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n_orders {
                    break;
                }
                let t = Instant::now();
                let status = match http
                    .post(format!("{base}/orders/checkout/{i}"))
                    .send()
                    .await
                {
                    Ok(r) => r.status().as_u16(),
                    Err(_) => 599,
                };
                if let Some(h) = hist.as_mut() {
                    let _ = h.record(t.elapsed().as_micros().max(1) as u64);
                }
                counts[match status {
                    200..=299 => 0,
                    400..=499 => 1,
                    _ => 2,
                }] += 1;
                if let Some(b) = &bar {
                    b.inc(1);
                }
            }
            (hist, counts)
        }));
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)?;
    let mut counts = [0u64; 3];
    for t in tasks {
        let (h, c) = t.await?;
        if let Some(h) = h {
            hist.add(h)?;
        }
        for k in 0..3 {
            counts[k] += c[k];
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let total: u64 = counts.iter().sum();
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    let mut report = BenchReport {
        concurrency: args.concurrency,
        checkouts: total,
        seconds,
        throughput: total as f64 / seconds.max(1e-9),
        p50_ms: ms(0.50),
        p90_ms: ms(0.90),
        p99_ms: ms(0.99),
        max_ms: hist.max() as f64 / 1000.0,
        status_2xx: counts[0],
        status_4xx: counts[1],
        status_5xx: counts[2],
        audit_clean: None,
        cost: None,
    };
    if let Some(before) = &before {
        tokio::time::sleep(SETTLE).await;
        let after = cost::snapshot(&settings).await;
        let order: Vec<String> = settings.components().into_iter().map(|c| c.name).collect();
        let own = cost::own_cpu_seconds() - own_before;
        report.cost = Some(CostReport::between(
            before,
            &after,
            total,
            &order,
            Some(own),
        ));
    }
    if !args.json {
        println!(
            "{} checkouts in {:.1} s from {} connections: {:.0} checkouts/s",
            total, seconds, args.concurrency, report.throughput
        );
        println!(
            "latency  p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
            report.p50_ms, report.p90_ms, report.p99_ms, report.max_ms
        );
        println!(
            "answers  2xx {}  4xx {}  5xx/errors {}",
            counts[0], counts[1], counts[2]
        );
        match &report.cost {
            Some(c) if total > 0 => {
                println!();
                c.print();
                println!();
            }
            _ => {}
        }
    }
    if !args.no_audit {
        let (_, dbs) = ops::connect(&args.stack).await?;
        let progress = ops::Progress::new(args.json);
        // Let the last compensations land before judging.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let audit = logparser::audit::audit(&dbs, |w| progress.say(w)).await?;
        progress.done();
        report.audit_clean = Some(audit.clean());
        if !args.json {
            if audit.clean() {
                println!(
                    "audit    {} ({} ms)",
                    output::paint("clean", Tone::Good),
                    audit.duration_ms
                );
            } else {
                println!(
                    "audit    {} — run `shoplog audit` for the list",
                    output::paint(
                        &format!("{} violation(s)", audit.violations.len()),
                        Tone::Bad
                    )
                );
            }
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    let ok = report.status_5xx == 0 && report.audit_clean != Some(false);
    Ok(if ok { exit::OK } else { exit::PROBLEM })
}

fn progress_bar(args: &BenchArgs, n_orders: u64) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if args.json || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = match args.orders {
        Some(_) => indicatif::ProgressBar::new(n_orders),
        None => indicatif::ProgressBar::new_spinner(),
    };
    let style = indicatif::ProgressStyle::with_template(
        "{spinner} {elapsed_precise} {pos} checkouts {per_sec} {wide_bar}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    bar.enable_steady_tick(Duration::from_millis(200));
    Some(bar)
}
