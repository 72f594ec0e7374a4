//! Compact JWS (RFC 7515) encoding and verification, written out in full so that every
//! rule is ours and visible: exactly three segments, strict unpadded base64url, the key
//! decides the algorithm (the header must merely agree), `none` and `crit` refused, constant
//! time signature comparison, then the registered time and audience claims (RFC 7519 §4.1).
//! Pure Rust: no Postgres here, so everything is unit-tested with plain `#[test]`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;
use std::fmt;

type HmacSha256 = Hmac<Sha256>;

/// Tokens longer than this are refused before any decoding work.
pub const MAX_TOKEN_LEN: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    HS256,
}

impl Alg {
    pub fn name(self) -> &'static str {
        match self {
            Alg::HS256 => "HS256",
        }
    }

    pub fn from_name(name: &str) -> Option<Alg> {
        match name {
            "HS256" => Some(Alg::HS256),
            _ => None,
        }
    }
}

/// A key that can sign and verify. For HS256 the secret is the UTF-8 bytes of the secret
/// string, as PostgREST's `jwt-secret` uses it.
#[derive(Clone)]
pub struct Key {
    pub kid: Option<String>,
    pub alg: Alg,
    pub secret: Vec<u8>,
}

impl fmt::Debug for Key {
    // Never print key material, not even in a debug log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Default)]
pub struct VerifyPolicy {
    /// Seconds of clock skew allowed for exp, nbf and iat.
    pub leeway: i64,
    /// When set, `aud` (a string or an array of strings) must contain it.
    pub audience: Option<String>,
    /// When set, `iss` must equal it.
    pub issuer: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtError {
    Empty,
    TooLong,
    Malformed(&'static str),
    AlgNone,
    UnsupportedAlg(String),
    UnsupportedCrit,
    NoKey,
    BadSignature,
    Expired,
    NotYetValid,
    IssuedInFuture,
    BadClaim(&'static str),
    AudienceMismatch,
    IssuerMismatch,
}

impl fmt::Display for JwtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwtError::Empty => write!(f, "token is empty"),
            JwtError::TooLong => write!(f, "token is longer than {MAX_TOKEN_LEN} bytes"),
            JwtError::Malformed(what) => write!(f, "malformed token: {what}"),
            JwtError::AlgNone => write!(f, "unsigned tokens (alg none) are not accepted"),
            JwtError::UnsupportedAlg(a) => write!(f, "algorithm {a} is not accepted"),
            JwtError::UnsupportedCrit => write!(f, "token has critical header parameters"),
            JwtError::NoKey => write!(f, "no signing key matches the token header"),
            JwtError::BadSignature => write!(f, "invalid signature"),
            JwtError::Expired => write!(f, "JWT expired"),
            JwtError::NotYetValid => write!(f, "JWT not valid yet (nbf)"),
            JwtError::IssuedInFuture => write!(f, "JWT issued in the future (iat)"),
            JwtError::BadClaim(c) => write!(f, "claim {c} has the wrong type"),
            JwtError::AudienceMismatch => write!(f, "JWT audience is not accepted"),
            JwtError::IssuerMismatch => write!(f, "JWT issuer is not accepted"),
        }
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(segment: &str, what: &'static str) -> Result<Vec<u8>, JwtError> {
    URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| JwtError::Malformed(what))
}

fn hs256(secret: &[u8], signing_input: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length; new_from_slice cannot fail for it.
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length")); // ok: infallible
    mac.update(signing_input);
    mac
}

/// Sign `claims` with `key`. The header carries `kid` when the key has one.
pub fn sign(claims: &Map<String, Value>, key: &Key) -> String {
    let mut header = Map::new();
    header.insert("alg".into(), Value::from(key.alg.name()));
    header.insert("typ".into(), Value::from("JWT"));
    if let Some(kid) = &key.kid {
        header.insert("kid".into(), Value::from(kid.as_str()));
    }
    let mut out = b64(Value::Object(header).to_string().as_bytes());
    out.push('.');
    out.push_str(&b64(Value::Object(claims.clone()).to_string().as_bytes()));
    let sig = match key.alg {
        Alg::HS256 => hs256(&key.secret, out.as_bytes()).finalize().into_bytes(),
    };
    out.push('.');
    out.push_str(&b64(&sig));
    out
}

fn parse_object(bytes: &[u8], what: &'static str) -> Result<Map<String, Value>, JwtError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(JwtError::Malformed(what)),
    }
}

/// Verify `token` against `keys` at unix time `now`; return its claims.
pub fn verify(
    token: &str,
    keys: &[Key],
    now: i64,
    policy: &VerifyPolicy,
) -> Result<Map<String, Value>, JwtError> {
    if token.is_empty() {
        return Err(JwtError::Empty);
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwtError::TooLong);
    }
    let mut parts = token.split('.');
    let (Some(h64), Some(p64), Some(s64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed("expected three dot-separated segments"));
    };
    let header = parse_object(
        &unb64(h64, "header is not base64url")?,
        "header is not a JSON object",
    )?;
    let alg = match header.get("alg") {
        Some(Value::String(a)) => a.as_str(),
        _ => return Err(JwtError::Malformed("header has no alg")),
    };
    if alg.eq_ignore_ascii_case("none") {
        return Err(JwtError::AlgNone);
    }
    if header.contains_key("crit") {
        return Err(JwtError::UnsupportedCrit);
    }
    let Some(alg) = Alg::from_name(alg) else {
        return Err(JwtError::UnsupportedAlg(alg.chars().take(32).collect()));
    };
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.as_str()),
        Some(_) => return Err(JwtError::Malformed("kid is not a string")),
    };
    // The key decides: only keys of the header's algorithm, and when the token names a
    // kid, only the key with that kid (or keys that have none, like a bare shared secret).
    let candidates: Vec<&Key> = keys
        .iter()
        .filter(|k| k.alg == alg)
        .filter(|k| match (kid, &k.kid) {
            (Some(t), Some(k)) => t == k,
            _ => true,
        })
        .collect();
    if candidates.is_empty() {
        return Err(JwtError::NoKey);
    }
    let signature = unb64(s64, "signature is not base64url")?;
    let signing_input = &token.as_bytes()[..h64.len() + 1 + p64.len()];
    let valid = candidates.iter().any(|k| match k.alg {
        Alg::HS256 => hs256(&k.secret, signing_input)
            .verify_slice(&signature)
            .is_ok(),
    });
    if !valid {
        return Err(JwtError::BadSignature);
    }
    let claims = parse_object(
        &unb64(p64, "payload is not base64url")?,
        "payload is not a JSON object",
    )?;
    check_claims(&claims, now, policy)?;
    Ok(claims)
}

fn numeric_claim(claims: &Map<String, Value>, name: &'static str) -> Result<Option<f64>, JwtError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_f64().map(Some).ok_or(JwtError::BadClaim(name)),
        Some(_) => Err(JwtError::BadClaim(name)),
    }
}

/// The registered claims: exp, nbf, iat (numeric dates), aud and iss when the policy asks.
pub fn check_claims(
    claims: &Map<String, Value>,
    now: i64,
    policy: &VerifyPolicy,
) -> Result<(), JwtError> {
    let now = now as f64;
    let leeway = policy.leeway as f64;
    if let Some(exp) = numeric_claim(claims, "exp")? {
        if now > exp + leeway {
            return Err(JwtError::Expired);
        }
    }
    if let Some(nbf) = numeric_claim(claims, "nbf")? {
        if now + leeway < nbf {
            return Err(JwtError::NotYetValid);
        }
    }
    if let Some(iat) = numeric_claim(claims, "iat")? {
        if now + leeway < iat {
            return Err(JwtError::IssuedInFuture);
        }
    }
    if let Some(want) = &policy.audience {
        let ok = match claims.get("aud") {
            Some(Value::String(a)) => a == want,
            Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(want.as_str())),
            _ => false,
        };
        if !ok {
            return Err(JwtError::AudienceMismatch);
        }
    }
    if let Some(want) = &policy.issuer {
        if claims.get("iss").and_then(Value::as_str) != Some(want.as_str()) {
            return Err(JwtError::IssuerMismatch);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(secret: &str) -> Key {
        Key {
            kid: None,
            alg: Alg::HS256,
            secret: secret.as_bytes().to_vec(),
        }
    }

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    const NOW: i64 = 1_700_000_000;

    #[test]
    fn rfc7515_a1_hs256_vector_verifies() {
        // RFC 7515 appendix A.1: the JWK's k is base64url of the raw key bytes.
        let k = URL_SAFE_NO_PAD
            .decode("AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow")
            .unwrap();
        let token = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let key = Key {
            kid: None,
            alg: Alg::HS256,
            secret: k,
        };
        let c = verify(token, &[key], 1_300_819_380, &VerifyPolicy::default()).unwrap();
        assert_eq!(c["iss"], json!("joe"));
        assert_eq!(c["http://example.com/is_root"], json!(true));
    }

    #[test]
    fn round_trip() {
        let k = key("a-string-secret-at-least-32-chars-long!!");
        let t = sign(&claims(json!({"sub": "u1", "exp": NOW + 60})), &k);
        let c = verify(&t, &[k], NOW, &VerifyPolicy::default()).unwrap();
        assert_eq!(c["sub"], json!("u1"));
    }

    #[test]
    fn wrong_secret_and_tampering_rejected() {
        let k = key("a-string-secret-at-least-32-chars-long!!");
        let t = sign(&claims(json!({"sub": "u1", "role": "authenticated"})), &k);
        let other = key("another-secret-that-is-32-characters-x");
        assert_eq!(
            verify(&t, &[other], NOW, &VerifyPolicy::default()),
            Err(JwtError::BadSignature)
        );
        // Swap the payload for one claiming service_role, keep the signature.
        let parts: Vec<&str> = t.split('.').collect();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            b64(br#"{"sub":"u1","role":"service_role"}"#),
            parts[2]
        );
        assert_eq!(
            verify(
                &forged,
                std::slice::from_ref(&k),
                NOW,
                &VerifyPolicy::default()
            ),
            Err(JwtError::BadSignature)
        );
        // A flipped signature byte.
        let mut bad = t.clone();
        let last = bad.pop().unwrap();
        bad.push(if last == 'A' { 'B' } else { 'A' });
        assert!(verify(&bad, &[k], NOW, &VerifyPolicy::default()).is_err());
    }

    #[test]
    fn alg_none_and_other_algorithms_rejected() {
        let k = key("a-string-secret-at-least-32-chars-long!!");
        let body = b64(br#"{"sub":"u1"}"#);
        for (header, want) in [
            (r#"{"alg":"none"}"#, JwtError::AlgNone),
            (r#"{"alg":"NONE"}"#, JwtError::AlgNone),
            (
                r#"{"alg":"HS512"}"#,
                JwtError::UnsupportedAlg("HS512".into()),
            ),
            (
                r#"{"alg":"RS256"}"#,
                JwtError::UnsupportedAlg("RS256".into()),
            ),
            (
                r#"{"alg":"HS256","crit":["exp"]}"#,
                JwtError::UnsupportedCrit,
            ),
            (r#"{"typ":"JWT"}"#, JwtError::Malformed("header has no alg")),
        ] {
            let t = format!("{}.{}.", b64(header.as_bytes()), body);
            assert_eq!(
                verify(&t, std::slice::from_ref(&k), NOW, &VerifyPolicy::default()),
                Err(want),
                "{header}"
            );
        }
    }

    #[test]
    fn garbage_rejected_without_panic() {
        let k = key("a-string-secret-at-least-32-chars-long!!");
        let p = VerifyPolicy::default();
        assert_eq!(
            verify("", std::slice::from_ref(&k), NOW, &p),
            Err(JwtError::Empty)
        );
        for t in [
            "a",
            "a.b",
            "a.b.c.d",
            "...",
            "..",
            "e30.e30.",
            "e30=.e30.x",
            "!!.??.##",
            "eyJhbGciOiJIUzI1NiJ9.bm90anNvbg.AA",
        ] {
            assert!(verify(t, std::slice::from_ref(&k), NOW, &p).is_err(), "{t}");
        }
        let long = "a".repeat(MAX_TOKEN_LEN + 1);
        assert_eq!(verify(&long, &[k], NOW, &p), Err(JwtError::TooLong));
    }

    #[test]
    fn time_claims() {
        let k = key("a-string-secret-at-least-32-chars-long!!");
        let p = VerifyPolicy {
            leeway: 30,
            ..Default::default()
        };
        let ok = |c: Value| verify(&sign(&claims(c), &k), std::slice::from_ref(&k), NOW, &p);
        assert!(ok(json!({"exp": NOW - 29})).is_ok(), "inside leeway");
        assert_eq!(ok(json!({"exp": NOW - 31})), Err(JwtError::Expired));
        assert_eq!(ok(json!({"nbf": NOW + 31})), Err(JwtError::NotYetValid));
        assert_eq!(ok(json!({"iat": NOW + 31})), Err(JwtError::IssuedInFuture));
        assert_eq!(
            ok(json!({"exp": "tomorrow"})),
            Err(JwtError::BadClaim("exp"))
        );
        assert!(ok(json!({"exp": (NOW + 10) as f64 + 0.5})).is_ok());
    }

    #[test]
    fn audience_and_issuer() {
        let k = key("a-string-secret-at-least-32-chars-long!!");
        let p = VerifyPolicy {
            leeway: 0,
            audience: Some("authenticated".into()),
            issuer: Some("me".into()),
        };
        let run = |c: Value| verify(&sign(&claims(c), &k), std::slice::from_ref(&k), NOW, &p);
        assert!(run(json!({"aud": "authenticated", "iss": "me"})).is_ok());
        assert!(run(json!({"aud": ["x", "authenticated"], "iss": "me"})).is_ok());
        assert_eq!(
            run(json!({"aud": "other", "iss": "me"})),
            Err(JwtError::AudienceMismatch)
        );
        assert_eq!(run(json!({"iss": "me"})), Err(JwtError::AudienceMismatch));
        assert_eq!(
            run(json!({"aud": "authenticated", "iss": "evil"})),
            Err(JwtError::IssuerMismatch)
        );
    }

    #[test]
    fn kid_selects_the_key() {
        let a = Key {
            kid: Some("a".into()),
            ..key("secret-a-secret-a-secret-a-secret-a!")
        };
        let b = Key {
            kid: Some("b".into()),
            ..key("secret-b-secret-b-secret-b-secret-b!")
        };
        let t = sign(&claims(json!({"sub": "x"})), &b);
        assert!(verify(&t, &[a.clone(), b.clone()], NOW, &VerifyPolicy::default()).is_ok());
        assert_eq!(
            verify(&t, &[a], NOW, &VerifyPolicy::default()),
            Err(JwtError::NoKey)
        );
    }

    /// xorshift64: a deterministic stream for the mutation tests.
    fn next(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn mutated_and_random_tokens_never_verify_and_never_panic() {
        let k = key("a-string-secret-at-least-32-chars-long!!");
        let p = VerifyPolicy {
            leeway: 30,
            audience: Some("authenticated".into()),
            issuer: None,
        };
        let base = sign(
            &claims(
                json!({"sub": "u1", "aud": "authenticated", "exp": NOW + 60, "role": "authenticated"}),
            ),
            &k,
        );
        assert!(verify(&base, std::slice::from_ref(&k), NOW, &p).is_ok());
        let alphabet =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ {}\":,\x00\xff";
        let mut rng = 0x2545_F491_4F6C_DD1D_u64;
        for round in 0..100_000 {
            let mut t: Vec<u8> = if round % 10 == 0 {
                // Random bytes of random length.
                let len = (next(&mut rng) % 200) as usize;
                (0..len)
                    .map(|_| alphabet[(next(&mut rng) % alphabet.len() as u64) as usize])
                    .collect()
            } else {
                base.as_bytes().to_vec()
            };
            for _ in 0..=(next(&mut rng) % 4) {
                if t.is_empty() {
                    break;
                }
                let at = (next(&mut rng) % t.len() as u64) as usize;
                let c = alphabet[(next(&mut rng) % alphabet.len() as u64) as usize];
                match next(&mut rng) % 4 {
                    0 => t[at] = c,
                    1 => {
                        t.remove(at);
                    }
                    2 => t.insert(at, c),
                    _ => t.truncate(at),
                }
            }
            let token = String::from_utf8_lossy(&t).into_owned();
            let result =
                std::panic::catch_unwind(|| verify(&token, std::slice::from_ref(&k), NOW, &p));
            let result = result.unwrap_or_else(|_| panic!("verify panicked on {token:?}"));
            if token != base {
                assert!(result.is_err(), "a mutated token verified: {token:?}");
            }
        }
    }

    #[test]
    fn well_signed_tokens_with_odd_claims_never_panic() {
        let k = key("a-string-secret-at-least-32-chars-long!!");
        let p = VerifyPolicy {
            leeway: 30,
            audience: Some("a".into()),
            issuer: Some("i".into()),
        };
        let odd = [
            json!(null),
            json!(true),
            json!(-1),
            json!(1e308),
            json!(-1e308),
            json!("1700000000"),
            json!([]),
            json!({}),
            json!([1, "a", null]),
            json!(u64::MAX),
            json!(i64::MIN),
        ];
        for exp in &odd {
            for aud in &odd {
                for iss in &odd {
                    let c =
                        claims(json!({"exp": exp, "nbf": exp, "iat": exp, "aud": aud, "iss": iss}));
                    let t = sign(&c, &k);
                    let r =
                        std::panic::catch_unwind(|| verify(&t, std::slice::from_ref(&k), NOW, &p));
                    assert!(r.is_ok(), "panic for exp={exp} aud={aud} iss={iss}");
                }
            }
        }
    }
}
