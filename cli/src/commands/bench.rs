//! `shoplog bench`: a load generator for checkouts through the gateway.
//!
//! Populates with `batch_init` (items with ample stock, users with ample credit, orders of two
//! items), checks out *distinct* orders from `--concurrency` connections for `--duration` or until
//! `--orders` are done, records every latency in an HDR histogram, prints throughput, percentiles
//! and status counts, then runs `audit` over the stack's databases.
//!
//! `batch_init` makes at most [`ROUND`] orders (`"0"` .. `"n-1"`, API.md), so more checkouts run
//! in rounds (`--round`, default [`ROUND`]): after each round's checkouts the orders are populated again (`batch_init`
//! overwrites the paid ones with new open orders) and checked out again: ten rounds are ten
//! million checkouts, ten million sagas, over one million order ids. The time of the re-populates
//! is not counted in the throughput (it is in the cost report's CPU).
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

/// The most orders one `batch_init` makes (`order::MAX_BATCH`): the size of a round.
pub const ROUND: u64 = 1_000_000;

/// Arguments of `shoplog bench`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    shoplog bench                                   64 connections for 30 s through the local gateway\n  \
    shoplog bench --concurrency 16 --orders 20000\n  \
    shoplog bench --duration 10s --json | jq .throughput\n  \
    shoplog bench --orders 20000 --json | jq .cost.total_cpu_s_per_1k\n  \
    shoplog bench --orders 10000000 --no-audit      ten rounds of 1,000,000 (batch_init's limit)\n\n\
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
    /// Check out exactly this many orders instead of running for --duration (past 1,000,000, in
    /// rounds that populate the orders again).
    #[arg(long)]
    pub orders: Option<u64>,
    /// Orders per round (one `batch_init`; at most 1,000,000, its limit): past it, the orders
    /// are populated again and checked out again.
    #[arg(long, default_value_t = ROUND, value_parser = clap::value_parser!(u64).range(1..=ROUND))]
    pub round: u64,
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
    let round_size = args.round;
    let n_orders = args.orders.unwrap_or(round_size).max(1);
    let pop = args.population.clamp(1, 1_000_000);
    if !args.json {
        let rounds = n_orders.div_ceil(round_size);
        let rounds = if rounds > 1 {
            format!(", in {rounds} rounds")
        } else {
            String::new()
        };
        eprintln!(
            "populating {base}: {pop} items, {pop} users, {} orders (batch_init){rounds}",
            n_orders.min(round_size)
        );
    }
    for path in [
        format!("/stock/batch_init/{pop}/1000000000/1"),
        format!("/payment/batch_init/{pop}/1000000000000"),
    ] {
        post(&http, &base, &path).await?;
    }
    let orders_path = |n: u64| format!("/orders/batch_init/{n}/{pop}/{pop}/1");
    post(&http, &base, &orders_path(n_orders.min(round_size))).await?;

    // The cost is measured on the stack of this data directory, when it runs here.
    let before = if args.no_cost {
        None
    } else {
        Some(cost::snapshot(&settings).await).filter(|s| s.any_running())
    };
    let own_before = cost::own_cpu_seconds();

    let deadline = args
        .orders
        .is_none()
        .then(|| Instant::now() + args.duration);
    let bar = progress_bar(&args, n_orders);
    let mut tally = Tally::new()?;
    let mut seconds = 0.0;
    let mut done = 0;
    while done < n_orders {
        let n = (n_orders - done).min(round_size);
        if done > 0 {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            post(&http, &base, &orders_path(n)).await?;
        }
        let round = Round {
            http: http.clone(),
            base: base.clone(),
            orders: n,
            deadline,
            bar: bar.clone(),
        };
        let started = Instant::now();
        tally.absorb(round.run(args.concurrency).await?)?;
        seconds += started.elapsed().as_secs_f64();
        done += n;
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let Tally { hist, counts } = tally;
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

/// POSTs `path` (a populate), failing with its answer when it is not a success.
async fn post(http: &reqwest::Client, base: &str, path: &str) -> anyhow::Result<()> {
    let resp = http.post(format!("{base}{path}")).send().await?;
    if !resp.status().is_success() {
        anyhow::bail!(
            "{path} answered {}: {}",
            resp.status(),
            resp.text().await.unwrap_or_default()
        );
    }
    Ok(())
}

/// One round of checkouts: orders `"0"` .. `"orders-1"`, each checked out once, until done or
/// the deadline.
struct Round {
    http: reqwest::Client,
    base: String,
    orders: u64,
    deadline: Option<Instant>,
    bar: Option<indicatif::ProgressBar>,
}

impl Round {
    /// Runs the round from `concurrency` connections: every latency, and the answers counted as
    /// 2xx, 4xx and the rest.
    async fn run(self, concurrency: usize) -> anyhow::Result<Tally> {
        let round = Arc::new(self);
        let next = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..concurrency.max(1) {
            let (round, next) = (round.clone(), next.clone());
            tasks.push(tokio::spawn(async move { round.connection(&next).await }));
        }
        let mut tally = Tally::new()?;
        for t in tasks {
            tally.absorb(t.await??)?;
        }
        Ok(tally)
    }

    /// One connection's loop: takes the next order until none is left.
    async fn connection(&self, next: &AtomicU64) -> anyhow::Result<Tally> {
        let Tally {
            mut hist,
            mut counts,
        } = Tally::new()?;
        loop {
            if self.deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= self.orders {
                break;
            }
            let t = Instant::now();
            let status = match self
                .http
                .post(format!("{}/orders/checkout/{i}", self.base))
                .send()
                .await
            {
                Ok(r) => r.status().as_u16(),
                Err(_) => 599,
            };
            let _ = hist.record(t.elapsed().as_micros().max(1) as u64);
            counts[match status {
                200..=299 => 0,
                400..=499 => 1,
                _ => 2,
            }] += 1;
            if let Some(b) = &self.bar {
                b.inc(1);
            }
        }
        Ok(Tally { hist, counts })
    }
}

/// Latencies (µs) and answers counted as 2xx, 4xx and the rest: of one connection, one round or
/// the whole run, each summed into the next.
struct Tally {
    hist: Histogram<u64>,
    counts: [u64; 3],
}

impl Tally {
    fn new() -> anyhow::Result<Tally> {
        Ok(Tally {
            hist: Histogram::new_with_bounds(1, 120_000_000, 3)?,
            counts: [0; 3],
        })
    }

    fn absorb(&mut self, other: Tally) -> anyhow::Result<()> {
        self.hist.add(other.hist)?;
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts) {
            *mine += theirs;
        }
        Ok(())
    }
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
