//! The console's HTML, rendered with maud (escaped by construction), plus the hand-written
//! script and style sheet it embeds (`include_str!`): no external asset, works offline.

use maud::{html, Markup, PreEscaped, DOCTYPE};
use serde_json::Value;
use warp::http::StatusCode;

use super::charts::{escape, fmt_value};
use super::filters::{self, ListQuery};
use super::{auth, html as html_answer, Console, ConsoleError, Request, Response, SagaList};
use crate::timeline::{clock, SagaView, Step};

/// The page script: live refresh of the overview, the action buttons.
pub const SCRIPT: &str = include_str!("console.js");
/// The style sheet.
pub const STYLE: &str = include_str!("console.css");

/// The participants, in the order a timeline shows their lanes.
const LANES: [&str; 3] = ["order", "stock", "payment"];

/// A JSON value as page text: numbers rounded, `null` as a dash.
fn show(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "–".into(),
        Some(Value::Number(n)) => n.as_f64().map_or_else(|| n.to_string(), fmt_value),
        Some(Value::Bool(b)) => if *b { "yes" } else { "no" }.into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// Whether the request carries the right operator token (the header shows "operator").
fn logged_in(console: &Console, req: &Request) -> bool {
    auth::check(console.token.as_deref(), req.token().as_deref()).is_ok()
}

fn layout(console: &Console, req: &Request, title: &str, live: bool, body: Markup) -> String {
    let s = &console.status;
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "shoplog console — " (title) }
                link rel="stylesheet" href="/console/assets/console.css";
                script src="/console/assets/console.js" defer {}
            }
            body data-live=(if live { "1" } else { "" }) {
                header {
                    nav {
                        span.brand { "shoplog" }
                        a href="/console/" { "Overview" }
                        a href="/console/sagas" { "Sagas" }
                        a href="/console/sagas?stuck=1" { "Stuck" }
                    }
                    div.who {
                        span #instance { "log parser " (s.instance) " · "
                            @if s.leadership.is_active() { span.good { "active" } } @else { span.warn { "standby" } } }
                        " · "
                        @if console.read_only() {
                            span.warn #mode { "read-only (CONSOLE_TOKEN not set)" }
                        } @else if logged_in(console, req) {
                            span.good #mode { "operator" }
                            form.inline method="post" action="/console/logout" { button type="submit" { "Log out" } }
                        } @else {
                            a #mode href="/console/login" { "Log in to act" }
                        }
                    }
                }
                main { (body) }
            }
        }
    };
    page.into_string()
}

/// The delivery report summed over partitions: `(log, group, lag, pending, dead letters)`.
fn sum_groups(groups: &[Value]) -> Vec<(String, String, i64, i64, i64)> {
    let mut out: Vec<(String, String, i64, i64, i64)> = Vec::new();
    for g in groups {
        let log = show(g.get("log"));
        let group = show(g.get("group"));
        let n = |k: &str| g.get(k).and_then(Value::as_i64).unwrap_or(0);
        match out.iter_mut().find(|r| r.0 == log && r.1 == group) {
            Some(r) => {
                r.2 += n("lag");
                r.3 += n("pending");
                r.4 += n("dead_letters");
            }
            None => out.push((log, group, n("lag"), n("pending"), n("dead_letters"))),
        }
    }
    out
}

/// The overview page, from the data of `GET /console/api/overview`.
pub fn overview(console: &Console, req: &Request, d: &Value) -> Response {
    let k = |ptr: &str| show(d.pointer(ptr));
    let card = |label: &str, ptr: &str, unit: &str| {
        html! { div.card { div.label { (label) } div.value { span data-k=(ptr) { (k(ptr)) } " " span.unit { (unit) } } } }
    };
    let chart = |name: &str| {
        let src = format!("/console/api/chart/{name}.svg");
        html! { img.live-chart src=(src) data-src=(src) alt=(name) width="320" height="110"; }
    };
    let groups = d
        .pointer("/groups")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let body = html! {
        h1 { "Overview" small { " updated " span #updated { "now" } } }
        section {
            h2 { "Checkouts" }
            div.cards {
                (card("checkouts/s", "/now/checkouts_per_s", "/s"))
                (card("p50", "/now/p50_ms", "ms"))
                (card("p99", "/now/p99_ms", "ms"))
                (card("5xx share", "/now/error_rate", ""))
                (card("refused/s", "/now/refused_per_s", "/s"))
                (card("checkout 5xx/s", "/now/checkout_errors_per_s", "/s"))
            }
            div.charts { (chart("checkouts")) (chart("p50")) (chart("p99")) (chart("errors")) (chart("refused")) }
            h3 { "Requests by service (last ~10 s)" }
            table.services {
                thead { tr { th { "service" } th { "requests/s" } th { "5xx share" } } }
                tbody #services {
                    @for svc in d.pointer("/now/services").and_then(Value::as_array).cloned().unwrap_or_default() {
                        tr { td { (show(svc.get("service"))) } td.num { (show(svc.get("requests_per_s"))) } td.num { (show(svc.get("error_rate"))) } }
                    }
                }
            }
            @if let Some(u) = d.pointer("/unreachable").and_then(Value::as_array).filter(|u| !u.is_empty()) {
                p.warn { "not answering their metrics: " (u.iter().map(|v| show(Some(v))).collect::<Vec<_>>().join(", ")) }
            }
        }
        section {
            h2 { "Sagas" }
            div.cards.sagas {
                a.card href="/console/sagas?state=in-flight" { div.label { "running" } div.value data-k="/sagas/in-flight" { (k("/sagas/in-flight")) } }
                a.card href="/console/sagas?stuck=1" { div.label { "stuck past " (fmt_value(console.saga_timeout_ms() as f64 / 1000.0)) " s" } div.value data-k="/sagas/stuck" { (k("/sagas/stuck")) } }
                a.card href="/console/sagas?state=committed" { div.label { "committed" } div.value data-k="/sagas/committed" { (k("/sagas/committed")) } }
                a.card href="/console/sagas?state=aborted" { div.label { "aborted" } div.value data-k="/sagas/aborted" { (k("/sagas/aborted")) } }
                a.card href="/console/sagas?state=compensating" { div.label { "compensating" } div.value data-k="/sagas/compensating" { (k("/sagas/compensating")) } }
                a.card href="/console/sagas" { div.label { "all live records" } div.value data-k="/sagas/total" { (k("/sagas/total")) } }
            }
            @if let Some(e) = d.pointer("/sagas_error").and_then(Value::as_str) { p.warn { (e) } }
            @if let Some(b) = d.pointer("/sagas/behind").and_then(Value::as_array).filter(|b| !b.is_empty()) {
                p.warn { "the saga index is behind in partition(s) " (b.iter().map(|v| show(Some(v))).collect::<Vec<_>>().join(", ")) ": the newest sagas there may be missing" }
            }
            p.note { "From the saga index (as of the last recovery pass, with the newer entries of log:order merged in); retired sagas are not counted." }
        }
        section {
            h2 { "Delivery: consumer lag" }
            p { "dead letters: " strong data-k="/dead_letters" { (k("/dead_letters")) } }
            table.groups {
                thead { tr { th { "log" } th { "group" } th { "lag" } th { "pending" } th { "dead letters" } } }
                tbody #group-sums {
                    @for (log, group, lag, pending, dead) in sum_groups(&groups) {
                        tr { td { (log) } td { (group) } td.num { (lag) } td.num { (pending) } td.num { (dead) } }
                    }
                }
            }
            details {
            summary { "per partition (" (groups.len()) " streams × groups)" }
            table.groups {
                thead { tr { th { "stream" } th { "group" } th { "lag" } th { "pending" } th { "dead letters" } th { "stuck on" } } }
                tbody #groups {
                    @for g in &groups {
                        tr {
                            td { (show(g.get("stream"))) } td { (show(g.get("group"))) }
                            td.num { (show(g.get("lag"))) } td.num { (show(g.get("pending"))) }
                            td.num { (show(g.get("dead_letters"))) }
                            td { (g.get("stuck").and_then(Value::as_array).map(|s| s.len()).unwrap_or(0)) " consumer(s)" }
                        }
                    }
                }
            }
            }
        }
        section.two {
            div {
                h2 { "Log parser" }
                dl {
                    dt { "instance" } dd data-k="/instance" { (k("/instance")) }
                    dt { "holds the lease" } dd data-k="/active" { (k("/active")) }
                    dt { "active instance" } dd #active-instance data-k="/active_instance" { (k("/active_instance")) }
                    dt { "its word holds (ms)" } dd data-k="/active_for_ms" { (k("/active_for_ms")) }
                    dt { "lease TTL (ms)" } dd { (k("/lease_ttl_ms")) }
                    dt { "last pass" } dd { span data-k="/last_pass/mode" { (k("/last_pass/mode")) } ", " span data-k="/last_pass/duration_ms" { (k("/last_pass/duration_ms")) } " ms, open sagas " span data-k="/last_pass/open_sagas" { (k("/last_pass/open_sagas")) } }
                }
                button type="button" data-post="/console/api/recover" #recover disabled[console.read_only()] { "Run a recovery pass" }
                @if console.read_only() { p.note { "Actions need CONSOLE_TOKEN." } }
            }
            div {
                h2 { "Archive" }
                @if d.pointer("/archive/log_retain_ms").is_some_and(Value::is_null) {
                    p { "archiving is off (LOG_RETAIN=off)" }
                } @else {
                    dl {
                        dt { "retention (ms)" } dd { (k("/archive/log_retain_ms")) }
                        dt { "last pass: archived" } dd data-k="/archive/last/archived" { (k("/archive/last/archived")) }
                        dt { "trimmed" } dd data-k="/archive/last/trimmed" { (k("/archive/last/trimmed")) }
                        dt { "records retired" } dd data-k="/archive/last/retired" { (k("/archive/last/retired")) }
                        dt { "lag (ms)" } dd data-k="/archive/last/lag_ms" { (k("/archive/last/lag_ms")) }
                    }
                }
            }
            div {
                h2 { "Last audit" }
                @if d.pointer("/last_audit").is_none_or(Value::is_null) {
                    p { "no audit recorded yet (" code { "shoplog audit" } " records its result)" }
                } @else {
                    dl {
                        dt { "clean" } dd data-k="/last_audit/clean" { (k("/last_audit/clean")) }
                        dt { "violations" } dd data-k="/last_audit/violations" { (k("/last_audit/violations")) }
                        dt { "at (UTC)" } dd { (d.pointer("/last_audit/at_ms").and_then(Value::as_u64).map(clock).unwrap_or_default()) }
                        dt { "took (ms)" } dd { (k("/last_audit/duration_ms")) }
                    }
                }
            }
        }
        h2 { "Action result" }
        pre #action-result { "–" }
    };
    html_answer(layout(console, req, "overview", true, body), StatusCode::OK)
}

/// The saga list page.
pub fn sagas(console: &Console, req: &Request, q: &ListQuery, list: &SagaList) -> Response {
    let f = &q.filter;
    let state = if f.stuck && f.state.is_none() {
        "stuck".to_string()
    } else {
        f.state.map(|s| s.name().to_string()).unwrap_or_default()
    };
    let age = |ms: u64| {
        if ms == 0 {
            String::new()
        } else {
            format!("{ms}ms")
        }
    };
    let body = html! {
        h1 { "Sagas" }
        form.filters method="get" action="/console/sagas" {
            label { "state " select name="state" #f-state {
                @for s in ["", "in-flight", "stuck", "committed", "compensating", "aborted"] {
                    option value=(s) selected[state == s] { (if s.is_empty() { "any" } else { s }) }
                }
            } }
            label { "older than " input name="older_than" #f-older size="6" placeholder="30s" value=(age(f.min_age_ms)); }
            label { "newer than " input name="newer_than" #f-newer size="6" placeholder="5m" value=(f.max_age_ms.map(age).unwrap_or_default()); }
            label { "order " input name="order" #f-order size="10" value=(f.order.clone().unwrap_or_default()); }
            label { "user " input name="user" #f-user size="10" value=(f.user.clone().unwrap_or_default()); }
            label { input type="checkbox" name="stuck" value="1" #f-stuck checked[f.stuck]; " stuck only" }
            button type="submit" #f-apply { "Filter" }
            a href="/console/sagas" { "clear" }
        }
        p.summary {
            span #total { @if let Some(t) = list.total { (t) } @else { "many" } } " saga(s) match"
            @if list.before.is_some() { " · older than " (list.before.clone().unwrap_or_default()) }
            " · as of " (clock(list.as_of_ms)) " UTC"
        }
        @if !list.behind.is_empty() { p.warn { "the saga index is behind in partition(s) " (list.behind.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")) ": the log parser has not read their newest entries (is it running its passes?), so the newest sagas there may be missing" } }
        p.note { "Retired sagas (final, moved to the archive) are not listed: " code { "shoplog sagas --retired" } " lists them." }
        @if !list.malformed.is_empty() { p.warn { (list.malformed.len()) " malformed record(s): " (list.malformed.join("; ")) } }
        table.sagas #saga-list {
            thead { tr { th { "saga" } th { "order" } th { "user" } th { "total" } th { "state" } th { "age" } th { "reason" } } }
            tbody {
                @for s in &list.items {
                    tr data-saga=(s.record.id) {
                        td { a href={ "/console/sagas/" (s.record.id) } { (s.record.id) } }
                        td { a href={ "/console/sagas?order=" (s.record.order) } { (s.record.order) } }
                        td { a href={ "/console/sagas?user=" (s.record.user) } { (s.record.user) } }
                        td.num { (s.record.total) }
                        td { span class={ "state " (s.state) } { (s.state) } @if s.stuck { " " span.state.stuck { "stuck" } } }
                        td.num { (fmt_value(s.age_ms as f64 / 1000.0)) " s" }
                        td { (s.record.reason) }
                    }
                }
            }
        }
        nav.pager {
            @if list.before.is_some() { a #prev href={ "/console/sagas?" (filters::to_query(q, None)) } { "← newest" } }
            @if let Some(next) = &list.next { a #next href={ "/console/sagas?" (filters::to_query(q, Some(next))) } { "older →" } }
        }
    };
    html_answer(layout(console, req, "sagas", false, body), StatusCode::OK)
}

/// The state of each participant as its log tells it: its latest entry for the saga.
fn participant_states(steps: &[Step]) -> Vec<(&'static str, String)> {
    LANES
        .iter()
        .map(|lane| {
            let last = steps.iter().rev().find(|s| s.service == *lane);
            (
                *lane,
                last.map_or_else(|| "no entry".to_string(), |s| s.kind.clone()),
            )
        })
        .collect()
}

fn tone(kind: &str) -> &'static str {
    if kind.contains("Rejected") || kind.contains("Aborted") {
        "bad"
    } else if kind.contains("Released") || kind.contains("Refunded") || kind.contains("Tombstone") {
        "warn"
    } else if kind.contains("Committed") || kind.contains("Reserved") || kind.contains("Charged") {
        "good"
    } else {
        "info"
    }
}

/// The entries of a saga drawn on one lane per participant's log, by time since its start.
pub fn timeline_svg(steps: &[Step]) -> String {
    let (w, lane_h, left, right) = (900.0_f64, 56.0_f64, 90.0_f64, 30.0_f64);
    let h = lane_h * LANES.len() as f64 + 30.0;
    let first = steps.first().map_or(0, |s| s.at_ms);
    let last = steps.last().map_or(0, |s| s.at_ms);
    let span = (last.saturating_sub(first)).max(1) as f64;
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="timeline" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="saga timeline">"#
    );
    for (i, lane) in LANES.iter().enumerate() {
        let y = 20.0 + lane_h * i as f64 + lane_h / 2.0;
        svg.push_str(&format!(
            r##"<text x="8" y="{:.1}" font-size="12" fill="#333">{lane}</text><line x1="{left}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/>"##,
            y + 4.0,
            w - right
        ));
    }
    for (i, s) in steps.iter().enumerate() {
        let lane = LANES.iter().position(|l| *l == s.service).unwrap_or(0);
        let y = 20.0 + lane_h * lane as f64 + lane_h / 2.0;
        let x = left + (s.at_ms.saturating_sub(first)) as f64 / span * (w - left - right);
        let ly = if i % 2 == 0 { y - 10.0 } else { y + 18.0 };
        // Labels near an edge grow inwards, so that none is cut off.
        let anchor = if x > w - right - 70.0 {
            "end"
        } else if x < left + 50.0 {
            "start"
        } else {
            "middle"
        };
        let colour = match tone(&s.kind) {
            "bad" => "#c0392b",
            "warn" => "#d68910",
            "good" => "#1e8449",
            _ => "#2a6ebb",
        };
        svg.push_str(&format!(
            r##"<g class="step"><circle cx="{x:.1}" cy="{y:.1}" r="6" fill="{colour}"><title>{} {} +{} ms</title></circle><text x="{x:.1}" y="{ly:.1}" font-size="10" text-anchor="{anchor}" fill="#222">{}</text></g>"##,
            escape(s.service),
            escape(&s.kind),
            s.at_ms.saturating_sub(first),
            escape(&s.kind)
        ));
    }
    svg.push_str(&format!(
        r##"<text x="{left}" y="{:.1}" font-size="10" fill="#777">0 ms</text><text x="{:.1}" y="{:.1}" font-size="10" fill="#777" text-anchor="end">+{} ms</text></svg>"##,
        h - 4.0,
        w - right,
        h - 4.0,
        last.saturating_sub(first)
    ));
    svg
}

/// One saga's page (or every saga of an order).
pub fn saga(console: &Console, req: &Request, id: &str, views: &[SagaView]) -> Response {
    let body = html! {
        h1 { "Saga " (id) }
        @if views.len() > 1 { p { "order " (id) " has " (views.len()) " sagas, oldest first" } }
        @for v in views {
            section.saga data-saga=(v.saga) {
                h2 { "saga " (v.saga) }
                @match &v.record {
                    Some(Ok(r)) => {
                        dl.record {
                            dt { "order" } dd #order { a href={ "/console/sagas?order=" (r.order) } { (r.order) } }
                            dt { "user" } dd #user { (r.user) }
                            dt { "total" } dd #saga-total { (r.total) }
                            dt { "items" } dd { code { (r.items) } }
                            dt { "decision" } dd #decision { (r.decision.to_string()) }
                            dt { "state" } dd #state { span class={ "state " (r.state().name()) } { (r.state().name()) } }
                            dt { "reason" } dd { (r.reason) }
                            dt { "compensations pending" } dd #pending { (r.pending.join(", ")) }
                            dt { "started (UTC)" } dd { (clock(r.started_ms)) }
                        }
                        @if r.state() == common::saga::SagaState::Compensating {
                            button type="button" #redrive data-post={ "/console/api/sagas/" (v.saga) "/redrive" } disabled[console.read_only()] { "Re-drive the compensation" }
                        }
                    }
                    Some(Err(e)) => { p.bad { "malformed record: " (e.to_string()) } }
                    None => { p { "no record in order-db: final and retired; its history is below" } }
                }
                h3 { "Participants" }
                table.participants {
                    thead { tr { th { "log" } th { "latest entry for this saga" } } }
                    tbody { @for (lane, state) in participant_states(&v.timeline) { tr { td { (lane) } td { span class=(tone(&state)) { (state) } } } } }
                }
                h3 { "Timeline" }
                div.timeline-wrap { (PreEscaped(timeline_svg(&v.timeline))) }
                table.steps {
                    thead { tr { th { "time (UTC)" } th { "since start" } th { "log" } th { "event" } th { "detail" } } }
                    tbody {
                        @let first = v.timeline.first().map_or(0, |s| s.at_ms);
                        @for s in &v.timeline {
                            tr.step data-id=(s.stream_id) {
                                td { (clock(s.at_ms)) }
                                td.num { "+" (s.at_ms.saturating_sub(first)) " ms" }
                                td { (s.service) }
                                td { span class=(tone(&s.kind)) { (s.kind) } }
                                td { (s.fields.iter().filter(|(k, _)| !matches!(k.as_str(), "type" | "saga" | "log_id" | "order")).map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")) }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Action result" }
        pre #action-result { "–" }
    };
    html_answer(layout(console, req, id, false, body), StatusCode::OK)
}

/// The login form (`message`: why the last try was refused).
pub fn login(console: &Console, req: &Request, message: Option<&str>) -> Response {
    let body = html! {
        h1 { "Operator login" }
        @if console.read_only() {
            p.warn { "This console is read-only: set CONSOLE_TOKEN for the log parser to allow actions." }
        }
        @if let Some(m) = message { p.bad #login-error { (m) } }
        form.login method="post" action="/console/login" {
            label { "operator token " input type="password" name="token" #token autocomplete="current-password"; }
            button type="submit" #login { "Log in" }
        }
        p.note { "The token is kept in an HttpOnly, SameSite=Strict cookie for /console/ only. Scripts send "
            code { "Authorization: Bearer <CONSOLE_TOKEN>" } " instead." }
    };
    html_answer(layout(console, req, "login", false, body), StatusCode::OK)
}

/// An error as a page, with its status.
pub fn error_page(console: &Console, req: &Request, e: &ConsoleError) -> Response {
    let status = e.status();
    let body = html! {
        h1 { (status.as_u16()) " " (status.canonical_reason().unwrap_or("")) }
        p.bad #error { (e.to_string()) }
        p { a href="/console/" { "back to the overview" } }
    };
    html_answer(layout(console, req, "error", false, body), status)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(service: &'static str, kind: &str, at_ms: u64) -> Step {
        Step::for_test(service, kind, at_ms)
    }

    #[test]
    fn the_timeline_has_a_lane_per_log_and_a_mark_per_entry() {
        let steps = vec![
            step("order", "CheckoutStarted", 1_000),
            step("stock", "StockReserved", 1_004),
            step("payment", "PaymentCharged", 1_010),
            step("order", "CheckoutCommitted", 1_012),
        ];
        let svg = timeline_svg(&steps);
        assert_eq!(svg.matches("<circle").count(), 4);
        for lane in LANES {
            assert!(svg.contains(&format!(">{lane}</text>")));
        }
        assert!(svg.contains("+12 ms"));
        let states = participant_states(&steps);
        assert_eq!(states[0], ("order", "CheckoutCommitted".to_string()));
        assert_eq!(states[2], ("payment", "PaymentCharged".to_string()));
        assert!(timeline_svg(&[]).contains("</svg>"));
    }

    #[test]
    fn clocks_and_values_read_well() {
        assert_eq!(clock(3_723_004), "01:02:03.004");
        assert_eq!(show(None), "–");
        assert_eq!(show(Some(&serde_json::json!(2.5))), "2.50");
        assert_eq!(show(Some(&serde_json::json!(true))), "yes");
    }
}
