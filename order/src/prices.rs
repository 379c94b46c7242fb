//! Item prices, asked of the stock service over HTTP (`GET /stock/find/{item}`).
//!
//! The order service never reads stock-db: prices come through the stock service's public API,
//! over one pooled keep-alive client.

use std::time::Duration;

use common::error::ApiError;

/// A client of the stock service's `find` endpoint.
pub struct Prices {
    base: String,
    http: reqwest::Client,
}

#[derive(serde::Deserialize)]
struct Found {
    price: i64,
}

impl Prices {
    /// A client for the stock service at `stock_url` (e.g. `http://127.0.0.1:8102`).
    pub fn new(stock_url: &str) -> Prices {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(3))
            .pool_max_idle_per_host(64)
            .build()
            .unwrap_or_default();
        Prices {
            base: stock_url.trim_end_matches('/').to_string(),
            http,
        }
    }

    /// The price of `item` (a validated id); 404 when the stock service does not know it.
    pub async fn price(&self, item: &str) -> Result<i64, ApiError> {
        let url = format!("{}/stock/find/{}", self.base, item);
        let unavailable = |e: reqwest::Error| {
            ApiError::Unavailable(format!("stock service unavailable, retry later: {e}"))
        };
        let resp = self.http.get(&url).send().await.map_err(unavailable)?;
        match resp.status().as_u16() {
            200 => Ok(resp.json::<Found>().await.map_err(unavailable)?.price),
            404 => Err(ApiError::NotFound(format!("unknown item `{item}`"))),
            s => Err(ApiError::Unavailable(format!(
                "stock service answered {s} for item `{item}`; retry later"
            ))),
        }
    }
}
