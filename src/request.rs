//! What PostgREST tells us about the HTTP request: the `request.headers` setting (a JSON
//! object of lower-cased header names). Used for the session's user agent and IP, for the
//! audit log and for the per-IP limits. Absent or malformed headers simply give nothing.
//!
//! The client address is the one a trusted hop wrote, never one the client chose: each
//! proxy appends the address it was connected from to `x-forwarded-for`, so with
//! `auth.trusted_proxies` = n the client is the n-th entry from the right (the leftmost
//! when there are fewer); everything further left was written by the client and is
//! ignored. With 0, the headers are not trusted at all and no address is known.

use pgrx::prelude::*;
use serde_json::Value;
use std::ffi::CStr;
use std::net::IpAddr;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RequestInfo {
    pub user_agent: Option<String>,
    pub ip: Option<IpAddr>,
    /// The trusted entry when it is not an address (a proxy that wrote `unknown`, an
    /// obfuscated name): still a key for the per-address limits, so they never fall away.
    pub unparsed: Option<String>,
}

impl RequestInfo {
    /// The key the per-address limits count: an IPv4 address, the /64 of an IPv6 one (one
    /// subscriber's prefix: counting each of its 2^64 addresses apart would let one client
    /// rotate past any limit), or the unparsed entry.
    pub fn limit_key(&self) -> Option<String> {
        match self.ip {
            Some(IpAddr::V4(a)) => Some(a.to_string()),
            Some(IpAddr::V6(a)) => {
                let s = a.segments();
                Some(format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3]))
            }
            None => self.unparsed.as_ref().map(|u| format!("unparsed:{u}")),
        }
    }
}

/// An entry of `x-forwarded-for` as an address: bare, with a port (`203.0.113.5:4711`),
/// or bracketed (`[2001:db8::1]`, `[2001:db8::1]:443`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = hop.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    let (host, port) = hop.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

/// Parse PostgREST's `request.headers` JSON, trusting `trusted_proxies` hops of
/// `x-forwarded-for`.
pub fn parse_headers(raw: &str, trusted_proxies: usize) -> RequestInfo {
    let Ok(Value::Object(h)) = serde_json::from_str::<Value>(raw) else {
        return RequestInfo::default();
    };
    let get = |k: &str| h.get(k).and_then(Value::as_str);
    let user_agent = get("user-agent")
        .map(|ua| ua.chars().take(512).collect::<String>())
        .filter(|ua| !ua.is_empty());
    let hop = get("x-forwarded-for")
        .filter(|_| trusted_proxies > 0)
        .and_then(|v| {
            let hops: Vec<&str> = v.split(',').map(str::trim).collect();
            hops.get(hops.len().saturating_sub(trusted_proxies))
                .copied()
        })
        .filter(|h| !h.is_empty());
    // An IPv4 client as a dual-stack proxy writes it (::ffff:a.b.c.d) is that IPv4 address.
    let ip = hop.and_then(parse_hop).map(|ip| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    });
    let unparsed = match (ip, hop) {
        (None, Some(h)) => Some(h.chars().take(64).collect()),
        _ => None,
    };
    RequestInfo {
        user_agent,
        ip,
        unparsed,
    }
}

/// The current request's information, from the `request.headers` setting.
pub fn current() -> RequestInfo {
    crate::claims::setting(c"request.headers")
        .map(|raw| {
            parse_headers(
                &String::from_utf8_lossy(raw),
                crate::config::TRUSTED_PROXIES.get().max(0) as usize,
            )
        })
        .unwrap_or_default()
}

/// SQL: the role the session acts as (its login role, or the role of SET ROLE, as
/// PostgREST's `set local role` gives), which SECURITY DEFINER functions do not change:
/// inside one, current_user is the owner. The admin audit entries name it.
#[pg_extern(stable, parallel_safe)]
fn _calling_role() -> String {
    // SAFETY: GetOuterUserId is always a valid role while a session runs; the name is
    // copied out at once.
    unsafe {
        CStr::from_ptr(pg_sys::GetUserNameFromId(pg_sys::GetOuterUserId(), false))
            .to_string_lossy()
            .into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers() {
        let r = parse_headers(
            r#"{"user-agent":"curl/8","x-forwarded-for":"203.0.113.9, 10.0.0.1"}"#,
            2,
        );
        assert_eq!(r.user_agent.as_deref(), Some("curl/8"));
        assert_eq!(r.ip, Some("203.0.113.9".parse().unwrap()));
        assert_eq!(
            parse_headers(r#"{"x-forwarded-for":"not an ip"}"#, 1).ip,
            None
        );
        assert_eq!(parse_headers("garbage", 1), RequestInfo::default());
    }

    #[test]
    fn the_client_cannot_choose_its_address() {
        // The client wrote the first two entries; the proxy appended the last.
        let xff = r#"{"x-forwarded-for":"198.51.100.1, 192.0.2.77, 203.0.113.5"}"#;
        assert_eq!(
            parse_headers(xff, 1).ip,
            Some("203.0.113.5".parse().unwrap())
        );
        // Two trusted proxies: the one before the nearest proxy's entry.
        assert_eq!(
            parse_headers(xff, 2).ip,
            Some("192.0.2.77".parse().unwrap())
        );
        // Fewer entries than trusted hops: the leftmost was still written by a proxy.
        assert_eq!(
            parse_headers(xff, 5).ip,
            Some("198.51.100.1".parse().unwrap())
        );
        // 0: the headers are not trusted.
        assert_eq!(parse_headers(xff, 0).ip, None);
        // x-real-ip is the client's to write unless a proxy overwrites it: never used.
        assert_eq!(parse_headers(r#"{"x-real-ip":"2001:db8::1"}"#, 1).ip, None);
        // An unparsable trusted entry is no address, not the entry before it; it is still
        // a key for the limits.
        let r = parse_headers(r#"{"x-forwarded-for":"192.0.2.1, junk"}"#, 1);
        assert_eq!(r.ip, None);
        assert_eq!(r.limit_key().as_deref(), Some("unparsed:junk"));
    }

    #[test]
    fn ports_brackets_and_v6_prefixes() {
        let ip = |xff: &str| parse_headers(&format!(r#"{{"x-forwarded-for":"{xff}"}}"#), 1).ip;
        assert_eq!(
            ip("198.51.100.7, 203.0.113.5:4711"),
            Some("203.0.113.5".parse().unwrap())
        );
        assert_eq!(
            ip("[2001:db8::1]:443"),
            Some("2001:db8::1".parse().unwrap())
        );
        assert_eq!(ip("[2001:db8::1]"), Some("2001:db8::1".parse().unwrap()));
        assert_eq!(ip("2001:db8::1"), Some("2001:db8::1".parse().unwrap()));
        let key =
            |xff: &str| parse_headers(&format!(r#"{{"x-forwarded-for":"{xff}"}}"#), 1).limit_key();
        assert_eq!(
            key("2001:db8:1:2:3:4:5:6").as_deref(),
            Some("2001:db8:1:2::/64")
        );
        assert_eq!(
            key("2001:db8:1:2:ffff::9").as_deref(),
            Some("2001:db8:1:2::/64")
        );
        assert_eq!(key("203.0.113.9").as_deref(), Some("203.0.113.9"));
        // IPv4-mapped: the IPv4 address, not the shared ::ffff:0:0/96 prefix.
        assert_eq!(key("::ffff:203.0.113.5").as_deref(), Some("203.0.113.5"));
        assert_eq!(
            key("[::ffff:198.51.100.77]:80").as_deref(),
            Some("198.51.100.77")
        );
        assert_eq!(key("").as_deref(), None);
    }
}
