//! Compact JWS (RFC 7515) on the `jsonwebtoken` crate: its header parsing
//! (`decode_header`, which refuses any `alg` it does not know, `none` among them), its keys
//! (`EncodingKey`/`DecodingKey`) and its crypto provider's signers and verifiers (HMAC
//! compared in constant time). What we promise on top is ours and written here: the key
//! decides the algorithm (the header must merely agree), a `kid` selects exactly one key,
//! revoked kids are refused by name, `crit` is refused, and the registered claims (exp with
//! the leeway, nbf, iat, audiences, issuer; RFC 7519 §4.1) are checked against the
//! database's clock and settings.
//!
//! Why not `jsonwebtoken::decode`: it builds the verifier from the key at every call (an
//! HMAC key schedule, an EC point or RSA key parsed again) and parses the header twice and
//! the claims twice; its `Validation` reads the system clock itself and treats `aud` and a
//! fractional `exp` differently from our rules. Here each key's signer and verifier are made
//! once when the keys are loaded, by the same provider `decode` uses, and the header and
//! claims are parsed once each.
//! Algorithms: HS256, ES256, RS256, EdDSA. Key material is read and written in `jwk`.
//! Pure Rust: no Postgres here, so everything is unit-tested with plain `#[test]`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde_json::{Map, Value};
use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;

/// Tokens longer than this are refused before any decoding work.
pub const MAX_TOKEN_LEN: usize = 64 * 1024;

/// jsonwebtoken's crypto backend (see README, Signing keys: chosen by measurement).
fn provider() -> &'static CryptoProvider {
    &jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    HS256,
    ES256,
    RS256,
    EdDSA,
}

impl Alg {
    pub const ALL: [Alg; 4] = [Alg::HS256, Alg::ES256, Alg::RS256, Alg::EdDSA];

    pub fn name(self) -> &'static str {
        match self {
            Alg::HS256 => "HS256",
            Alg::ES256 => "ES256",
            Alg::RS256 => "RS256",
            Alg::EdDSA => "EdDSA",
        }
    }

    pub fn from_name(name: &str) -> Option<Alg> {
        Alg::ALL.into_iter().find(|a| a.name() == name)
    }

    pub fn is_symmetric(self) -> bool {
        self == Alg::HS256
    }

    fn jwt(self) -> Algorithm {
        match self {
            Alg::HS256 => Algorithm::HS256,
            Alg::ES256 => Algorithm::ES256,
            Alg::RS256 => Algorithm::RS256,
            Alg::EdDSA => Algorithm::EdDSA,
        }
    }

    fn from_jwt(alg: Algorithm) -> Option<Alg> {
        match alg {
            Algorithm::HS256 => Some(Alg::HS256),
            Algorithm::ES256 => Some(Alg::ES256),
            Algorithm::RS256 => Some(Alg::RS256),
            Algorithm::EdDSA => Some(Alg::EdDSA),
            _ => None,
        }
    }
}

/// A usable key: jsonwebtoken's signer (absent for keys that only verify: a trusted
/// issuer's JWKS) and verifier, made once from its `EncodingKey`/`DecodingKey`; the
/// encoded header of the tokens it signs; its public JWK (asymmetric keys only).
pub struct Active {
    signer: Option<Box<dyn JwtSigner>>,
    verifier: Box<dyn JwtVerifier>,
    pub public_jwk: Option<Map<String, Value>>,
    /// The encoded header of the last kid this key signed under (always the same one).
    header: RefCell<Option<(Option<String>, String)>>,
}

/// jsonwebtoken's EdDSA verifier calls ed25519-dalek's `verify`; ours keeps the stricter
/// `verify_strict` (no small-order R, no weak public key) that auth_ext has always
/// applied. It plugs into jsonwebtoken as a verifier of its own trait.
struct StrictEd25519(ed25519_dalek::VerifyingKey);

impl StrictEd25519 {
    fn boxed(decoding: &DecodingKey) -> Result<Box<dyn JwtVerifier>, String> {
        let bad = || "the EdDSA key is not an Ed25519 public key".to_string();
        let bytes: &[u8; 32] = decoding
            .try_get_as_bytes()
            .map_err(|_| bad())?
            .try_into()
            .map_err(|_| bad())?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(bytes).map_err(|_| bad())?;
        Ok(Box::new(StrictEd25519(key)))
    }
}

impl jsonwebtoken::signature::Verifier<Vec<u8>> for StrictEd25519 {
    fn verify(
        &self,
        msg: &[u8],
        signature: &Vec<u8>,
    ) -> Result<(), jsonwebtoken::signature::Error> {
        let sig = ed25519_dalek::Signature::from_slice(signature)?;
        self.0.verify_strict(msg, &sig)
    }
}

impl JwtVerifier for StrictEd25519 {
    fn algorithm(&self) -> Algorithm {
        Algorithm::EdDSA
    }
}

/// What a key can do.
#[derive(Clone)]
pub enum Material {
    Active(Rc<Active>),
    /// A revoked key: kept by kid so that its tokens get a clear error, verifies nothing.
    Revoked,
}

impl Material {
    /// The material of `alg` from jsonwebtoken's keys; the provider refuses a key that
    /// does not fit the algorithm.
    pub fn new(
        alg: Alg,
        encoding: Option<&EncodingKey>,
        decoding: &DecodingKey,
        public_jwk: Option<Map<String, Value>>,
    ) -> Result<Material, String> {
        let signer = encoding
            .map(|k| (provider().signer_factory)(&alg.jwt(), k))
            .transpose()
            .map_err(|e| format!("the {} key cannot sign: {e}", alg.name()))?;
        let verifier = match alg {
            Alg::EdDSA => StrictEd25519::boxed(decoding)?,
            _ => (provider().verifier_factory)(&alg.jwt(), decoding)
                .map_err(|e| format!("the {} key cannot verify: {e}", alg.name()))?,
        };
        Ok(Material::Active(Rc::new(Active {
            signer,
            verifier,
            public_jwk,
            header: RefCell::new(None),
        })))
    }

    /// An HS256 key: the secret's bytes (for our own keys the UTF-8 bytes of the secret
    /// string, as PostgREST's `jwt-secret` uses it).
    pub fn hmac(secret: &[u8]) -> Result<Material, String> {
        let e = |_| "an HS256 secret cannot be empty".to_string();
        Material::new(
            Alg::HS256,
            Some(&EncodingKey::from_secret(secret).map_err(e)?),
            &DecodingKey::from_secret(secret).map_err(e)?,
            None,
        )
    }
}

/// A key with its id and algorithm.
#[derive(Clone)]
pub struct Key {
    pub kid: Option<String>,
    pub alg: Alg,
    pub material: Material,
}

impl Key {
    #[cfg(test)]
    pub fn hmac(kid: Option<String>, secret: &[u8]) -> Key {
        Key {
            kid,
            alg: Alg::HS256,
            material: Material::hmac(secret).unwrap(),
        }
    }

    pub fn is_revoked(&self) -> bool {
        matches!(self.material, Material::Revoked)
    }

    pub fn public_jwk(&self) -> Option<&Map<String, Value>> {
        match &self.material {
            Material::Active(a) => a.public_jwk.as_ref(),
            Material::Revoked => None,
        }
    }

    /// The raw JWS signature over `input` (RFC 7518 §3).
    pub fn sign_input(&self, input: &[u8]) -> Result<Vec<u8>, JwtError> {
        match &self.material {
            Material::Active(a) => match &a.signer {
                Some(s) => s
                    .try_sign(input)
                    .map_err(|_| JwtError::Signing("the signature could not be made")),
                None => Err(JwtError::Signing("the key has no private part")),
            },
            Material::Revoked => Err(JwtError::Signing("the key is revoked")),
        }
    }

    /// Does `signature` sign `input` under this key?
    fn verify_input(&self, input: &[u8], signature: &Vec<u8>) -> bool {
        match &self.material {
            Material::Active(a) => a.verifier.verify(input, signature).is_ok(),
            Material::Revoked => false,
        }
    }

    /// The encoded protected header of the tokens this key signs: jsonwebtoken's header
    /// with `typ`, `alg` and `kid`, written once per key.
    fn header(&self) -> Result<String, JwtError> {
        if let Material::Active(a) = &self.material {
            if let Some((kid, h)) = &*a.header.borrow() {
                if *kid == self.kid {
                    return Ok(h.clone());
                }
            }
        }
        let mut header = Header::new(self.alg.jwt());
        header.kid = self.kid.clone();
        let encoded = serde_json::to_vec(&header)
            .map(|h| b64(&h))
            .map_err(|_| JwtError::Signing("the header could not be written"))?;
        if let Material::Active(a) = &self.material {
            *a.header.borrow_mut() = Some((self.kid.clone(), encoded.clone()));
        }
        Ok(encoded)
    }
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
    /// When not empty, `aud` (a string or an array of strings) must contain one of these.
    pub audiences: Vec<String>,
    /// When set, `iss` must equal it.
    pub issuer: Option<String>,
    /// Refuse tokens without `exp` (trusted issuers' tokens always carry one).
    pub require_exp: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtError {
    Empty,
    TooLong,
    Malformed(&'static str),
    AlgNone,
    UnsupportedAlg(String),
    UnsupportedCrit,
    NoKey(Alg),
    UnknownKid(String),
    RevokedKid(String),
    AlgMismatch { kid: String, key: Alg, token: Alg },
    BadSignature,
    Expired,
    MissingExp,
    NotYetValid,
    IssuedInFuture,
    BadClaim(&'static str),
    AudienceMismatch,
    IssuerMismatch,
    Signing(&'static str),
}

/// At most this many characters of a token-supplied string go into an error message.
fn clip(s: &str) -> String {
    s.chars().take(64).collect()
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
            JwtError::NoKey(alg) => write!(f, "no key verifies {} tokens", alg.name()),
            JwtError::UnknownKid(k) => write!(f, "unknown signing key (kid \"{k}\")"),
            JwtError::RevokedKid(k) => write!(f, "signing key \"{k}\" has been revoked"),
            JwtError::AlgMismatch { kid, key, token } => write!(
                f,
                "key \"{kid}\" is {} but the token says {}",
                key.name(),
                token.name()
            ),
            JwtError::BadSignature => write!(f, "invalid signature"),
            JwtError::Expired => write!(f, "JWT expired"),
            JwtError::MissingExp => write!(f, "JWT has no exp claim"),
            JwtError::NotYetValid => write!(f, "JWT not valid yet (nbf)"),
            JwtError::IssuedInFuture => write!(f, "JWT issued in the future (iat)"),
            JwtError::BadClaim(c) => write!(f, "claim {c} has the wrong type"),
            JwtError::AudienceMismatch => write!(f, "JWT audience is not accepted"),
            JwtError::IssuerMismatch => write!(f, "JWT issuer is not accepted"),
            JwtError::Signing(why) => write!(f, "cannot sign: {why}"),
        }
    }
}

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn unb64(segment: &str, what: &'static str) -> Result<Vec<u8>, JwtError> {
    URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| JwtError::Malformed(what))
}

/// Sign `claims` (a JSON object's text) with `key`. The header carries `kid` when the key
/// has one.
pub fn sign_json(claims: &[u8], key: &Key) -> Result<String, JwtError> {
    let mut out = key.header()?;
    out.push('.');
    URL_SAFE_NO_PAD.encode_string(claims, &mut out);
    let sig = key.sign_input(out.as_bytes())?;
    out.push('.');
    URL_SAFE_NO_PAD.encode_string(sig, &mut out);
    Ok(out)
}

/// A JSON value written with every object's members in `jsonb`'s own order (shorter keys
/// first, then bytewise). The order means nothing to JSON, but Postgres' jsonb input sorts
/// an object's keys and its sort returns at once on sorted input: a token written this way
/// is read into `jsonb` (by `auth.verify_jwt`, or a policy's `::jsonb`) about a quarter
/// faster.
struct JsonbOrder<'a>(&'a Value);

/// [`JsonbOrder`] of an object.
struct JsonbOrderObject<'a>(&'a Map<String, Value>);

impl serde::Serialize for JsonbOrderObject<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut members: Vec<(&String, &Value)> = self.0.iter().collect();
        members.sort_by(|(a, _), (b, _)| {
            a.len()
                .cmp(&b.len())
                .then_with(|| a.as_bytes().cmp(b.as_bytes()))
        });
        let mut out = s.serialize_map(Some(members.len()))?;
        for (k, v) in members {
            out.serialize_entry(k, &JsonbOrder(v))?;
        }
        out.end()
    }
}

impl serde::Serialize for JsonbOrder<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        match self.0 {
            Value::Object(m) => JsonbOrderObject(m).serialize(s),
            Value::Array(a) => {
                let mut out = s.serialize_seq(Some(a.len()))?;
                for v in a {
                    out.serialize_element(&JsonbOrder(v))?;
                }
                out.end()
            }
            other => other.serialize(s),
        }
    }
}

/// Sign `claims` with `key`, written in `jsonb`'s member order.
pub fn sign(claims: &Map<String, Value>, key: &Key) -> Result<String, JwtError> {
    let json = serde_json::to_vec(&JsonbOrderObject(claims))
        .map_err(|_| JwtError::Signing("the claims could not be written"))?;
    sign_json(&json, key)
}

/// The registered claims the checks read (RFC 7519 §4.1); every other member of the
/// payload is skipped, not built.
#[derive(Debug, Default, serde::Deserialize)]
pub struct Registered {
    exp: Option<Value>,
    nbf: Option<Value>,
    iat: Option<Value>,
    aud: Option<Value>,
    iss: Option<Value>,
}

impl Registered {
    pub fn iss(&self) -> Option<&str> {
        self.iss.as_ref().and_then(Value::as_str)
    }

    /// An estimate of the heap these claims hold (an `aud` list can be long).
    pub fn heap_bytes(&self) -> usize {
        fn bytes(v: &Value) -> usize {
            std::mem::size_of::<Value>()
                + match v {
                    Value::String(s) => s.len(),
                    Value::Array(a) => a.iter().map(bytes).sum(),
                    Value::Object(m) => m.iter().map(|(k, v)| 64 + k.len() + bytes(v)).sum(),
                    _ => 0,
                }
        }
        [&self.exp, &self.nbf, &self.iat, &self.aud, &self.iss]
            .into_iter()
            .flatten()
            .map(bytes)
            .sum()
    }
}

/// A payload's JSON text, checked to be one JSON object in UTF-8 (what jsonb input will
/// be given), and its registered claims.
pub fn read_payload(bytes: Vec<u8>) -> Result<(String, Registered), JwtError> {
    const BAD: JwtError = JwtError::Malformed("payload is not a JSON object");
    let text = String::from_utf8(bytes).map_err(|_| BAD)?;
    // A struct also deserializes from an array; the payload must be an object.
    if !text
        .trim_start_matches([' ', '\t', '\n', '\r'])
        .starts_with('{')
    {
        return Err(BAD);
    }
    let registered = serde_json::from_str::<Registered>(&text).map_err(|_| BAD)?;
    Ok((text, registered))
}

/// A JSON object's text as a map.
pub fn object(text: &str) -> Result<Map<String, Value>, JwtError> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(JwtError::Malformed("payload is not a JSON object")),
    }
}

/// A token whose header passed the checks, its signature not yet verified.
#[derive(Debug)]
pub struct Parsed<'t> {
    pub alg: Alg,
    pub kid: Option<String>,
    signing_input: &'t [u8],
    payload: &'t str,
    signature: &'t str,
}

/// Why jsonwebtoken refused a header, in our words (the refusal is its decision; this
/// only names it).
fn header_error(h64: &str) -> JwtError {
    let Ok(bytes) = URL_SAFE_NO_PAD.decode(h64) else {
        return JwtError::Malformed("header is not base64url");
    };
    let Ok(Value::Object(header)) = serde_json::from_slice::<Value>(&bytes) else {
        return JwtError::Malformed("header is not a JSON object");
    };
    match header.get("alg") {
        Some(Value::String(a)) if a.eq_ignore_ascii_case("none") => return JwtError::AlgNone,
        Some(Value::String(a)) if a.parse::<Algorithm>().is_err() => {
            return JwtError::UnsupportedAlg(clip(a))
        }
        Some(Value::String(_)) => {}
        _ => return JwtError::Malformed("header has no alg"),
    }
    if header.get("kid").is_some_and(|k| !k.is_string()) {
        return JwtError::Malformed("kid is not a string");
    }
    JwtError::Malformed("header is not a valid JWS header")
}

/// Split and check the header: three segments, a JWS header (jsonwebtoken's) with an
/// `alg` we accept, no `crit`, a string `kid` if any.
pub fn parse(token: &str) -> Result<Parsed<'_>, JwtError> {
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
    let header = jsonwebtoken::decode_header(token).map_err(|_| header_error(h64))?;
    // RFC 7515 §4.1.11: an extension we do not understand must not be ignored. We
    // understand none, so any crit refuses the token (jsonwebtoken would accept b64).
    if header.crit.is_some() {
        return Err(JwtError::UnsupportedCrit);
    }
    let Some(alg) = Alg::from_jwt(header.alg) else {
        return Err(JwtError::UnsupportedAlg(format!("{:?}", header.alg)));
    };
    Ok(Parsed {
        alg,
        kid: header.kid,
        signing_input: &token.as_bytes()[..h64.len() + 1 + p64.len()],
        payload: p64,
        signature: s64,
    })
}

impl Parsed<'_> {
    /// The payload's JSON text. Not trusted until `verify_signature` succeeds.
    pub fn payload_json(&self) -> Result<Vec<u8>, JwtError> {
        unb64(self.payload, "payload is not base64url")
    }

    /// Choose the key and check the signature. The key decides: a `kid` selects exactly
    /// that key (a revoked one is refused by name, one of another algorithm is refused as
    /// algorithm confusion); keys without a kid, like a bare shared secret or a JWK without
    /// one, stand for any kid. Without a `kid` every key of the header's algorithm is tried.
    pub fn verify_signature(&self, keys: &[Key]) -> Result<(), JwtError> {
        let mut candidates: Vec<&Key> = Vec::new();
        if let Some(kid) = &self.kid {
            for k in keys
                .iter()
                .filter(|k| k.kid.as_deref() == Some(kid.as_str()))
            {
                if k.is_revoked() {
                    return Err(JwtError::RevokedKid(clip(kid)));
                }
                if k.alg != self.alg {
                    return Err(JwtError::AlgMismatch {
                        kid: clip(kid),
                        key: k.alg,
                        token: self.alg,
                    });
                }
                candidates.push(k);
            }
            if candidates.is_empty() {
                candidates.extend(
                    keys.iter()
                        .filter(|k| k.kid.is_none() && k.alg == self.alg && !k.is_revoked()),
                );
                if candidates.is_empty() {
                    return Err(JwtError::UnknownKid(clip(kid)));
                }
            }
        } else {
            candidates.extend(keys.iter().filter(|k| k.alg == self.alg && !k.is_revoked()));
            if candidates.is_empty() {
                return Err(JwtError::NoKey(self.alg));
            }
        }
        let signature = unb64(self.signature, "signature is not base64url")?;
        if candidates
            .iter()
            .any(|k| k.verify_input(self.signing_input, &signature))
        {
            Ok(())
        } else {
            Err(JwtError::BadSignature)
        }
    }
}

/// Verify `token` against `keys` at unix time `now`; return its claims. The extension
/// itself goes through `keys::verify`, which adds trusted issuers and the per-token memory
/// around the same three steps.
#[cfg(test)]
pub fn verify(
    token: &str,
    keys: &[Key],
    now: i64,
    policy: &VerifyPolicy,
) -> Result<Map<String, Value>, JwtError> {
    let parsed = parse(token)?;
    let (text, registered) = read_payload(parsed.payload_json()?)?;
    parsed.verify_signature(keys)?;
    check_claims(&registered, now, policy)?;
    object(&text)
}

fn numeric_claim(claim: &Option<Value>, name: &'static str) -> Result<Option<f64>, JwtError> {
    match claim {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_f64().map(Some).ok_or(JwtError::BadClaim(name)),
        Some(_) => Err(JwtError::BadClaim(name)),
    }
}

/// The registered claims: exp, nbf, iat (numeric dates), aud and iss when the policy asks.
pub fn check_claims(claims: &Registered, now: i64, policy: &VerifyPolicy) -> Result<(), JwtError> {
    let now = now as f64;
    let leeway = policy.leeway as f64;
    match numeric_claim(&claims.exp, "exp")? {
        Some(exp) if now > exp + leeway => return Err(JwtError::Expired),
        None if policy.require_exp => return Err(JwtError::MissingExp),
        _ => {}
    }
    if let Some(nbf) = numeric_claim(&claims.nbf, "nbf")? {
        if now + leeway < nbf {
            return Err(JwtError::NotYetValid);
        }
    }
    if let Some(iat) = numeric_claim(&claims.iat, "iat")? {
        if now + leeway < iat {
            return Err(JwtError::IssuedInFuture);
        }
    }
    if !policy.audiences.is_empty() {
        let accepted = |a: &str| policy.audiences.iter().any(|w| w == a);
        let ok = match &claims.aud {
            Some(Value::String(a)) => accepted(a),
            Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).any(accepted),
            _ => false,
        };
        if !ok {
            return Err(JwtError::AudienceMismatch);
        }
    }
    if let Some(want) = &policy.issuer {
        if claims.iss() != Some(want.as_str()) {
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
        Key::hmac(None, secret.as_bytes())
    }

    fn sign(c: &Map<String, Value>, k: &Key) -> String {
        super::sign(c, k).unwrap()
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
        let key = Key::hmac(None, &k);
        let c = verify(token, &[key], 1_300_819_380, &VerifyPolicy::default()).unwrap();
        assert_eq!(c["iss"], json!("joe"));
        assert_eq!(c["http://example.com/is_root"], json!(true));
    }

    #[test]
    fn claims_are_written_in_jsonb_member_order() {
        let k = key("secret");
        let c = claims(json!({
            "sub": "s", "aud": "a", "session_id": "x", "exp": 1, "role": "r",
            "app_metadata": {"providers": ["email"], "provider": "email", "z": {"bb": 1, "a": 2}},
            "amr": [{"timestamp": 1, "method": "password"}]
        }));
        let token = sign(&c, &k);
        let payload = unb64(token.split('.').nth(1).unwrap(), "payload").unwrap();
        assert_eq!(
            String::from_utf8(payload).unwrap(),
            r#"{"amr":[{"method":"password","timestamp":1}],"aud":"a","exp":1,"sub":"s","role":"r","session_id":"x","app_metadata":{"z":{"a":2,"bb":1},"provider":"email","providers":["email"]}}"#
        );
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
                r#"{"alg":"RS512"}"#,
                JwtError::UnsupportedAlg("RS512".into()),
            ),
            (r#"{"alg":"RS256"}"#, JwtError::NoKey(Alg::RS256)),
            (
                r#"{"alg":"HS256","kid":7}"#,
                JwtError::Malformed("kid is not a string"),
            ),
            (
                r#"{"alg":"HS256","crit":["exp"]}"#,
                JwtError::UnsupportedCrit,
            ),
            // The one crit jsonwebtoken itself accepts: still refused here.
            (
                r#"{"alg":"HS256","b64":true,"crit":["b64"]}"#,
                JwtError::UnsupportedCrit,
            ),
            (r#"{"alg":"none","kid":"k"}"#, JwtError::AlgNone),
            (
                r#"{"alg":"HS256","typ":7}"#,
                JwtError::Malformed("header is not a valid JWS header"),
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
            audiences: vec!["authenticated".into(), "other-app".into()],
            issuer: Some("me".into()),
            require_exp: false,
        };
        let run = |c: Value| verify(&sign(&claims(c), &k), std::slice::from_ref(&k), NOW, &p);
        assert!(run(json!({"aud": "authenticated", "iss": "me"})).is_ok());
        assert!(run(json!({"aud": ["x", "authenticated"], "iss": "me"})).is_ok());
        assert!(run(json!({"aud": "other-app", "iss": "me"})).is_ok());
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
            verify(&t, std::slice::from_ref(&a), NOW, &VerifyPolicy::default()),
            Err(JwtError::UnknownKid("b".into()))
        );
        // A revoked key is refused by name, before any signature work.
        let revoked = Key {
            material: Material::Revoked,
            ..b.clone()
        };
        assert_eq!(
            verify(&t, &[a.clone(), revoked], NOW, &VerifyPolicy::default()),
            Err(JwtError::RevokedKid("b".into()))
        );
        // A kid-less key (a bare shared secret) stands for any kid.
        let bare = Key { kid: None, ..b };
        assert!(verify(&t, &[a, bare], NOW, &VerifyPolicy::default()).is_ok());
    }

    #[test]
    fn exp_can_be_required() {
        let k = key("a-string-secret-at-least-32-chars-long!!");
        let p = VerifyPolicy {
            require_exp: true,
            ..Default::default()
        };
        let t = sign(&claims(json!({"sub": "x"})), &k);
        assert_eq!(
            verify(&t, std::slice::from_ref(&k), NOW, &p),
            Err(JwtError::MissingExp)
        );
        let t = sign(&claims(json!({"sub": "x", "exp": NOW + 5})), &k);
        assert!(verify(&t, &[k], NOW, &p).is_ok());
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
            audiences: vec!["authenticated".into()],
            issuer: None,
            require_exp: true,
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
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                verify(&token, std::slice::from_ref(&k), NOW, &p)
            }));
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
            audiences: vec!["a".into()],
            issuer: Some("i".into()),
            require_exp: true,
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
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        verify(&t, std::slice::from_ref(&k), NOW, &p)
                    }));
                    assert!(r.is_ok(), "panic for exp={exp} aud={aud} iss={iss}");
                }
            }
        }
    }
}
