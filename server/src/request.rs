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

/// Headers that never reach `request.headers`: secrets (the database needs none of them,
/// and a hook or a log could see them there), and client-written claims of an address,
/// which a hook or a policy might trust (the client's address is `x-forwarded-for`, which
/// this server writes).
const DROPPED_HEADERS: &[&str] = &[
    "authorization",
    "apikey",
    "cookie",
    "proxy-authorization",
    "x-forwarded-for",
    "x-real-ip",
    "forwarded",
    "cf-connecting-ip",
    "true-client-ip",
    "x-client-ip",
];

pub struct Req {
    pub headers: String,
    pub method: String,
    pub path: String,
    pub apikey: Option<String>,
    pub bearer: Option<String>,
    pub query: HashMap<String, String>,
}

impl Req {
    /// The context of a public endpoint behind the gateway's key check: the key acts (as
    /// GoTrue, these endpoints ignore `Authorization`, so an app that sends a user's token,
    /// even an expired one, with every request still signs in).
    pub fn keyed(&self) -> Result<Ctx, ApiError> {
        Ok(self.ctx(Auth::Keyed {
            apikey: self.apikey()?,
            bearer: None,
        }))
    }

    /// The context of an endpoint that acts as the bearer: the user (`/user`, `/logout`) or
    /// the service key (`/admin/*`, `/invite`).
    pub fn keyed_as_bearer(&self) -> Result<Ctx, ApiError> {
        let apikey = self.apikey()?;
        let Some(bearer) = self.bearer.clone() else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "no_authorization",
                "This endpoint requires a valid Bearer token",
            ));
        };
        Ok(self.ctx(Auth::Keyed {
            apikey,
            bearer: Some(bearer),
        }))
    }

    fn apikey(&self) -> Result<String, ApiError> {
        self.apikey.clone().ok_or_else(no_api_key)
    }

    /// The context of an endpoint a browser opens without a key.
    pub fn anonymous(&self) -> Ctx {
        self.ctx(Auth::Anonymous)
    }

    /// The context of a provider's callback (the role that may finish a provider sign-in).
    pub fn oauth_callback(&self) -> Ctx {
        self.ctx(Auth::OAuthCallback)
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

fn no_api_key() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "no_api_key",
        "No API key found in request",
    )
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
        // Every X-Forwarded-For line, in order, as one list (a proxy may add a line of its
        // own rather than extend the client's); bytes that are not text stay an entry.
        let forwarded: Vec<String> = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        let forwarded = forwarded.join(",");
        let mut headers = Map::new();
        for (name, value) in &parts.headers {
            let name = name.as_str();
            if DROPPED_HEADERS.contains(&name) {
                continue;
            }
            if let Ok(v) = value.to_str() {
                headers.insert(name.to_string(), Value::from(v));
            }
        }
        headers.insert(
            "x-forwarded-for".into(),
            Value::from(client_address(
                Some(forwarded.as_str()).filter(|f| !f.trim().is_empty()),
                peer,
                app.config.trusted_proxies,
            )),
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
        // Every endpoint with a body needs a key: without one, nothing is read.
        let has_key = req.headers().contains_key("apikey")
            || req.uri().query().is_some_and(|q| {
                url::form_urlencoded::parse(q.as_bytes()).any(|(k, _)| k == "apikey")
            });
        if !has_key {
            return Err(no_api_key());
        }
        // Bodies in memory at once are bounded (AUTH_BODY_BUDGET), by their declared size
        // or, without one, the limit: slow or large bodies cannot take the memory.
        let declared = req
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(app.config.body_limit)
            .min(app.config.body_limit);
        let kib = u32::try_from(declared.div_ceil(1024).max(1)).unwrap_or(u32::MAX);
        let _budget = tokio::time::timeout(app.config.pool_wait, app.body_budget.acquire_many(kib))
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unexpected_failure",
                    "The server is busy; try again shortly",
                )
            })?;
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
        let bad = |e: serde_json::Error| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_json",
                format!("Could not parse request body as JSON: {e}"),
            )
        };
        let value: Value = if bytes.iter().all(u8::is_ascii_whitespace) {
            Value::Object(Map::new())
        } else {
            serde_json::from_slice(&bytes).map_err(bad)?
        };
        // `null` is an empty body, as GoTrue reads it.
        let value = if value.is_null() {
            Value::Object(Map::new())
        } else {
            value
        };
        serde_json::from_value(value).map(Body).map_err(bad)
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
