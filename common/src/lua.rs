//! Lua shared by several transition scripts. Redis scripts cannot import one another, so a shared
//! helper is prepended to the scripts that use it when they are built.

use redis::Script;

/// `less(a, b)`: exact `a < b` for canonical non-negative decimal strings (`lua/decimal.lua`).
pub const DECIMAL: &str = include_str!("../lua/decimal.lua");

/// A script made of the decimal helper followed by `body`.
pub fn with_decimal(body: &str) -> Script {
    Script::new(&format!("{DECIMAL}\n{body}"))
}
