//! The API error type: every failure a handler can meet, and the status code and JSON body it
//! becomes. Handlers return `Result<_, ApiError>`; nothing else decides a status code.

use warp::http::StatusCode;

/// A failure answered to an HTTP client as `{"error": "<message>"}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request itself is malformed (bad number, bad id) or refused by a business rule
    /// (not enough stock or credit). 400.
    #[error("{0}")]
    BadRequest(String),
    /// The entity does not exist. 404.
    #[error("{0}")]
    NotFound(String),
    /// The path names no route. 404 (kept apart from `NotFound` so that metrics label such
    /// requests `unmatched` instead of minting a series per random path).
    #[error("{0}")]
    NoRoute(String),
    /// The path exists but not for this method. 405.
    #[error("method not allowed: {0}")]
    MethodNotAllowed(String),
    /// The request carries a body larger than [`crate::http::MAX_BODY_BYTES`]. No endpoint takes
    /// a body, so a small one is ignored; a large one is refused before the request is handled,
    /// so that it changes nothing. 413.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The request conflicts with the entity's state (e.g. adding to a paid order). 409.
    #[error("{0}")]
    Conflict(String),
    /// The request's `Idempotency-Key` was first used for another request (method or path).
    /// 422: nothing ran.
    #[error("{0}")]
    Unprocessable(String),
    /// A dependency (a database, another service) cannot be reached right now. 503: retry later.
    #[error("{0}")]
    Unavailable(String),
    /// A bug or an unexpected answer from a dependency. 500.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) | ApiError::NoRoute(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<redis::RedisError> for ApiError {
    fn from(e: redis::RedisError) -> Self {
        // E.g. BUSY: a long script (batch_init) runs; LOADING: the database is loading its AOF.
        if crate::db::is_transient(&e) {
            ApiError::Unavailable(format!("database unavailable, retry later: {e}"))
        } else {
            ApiError::Internal(format!("database error: {e}"))
        }
    }
}
