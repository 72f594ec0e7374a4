//! What a handler needs from the HTTP request: the context PostgREST would give the
//! database (headers with the client's address, method, path), the keys, the query
//! string, and a JSON body parsed the way GoTrue parses it (unknown fields ignored).

use crate::db::{Auth, Ctx};
use crate::error::ApiError;
use crate::App;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, OriginalUri, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::net::SocketAddr;

/// Headers that carry secrets: the database needs none of them, so they never reach
/// `request.headers` (where a hook or a log could see them).
const SECRET_HEADERS: &[&str] = &["authorization", "apikey", "cookie", "proxy-authorization"];

pub struct Req {
    pub headers: String,
    pub method: String,
    pub path: String,
    pub apikey: Option<String>,
    pub bearer: Option<String>,
    pub query: HashMap<String, String>,
}

impl Req {
    /// The context of an endpoint behind the gateway's key check.
    pub fn keyed(&self) -> Result<Ctx, ApiError> {
        let apikey = self.apikey.clone().ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "no_api_key",
                "No API key found in request",
            )
        })?;
        Ok(self.ctx(Auth::Keyed {
            apikey,
            bearer: self.bearer.clone(),
        }))
    }

    /// The context of an endpoint a browser opens without a key.
    pub fn anonymous(&self) -> Ctx {
        self.ctx(Auth::Anonymous)
    }

    fn ctx(&self, auth: Auth) -> Ctx {
        Ctx {
            headers: self.headers.clone(),
            method: self.method.clone(),
            path: self.path.clone(),
            auth,
        }
    }

    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

/// The client's address: the connection's, or with `trusted` proxies in front, the entry
/// the outermost trusted proxy wrote (the leftmost when there are fewer entries).
/// Everything further left in `X-Forwarded-For` was written by the client.
pub fn client_address(forwarded: Option<&str>, peer: SocketAddr, trusted: usize) -> String {
    let peer = peer.ip().to_canonical().to_string();
    if trusted == 0 {
        return peer;
    }
    let mut hops: Vec<&str> = forwarded
        .map(|f| {
            f.split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .collect()
        })
        .unwrap_or_default();
    hops.push(&peer);
    let i = hops.len().saturating_sub(trusted + 1);
    hops[i].chars().take(64).collect()
}

impl FromRequestParts<App> for Req {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, ApiError> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let text = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
        };
        let forwarded = text("x-forwarded-for");
        let mut headers = Map::new();
        for (name, value) in &parts.headers {
            let name = name.as_str();
            if SECRET_HEADERS.contains(&name) || name == "x-forwarded-for" {
                continue;
            }
            if let Ok(v) = value.to_str() {
                headers.insert(name.to_string(), Value::from(v));
            }
        }
        headers.insert(
            "x-forwarded-for".into(),
            Value::from(client_address(forwarded, peer, app.config.trusted_proxies)),
        );
        let query: HashMap<String, String> = parts
            .uri
            .query()
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .into_owned()
                    .collect()
            })
            .unwrap_or_default();
        let bearer = text("authorization").and_then(|a| {
            let (scheme, token) = a.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| token.trim().to_string())
                .filter(|t| !t.is_empty())
        });
        let apikey = text("apikey")
            .map(str::to_string)
            .or_else(|| query.get("apikey").cloned().filter(|k| !k.is_empty()));
        Ok(Req {
            headers: Value::Object(headers).to_string(),
            method: parts.method.as_str().to_string(),
            // The path as the client sent it (under /auth/v1 too), not as the router saw it.
            path: parts
                .extensions
                .get::<OriginalUri>()
                .map_or_else(|| parts.uri.path().to_string(), |u| u.path().to_string()),
            apikey,
            bearer,
            query,
        })
    }
}

/// A JSON body as GoTrue reads it: unknown fields ignored, an empty body as `{}`, anything
/// else that does not parse a 400 `bad_json`, over the limit a 413.
pub struct Body<T>(pub T);

impl<T: DeserializeOwned> FromRequest<App> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, app: &App) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, app).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "request_too_large",
                    "Request body too large",
                )
            } else {
                ApiError::new(StatusCode::BAD_REQUEST, "bad_json", "Could not read body")
            }
        })?;
        let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        serde_json::from_slice(bytes).map(Body).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_json",
                format!("Could not parse request body as JSON: {e}"),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_address_trusts_only_configured_hops() {
        let peer: SocketAddr = "10.0.0.9:5000".parse().unwrap();
        assert_eq!(client_address(Some("6.6.6.6"), peer, 0), "10.0.0.9");
        assert_eq!(client_address(Some("6.6.6.6, 1.2.3.4"), peer, 1), "1.2.3.4");
        assert_eq!(client_address(None, peer, 1), "10.0.0.9");
        assert_eq!(client_address(Some("6.6.6.6, 1.2.3.4"), peer, 5), "6.6.6.6");
        let mapped: SocketAddr = "[::ffff:192.0.2.1]:1".parse().unwrap();
        assert_eq!(client_address(None, mapped, 0), "192.0.2.1");
    }
}
