//! What PostgREST tells us about the HTTP request: the `request.headers` setting (a JSON
//! object of lower-cased header names). Used for the session's user agent and IP and for
//! the audit log. Absent or malformed headers simply give nothing.

use serde_json::Value;
use std::net::IpAddr;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RequestInfo {
    pub user_agent: Option<String>,
    pub ip: Option<IpAddr>,
}

/// Parse PostgREST's `request.headers` JSON. The client IP is the first address of
/// `x-forwarded-for` (the client as seen by the first proxy), else `x-real-ip`.
pub fn parse_headers(raw: &str) -> RequestInfo {
    let Ok(Value::Object(h)) = serde_json::from_str::<Value>(raw) else {
        return RequestInfo::default();
    };
    let get = |k: &str| h.get(k).and_then(Value::as_str);
    let user_agent = get("user-agent")
        .map(|ua| ua.chars().take(512).collect::<String>())
        .filter(|ua| !ua.is_empty());
    let ip = get("x-forwarded-for")
        .and_then(|v| v.split(',').next())
        .or_else(|| get("x-real-ip"))
        .and_then(|v| v.trim().parse::<IpAddr>().ok());
    RequestInfo { user_agent, ip }
}

/// The current request's information, from the `request.headers` setting.
pub fn current() -> RequestInfo {
    crate::claims::setting(c"request.headers")
        .map(|raw| parse_headers(&String::from_utf8_lossy(raw)))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers() {
        let r =
            parse_headers(r#"{"user-agent":"curl/8","x-forwarded-for":"203.0.113.9, 10.0.0.1"}"#);
        assert_eq!(r.user_agent.as_deref(), Some("curl/8"));
        assert_eq!(r.ip, Some("203.0.113.9".parse().unwrap()));
        let r = parse_headers(r#"{"x-real-ip":"2001:db8::1"}"#);
        assert_eq!(r.ip, Some("2001:db8::1".parse().unwrap()));
        assert_eq!(parse_headers(r#"{"x-forwarded-for":"not an ip"}"#).ip, None);
        assert_eq!(parse_headers("garbage"), RequestInfo::default());
    }
}
