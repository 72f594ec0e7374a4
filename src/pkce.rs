//! PKCE (RFC 7636) for the email links, as GoTrue does it: a link sent with a
//! `code_challenge` opens to an auth code instead of a session (auth.verify_link), and the
//! code becomes a session only with the verifier (auth.exchange_code_for_session). The
//! flow states are in auth.flow_state and the flows in sql/flows.sql; here is what needs
//! Rust: the verifier check in constant time, and a wrong verifier counted toward the
//! lockout and used up in a transaction of its own (the call then fails, which would undo
//! an ordinary write).

use crate::error::OrRaise;
use crate::lockout;
use crate::request;
use crate::users;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use pgrx::prelude::*;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

/// Equal, in a time that depends on neither value: the two are compared as SHA-256
/// digests (fixed length, so not even the lengths show), byte by byte without an early
/// exit.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    let (a, b) = (Sha256::digest(a), Sha256::digest(b));
    let diff = a.iter().zip(b.iter()).fold(0u8, |d, (x, y)| d | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Does `verifier` answer `challenge` made with `method` (`s256`: the base64url SHA-256 of
/// the verifier; `plain`: the verifier itself)? Any other method answers nothing.
pub fn verifier_matches(method: &str, challenge: &str, verifier: &str) -> bool {
    match method {
        "s256" => {
            let derived = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
            same_secret(challenge.as_bytes(), derived.as_bytes())
        }
        "plain" => same_secret(challenge.as_bytes(), verifier.as_bytes()),
        _ => false,
    }
}

/// SQL (behind auth.exchange_code_for_session): see [`verifier_matches`].
#[pg_extern(immutable, parallel_safe)]
fn _pkce_verifier_matches(method: &str, challenge: &str, verifier: &str) -> bool {
    verifier_matches(method, challenge, verifier)
}

/// SQL: begin a verifier check of a flow state, counted before it is made on the flow
/// state's own counter (`name`) and the request's address (src/lockout.rs):
/// over_request_rate_limit when either is locked. It ends with _attempt_succeeded,
/// _flow_state_failed or an abort.
#[pg_extern(volatile)]
fn _attempt_begin_named(name: &str) {
    lockout::begin_key(name, &request::current()).or_raise()
}

/// SQL: the verifier check begun last failed. In one transaction of its own: the failure
/// counted, its audit entry, and the flow state deleted, so that its code is used up by
/// the wrong guess although the call that made it fails.
#[pg_extern(volatile)]
fn _flow_state_failed(flow_id: pgrx::Uuid, user_id: Option<pgrx::Uuid>) {
    let audit = users::failure_audit(
        None,
        user_id,
        &request::current(),
        json!({"provider": "email", "reason": "bad_code_verifier", "grant_type": "pkce"}),
    );
    let mut extra = Map::new();
    extra.insert("delete_flow_state".into(), Value::from(flow_id.to_string()));
    lockout::failed_with(audit, extra);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7636_appendix_b() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(verifier_matches("s256", challenge, verifier));
        assert!(!verifier_matches("s256", challenge, &verifier[1..]));
        assert!(!verifier_matches("s256", verifier, verifier));
        // The challenge itself is no verifier of an s256 flow.
        assert!(!verifier_matches("s256", challenge, challenge));
    }

    #[test]
    fn plain_compares_the_whole_value() {
        let v = "a-plain-verifier-of-forty-three-characters-";
        assert!(verifier_matches("plain", v, v));
        assert!(!verifier_matches("plain", v, &v[..42]));
        assert!(!verifier_matches("plain", v, &format!("{v}x")));
        assert!(!verifier_matches("plain", v, ""));
    }

    #[test]
    fn unknown_methods_match_nothing() {
        assert!(!verifier_matches("S256", "x", "x"));
        assert!(!verifier_matches("", "x", "x"));
    }
}
