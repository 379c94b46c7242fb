//! `shoplog saga <id>` (one saga's timeline) and `shoplog sagas` (list sagas by state and age).

use super::{exit, ops, StackArgs};
use crate::output::{self, Tone};
use logparser::sagas::{self, now_ms, SagaState};
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

/// Runs `shoplog sagas`.
pub async fn run_list(args: SagasArgs) -> anyhow::Result<u8> {
    let (_, dbs) = ops::connect(&args.stack).await?;
    let progress = ops::Progress::new(args.json);
    progress.say("scanning saga records");
    let now = now_ms();
    let filter = sagas::Filter {
        state: args.state,
        min_age_ms: args.older_than.map(|d| d.as_millis() as u64).unwrap_or(0),
        ..sagas::Filter::default()
    };
    let mut found = Vec::new();
    let mut malformed = Vec::new();
    sagas::scan(&mut dbs.order.clone(), &dbs.order_layout, |r| match r {
        Ok(r) if filter.matches(&r, now, 0) => found.push(r),
        Ok(_) => {}
        Err(e) => malformed.push(e),
    })
    .await?;
    if args.retired {
        progress.say("reading retired sagas from log:order (archive + live)");
        let retired = logparser::sagas::retired(&dbs).await?;
        found.extend(retired.into_iter().filter(|r| filter.matches(r, now, 0)));
    }
    progress.done();
    for e in &malformed {
        eprintln!("error: {e}");
    }
    found.sort_by_key(|r| r.started_ms);
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
