//! Parsing of path parameters. Every number and id in a URL goes through here, so "what counts as
//! bad input" is decided once: digits only (no sign, no spaces, no exponent), within `i64`, and ids
//! made of `[0-9A-Za-z_-]`, at most 64 characters.

use crate::error::ApiError;

/// Longest id accepted. ULIDs are 26 characters; batch ids are decimal.
pub const MAX_ID_LEN: usize = 64;

/// Whether `s` is a syntactically valid entity id.
pub fn is_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Returns `s` when it is a valid id; otherwise the entity cannot exist, so it is "unknown" (404).
pub fn existing_id<'a>(s: &'a str, what: &str) -> Result<&'a str, ApiError> {
    if is_id(s) {
        Ok(s)
    } else {
        Err(ApiError::NotFound(format!(
            "unknown {what} `{}`",
            shorten(s)
        )))
    }
}

/// Returns `s` when it is a valid id to store (e.g. the user of a new order); otherwise 400.
pub fn new_id<'a>(s: &'a str, what: &str) -> Result<&'a str, ApiError> {
    if is_id(s) {
        Ok(s)
    } else {
        Err(ApiError::BadRequest(format!(
            "{what} `{}` is not a valid id (1-{MAX_ID_LEN} characters of 0-9, A-Z, a-z, -, _)",
            shorten(s)
        )))
    }
}

/// A non-negative integer that fits in `i64` (prices, starting amounts).
pub fn non_negative(s: &str, what: &str) -> Result<i64, ApiError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::BadRequest(format!(
            "{what} must be a non-negative integer, got `{}`",
            shorten(s)
        )));
    }
    s.parse::<i64>().map_err(|_| {
        ApiError::BadRequest(format!(
            "{what} `{}` is too large (at most {})",
            shorten(s),
            i64::MAX
        ))
    })
}

/// A positive integer that fits in `i64` (amounts, quantities).
pub fn positive(s: &str, what: &str) -> Result<i64, ApiError> {
    match non_negative(s, what)? {
        0 => Err(ApiError::BadRequest(format!(
            "{what} must be positive, got 0"
        ))),
        v => Ok(v),
    }
}

/// A count in `min..=max` (batch sizes), so that one request cannot block a database for minutes.
pub fn count(s: &str, what: &str, min: i64, max: i64) -> Result<i64, ApiError> {
    let v = non_negative(s, what)?;
    if v < min || v > max {
        return Err(ApiError::BadRequest(format!(
            "{what} must be between {min} and {max}, got {v}"
        )));
    }
    Ok(v)
}

/// Cuts user input to a length that is safe to echo back in an error message.
fn shorten(s: &str) -> String {
    const MAX: usize = 80;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(positive("5", "amount").unwrap(), 5);
        assert_eq!(non_negative("0", "price").unwrap(), 0);
        assert_eq!(positive("9223372036854775807", "a").unwrap(), i64::MAX);
        for bad in [
            "",
            "-1",
            "+1",
            "1.0",
            "1e3",
            " 1",
            "abc",
            "0x10",
            "9223372036854775808",
        ] {
            assert!(non_negative(bad, "a").is_err(), "{bad:?} accepted");
        }
        assert!(positive("0", "a").is_err());
        assert!(count("0", "n", 1, 10).is_err());
        assert!(count("11", "n", 1, 10).is_err());
        assert_eq!(count("10", "n", 1, 10).unwrap(), 10);
    }

    #[test]
    fn ids() {
        assert!(is_id("01JD0000000000000000000000"));
        assert!(is_id("42"));
        for bad in ["", "a/b", "a b", "é", "..", &"x".repeat(65)] {
            assert!(!is_id(bad), "{bad:?} accepted");
        }
        assert!(matches!(
            existing_id("%2e", "item"),
            Err(ApiError::NotFound(_))
        ));
        assert!(matches!(
            new_id("%2e", "user"),
            Err(ApiError::BadRequest(_))
        ));
    }
}
