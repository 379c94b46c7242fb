//! `shoplog saga <id>` (one saga's timeline) and `shoplog sagas` (list sagas by state and age).

use super::{exit, ops, StackArgs};
use crate::output::{self, Tone};
use logparser::saga_index;
use logparser::sagas::{self, SagaState};
use logparser::timeline;

/// Arguments of `shoplog saga`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    shoplog saga 01JD3Z8T6M2Q0W5C9K7Y4N1B3E     a saga id\n  \
    shoplog saga 42                             an order id: every saga of that order\n  \
    shoplog saga 42 --json")]
pub struct SagaArgs {
    /// A saga id, or an order id (then every saga of the order).
    pub id: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub stack: StackArgs,
}

/// Runs `shoplog saga`.
pub async fn run_one(args: SagaArgs) -> anyhow::Result<u8> {
    let (_, dbs) = ops::connect(&args.stack).await?;
    let progress = ops::Progress::new(args.json);
    progress.say("scanning the logs");
    let out = timeline::lookup(&dbs, &args.id).await?;
    if out.is_empty() {
        progress.done();
        eprintln!("no saga or order with the id `{}`", args.id);
        return Ok(exit::PROBLEM);
    }
    progress.done();
    if args.json {
        let json: Vec<_> = out.iter().map(timeline::SagaView::to_json).collect();
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(exit::OK);
    }
    for timeline::SagaView {
        saga: id,
        record,
        timeline: steps,
    } in out
    {
        match &record {
            Some(Err(e)) => println!("saga {id}: {}", output::paint(&e.to_string(), Tone::Bad)),
            Some(Ok(r)) => {
                let tone = match r.state() {
                    SagaState::Committed => Tone::Good,
                    SagaState::Aborted => Tone::Warn,
                    _ => Tone::Bad,
                };
                println!(
                    "saga {id}  order {}  user {}  total {}  — {}{}",
                    r.order,
                    r.user,
                    r.total,
                    output::paint(r.state().name(), tone),
                    if r.reason.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", r.reason)
                    }
                );
            }
            None => println!(
                "saga {id} (no record in order-db: final and retired; its history is below)"
            ),
        }
        let first = steps.first().map(|s| s.at_ms).unwrap_or(0);
        let rows: Vec<Vec<String>> = steps
            .iter()
            .map(|s| {
                let detail: Vec<String> = s
                    .fields
                    .iter()
                    .filter(|(k, _)| !matches!(k.as_str(), "type" | "saga" | "log_id" | "order"))
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                vec![
                    ops::clock(s.at_ms),
                    format!("+{} ms", s.at_ms - first),
                    s.service.to_string(),
                    s.kind.clone(),
                    detail.join(" "),
                ]
            })
            .collect();
        output::table(
            &["TIME (UTC)", "SINCE START", "LOG", "EVENT", "DETAIL"],
            &rows,
        );
        println!();
    }
    Ok(exit::OK)
}

/// Arguments of `shoplog sagas`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    shoplog sagas --state in-flight --older-than 30s     the stuck ones\n  \
    shoplog sagas --state compensating\n  \
    shoplog sagas --user 7 --state aborted   one user's aborted sagas\n  \
    shoplog sagas --stuck                    undecided past SAGA_TIMEOUT\n  \
    shoplog sagas --json | jq length\n  \
    shoplog sagas --retired --state aborted    also the final sagas whose records were retired")]
pub struct SagasArgs {
    /// Also list the final sagas whose records were retired to the archive (reads the history
    /// of log:order: archive + live).
    #[arg(long)]
    pub retired: bool,
    /// Only sagas in this state: in-flight, committed, compensating, aborted.
    #[arg(long, value_parser = parse_state)]
    pub state: Option<SagaState>,
    /// Only sagas started longer ago than this (500ms, 30s, 5m, 2h).
    #[arg(long, value_parser = ops::parse_duration)]
    pub older_than: Option<std::time::Duration>,
    /// Only sagas started at most this long ago.
    #[arg(long, value_parser = ops::parse_duration)]
    pub newer_than: Option<std::time::Duration>,
    /// Only the sagas of this user.
    #[arg(long)]
    pub user: Option<String>,
    /// Only the sagas of this order.
    #[arg(long)]
    pub order: Option<String>,
    /// Only sagas stuck: undecided past SAGA_TIMEOUT (the ones a recovery pass aborts).
    #[arg(long)]
    pub stuck: bool,
    /// At most this many sagas, the newest (default: all).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub stack: StackArgs,
}

fn parse_state(s: &str) -> Result<SagaState, String> {
    SagaState::parse(s)
        .ok_or_else(|| format!("`{s}`: use in-flight, committed, compensating or aborted"))
}

/// Runs `shoplog sagas`: reads the saga index (`logparser::saga_index`, the console's reader:
/// the same sagas for the same question), never a scan of the records.
pub async fn run_list(args: SagasArgs) -> anyhow::Result<u8> {
    let (config, dbs) = ops::connect(&args.stack).await?;
    let progress = ops::Progress::new(args.json);
    progress.say("reading the saga index");
    let timeout = config.saga_timeout.as_millis() as u64;
    let filter = sagas::Filter {
        state: args.state,
        min_age_ms: args.older_than.map(|d| d.as_millis() as u64).unwrap_or(0),
        max_age_ms: args.newer_than.map(|d| d.as_millis() as u64),
        order: args.order.clone(),
        user: args.user.clone(),
        stuck: args.stuck,
    };
    let mut conn = dbs.order.clone();
    let limit = args.limit.unwrap_or(usize::MAX);
    let mut found = Vec::new();
    let mut malformed = Vec::new();
    let mut behind = Vec::new();
    let now = match saga_index::Snapshot::read(&mut conn, &dbs.order_layout).await {
        Ok(snap) => {
            malformed.extend(snap.malformed.iter().cloned());
            behind = snap.behind.clone();
            let mut before: Option<String> = None;
            while found.len() < limit {
                let page = (limit - found.len()).min(1_000);
                let walk = snap
                    .walk(
                        &mut conn,
                        &filter,
                        timeout,
                        before.as_deref(),
                        page,
                        usize::MAX,
                    )
                    .await?;
                found.extend(walk.items);
                malformed.extend(walk.malformed);
                match walk.next {
                    Some(n) => before = Some(n),
                    None => break,
                }
            }
            snap.as_of_ms
        }
        // No index yet (no log parser has run a pass on this database): the operator still
        // gets the answer, from a scan of every record (slow on a large history), and is told.
        Err(e @ saga_index::IndexError::Missing(_)) => {
            eprintln!("warning: {e}; scanning every saga record instead");
            progress.say("scanning saga records");
            let now = sagas::now_ms();
            sagas::scan(&mut conn, &dbs.order_layout, |r| match r {
                Ok(r) if filter.matches(&r, now, timeout) => found.push(r),
                Ok(_) => {}
                Err(e) => malformed.push(e.to_string()),
            })
            .await?;
            found.sort_by(|a, b| b.started_ms.cmp(&a.started_ms).then(b.id.cmp(&a.id)));
            found.truncate(limit);
            now
        }
        Err(e) => return Err(e.into()),
    };
    if args.retired {
        progress.say("reading retired sagas from log:order (archive + live)");
        let retired = logparser::sagas::retired(&dbs).await?;
        found.extend(
            retired
                .into_iter()
                .filter(|r| filter.matches(r, now, timeout)),
        );
    }
    progress.done();
    for e in &malformed {
        eprintln!("error: {e}");
    }
    if !behind.is_empty() {
        eprintln!(
            "warning: the saga index is behind in partition(s) {:?} (more than {} entries of log:order not read by the log parser): their newest sagas may be missing; is the log parser running?",
            behind,
            saga_index::TAIL_LIMIT
        );
    }
    found.sort_by(|a, b| a.started_ms.cmp(&b.started_ms).then(a.id.cmp(&b.id)));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&found)?);
    } else {
        let rows: Vec<Vec<String>> = found
            .iter()
            .map(|r| {
                vec![
                    r.id.clone(),
                    r.order.clone(),
                    r.state().name().to_string(),
                    format!("{:.1}s", r.age_ms(now) as f64 / 1000.0),
                    r.reason.clone(),
                ]
            })
            .collect();
        output::table(&["SAGA", "ORDER", "STATE", "AGE", "REASON"], &rows);
        eprintln!("{} saga(s)", found.len());
    }
    Ok(if malformed.is_empty() {
        exit::OK
    } else {
        exit::PROBLEM
    })
}
