//! `shoplog replay <service>`: rebuild a service's state from its history alone (the archive,
//! then the live log), one partition at a time.

use super::{exit, ops, StackArgs};
use crate::output;
use logparser::replay::{self, ServiceLog};

/// Arguments of `shoplog replay`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    shoplog replay stock                 rebuild stock-db's state from log:stock; print a summary\n  \
    shoplog replay stock --diff          list every entity whose live state differs (exit 1 if any)\n  \
    shoplog replay payment --into redis://127.0.0.1:6500/\n                                       write the rebuilt state into another Redis\n  \
    shoplog replay order --partition 3 --diff\n                                       one partition only (log:order:{o3.60} against its keys)")]
pub struct ReplayArgs {
    /// `order`, `stock` or `payment`.
    pub service: String,
    /// List every entity whose live state differs from the replayed one.
    #[arg(long)]
    pub diff: bool,
    /// Write the rebuilt state into the Redis at this URL (its other keys are left alone).
    #[arg(long, value_name = "URL")]
    pub into: Option<String>,
    /// Only this partition of the service (0 to P-1; `shoplog status` shows P).
    #[arg(long, value_name = "K")]
    pub partition: Option<u32>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub stack: StackArgs,
}

/// Runs `shoplog replay`.
pub async fn run(args: ReplayArgs) -> anyhow::Result<u8> {
    let Some(service) = ServiceLog::parse(&args.service) else {
        eprintln!(
            "error: unknown service `{}` (use order, stock or payment)",
            args.service
        );
        return Ok(exit::CANNOT_RUN);
    };
    let (_, dbs) = ops::connect(&args.stack).await?;
    let progress = ops::Progress::new(args.json);
    progress.say(&format!("replaying {}", service.log()));
    let (mut conn, layout) = dbs.of(service)?;
    if let Some(k) = args.partition.filter(|k| *k >= layout.p) {
        eprintln!(
            "error: {} has partitions 0 to {}, not {k}",
            service.name(),
            layout.p - 1
        );
        return Ok(exit::CANNOT_RUN);
    }
    let parts: Vec<u32> = match args.partition {
        Some(k) => vec![k],
        None => layout.parts().collect(),
    };
    let archive = dbs.archive().map(std::path::Path::to_path_buf);
    let mut target = match &args.into {
        Some(url) => Some(
            common::db::connect_once(url, "the --into Redis", std::time::Duration::from_secs(3))
                .await?,
        ),
        None => None,
    };
    let (mut rebuilt_n, mut diff, mut all) = (0usize, Vec::new(), replay::State::new());
    // Comparing with the database: no saga record is retired between the two reads, as for the
    // audit (logparser::audit_hold).
    let hold = match args.diff {
        true => Some(
            logparser::audit_hold::hold(&dbs.order, || {
                progress.say("waiting for a retirement batch to end")
            })
            .await?,
        ),
        false => None,
    };
    for k in parts {
        progress.say(&format!("replaying {} partition {k}", service.log()));
        let rebuilt =
            replay::rebuild_part(&mut conn, archive.as_deref(), service, &layout, k).await?;
        rebuilt_n += rebuilt.len();
        if let Some(target) = target.as_mut() {
            replay::write(target, &rebuilt).await?;
        }
        if args.diff {
            let live = replay::dump_part(&mut conn, service, &layout, k).await?;
            diff.extend(replay::diff(&rebuilt, &live));
        } else if args.into.is_none() {
            all.extend(rebuilt);
        }
    }
    if let Some(hold) = hold {
        hold.release().await?;
    }
    let mut code = exit::OK;
    if let (Some(url), Some(target)) = (&args.into, target.as_mut()) {
        // The copy is a database of the same layout: record its partitions, as the service does.
        let _: Option<String> = redis::cmd("SET")
            .arg(common::keys::PARTITIONS_KEY)
            .arg(layout.p)
            .arg("NX")
            .query_async(target)
            .await?;
        if !args.json {
            println!("wrote {rebuilt_n} records into {url}");
        }
    }
    if args.diff {
        progress.done();
        if args.json {
            println!("{}", serde_json::to_string_pretty(&diff)?);
        } else if diff.is_empty() {
            println!(
                "no differences: {} records replayed from {} (archive + live) match {}-db",
                rebuilt_n,
                service.log(),
                service.name()
            );
        } else {
            let show = |h: &Option<std::collections::BTreeMap<String, String>>| match h {
                None => "(absent)".to_string(),
                Some(h) => h
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" "),
            };
            let rows: Vec<Vec<String>> = diff
                .iter()
                .map(|d| vec![d.key.clone(), show(&d.from_log), show(&d.in_database)])
                .collect();
            output::table(&["ENTITY", "FROM LOG", "IN DATABASE"], &rows);
            println!("{} difference(s)", diff.len());
        }
        if !diff.is_empty() {
            code = exit::PROBLEM;
        }
    } else if args.into.is_none() {
        progress.done();
        if args.json {
            println!("{}", serde_json::to_string_pretty(&all)?);
        } else {
            println!(
                "{} records rebuilt from {} (use --diff to compare, --json to print them)",
                all.len(),
                service.log()
            );
        }
    }
    progress.done();
    Ok(code)
}
