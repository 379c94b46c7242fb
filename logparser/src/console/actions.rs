//! The console's actions: a recovery pass, and one saga's re-drive. Each one is a POST that
//! passes the same-origin check and the operator token ([`super::auth`]), runs on the active
//! instance only, one at a time, and is logged with who asked, with which token (its
//! fingerprint), what, and the result. They change data only through the fenced scripts the
//! log parser's own passes use: [`crate::recovery::Recovery::full_pass`] (the aborts take the
//! order's Redlock, then `common::saga::abort`) and `common::saga::redrive`.

use std::sync::Arc;

use common::saga::{Reply, SagaHome, SagaState};

use super::{auth, json, Answer, Console, ConsoleError, Request};

/// Checks origin, token and leadership; logs a refusal. Returns the token's fingerprint.
async fn authorize(
    console: &Console,
    req: &Request,
    action: &str,
    saga: &str,
) -> Result<String, ConsoleError> {
    let active = console.active_instance().await.map(|(name, _)| name);
    let token = req.token();
    let fingerprint = auth::fingerprint(token.as_deref());
    let checked = auth::same_origin(
        req.header("host"),
        req.header("origin"),
        req.header("sec-fetch-site"),
    )
    .and_then(|()| auth::check(console.token.as_deref(), token.as_deref()))
    .map_err(ConsoleError::from)
    .and_then(|()| {
        if console.status.leadership.is_active() {
            Ok(())
        } else {
            Err(ConsoleError::Unavailable(format!(
                "this log parser ({}) is a standby: actions run on the active instance ({}), which holds the lease; retry (the gateway tries the other instances)",
                console.status.instance,
                active.as_deref().unwrap_or("not known yet")
            )))
        }
    });
    if let Err(e) = &checked {
        tracing::warn!(who = %req.who(), token = %fingerprint, action, saga, refused = %e, status = e.status().as_u16(), "console action refused");
    }
    checked.map(|()| fingerprint)
}

/// `POST /console/api/recover`: one full recovery pass now, as `shoplog recover` runs it;
/// answers its report.
pub async fn recover(console: &Arc<Console>, req: &Request) -> Answer {
    let fingerprint = authorize(console, req, "recover", "").await?;
    let dbs = console.dbs()?.clone();
    let ids = console
        .ids
        .get()
        .cloned()
        .ok_or_else(|| ConsoleError::Unavailable("the ID pool is not ready yet".into()))?;
    let locks = common::lock::Redlock::new(&console.lock_urls)
        .map_err(|e| ConsoleError::Unavailable(e.to_string()))?;
    let _one = console.acting.lock().await;
    let mut recovery =
        crate::recovery::Recovery::new(dbs, locks, ids, console.settings, console.metrics.clone());
    match recovery.full_pass(false).await {
        Ok(report) => {
            tracing::warn!(who = %req.who(), token = %fingerprint, action = "recover",
                aborted = ?report.aborted, redriven = ?report.redriven, errors = ?report.errors,
                "console action: recovery pass");
            json(&report)
        }
        Err(e) => {
            tracing::warn!(who = %req.who(), token = %fingerprint, action = "recover", error = %e, "console action failed");
            Err(ConsoleError::Unavailable(format!(
                "recovery pass failed: {e}"
            )))
        }
    }
}

/// `POST /console/api/sagas/<id>/redrive`: re-appends the `CheckoutAborted` of a saga whose
/// compensation is unconfirmed (handlers are idempotent, so this is always safe); 409 for a
/// saga in another state.
pub async fn redrive(console: &Arc<Console>, req: &Request, sid: &str) -> Answer {
    let fingerprint = authorize(console, req, "redrive", sid).await?;
    let dbs = console.dbs()?;
    let ids = console
        .ids
        .get()
        .cloned()
        .ok_or_else(|| ConsoleError::Unavailable("the ID pool is not ready yet".into()))?;
    let _one = console.acting.lock().await;
    let mut conn = dbs.order.clone();
    let record = crate::sagas::find(&mut conn, &dbs.order_layout, sid)
        .await
        .map_err(|e| ConsoleError::Unavailable(format!("order-db: {e}")))?
        .ok_or_else(|| {
            ConsoleError::NotFound(format!(
                "no saga record `{sid}` (a saga id; retired sagas are final)"
            ))
        })?
        .map_err(|e| ConsoleError::Conflict(format!("malformed record: {e}")))?;
    if record.state() != SagaState::Compensating {
        let e = ConsoleError::Conflict(format!(
            "saga {sid} is {}: only a compensating saga (aborted, a compensation unconfirmed) can be re-driven",
            record.state().name()
        ));
        tracing::warn!(who = %req.who(), token = %fingerprint, action = "redrive", saga = sid, refused = %e, "console action refused");
        return Err(e);
    }
    let home = SagaHome {
        layout: &dbs.order_layout,
        part: record.part,
    };
    let reply = common::saga::redrive(&mut conn, home, &ids.next(), sid)
        .await
        .map_err(|e| ConsoleError::Unavailable(format!("order-db: {e}")))?;
    let applied = matches!(reply, Reply::Ok(_));
    if applied {
        console.metrics.incr("sagas_redriven_total", 1);
    }
    tracing::warn!(who = %req.who(), token = %fingerprint, action = "redrive", saga = sid,
        result = reply.name(), "console action: re-drive");
    json(&serde_json::json!({
        "saga": sid,
        "order": record.order,
        "redriven": applied,
        "result": reply.name(),
        "pending": record.pending,
    }))
}
