//! `Idempotency-Key`: retrying a POST safely (API.md, *Retrying safely*; issue 13).
//!
//! A client (or the gateway, moving a request off a replica that died) may send a POST again
//! when its answer was lost. With the same `Idempotency-Key` header, the repeat changes nothing
//! and gets the first answer again, status and body; the same key on another method or path is a
//! 422. The header is parsed once, by [`Key::parse`], when the request arrives
//! (`common::http`): at most [`MAX_LEN`] printable ASCII characters, else a 400.
//!
//! **Two records, each in the slot of what it protects** (`common/src/keys.rs`):
//!
//! - the **claim**, `idemclaim:{<tag of the key>}:<key>` in the partition of the key itself, binds
//!   the key to one request (its [`Keyed::fingerprint`]: method and path) the first time it is
//!   seen, so that the same key on any other request is a 422 wherever that request's entity
//!   lives. It also pins what a create must reuse on a repeat (the new entity's id, chosen
//!   before the first attempt) and, for the answers not made by one script (checkout,
//!   batch_init), holds the answer once known;
//! - the **answer record**, `idem:{<tag of the entity>}:<key>`, is written by the very Lua script
//!   that makes the change, in the changed entity's partition (declared in `KEYS`, so one slot),
//!   holding the script's reply. A repeat finds it inside the same script and returns the stored
//!   reply instead of changing anything. Change and record are one atomic step, so no crash
//!   between them can make a retry apply the change twice: **exactly once**. The HTTP answer is
//!   rendered from the stored reply by the same code as the first time, so status and body are
//!   the same.
//!
//! Concurrent duplicates (a retry while the first is still in flight) need no lock and no 409:
//! both claim the same binding, and the scripts serialise on the entity's slot, so the second
//! finds the first's answer record and replays it. Both records expire after the retention
//! ([`crate::config::Config::idempotency_ttl`], `IDEMPOTENCY_TTL_SECS`). Answers decided without
//! the database (bad input, 400/404/405) are not stored: they are the same every time. 5xx
//! answers are not stored either: they say "retry".

use std::time::Duration;

use redis::Script;
use std::sync::LazyLock;

use crate::db::Conn;
use crate::error::ApiError;
use crate::http::{Method, Response, StatusCode};
use crate::keys;
use crate::partition::Layout;

/// The request header, lower-case as HTTP/1.1 parsers give it.
pub const HEADER: &str = "idempotency-key";

/// The longest key accepted (API.md).
pub const MAX_LEN: usize = 128;

/// The default retention of a key's records: one hour. Retries after a lost answer come within
/// seconds to minutes (the gateway's at once, a client's after its timeout); an hour covers a
/// client that retries after an outage of its own while bounding memory (a record is ~250 bytes:
/// 1,000 keyed requests a second hold ~1 GB at this retention).
pub const DEFAULT_TTL_SECS: u64 = 3600;

/// The status word a script answers when the key's answer record belongs to another request.
const MISMATCH: &str = "IDEMPOTENCY_MISMATCH";

/// A valid `Idempotency-Key` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key(String);

impl Key {
    /// Parses the header's values (`values`: every `Idempotency-Key` header of the request):
    /// one value of 1 to [`MAX_LEN`] printable ASCII characters (space to `~`), else a 400 that
    /// says what is wrong. Non-ASCII is refused rather than guessed at (header bytes carry no
    /// charset), so a key means the same bytes to every client, proxy and replica.
    pub fn parse<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Result<Option<Key>, ApiError> {
        let mut values = values.into_iter();
        let Some(raw) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(ApiError::BadRequest(
                "more than one Idempotency-Key header: send one".into(),
            ));
        }
        if raw.is_empty() {
            return Err(ApiError::BadRequest(
                "empty Idempotency-Key: send 1 to 128 printable characters, or no header".into(),
            ));
        }
        if raw.len() > MAX_LEN {
            return Err(ApiError::BadRequest(format!(
                "Idempotency-Key of {} bytes is too long: at most {MAX_LEN} printable characters",
                raw.len()
            )));
        }
        if let Some(bad) = raw.iter().find(|b| !(b' '..=b'~').contains(*b)) {
            return Err(ApiError::BadRequest(format!(
                "Idempotency-Key holds the byte 0x{bad:02x}: only printable ASCII (space to ~) is accepted"
            )));
        }
        // Checked to be ASCII above, so this cannot fail; no unwrap on a request path all the same.
        String::from_utf8(raw.to_vec())
            .map(|k| Some(Key(k)))
            .map_err(|_| ApiError::BadRequest("Idempotency-Key is not ASCII".into()))
    }

    /// The key as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A keyed request: the key, what the key is bound to, and how long its records live.
#[derive(Debug, Clone)]
pub struct Keyed {
    /// The client's key.
    pub key: Key,
    /// `<METHOD> /<segment>/…`: the request the key is bound to. The body is not part of it:
    /// no endpoint reads a body, so two requests differing only there mean the same thing.
    pub fingerprint: String,
    /// Retention of the records, in seconds (≥ 1).
    pub ttl_secs: u64,
}

impl Keyed {
    /// The keyed form of a request (`segments` as routed: still percent-encoded), when it
    /// carries a key.
    pub fn of(
        key: Option<Key>,
        method: &Method,
        segments: &[String],
        ttl: Duration,
    ) -> Option<Keyed> {
        key.map(|key| Keyed {
            key,
            fingerprint: format!("{method} /{}", segments.join("/")),
            ttl_secs: ttl.as_secs().max(1),
        })
    }

    /// The claim's key (the key's own partition of `l`).
    pub fn claim_key(&self, l: &Layout) -> String {
        keys::idempotency_claim(l, self.key.as_str())
    }

    /// The answer record's key in partition `part` of `l` (the changed entity's).
    pub fn answer_key(&self, l: &Layout, part: u32) -> String {
        keys::idempotency(l, part, self.key.as_str())
    }

    /// Adds the answer record to a script call made with [`idempotent`]: its key after the
    /// script's own keys, the fingerprint and the retention after its own arguments.
    pub fn add_to(&self, inv: &mut redis::ScriptInvocation<'_>, l: &Layout, part: u32) {
        inv.key(self.answer_key(l, part));
        inv.arg(&self.fingerprint).arg(self.ttl_secs);
    }
}

/// What a claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The value pinned for this key: the one passed by the first request (a new entity's id, a
    /// seed), returned unchanged to every repeat.
    pub pinned: String,
    /// The stored answer, for the requests whose answer is recorded in the claim ([`finish`]).
    pub answer: Option<Answer>,
}

static CLAIM: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/idempotency_claim.lua")));
static FINISH: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/idempotency_finish.lua")));

/// Binds `k` to its request in the key's own partition (first time: with `pinned`), or finds it
/// bound: a 422 when bound to another request. `replicate`: wait for the replicas before going
/// on, for a claim whose pinned value must survive a failover (a create's id).
pub async fn claim(
    conn: &mut Conn,
    l: &Layout,
    k: &Keyed,
    pinned: &str,
    replicate: bool,
) -> Result<Claim, ApiError> {
    let key = k.claim_key(l);
    let reply: Vec<String> = CLAIM
        .key(&key)
        .arg(&k.fingerprint)
        .arg(pinned)
        .arg(k.ttl_secs)
        .invoke_async(conn)
        .await?;
    if replicate {
        conn.replicated(&key).await?;
    }
    match reply.as_slice() {
        [s, bound] if s == MISMATCH => Err(mismatch(k, bound)),
        [s, pinned] if s == "NEW" || s == "SEEN" => Ok(Claim {
            pinned: pinned.clone(),
            answer: None,
        }),
        [s, pinned, status, body] if s == "SEEN" => Ok(Claim {
            pinned: pinned.clone(),
            answer: Some(Answer {
                status: status.parse().map_err(|_| {
                    ApiError::Internal(format!("`{key}` holds the status `{status}`"))
                })?,
                body: body.clone(),
            }),
        }),
        other => Err(ApiError::Internal(format!(
            "unexpected idempotency claim answer {other:?}"
        ))),
    }
}

/// [`claim`] for a request that may carry no key: unkeyed, nothing is stored and the claim is
/// `pinned` itself with no answer, so that one code path serves keyed and unkeyed requests.
pub async fn claim_if_keyed(
    conn: &mut Conn,
    l: &Layout,
    k: Option<&Keyed>,
    pinned: &str,
    replicate: bool,
) -> Result<Claim, ApiError> {
    match k {
        Some(k) => claim(conn, l, k, pinned, replicate).await,
        None => Ok(Claim {
            pinned: pinned.to_string(),
            answer: None,
        }),
    }
}

/// Answers a request whose answer no single script makes (checkout, batch_init), at most once
/// per key: with `k`, a repeat whose first answer is stored gets it again and `run` does not
/// run; otherwise `run` gets the pinned value ([`claim_if_keyed`]: `pinned`, or the first
/// request's) and its answer is stored for the repeats ([`finish`]). Unkeyed, `run` just runs.
pub async fn answer_once<F, Fut>(
    conn: &mut Conn,
    l: &Layout,
    k: Option<&Keyed>,
    pinned: &str,
    replicate: bool,
    run: F,
) -> Result<Response, ApiError>
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = Result<serde_json::Value, ApiError>>,
{
    let claim = claim_if_keyed(conn, l, k, pinned, replicate).await?;
    if let Some(answer) = claim.answer {
        return Ok(answer.response());
    }
    let result = run(claim.pinned).await;
    let answer = Answer::of(&result);
    if let Some(k) = k {
        finish(conn, l, k, &answer).await;
    }
    result.map(|_| answer.response())
}

/// Stores `answer` in `k`'s claim, for a request whose answer no single script makes (checkout,
/// batch_init). 5xx answers are not stored. A failure to store is logged, not answered: the
/// request itself succeeded, and its repeat is still safe (those requests are idempotent by
/// themselves), only perhaps answered from a newer state.
pub async fn finish(conn: &mut Conn, l: &Layout, k: &Keyed, answer: &Answer) {
    if answer.status >= 500 {
        return;
    }
    let stored: Result<Vec<String>, _> = FINISH
        .key(k.claim_key(l))
        .arg(&k.fingerprint)
        .arg(answer.status)
        .arg(&answer.body)
        .arg(k.ttl_secs)
        .invoke_async(conn)
        .await;
    if let Err(e) = stored {
        tracing::warn!(key = k.key.as_str(), error = %e, "could not store an idempotent answer");
    }
}

/// Runs a transition script made with [`idempotent`] (`inv`, its own keys and arguments set)
/// for a request that may carry a key: with `k`, its answer record in partition `part` (the
/// changed entity's) goes along, so the change happens once per key. The reply is decoded as
/// `T`; another request's record is a 422. One function for keyed and unkeyed calls, so the
/// two cannot drift apart.
pub async fn invoke<T: redis::FromRedisValue>(
    mut inv: redis::ScriptInvocation<'_>,
    conn: &mut Conn,
    l: &Layout,
    part: u32,
    k: Option<&Keyed>,
) -> Result<T, ApiError> {
    if let Some(k) = k {
        k.add_to(&mut inv, l, part);
    }
    let reply = checked(inv.invoke_async(conn).await?, k)?;
    T::from_redis_value(reply)
        .map_err(|e| ApiError::Internal(format!("unexpected script answer: {e}")))
}

/// A script's reply passed through [`idempotent`]'s check: a 422 when the key's answer record
/// belongs to another request (possible only once the claim expired before the record), else
/// the reply for the caller to decode.
fn checked(reply: redis::Value, k: Option<&Keyed>) -> Result<redis::Value, ApiError> {
    if let (Some(k), redis::Value::Array(items)) = (k, &reply) {
        if let [redis::Value::BulkString(s), rest @ ..] = items.as_slice() {
            if s.as_slice() == MISMATCH.as_bytes() {
                let bound = match rest.first() {
                    Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
                    _ => String::new(),
                };
                return Err(mismatch(k, &bound));
            }
        }
    }
    Ok(reply)
}

fn mismatch(k: &Keyed, bound: &str) -> ApiError {
    ApiError::Unprocessable(format!(
        "Idempotency-Key `{}` was used for `{bound}`, not `{}`: use a new key for a new request",
        k.key.as_str(),
        k.fingerprint
    ))
}

/// A final answer as stored in a claim: status and JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The JSON body.
    pub body: String,
}

impl Answer {
    /// The answer a handler's result becomes: 200 with the value, or the error's status and
    /// `{"error": …}` (the body `common::http` would send).
    pub fn of(result: &Result<serde_json::Value, ApiError>) -> Answer {
        match result {
            Ok(v) => Answer {
                status: 200,
                body: v.to_string(),
            },
            Err(e) => Answer {
                status: e.status().as_u16(),
                body: serde_json::json!({ "error": e.to_string() }).to_string(),
            },
        }
    }

    /// The HTTP response carrying this answer.
    pub fn response(&self) -> Response {
        let mut resp = Response::new(self.body.clone().into());
        *resp.status_mut() =
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        resp.headers_mut().insert(
            warp::http::header::CONTENT_TYPE,
            warp::http::HeaderValue::from_static("application/json"),
        );
        resp
    }
}

/// A transition script made idempotent: `body` (a script with `base_keys` keys) runs as before
/// when called with exactly those keys; called with one key more (the answer record, see
/// [`Keyed::add_to`]) and two arguments more (fingerprint, retention), it first looks for a
/// stored reply for the key (returned as is: nothing changes) and otherwise runs and stores its
/// reply in the record, in the same atomic step. `prelude` (e.g. `common/lua/decimal.lua`)
/// goes first.
pub fn idempotent(prelude: &str, body: &str, base_keys: usize) -> Script {
    Script::new(&format!(
        "{prelude}\n{IDEMPOTENT_LUA}\nlocal function transition()\n{body}\nend\nreturn idempotent({base_keys}, transition)\n"
    ))
}

const IDEMPOTENT_LUA: &str = include_str!("../lua/idempotent.lua");

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &[&[u8]]) -> Result<Option<Key>, ApiError> {
        Key::parse(v.iter().copied())
    }

    #[test]
    fn a_key_is_one_value_of_1_to_128_printable_ascii_characters() {
        assert_eq!(parse(&[]).ok(), Some(None));
        let k = parse(&[b"order 42 / try #1 ~{x}"]).ok().flatten();
        assert_eq!(k.map(|k| k.0), Some("order 42 / try #1 ~{x}".to_string()));
        let long = vec![b'k'; MAX_LEN];
        assert!(parse(&[&long]).is_ok());
        let too_long = vec![b'k'; MAX_LEN + 1];
        for bad in [
            &b""[..],
            &too_long,
            b"tab\there",
            b"nul\0",
            "é".as_bytes(),
            b"\x7f",
        ] {
            let status = parse(&[bad]).err().map(|e| e.status());
            assert_eq!(status, Some(StatusCode::BAD_REQUEST), "{bad:?}");
        }
        let two = parse(&[b"a", b"a"]).err().map(|e| e.status());
        assert_eq!(two, Some(StatusCode::BAD_REQUEST));
    }

    #[test]
    fn the_fingerprint_is_the_method_and_the_routed_path() {
        let key = parse(&[b"k"]).ok().flatten();
        let segs: Vec<String> = ["stock", "add", "i1", "5"].map(String::from).into();
        let k = Keyed::of(key, &Method::POST, &segs, Duration::from_millis(10));
        assert_eq!(
            k.as_ref().map(|k| (k.fingerprint.as_str(), k.ttl_secs)),
            Some(("POST /stock/add/i1/5", 1))
        );
    }

    #[test]
    fn an_answer_is_the_status_and_the_json_body_http_sends() {
        let ok = Answer::of(&Ok(serde_json::json!({"done": true})));
        assert_eq!((ok.status, ok.body.as_str()), (200, r#"{"done":true}"#));
        let err = Answer::of(&Err(ApiError::Conflict("paid".into())));
        assert_eq!(
            (err.status, err.body.as_str()),
            (409, r#"{"error":"paid"}"#)
        );
        assert_eq!(err.response().status(), StatusCode::CONFLICT);
    }
}
