//! `shoplog archive [--now]`: the log archive's state (segments, bytes, oldest and newest entry
//! archived, what is still live and how far archiving lags), and an archiving pass on demand
//! (run by the active log parser, which owns the archive).

use std::time::Duration;

use super::{exit, ops, StackArgs};
use crate::output;
use common::archive::{self, StreamId};
use common::keys;

/// Arguments of `shoplog archive`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    shoplog archive              segments, bytes, oldest/newest archived, live entries, lag\n  \
    shoplog archive --now        ask the active log parser for an archiving pass now\n  \
    shoplog archive --json | jq .lag_ms\n\n\
The archive is ARCHIVE_DIR (`shoplog up`: <data dir>/archive); entries stay in Redis for\n\
LOG_RETAIN (default 5m). Format and backups: docs/OPERATIONS.md.")]
pub struct ArchiveArgs {
    /// Run an archiving pass now (through the active log parser) before reporting.
    #[arg(long)]
    pub now: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub stack: StackArgs,
}

/// One partition's archive and live log.
#[derive(Debug, serde::Serialize)]
struct PartStatus {
    service: &'static str,
    partition: u32,
    stream: String,
    #[serde(flatten)]
    archived: archive::DirStatus,
    live_entries: u64,
    oldest_live: Option<String>,
}

/// Runs `shoplog archive`.
pub async fn run(args: ArchiveArgs) -> anyhow::Result<u8> {
    let (config, dbs) = ops::connect(&args.stack).await?;
    let settings = args.stack.settings(None, 0);
    let base = std::env::var("LOGPARSER_URL").unwrap_or_else(|_| {
        format!(
            "http://127.0.0.1:{}",
            common::config::defaults::LOGPARSER_PORT.saturating_add(settings.port_offset)
        )
    });
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()?;
    let mut pass = None;
    if args.now {
        let r = http.post(format!("{base}/logparser/archive")).send().await;
        match r {
            Ok(r) if r.status().is_success() => pass = Some(r.json::<serde_json::Value>().await?),
            Ok(r) => {
                let status = r.status();
                eprintln!(
                    "error: the log parser at {base} refused the pass ({status}): {}",
                    r.text().await.unwrap_or_default()
                );
                return Ok(exit::PROBLEM);
            }
            Err(e) => {
                eprintln!("error: no log parser answers at {base} (LOGPARSER_URL): {e}");
                return Ok(exit::PROBLEM);
            }
        }
    }
    let daemon: Option<serde_json::Value> = match http
        .get(format!("{base}/logparser/status"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
    {
        Ok(r) if r.status().is_success() => r.json().await.ok(),
        _ => None,
    };
    // Shown absolute: a relative ARCHIVE_DIR is relative to the working directory.
    let root = std::path::absolute(&config.archive_dir).unwrap_or(config.archive_dir.clone());
    let mut parts = Vec::new();
    let mut oldest_live: Option<u64> = None;
    let mut now = 0;
    for (name, log, mut conn, layout) in dbs.logs() {
        now = logparser::archive::db_time(&mut conn).await?;
        for k in layout.parts() {
            let stream = keys::log(log, &layout, k);
            let len: u64 = redis::cmd("XLEN")
                .arg(&stream)
                .query_async(&mut conn)
                .await?;
            let first: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
                .arg(&stream)
                .arg("-")
                .arg("+")
                .arg("COUNT")
                .arg(1)
                .query_async(&mut conn)
                .await?;
            let first = first.into_iter().next().map(|(id, _)| id);
            if let Some(ms) = first.as_deref().and_then(StreamId::parse).map(|i| i.ms) {
                oldest_live = Some(oldest_live.map_or(ms, |o| o.min(ms)));
            }
            parts.push(PartStatus {
                service: name,
                partition: k,
                stream,
                archived: archive::dir_status(&archive::stream_dir(&root, name, k))?,
                live_entries: len,
                oldest_live: first,
            });
        }
    }
    let mut queue = 0u64;
    let ol = dbs.order_layout;
    for k in ol.parts() {
        let n: u64 = redis::cmd("ZCARD")
            .arg(keys::logparser_retire(&ol, k))
            .query_async(&mut dbs.order.clone())
            .await?;
        queue += n;
    }
    // The retention in force is the running daemon's; this process's environment may differ.
    let retain = match daemon.as_ref().map(|d| &d["log_retain_ms"]) {
        Some(serde_json::Value::Number(ms)) => ms.as_u64(),
        Some(serde_json::Value::Null) => None,
        _ => config.log_retain.map(|d| d.as_millis() as u64),
    };
    // How much older than LOG_RETAIN the oldest entry still in Redis is.
    let lag_ms = match (retain, oldest_live) {
        (Some(r), Some(o)) => now.saturating_sub(r).saturating_sub(o),
        _ => 0,
    };
    let (segments, bytes): (usize, u64) = parts.iter().fold((0, 0), |(s, b), p| {
        (s + p.archived.segments, b + p.archived.bytes)
    });
    let live: u64 = parts.iter().map(|p| p.live_entries).sum();
    if args.json {
        let json = serde_json::json!({
            "root": root,
            "log_retain_ms": retain,
            "segments": segments,
            "bytes": bytes,
            "live_entries": live,
            "lag_ms": lag_ms,
            "retire_queue": queue,
            "partitions": parts,
            "pass": pass,
            "last_archive": daemon.as_ref().and_then(|d| d.get("last_archive").cloned()),
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(exit::OK);
    }
    if let Some(p) = &pass {
        println!(
            "archiving pass: {} entries archived, {} trimmed, {} saga records retired, {} ms",
            p["archived"], p["trimmed"], p["retired"], p["duration_ms"]
        );
    }
    let mut rows = Vec::new();
    for (name, _, _, _) in dbs.logs() {
        let mine: Vec<&PartStatus> = parts.iter().filter(|p| p.service == name).collect();
        let min = |f: &dyn Fn(&PartStatus) -> Option<&str>| {
            mine.iter()
                .filter_map(|p| f(p).and_then(StreamId::parse))
                .min()
        };
        let max = mine
            .iter()
            .filter_map(|p| p.archived.newest.as_deref().and_then(StreamId::parse))
            .max();
        let when = |id: Option<StreamId>| id.map_or("-".to_string(), |i| ops::clock(i.ms));
        rows.push(vec![
            name.to_string(),
            mine.iter()
                .map(|p| p.archived.segments)
                .sum::<usize>()
                .to_string(),
            human(mine.iter().map(|p| p.archived.bytes).sum()),
            when(min(&|p| p.archived.oldest.as_deref())),
            when(max),
            mine.iter().map(|p| p.live_entries).sum::<u64>().to_string(),
            when(min(&|p| p.oldest_live.as_deref())),
        ]);
    }
    println!("archive: {}", root.display());
    output::table(
        &[
            "LOG",
            "SEGMENTS",
            "BYTES",
            "OLDEST ARCHIVED",
            "NEWEST ARCHIVED",
            "LIVE ENTRIES",
            "OLDEST LIVE",
        ],
        &rows,
    );
    match retain {
        Some(r) => println!(
            "LOG_RETAIN {} s; archiving lags {:.1} s behind it; {queue} saga(s) waiting to be retired",
            r / 1000,
            lag_ms as f64 / 1000.0
        ),
        None => println!("LOG_RETAIN=off: nothing is archived"),
    }
    if let Some(held) = daemon
        .as_ref()
        .and_then(|d| d.pointer("/last_archive/held"))
        .and_then(|h| h.as_array())
        .filter(|h| !h.is_empty())
    {
        println!("held back in the last pass:");
        for h in held.iter().take(10) {
            println!("  {}: {}", h["stream"], h["reason"]);
        }
    }
    Ok(exit::OK)
}

fn human(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}
