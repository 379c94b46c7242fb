//! `shoplog tail`: follow the logs live, one line per entry.

use std::io::Write;

use super::{exit, ops, StackArgs};
use logparser::replay::ServiceLog;

/// Arguments of `shoplog tail`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    shoplog tail                  all three logs\n  \
    shoplog tail stock payment\n  \
    shoplog tail order | grep CheckoutAborted")]
pub struct TailArgs {
    /// Which logs (order, stock, payment); all when none is given.
    pub services: Vec<String>,
    #[command(flatten)]
    pub stack: StackArgs,
}

type Reply = Option<Vec<(String, Vec<(String, Vec<(String, String)>)>)>>;

/// Runs `shoplog tail` until interrupted.
pub async fn run(args: TailArgs) -> anyhow::Result<u8> {
    let mut services = Vec::new();
    for name in &args.services {
        match ServiceLog::parse(name) {
            Some(s) => services.push(s),
            None => {
                eprintln!("error: unknown service `{name}` (use order, stock or payment)");
                return Ok(exit::CANNOT_RUN);
            }
        }
    }
    if services.is_empty() {
        services = ServiceLog::ALL.to_vec();
    }
    let (_, dbs) = ops::connect(&args.stack).await?;
    let mut tasks = Vec::new();
    for service in services {
        // A dedicated connection: XREAD BLOCK would stall a shared one.
        let (mut conn, layout) = dbs.of(service)?;
        // Every partition's stream, read in one XREAD, each from its own last id.
        let streams = common::keys::logs(service.log(), &layout);
        tasks.push(tokio::spawn(async move {
            let mut afters: Vec<String> = vec!["$".to_string(); streams.len()];
            loop {
                let reply: Result<Reply, _> = redis::cmd("XREAD")
                    .arg("COUNT")
                    .arg(1000)
                    .arg("BLOCK")
                    .arg(1000)
                    .arg("STREAMS")
                    .arg(&streams)
                    .arg(&afters)
                    .query_async(&mut conn)
                    .await;
                let Ok(reply) = reply else {
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    continue;
                };
                let mut out = std::io::stdout().lock();
                for (stream, entries) in reply.unwrap_or_default() {
                    let Some(i) = streams.iter().position(|s| *s == stream) else {
                        continue;
                    };
                    for (id, fields) in entries {
                        let kind = fields
                            .iter()
                            .find(|(k, _)| k == "type")
                            .map(|(_, v)| v.as_str())
                            .unwrap_or("?");
                        let rest: Vec<String> = fields
                            .iter()
                            .filter(|(k, _)| k != "type" && k != "log_id")
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect();
                        let _ =
                            writeln!(out, "{:<7} {id} {kind} {}", service.name(), rest.join(" "));
                        afters[i] = id;
                    }
                }
                let _ = out.flush();
            }
        }));
    }
    let _ = tokio::signal::ctrl_c().await;
    for t in tasks {
        t.abort();
    }
    Ok(exit::OK)
}
