//! What a checkout costs, per component of the local stack: CPU seconds per 1,000 checkouts, Redis
//! commands per checkout per database, and the round trips on the request path.
//!
//! A [`Snapshot`] holds, for every component the stack's layout lists (the same list as
//! `shoplog status`), the CPU time (user + system) of its process and its live descendants (nginx's
//! workers), and for a Redis its `INFO commandstats` and socket reads, for a service the HTTP
//! requests it answered by route (its `/metrics`). Two snapshots around a load run and the number
//! of checkouts it made give a [`CostReport`]: the differences divided by the checkouts.
//!
//! One implementation for both load generators: `shoplog bench` takes the snapshots itself, and
//! `bench/checkout.sh` (wrk) takes them with `shoplog cost snapshot` and reports with
//! `shoplog cost report`. An absolute rate on a shared machine is noise; the CPU time and the
//! commands a checkout costs are not.
//!
//! **Commands and round trips.** `INFO commandstats` counts every command a Redis executed,
//! including those a Lua script runs (`redis.call`): a checkout's admission script is one `EVALSHA`
//! and the `HMGET`, `HSET` and `XADD` it does inside. So commands per checkout measure the work of
//! a database, not the round trips. The round trips are counted from the servers' side, per
//! checkout: the HTTP requests every service answered (the gateway → service hops; health checks
//! and metric scrapes left out), and the read events every Redis served (`total_reads_processed`:
//! one per request, or pipeline, that arrived). Requests from different checkouts multiplexed on
//! one connection can arrive in one read under load, so the reads are exact at one connection
//! (`shoplog bench -c 1`) and a lower bound above it.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crate::layout::{Kind, StackSettings};
use crate::process;

/// Calls and execution time of one Redis command, from `INFO commandstats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CommandStat {
    /// Times it ran.
    pub calls: u64,
    /// Microseconds Redis spent executing it (not counting I/O).
    pub usec: u64,
}

/// One component's counters at one moment.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Sample {
    /// `redis`, `service` or `gateway`: which counters the component can have.
    pub kind: String,
    /// Its pid (the gateway's: nginx's master), `None` when it was not running.
    pub pid: Option<i32>,
    /// User + system CPU seconds of the process and its live descendants since they started.
    pub cpu_seconds: f64,
    /// A Redis: calls and time of every command since it started (keys: lower-case command names,
    /// as Redis spells them, `xinfo|groups` for a subcommand).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub commands: BTreeMap<String, CommandStat>,
    /// A Redis: read events it processed (`total_reads_processed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reads: Option<u64>,
    /// A Redis: connections it accepted (`total_connections_received`), to see connection churn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<u64>,
    /// A service: requests it answered by route (`shoplog_http_requests_total` summed over
    /// statuses), health checks and metric scrapes left out.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub http_requests: BTreeMap<String, u64>,
    /// What could not be read (a Redis that did not answer `INFO`, ...), so that a gap is visible.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// Every component's counters at one moment (`shoplog cost snapshot` prints one as JSON).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    /// Milliseconds since the Unix epoch when it was taken.
    pub at_ms: u64,
    /// By component name, in the layout's order of names.
    pub components: BTreeMap<String, Sample>,
}

impl Snapshot {
    /// Whether any component of the stack was running (a snapshot of a stack that is not local,
    /// or not up, holds nothing worth a report).
    pub fn any_running(&self) -> bool {
        self.components.values().any(|s| s.pid.is_some())
    }
}

/// Takes a snapshot of every component of the stack described by `settings`.
pub async fn snapshot(settings: &StackSettings) -> Snapshot {
    let run_dir = settings.run_dir();
    let kids = children();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .ok();
    let mut components = BTreeMap::new();
    for c in settings.components() {
        let pid = process::running_pid(&run_dir, &c.name);
        let mut sample = Sample {
            pid,
            cpu_seconds: pid.map_or(0.0, |p| cpu_seconds(p, &kids)),
            ..Sample::default()
        };
        match &c.kind {
            Kind::Redis | Kind::LockNode | Kind::ClusterNode { .. } => {
                sample.kind = "redis".into();
                if pid.is_some() {
                    match redis_info(c.port).await {
                        Ok(info) => {
                            sample.commands = info.commands;
                            sample.reads = info.reads;
                            sample.connections = info.connections;
                        }
                        Err(e) => sample.errors.push(format!("INFO: {e}")),
                    }
                }
            }
            Kind::Service { prefix, .. } => {
                sample.kind = "service".into();
                if let (Some(_), Some(http)) = (pid, &http) {
                    match http_requests(http, c.port, prefix).await {
                        Ok(r) => sample.http_requests = r,
                        Err(e) => sample.errors.push(format!("metrics: {e}")),
                    }
                }
            }
            Kind::Gateway => sample.kind = "gateway".into(),
        }
        components.insert(c.name.clone(), sample);
    }
    Snapshot {
        at_ms: now_ms(),
        components,
    }
}

/// User + system CPU seconds this process has used so far (the load generator's own cost).
pub fn own_cpu_seconds() -> f64 {
    cpu_of(std::process::id() as i32).unwrap_or(0.0)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Clock ticks per second, the unit of `utime`/`stime` in `/proc/<pid>/stat`.
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a configuration value; it has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// The fields of `/proc/<pid>/stat` after the command name (which may hold spaces and parens).
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(String::from).collect())
}

/// utime + stime of one process (all its threads), in seconds.
fn cpu_of(pid: i32) -> Option<f64> {
    let f = stat_fields(pid)?;
    // After the name: state(0) ppid(1) ... utime(11) stime(12).
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / ticks_per_second())
}

/// Every live process's children, by parent pid.
fn children() -> HashMap<i32, Vec<i32>> {
    let mut kids: HashMap<i32, Vec<i32>> = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return kids;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if let Some(ppid) = stat_fields(pid).and_then(|f| f.get(1)?.parse::<i32>().ok()) {
            kids.entry(ppid).or_default().push(pid);
        }
    }
    kids
}

/// CPU seconds of `pid` and its live descendants (nginx's workers, a Redis's rewrite child).
fn cpu_seconds(pid: i32, kids: &HashMap<i32, Vec<i32>>) -> f64 {
    let mut total = 0.0;
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        total += cpu_of(p).unwrap_or(0.0);
        if let Some(k) = kids.get(&p) {
            todo.extend(k);
        }
    }
    total
}

/// What `INFO commandstats` and `INFO stats` say, parsed.
#[derive(Debug, Default, PartialEq)]
pub struct RedisInfo {
    /// Calls and time of every command.
    pub commands: BTreeMap<String, CommandStat>,
    /// `total_reads_processed`.
    pub reads: Option<u64>,
    /// `total_connections_received`.
    pub connections: Option<u64>,
}

/// Parses the text of `INFO commandstats stats`.
pub fn parse_info(text: &str) -> RedisInfo {
    let mut info = RedisInfo::default();
    for line in text.lines() {
        let line = line.trim_end();
        if let Some(rest) = line.strip_prefix("cmdstat_") {
            let Some((name, values)) = rest.split_once(':') else {
                continue;
            };
            let mut stat = CommandStat::default();
            for kv in values.split(',') {
                match kv.split_once('=') {
                    Some(("calls", v)) => stat.calls = v.parse().unwrap_or(0),
                    Some(("usec", v)) => stat.usec = v.parse().unwrap_or(0),
                    _ => {}
                }
            }
            info.commands.insert(name.to_string(), stat);
        } else if let Some(v) = line.strip_prefix("total_reads_processed:") {
            info.reads = v.parse().ok();
        } else if let Some(v) = line.strip_prefix("total_connections_received:") {
            info.connections = v.parse().ok();
        }
    }
    info
}

async fn redis_info(port: u16) -> anyhow::Result<RedisInfo> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
    let mut conn = tokio::time::timeout(
        Duration::from_secs(5),
        client.get_multiplexed_async_connection(),
    )
    .await??;
    let text: String = tokio::time::timeout(
        Duration::from_secs(5),
        redis::cmd("INFO")
            .arg("commandstats")
            .arg("stats")
            .query_async(&mut conn),
    )
    .await??;
    Ok(parse_info(&text))
}

/// Parses `shoplog_http_requests_total{service="…",route="…",status="…"} N` lines into requests
/// by route, leaving out health checks and metric scrapes (the supervisor's and ours).
pub fn parse_http_requests(metrics: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("shoplog_http_requests_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once('}') else {
            continue;
        };
        let Some(route) = labels
            .split(',')
            .find_map(|kv| kv.strip_prefix("route=\""))
            .map(|r| r.trim_end_matches('"'))
        else {
            continue;
        };
        if route.ends_with("/health") || route.ends_with("/metrics") {
            continue;
        }
        let n: u64 = value.trim().parse::<f64>().map_or(0, |v| v as u64);
        *out.entry(route.to_string()).or_default() += n;
    }
    out
}

async fn http_requests(
    http: &reqwest::Client,
    port: u16,
    prefix: &str,
) -> anyhow::Result<BTreeMap<String, u64>> {
    let text = http
        .get(format!("http://127.0.0.1:{port}/{prefix}/metrics"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    Ok(parse_http_requests(&text))
}

/// One command's share of a checkout on one database.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CommandCost {
    /// Calls during the run.
    pub calls: u64,
    /// Calls per checkout.
    pub per_checkout: f64,
    /// Microseconds Redis spent in it per checkout (`INFO commandstats` `usec`).
    pub usec_per_checkout: f64,
}

/// What one component spent on the run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ComponentCost {
    /// Its name (`order-1`, `order-db`, `lock-2`, `gateway`, ...).
    pub component: String,
    /// `redis`, `service` or `gateway`.
    pub kind: String,
    /// CPU seconds it used during the run.
    pub cpu_seconds: f64,
    /// CPU seconds per 1,000 checkouts (= CPU ms per checkout).
    pub cpu_s_per_1k: f64,
    /// Its share of the stack's CPU (load generator excluded), 0–1.
    pub share: f64,
    /// A Redis: all commands per checkout (those run inside scripts included).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commands_per_checkout: Option<f64>,
    /// A Redis: scripts (`EVAL`, `EVALSHA`, `FCALL`) per checkout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scripts_per_checkout: Option<f64>,
    /// A Redis: per command (upper-case name), the most frequent first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub commands: Vec<(String, CommandCost)>,
    /// A Redis: read events per checkout (see the module's note on round trips).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reads_per_checkout: Option<f64>,
    /// A Redis: connections it accepted during the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connections_opened: Option<u64>,
    /// A service: HTTP requests it answered per checkout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_requests_per_checkout: Option<f64>,
    /// A service: HTTP requests per checkout by route.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub http_routes: BTreeMap<String, f64>,
    /// Whether it restarted (or stopped, or started) during the run: its figures are then wrong.
    pub restarted: bool,
    /// What could not be read.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// Round trips per checkout on the request path, summed over the stack (see the module's note).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RoundTrips {
    /// Client → gateway: one request per checkout, by construction of the load.
    pub client_requests: f64,
    /// Gateway → services (and service → service through the gateway): HTTP requests answered.
    pub http_requests: f64,
    /// Service → Redis: read events the Redis servers served (exact at one connection, a lower
    /// bound under load).
    pub redis_reads: f64,
    /// Of those, the three lock nodes' (Redlock).
    pub lock_reads: f64,
}

/// The cost of a run: `after − before`, per checkout.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CostReport {
    /// Checkouts the run made (the divisor).
    pub checkouts: u64,
    /// Seconds between the two snapshots.
    pub seconds: f64,
    /// Every component, in the stack's order.
    pub components: Vec<ComponentCost>,
    /// CPU seconds per 1,000 checkouts of the whole stack, load generator excluded.
    pub total_cpu_s_per_1k: f64,
    /// Commands every Redis executed per checkout, those run inside scripts included.
    pub total_commands_per_checkout: f64,
    /// Scripts (`EVAL`, `EVALSHA`, `FCALL`) per checkout, over every Redis.
    pub total_scripts_per_checkout: f64,
    /// The load generator's CPU seconds per 1,000 checkouts, when known (not in the total).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_generator_cpu_s_per_1k: Option<f64>,
    /// Round trips per checkout.
    pub round_trips: RoundTrips,
}

impl CostReport {
    /// The report of a run between two snapshots that made `checkouts` checkouts; `order` lists
    /// component names in the order to report them (others follow, by name).
    pub fn between(
        before: &Snapshot,
        after: &Snapshot,
        checkouts: u64,
        order: &[String],
        load_generator_cpu_seconds: Option<f64>,
    ) -> CostReport {
        let n = checkouts.max(1) as f64;
        let mut names: Vec<&String> = order
            .iter()
            .filter(|name| after.components.contains_key(*name))
            .collect();
        for name in after.components.keys() {
            if !names.contains(&name) {
                names.push(name);
            }
        }
        let empty = Sample::default();
        let mut rt = RoundTrips {
            client_requests: 1.0,
            ..RoundTrips::default()
        };
        let mut components = Vec::new();
        let (mut all_commands, mut all_scripts) = (0.0, 0.0);
        for name in names {
            let a = &after.components[name];
            let b = before.components.get(name).unwrap_or(&empty);
            let restarted = a.pid != b.pid;
            let cpu = (a.cpu_seconds - b.cpu_seconds).max(0.0);
            let mut cost = ComponentCost {
                component: name.clone(),
                kind: a.kind.clone(),
                cpu_seconds: cpu,
                cpu_s_per_1k: cpu * 1000.0 / n,
                share: 0.0,
                commands_per_checkout: None,
                scripts_per_checkout: None,
                commands: Vec::new(),
                reads_per_checkout: None,
                connections_opened: None,
                http_requests_per_checkout: None,
                http_routes: BTreeMap::new(),
                restarted,
                errors: a.errors.clone(),
            };
            if a.kind == "redis" && !a.commands.is_empty() {
                let (mut total, mut scripts) = (0u64, 0u64);
                for (cmd, now) in &a.commands {
                    let was = b.commands.get(cmd).copied().unwrap_or_default();
                    let calls = now.calls.saturating_sub(was.calls);
                    if calls == 0 {
                        continue;
                    }
                    total += calls;
                    if matches!(
                        cmd.as_str(),
                        "eval" | "evalsha" | "fcall" | "eval_ro" | "evalsha_ro" | "fcall_ro"
                    ) {
                        scripts += calls;
                    }
                    cost.commands.push((
                        cmd.to_uppercase(),
                        CommandCost {
                            calls,
                            per_checkout: calls as f64 / n,
                            usec_per_checkout: now.usec.saturating_sub(was.usec) as f64 / n,
                        },
                    ));
                }
                cost.commands.sort_by_key(|c| std::cmp::Reverse(c.1.calls));
                let per = total as f64 / n;
                cost.commands_per_checkout = Some(per);
                cost.scripts_per_checkout = Some(scripts as f64 / n);
                all_commands += per;
                all_scripts += scripts as f64 / n;
                if let (Some(x), Some(y)) = (a.reads, b.reads.or(Some(0))) {
                    let reads = x.saturating_sub(y) as f64 / n;
                    cost.reads_per_checkout = Some(reads);
                    rt.redis_reads += reads;
                    if name.starts_with("lock-") {
                        rt.lock_reads += reads;
                    }
                }
                if let (Some(x), Some(y)) = (a.connections, b.connections.or(Some(0))) {
                    cost.connections_opened = Some(x.saturating_sub(y));
                }
            }
            if a.kind == "service" && !a.http_requests.is_empty() {
                let mut total = 0u64;
                for (route, now) in &a.http_requests {
                    let d = now.saturating_sub(b.http_requests.get(route).copied().unwrap_or(0));
                    if d > 0 {
                        total += d;
                        cost.http_routes.insert(route.clone(), d as f64 / n);
                    }
                }
                let per = total as f64 / n;
                cost.http_requests_per_checkout = Some(per);
                rt.http_requests += per;
            }
            components.push(cost);
        }
        let total_cpu: f64 = components.iter().map(|c| c.cpu_seconds).sum();
        for c in &mut components {
            c.share = if total_cpu > 0.0 {
                c.cpu_seconds / total_cpu
            } else {
                0.0
            };
        }
        CostReport {
            checkouts,
            seconds: after.at_ms.saturating_sub(before.at_ms) as f64 / 1000.0,
            total_cpu_s_per_1k: total_cpu * 1000.0 / n,
            total_commands_per_checkout: all_commands,
            total_scripts_per_checkout: all_scripts,
            load_generator_cpu_s_per_1k: load_generator_cpu_seconds.map(|s| s * 1000.0 / n),
            components,
            round_trips: rt,
        }
    }

    /// Prints the report as a table for people.
    pub fn print(&self) {
        println!(
            "cost per checkout over {} checkouts ({:.1} s): CPU seconds per 1,000 checkouts \
             (= CPU ms per checkout) from /proc; Redis commands per checkout from INFO \
             commandstats (those inside scripts included); Redis reads and HTTP requests per checkout",
            self.checkouts, self.seconds
        );
        let rows: Vec<Vec<String>> = self
            .components
            .iter()
            .map(|c| {
                let mut detail: Vec<String> = c
                    .commands
                    .iter()
                    .take(8)
                    .map(|(cmd, k)| format!("{cmd} {:.2}", k.per_checkout))
                    .collect();
                if detail.is_empty() {
                    detail = c
                        .http_routes
                        .iter()
                        .map(|(r, v)| format!("{r} {v:.2}"))
                        .collect();
                }
                if c.restarted {
                    detail.insert(0, "RESTARTED during the run".into());
                }
                detail.extend(c.errors.iter().cloned());
                vec![
                    c.component.clone(),
                    format!("{:.3}", c.cpu_s_per_1k),
                    format!("{:.0}%", c.share * 100.0),
                    c.commands_per_checkout
                        .map_or_else(String::new, |v| format!("{v:.2}")),
                    c.reads_per_checkout
                        .map_or_else(String::new, |v| format!("{v:.2}")),
                    c.http_requests_per_checkout
                        .map_or_else(String::new, |v| format!("{v:.2}")),
                    detail.join(", "),
                ]
            })
            .chain(std::iter::once(vec![
                "total".into(),
                format!("{:.3}", self.total_cpu_s_per_1k),
                "100%".into(),
                format!("{:.2}", self.total_commands_per_checkout),
                format!("{:.2}", self.round_trips.redis_reads),
                format!("{:.2}", self.round_trips.http_requests),
                "load generator excluded".into(),
            ]))
            .collect();
        crate::output::table(
            &[
                "COMPONENT",
                "CPU s/1k",
                "SHARE",
                "CMDS/CO",
                "READS/CO",
                "HTTP/CO",
                "PER CHECKOUT",
            ],
            &rows,
        );
        if let Some(lg) = self.load_generator_cpu_s_per_1k {
            println!("load generator {lg:.3} CPU s per 1,000 checkouts (not in the total)");
        }
        let rt = &self.round_trips;
        println!(
            "round trips per checkout: client → gateway {:.0}, gateway → services {:.2}, \
             services → Redis {:.2} reads (lock nodes {:.2}; exact at one connection, a lower \
             bound under load); {:.2} scripts",
            rt.client_requests,
            rt.http_requests,
            rt.redis_reads,
            rt.lock_reads,
            self.total_scripts_per_checkout
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_parses_commands_reads_and_connections() {
        let text = "# Commandstats\r\ncmdstat_evalsha:calls=12,usec=340,usec_per_call=28.33,\
                    rejected_calls=0,failed_calls=0\r\ncmdstat_xinfo|groups:calls=2,usec=5\r\n\
                    # Stats\r\ntotal_connections_received:7\r\ntotal_reads_processed:99\r\n";
        let info = parse_info(text);
        assert_eq!(
            info.commands["evalsha"],
            CommandStat {
                calls: 12,
                usec: 340
            }
        );
        assert_eq!(info.commands["xinfo|groups"].calls, 2);
        assert_eq!(info.reads, Some(99));
        assert_eq!(info.connections, Some(7));
    }

    #[test]
    fn http_requests_leave_out_health_and_metrics() {
        let text = "# TYPE shoplog_http_requests_total counter\n\
            shoplog_http_requests_total{service=\"order\",route=\"/orders/checkout\",status=\"200\"} 5\n\
            shoplog_http_requests_total{service=\"order\",route=\"/orders/checkout\",status=\"409\"} 2\n\
            shoplog_http_requests_total{service=\"order\",route=\"/orders/health\",status=\"200\"} 50\n\
            shoplog_http_requests_total{service=\"order\",route=\"/orders/metrics\",status=\"200\"} 3\n";
        let r = parse_http_requests(text);
        assert_eq!(r.len(), 1);
        assert_eq!(r["/orders/checkout"], 7);
    }

    #[test]
    fn report_divides_the_differences_by_the_checkouts() {
        let sample = |cpu: f64, evalsha: u64, reads: u64| Sample {
            kind: "redis".into(),
            pid: Some(1),
            cpu_seconds: cpu,
            commands: [(
                "evalsha".to_string(),
                CommandStat {
                    calls: evalsha,
                    usec: evalsha * 10,
                },
            )]
            .into(),
            reads: Some(reads),
            connections: Some(3),
            http_requests: BTreeMap::new(),
            errors: Vec::new(),
        };
        let snap = |at_ms: u64, s: Sample, o: Sample| Snapshot {
            at_ms,
            components: [("order-db".to_string(), s), ("order-1".to_string(), o)].into(),
        };
        let svc = |cpu: f64, n: u64| Sample {
            kind: "service".into(),
            pid: Some(2),
            cpu_seconds: cpu,
            http_requests: [("/orders/checkout".to_string(), n)].into(),
            ..Sample::default()
        };
        let before = snap(1_000, sample(1.0, 10, 100), svc(2.0, 0));
        let after = snap(3_000, sample(1.5, 2_010, 600), svc(3.5, 1_000));
        let r = CostReport::between(&before, &after, 1_000, &["order-1".into()], Some(0.25));
        assert_eq!(r.components[0].component, "order-1");
        let db = &r.components[1];
        assert!((db.cpu_s_per_1k - 0.5).abs() < 1e-9);
        assert_eq!(db.commands[0].0, "EVALSHA");
        assert_eq!(db.commands[0].1.calls, 2_000);
        assert!((db.commands[0].1.per_checkout - 2.0).abs() < 1e-9);
        assert!((db.commands[0].1.usec_per_checkout - 20.0).abs() < 1e-9);
        assert_eq!(db.reads_per_checkout, Some(0.5));
        assert_eq!(db.connections_opened, Some(0));
        assert!((r.total_cpu_s_per_1k - 2.0).abs() < 1e-9);
        assert!((r.components[0].share - 0.75).abs() < 1e-9);
        assert_eq!(r.components[0].http_requests_per_checkout, Some(1.0));
        assert_eq!(r.load_generator_cpu_s_per_1k, Some(0.25));
        assert!((r.seconds - 2.0).abs() < 1e-9);
        assert!(!db.restarted);
    }
}
