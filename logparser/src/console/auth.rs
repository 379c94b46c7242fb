//! Who may act, and from where: the operator token (`CONSOLE_TOKEN`) and the same-origin check
//! that keeps another site from making an operator's browser act.
//!
//! Pure functions over header values, so that each rule is tested on its own.

use std::hash::{Hash, Hasher};

use subtle::ConstantTimeEq;

/// The cookie the login form sets (HttpOnly, SameSite=Strict, Path=/console/).
pub const COOKIE: &str = "shoplog_console";

/// Why an action is refused before it runs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No `CONSOLE_TOKEN` is configured: nothing may change through the console.
    #[error("console is read-only: set CONSOLE_TOKEN")]
    ReadOnly,
    /// No token was presented (no cookie, no `Authorization: Bearer`).
    #[error("an operator token is needed: log in at /console/login or send Authorization: Bearer <CONSOLE_TOKEN>")]
    Missing,
    /// The presented token is not the configured one.
    #[error("wrong operator token")]
    Wrong,
    /// The request came from another site (its `Origin` or `Sec-Fetch-Site` says so).
    #[error("cross-site request refused: {0}")]
    CrossSite(String),
}

/// The token a request presents: `Authorization: Bearer <t>` (scripts), else the login cookie.
pub fn presented(authorization: Option<&str>, cookie: Option<&str>) -> Option<String> {
    if let Some(a) = authorization {
        let a = a.trim();
        if a.len() > 7 && a[..7].eq_ignore_ascii_case("bearer ") {
            return Some(a[7..].trim().to_string());
        }
    }
    cookie.and_then(|c| {
        c.split(';').find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (k.trim() == COOKIE).then(|| super::filters::decode(v.trim()))?
        })
    })
}

/// A token as a cookie value: every byte but `A-Z a-z 0-9 - . _ ~` percent-encoded, so that
/// any token fits in a `Set-Cookie` header ([`presented`] decodes it).
pub fn cookie_value(token: &str) -> String {
    token
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Checks a presented token against the configured one, in time independent of where they
/// differ (a timing side channel would let a guesser learn the token byte by byte).
pub fn check(configured: Option<&str>, presented: Option<&str>) -> Result<(), Refusal> {
    let Some(configured) = configured else {
        return Err(Refusal::ReadOnly);
    };
    let Some(presented) = presented.filter(|p| !p.is_empty()) else {
        return Err(Refusal::Missing);
    };
    if bool::from(configured.as_bytes().ct_eq(presented.as_bytes())) {
        Ok(())
    } else {
        Err(Refusal::Wrong)
    }
}

/// A short tag of a token for the action log: tells two tokens apart without revealing either.
pub fn fingerprint(token: Option<&str>) -> String {
    match token {
        None | Some("") => "none".into(),
        Some(t) => {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            t.hash(&mut h);
            format!("{:08x}", h.finish() >> 32)
        }
    }
}

/// Refuses a request another site made a browser send: its `Origin` must name the request's
/// own `Host`, or, without `Origin`, its `Sec-Fetch-Site` must be `same-origin` or `none` (typed
/// by the user). A request with neither header is not from a browser (curl, a script with a
/// bearer token) and passes.
pub fn same_origin(
    host: Option<&str>,
    origin: Option<&str>,
    fetch_site: Option<&str>,
) -> Result<(), Refusal> {
    if let Some(origin) = origin.map(str::trim) {
        let authority = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .map(|a| a.trim_end_matches('/'));
        return match (authority, host.map(str::trim)) {
            (Some(a), Some(h)) if !a.is_empty() && a.eq_ignore_ascii_case(h) => Ok(()),
            _ => Err(Refusal::CrossSite(format!(
                "Origin `{origin}` is not this console's host `{}`",
                host.unwrap_or("(none)")
            ))),
        };
    }
    match fetch_site.map(str::trim) {
        None | Some("same-origin") | Some("none") => Ok(()),
        Some(other) => Err(Refusal::CrossSite(format!("Sec-Fetch-Site: {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_comes_from_a_bearer_header_or_the_cookie() {
        assert_eq!(presented(Some("Bearer abc"), None).as_deref(), Some("abc"));
        assert_eq!(
            presented(Some("bearer  abc "), None).as_deref(),
            Some("abc")
        );
        let cookie = Some("a=1; shoplog_console=xyz; b=2");
        assert_eq!(presented(None, cookie).as_deref(), Some("xyz"));
        assert_eq!(
            presented(Some("Basic Zm9v"), cookie).as_deref(),
            Some("xyz")
        );
        assert_eq!(presented(None, Some("other=1")), None);
        let odd = "a b;c=d\"é+";
        let cookie = format!("{COOKIE}={}", cookie_value(odd));
        assert!(cookie_value(odd)
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b';'));
        assert_eq!(presented(None, Some(&cookie)).as_deref(), Some(odd));
        assert_eq!(presented(None, None), None);
    }

    #[test]
    fn a_token_is_checked_against_the_configured_one() {
        assert_eq!(check(None, Some("x")), Err(Refusal::ReadOnly));
        assert_eq!(check(Some("secret"), None), Err(Refusal::Missing));
        assert_eq!(check(Some("secret"), Some("")), Err(Refusal::Missing));
        assert_eq!(check(Some("secret"), Some("secreT")), Err(Refusal::Wrong));
        assert_eq!(check(Some("secret"), Some("secret2")), Err(Refusal::Wrong));
        assert_eq!(check(Some("secret"), Some("secret")), Ok(()));
        assert_eq!(
            Refusal::ReadOnly.to_string(),
            "console is read-only: set CONSOLE_TOKEN"
        );
    }

    #[test]
    fn a_fingerprint_tells_tokens_apart_without_showing_them() {
        let a = fingerprint(Some("secret"));
        assert_eq!(a, fingerprint(Some("secret")));
        assert_ne!(a, fingerprint(Some("secret2")));
        assert!(!a.contains("secret") && a.len() == 8);
        assert_eq!(fingerprint(None), "none");
    }

    #[test]
    fn cross_site_requests_are_refused() {
        let host = Some("127.0.0.1:8000");
        assert!(same_origin(host, Some("http://127.0.0.1:8000"), None).is_ok());
        assert!(same_origin(host, Some("https://127.0.0.1:8000"), Some("same-origin")).is_ok());
        assert!(same_origin(host, Some("http://evil.example"), Some("same-origin")).is_err());
        assert!(same_origin(host, Some("null"), None).is_err());
        assert!(same_origin(None, Some("http://127.0.0.1:8000"), None).is_err());
        assert!(same_origin(host, None, Some("cross-site")).is_err());
        assert!(same_origin(host, None, Some("same-site")).is_err());
        assert!(same_origin(host, None, Some("same-origin")).is_ok());
        assert!(same_origin(host, None, Some("none")).is_ok());
        assert!(
            same_origin(host, None, None).is_ok(),
            "not a browser: curl, scripts"
        );
    }
}
