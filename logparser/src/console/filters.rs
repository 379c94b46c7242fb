//! The saga list's query string (`/console/sagas?state=…&older_than=…&order=…&user=…&stuck=1&before=<started_ms>-<saga>`)
//! parsed into a [`Filter`] and a page, with a clear error for every bad value (the page
//! answers 400 and changes nothing).

use std::collections::HashMap;

use crate::sagas::{Filter, SagaState};

/// The most rows one page shows.
pub const MAX_PER_PAGE: usize = 500;
/// Rows per page unless asked.
pub const DEFAULT_PER_PAGE: usize = 50;

/// A saga-list query: which sagas, which page (keyset paging: the page holds the sagas older
/// than a cursor, so a page far down a list of millions costs what the first one does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    /// Which sagas.
    pub filter: Filter,
    /// Only sagas older than this (`crate::saga_index::rest` of the last row of the page
    /// before); `None`: the newest.
    pub before: Option<String>,
    /// Rows per page.
    pub per_page: usize,
}

impl Default for ListQuery {
    fn default() -> ListQuery {
        ListQuery {
            filter: Filter::default(),
            before: None,
            per_page: DEFAULT_PER_PAGE,
        }
    }
}

/// Decodes a form/query component (`+` and `%XX`); `None` when it is not UTF-8 or a `%` is
/// malformed.
pub fn decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Parses `a=1&b=2` (empty values count as absent); `Err` names a malformed pair.
pub fn parse_pairs(raw: &str) -> Result<HashMap<String, String>, String> {
    let mut out = HashMap::new();
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = decode(k).ok_or_else(|| format!("malformed query component `{k}`"))?;
        let v = decode(v).ok_or_else(|| format!("malformed value of `{k}`"))?;
        let v = v.trim();
        if !v.is_empty() {
            out.insert(k, v.to_string());
        }
    }
    Ok(out)
}

/// Whether `s` may be an id (saga, order, user): 1 to 128 letters, digits, `-` or `_`.
pub fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn duration_ms(key: &str, v: &str) -> Result<u64, String> {
    common::config::parse_duration(v)
        .map(|d| d.as_millis() as u64)
        .ok_or_else(|| format!("`{key}={v}` is not a duration like 500ms, 30s, 5m, 2h"))
}

fn number(key: &str, v: &str, max: usize) -> Result<usize, String> {
    match v.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!(
            "`{key}={v}` must be a whole number from 1 to {max}"
        )),
    }
}

/// Parses a saga-list query string. Unknown keys are refused (a typo must not silently show
/// every saga).
pub fn parse(raw: &str) -> Result<ListQuery, String> {
    let pairs = parse_pairs(raw)?;
    let mut q = ListQuery::default();
    for (k, v) in &pairs {
        match k.as_str() {
            "state" if v == "any" => {}
            "state" if v == "stuck" => q.filter.stuck = true,
            "state" => {
                q.filter.state = Some(SagaState::parse(v).ok_or_else(|| {
                    format!("`state={v}`: use in-flight, stuck, committed, compensating or aborted")
                })?)
            }
            "older_than" => q.filter.min_age_ms = duration_ms(k, v)?,
            "newer_than" => q.filter.max_age_ms = Some(duration_ms(k, v)?),
            "order" | "user" if !valid_id(v) => {
                return Err(format!("`{k}={v}`: an id is 1-128 letters, digits, - or _"))
            }
            "order" => q.filter.order = Some(v.clone()),
            "user" => q.filter.user = Some(v.clone()),
            "stuck" => {
                q.filter.stuck = match v.as_str() {
                    "1" | "true" | "on" | "yes" => true,
                    "0" | "false" | "off" | "no" => false,
                    _ => return Err(format!("`stuck={v}`: use 1 or 0")),
                }
            }
            "before" => {
                q.before = Some(crate::saga_index::parse_cursor(v).filter(|_| {
                    v.split_once('-').is_some_and(|(_, sid)| valid_id(sid))
                }).ok_or_else(|| {
                    format!("`before={v}`: a cursor is <started_ms>-<saga id>, as the pager's links give")
                })?)
            }
            "per_page" => q.per_page = number(k, v, MAX_PER_PAGE)?,
            other => {
                return Err(format!(
                    "unknown filter `{other}` (use state, older_than, newer_than, order, user, stuck, before, per_page)"
                ))
            }
        }
    }
    Ok(q)
}

/// The query string that asks for `q` again, older than the cursor `before` (text, as
/// `crate::saga_index::cursor_text` gives; `None`: the first page) — the pager's links.
pub fn to_query(q: &ListQuery, before: Option<&str>) -> String {
    let mut parts = Vec::new();
    if let Some(s) = q.filter.state {
        parts.push(format!("state={}", s.name()));
    }
    if q.filter.stuck {
        parts.push("stuck=1".into());
    }
    if q.filter.min_age_ms > 0 {
        parts.push(format!("older_than={}ms", q.filter.min_age_ms));
    }
    if let Some(m) = q.filter.max_age_ms {
        parts.push(format!("newer_than={m}ms"));
    }
    if let Some(o) = &q.filter.order {
        parts.push(format!("order={o}"));
    }
    if let Some(u) = &q.filter.user {
        parts.push(format!("user={u}"));
    }
    if q.per_page != DEFAULT_PER_PAGE {
        parts.push(format!("per_page={}", q.per_page));
    }
    if let Some(b) = before {
        parts.push(format!("before={b}"));
    }
    parts.join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse() {
        assert_eq!(parse("").unwrap(), ListQuery::default());
        let q = parse(
            "state=compensating&older_than=30s&order=42&user=u-1&before=1700000000000-01HX&per_page=10",
        )
        .unwrap();
        assert_eq!(q.filter.state, Some(SagaState::Compensating));
        assert_eq!(q.filter.min_age_ms, 30_000);
        assert_eq!(q.filter.order.as_deref(), Some("42"));
        assert_eq!(q.filter.user.as_deref(), Some("u-1"));
        assert_eq!(
            (q.before.as_deref(), q.per_page),
            (Some("001700000000000\u{0}01HX"), 10)
        );
        assert!(parse("state=stuck").unwrap().filter.stuck);
        assert!(parse("stuck=1&state=").unwrap().filter.stuck);
        assert_eq!(parse("state=any&order=").unwrap(), ListQuery::default());
        assert_eq!(
            parse("newer_than=5m").unwrap().filter.max_age_ms,
            Some(300_000)
        );
        assert_eq!(
            parse("state=in-flight").unwrap().filter.state,
            Some(SagaState::InFlight)
        );
    }

    #[test]
    fn bad_filters_are_errors_that_say_what_is_wrong() {
        for bad in [
            "state=paid",
            "older_than=soon",
            "older_than=-1s",
            "before=0",
            "before=x-1",
            "before=-1",
            "before=12-a%20b",
            "page=2",
            "per_page=501",
            "order=%3Cscript%3E",
            "user=a%20b",
            "stuck=maybe",
            "colour=red",
            "order=%zz",
            "order=%ff",
        ] {
            let err = parse(bad).expect_err(bad);
            assert!(!err.is_empty(), "{bad}");
        }
        assert!(parse("state=paid").unwrap_err().contains("state=paid"));
    }

    #[test]
    fn the_pager_asks_for_the_same_filters() {
        let q = parse("state=aborted&user=7&older_than=2s&per_page=20").unwrap();
        let again = parse(&to_query(&q, Some("1700000000000-01HX"))).unwrap();
        assert_eq!(again.filter, q.filter);
        assert_eq!(
            (again.before.as_deref(), again.per_page),
            (Some("001700000000000\u{0}01HX"), 20)
        );
        assert_eq!(parse(&to_query(&q, None)).unwrap(), q);
    }

    #[test]
    fn ids_are_checked() {
        assert!(valid_id("01JD3Z8T6M2Q0W5C9K7Y4N1B3E") && valid_id("42") && valid_id("a-b_c"));
        assert!(
            !valid_id("") && !valid_id("a/b") && !valid_id("<x>") && !valid_id(&"a".repeat(129))
        );
    }
}
