//! The audit's memory gauge (`spill::state_bytes`) must track what a replayed state really
//! costs: the audit stops a partition's replay and spills once the gauge passes its share of the
//! budget, so a gauge that reads low lets the process grow past `--memory-budget` (the
//! ten-million-checkout audit peaked at 507 MiB on a 384 MiB budget when it read ~25% low).
//!
//! Measured here against the process's resident memory: a state of each shape the services'
//! logs rebuild (orders, order-side and participant saga records, items, users) is built from
//! empty and the growth of RSS compared with the gauge. One test per binary, so that no other
//! test allocates beside it.

use std::collections::BTreeMap;

use logparser::replay::State;
use logparser::spill::state_bytes;

/// Resident bytes of this process.
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// `n` hashes named `prefix<i>` with the fields `fields` (values suffixed by `i`, as ids are).
fn build(state: &mut State, prefix: &str, n: usize, fields: &[(&str, &str)]) {
    for i in 0..n {
        let h: BTreeMap<String, String> = fields
            .iter()
            .map(|(f, v)| (f.to_string(), format!("{v}{i}")))
            .collect();
        state.insert(format!("{prefix}{i}"), h);
    }
}

#[test]
fn the_gauge_reads_within_a_sixth_of_resident_memory_for_every_shape() {
    let shapes: [(&str, &[(&str, &str)]); 5] = [
        (
            "order:{o3}:",
            &[
                ("user_id", "01JF3ZC0Q9T6V4C2A8B0D1E5F"),
                ("total_cost", "4"),
                ("items", "it1:1,it"),
                ("paid", "true"),
                ("status", "PAID"),
                ("saga", "01JF3ZC0Q9T6V4C2A8B0D1E5G"),
            ],
        ),
        (
            "saga:{o3}:01JF3ZC0Q9T6V4C2A8B0D1E",
            &[
                ("order", "01JF3ZC0Q9T6V4C2A8B0D1E5F"),
                ("user", "01JF3ZC0Q9T6V4C2A8B0D1E5F"),
                ("total", "4"),
                ("items", "it1:1,it"),
                ("decision", "commit"),
                ("reason", ""),
                ("started_ms", "17650000"),
                ("pending", ""),
                ("done", "1"),
            ],
        ),
        (
            "stock_saga:{s3}:01JF3ZC0Q9T6V4C2A8B0D1E",
            &[
                ("state", "RESERVED"),
                ("order", "01JF3ZC0Q9T6V4C2A8B0D1E5F"),
                ("items", "it1:1,it"),
            ],
        ),
        ("item:{s3}:", &[("stock", "10000"), ("price", "2")]),
        ("user:{p3}:", &[("credit", "1000000")]),
    ];
    // Every state is kept until the end: memory freed by one would be reused by the next, and
    // its growth would read low.
    let mut kept = Vec::new();
    for (prefix, fields) in shapes {
        let mut state = State::new();
        let before = rss();
        build(&mut state, prefix, 100_000, fields);
        let grown = rss().saturating_sub(before) as f64;
        let gauge = state_bytes(&state) as f64;
        let ratio = gauge / grown;
        eprintln!("{prefix}: gauge {gauge} B, resident growth {grown} B, ratio {ratio:.2}");
        assert!(
            (0.85..=1.2).contains(&ratio),
            "{prefix}: the gauge reads {gauge} B for a state that took {grown} B (ratio {ratio:.2})"
        );
        kept.push(state);
    }
}
