//! OpenID Connect providers (Google and any issuer): discovery, the key set, the code
//! exchange and the ID token, verified before anything in it is believed.
//!
//! The key decides the algorithm: each JWK is mapped to one algorithm when the key set is
//! read, and a token is verified only with the algorithm of the key its `kid` names, so a
//! header cannot choose HS256 over an RSA public key, nor `none` (which jsonwebtoken's
//! header parser does not even know).

use super::http::{oauth_error, provider_text};
use super::{Provider, ProviderError, ProviderUser};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{json, Map, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a discovery document (and the key set read with it) is kept.
const DISCOVERY_TTL: Duration = Duration::from_secs(3600);
/// An unknown `kid` refetches the key set, at most this often.
const JWKS_REFETCH: Duration = Duration::from_secs(60);
const LEEWAY_SECS: u64 = 30;
const RSA_MIN_BYTES: usize = 256;
/// ID-token claims about the token itself rather than the user: not kept in identity_data.
const TOKEN_CLAIMS: &[&str] = &[
    "aud",
    "exp",
    "iat",
    "nbf",
    "nonce",
    "at_hash",
    "c_hash",
    "auth_time",
    "azp",
    "jti",
];

pub(super) struct Oidc {
    /// As configured: compared exactly with the discovery document's and the tokens' `iss`.
    pub issuer: String,
    /// Other `iss` values accepted in ID tokens (Google's scheme-less one).
    extra_issuers: Vec<String>,
    discovery: Mutex<Option<(Instant, Arc<Discovery>)>>,
    jwks: Mutex<Option<KeySet>>,
}

pub(super) struct Discovery {
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    pub userinfo_endpoint: Option<String>,
    /// client_secret_basic (the default of OIDC) rather than client_secret_post.
    pub basic_auth: bool,
}

#[derive(Clone)]
struct KeySet {
    uri: String,
    fetched: Instant,
    keys: Arc<Vec<Key>>,
}

pub(super) struct Key {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

#[derive(Debug, PartialEq)]
pub(super) enum VerifyError {
    /// The token names a key the set does not have (it may have rotated).
    UnknownKid,
    Bad(String),
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding a cache lock leaves a valid cache: go on with it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// An endpoint from a discovery document: https, or http on a loopback host.
fn endpoint(doc: &Value, member: &str) -> Result<Option<String>, String> {
    let Some(v) = doc.get(member) else {
        return Ok(None);
    };
    let text = v
        .as_str()
        .ok_or_else(|| format!("the discovery document's {member} is not a string"))?;
    super::config::secure_url(member, text).map(|_| Some(text.to_string()))
}

fn str_claim<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    claims.get(name).and_then(Value::as_str)
}

/// `email_verified` is a boolean, but some providers send "true".
fn truthy(v: Option<&Value>) -> bool {
    matches!(v, Some(Value::Bool(true))) || matches!(v, Some(Value::String(s)) if s == "true")
}

/// Reads a key set, skipping keys that cannot verify tokens here (encryption keys,
/// symmetric keys, unknown types or curves, short RSA keys).
pub(super) fn parse_jwks(doc: &Value) -> Result<Vec<Key>, String> {
    let list = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("the key set has no \"keys\" list")?;
    Ok(list.iter().filter_map(|jwk| parse_jwk(jwk).ok()).collect())
}

fn parse_jwk(jwk: &Value) -> Result<Key, ()> {
    let s = |name: &str| jwk.get(name).and_then(Value::as_str);
    if s("use").is_some_and(|u| u != "sig") {
        return Err(());
    }
    let declared = match jwk.get("alg") {
        None => None,
        Some(Value::String(a)) => Some(a.parse::<Algorithm>().map_err(|_| ())?),
        Some(_) => return Err(()),
    };
    let (alg, key) = match (s("kty"), s("crv")) {
        (Some("RSA"), _) => {
            let (n, e) = (s("n").ok_or(())?, s("e").ok_or(())?);
            let bytes = URL_SAFE_NO_PAD.decode(n).map_err(|_| ())?;
            let significant = bytes.iter().skip_while(|b| **b == 0).count();
            if significant < RSA_MIN_BYTES {
                return Err(());
            }
            let alg = declared.unwrap_or(Algorithm::RS256);
            use Algorithm::*;
            if !matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512) {
                return Err(());
            }
            (alg, DecodingKey::from_rsa_components(n, e).map_err(|_| ())?)
        }
        (Some("EC"), Some(crv @ ("P-256" | "P-384"))) => {
            let alg = if crv == "P-256" {
                Algorithm::ES256
            } else {
                Algorithm::ES384
            };
            if declared.is_some_and(|d| d != alg) {
                return Err(());
            }
            let key = DecodingKey::from_ec_components(s("x").ok_or(())?, s("y").ok_or(())?)
                .map_err(|_| ())?;
            (alg, key)
        }
        (Some("OKP"), Some("Ed25519")) => {
            if declared.is_some_and(|d| d != Algorithm::EdDSA) {
                return Err(());
            }
            let key = DecodingKey::from_ed_components(s("x").ok_or(())?).map_err(|_| ())?;
            (Algorithm::EdDSA, key)
        }
        _ => return Err(()),
    };
    Ok(Key {
        kid: s("kid").map(str::to_string),
        alg,
        key,
    })
}

/// Verifies an ID token and returns its claims: signature by the key its `kid` names (with
/// that key's algorithm), `iss` one of `issuers`, `aud` holding `client_id` (and `azp` equal
/// to it when there are several audiences), `exp` (30 s leeway), `nonce`, a non-empty `sub`.
pub(super) fn verify_id_token(
    token: &str,
    keys: &[Key],
    client_id: &str,
    issuers: &[&str],
    nonce: &str,
) -> Result<Map<String, Value>, VerifyError> {
    let bad = |m: &str| VerifyError::Bad(m.to_string());
    let header = jsonwebtoken::decode_header(token)
        .map_err(|_| bad("the ID token is malformed or its alg is not supported"))?;
    let key = match &header.kid {
        Some(kid) => keys
            .iter()
            .find(|k| k.kid.as_deref() == Some(kid.as_str()))
            .ok_or(VerifyError::UnknownKid)?,
        None if keys.len() == 1 => &keys[0],
        None => {
            return Err(bad(
                "the ID token names no key (kid) and the key set has several",
            ))
        }
    };
    let mut validation = Validation::new(key.alg);
    validation.set_issuer(issuers);
    validation.set_audience(&[client_id]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation.leeway = LEEWAY_SECS;
    validation.validate_nbf = true;
    let data =
        jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation).map_err(|e| {
            bad(match e.kind() {
                ErrorKind::InvalidAlgorithm => "the ID token's alg is not its key's",
                ErrorKind::InvalidSignature => "the ID token's signature is not valid",
                ErrorKind::ExpiredSignature => "the ID token has expired",
                ErrorKind::ImmatureSignature => "the ID token is not valid yet (nbf)",
                ErrorKind::InvalidIssuer => "the ID token's issuer is not the provider",
                ErrorKind::InvalidAudience => "the ID token is not for this client (aud)",
                ErrorKind::MissingRequiredClaim(_) => "the ID token lacks exp, iss, aud or sub",
                _ => "the ID token is not valid",
            })
        })?;
    let claims = data.claims;
    let several_audiences = claims
        .get("aud")
        .and_then(Value::as_array)
        .is_some_and(|a| a.len() > 1);
    if several_audiences {
        if let Some(azp) = claims.get("azp") {
            if azp.as_str() != Some(client_id) {
                return Err(bad("the ID token's azp is not this client"));
            }
        }
    }
    if str_claim(&claims, "nonce") != Some(nonce) {
        return Err(bad("the ID token's nonce is not this sign-in's"));
    }
    if str_claim(&claims, "sub").is_none_or(str::is_empty) {
        return Err(bad("the ID token's sub is empty"));
    }
    Ok(claims)
}

/// The user from verified claims: identity_data is the claims without the token's own
/// (`TOKEN_CLAIMS`), with GoTrue's `provider_id`, `full_name` and `avatar_url` added.
pub(super) fn user_from_claims(
    mut claims: Map<String, Value>,
    access_token: Option<String>,
    refresh_token: Option<String>,
) -> ProviderUser {
    for c in TOKEN_CLAIMS {
        claims.remove(*c);
    }
    let subject = str_claim(&claims, "sub").unwrap_or_default().to_string();
    let email = str_claim(&claims, "email")
        .map(|e| e.trim().to_lowercase())
        .filter(|e| !e.is_empty());
    let email_verified = email.is_some() && truthy(claims.get("email_verified"));
    claims.insert("provider_id".into(), json!(subject));
    match &email {
        Some(e) => claims.insert("email".into(), json!(e)),
        None => claims.remove("email"),
    };
    claims.insert("email_verified".into(), json!(email_verified));
    claims
        .entry("phone_verified")
        .or_insert_with(|| json!(false));
    if let Some(name) = claims.get("name").cloned() {
        claims.entry("full_name").or_insert(name);
    }
    if let Some(picture) = claims.get("picture").cloned() {
        claims.entry("avatar_url").or_insert(picture);
    }
    ProviderUser {
        subject,
        email,
        email_verified,
        identity_data: Value::Object(claims),
        access_token,
        refresh_token,
    }
}

impl Oidc {
    pub fn new(issuer: String, extra_issuers: Vec<String>) -> Oidc {
        Oidc {
            issuer,
            extra_issuers,
            discovery: Mutex::new(None),
            jwks: Mutex::new(None),
        }
    }

    /// Makes the cached key set look `by` older.
    #[cfg(test)]
    pub fn age_key_set(&self, by: Duration) {
        if let Some(set) = lock(&self.jwks).as_mut() {
            set.fetched = set.fetched.checked_sub(by).unwrap_or(set.fetched);
        }
    }

    /// The discovery document, fetched at most once an hour (a failure is not cached).
    pub async fn discovery(
        &self,
        http: &super::http::Http,
        name: &str,
    ) -> Result<Arc<Discovery>, ProviderError> {
        if let Some((at, d)) = lock(&self.discovery).as_ref() {
            if at.elapsed() < DISCOVERY_TTL {
                return Ok(d.clone());
            }
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.issuer.trim_end_matches('/')
        );
        let what = format!("{name}: the discovery document");
        let (status, doc) = http
            .json(http.get(&url), &what, ProviderError::unexpected)
            .await?;
        let unusable = |m: String| ProviderError::unexpected(format!("{what}: {m}"));
        if status != 200 {
            return Err(unusable(format!("answered {status}")));
        }
        if doc.get("issuer").and_then(Value::as_str) != Some(self.issuer.as_str()) {
            return Err(unusable(format!(
                "its issuer is not {:?} (the configured issuer must match it exactly)",
                self.issuer
            )));
        }
        let required = |member: &str| {
            endpoint(&doc, member)
                .and_then(|e| e.ok_or_else(|| format!("{member} is missing")))
                .map_err(unusable)
        };
        let methods = doc.get("token_endpoint_auth_methods_supported");
        let basic_auth = match methods.and_then(Value::as_array) {
            None => true,
            Some(list) => list.iter().any(|m| m == "client_secret_basic"),
        };
        let d = Arc::new(Discovery {
            authorization_endpoint: required("authorization_endpoint")?,
            token_endpoint: required("token_endpoint")?,
            jwks_uri: required("jwks_uri")?,
            userinfo_endpoint: endpoint(&doc, "userinfo_endpoint").map_err(unusable)?,
            basic_auth,
        });
        *lock(&self.discovery) = Some((Instant::now(), d.clone()));
        Ok(d)
    }

    /// The key set: the cached one unless it is older than the discovery TTL, belongs to
    /// another jwks_uri, or `refetch` asks and the last fetch is over a minute old.
    async fn keys(
        &self,
        p: &Provider,
        d: &Discovery,
        refetch: bool,
    ) -> Result<Arc<Vec<Key>>, ProviderError> {
        if let Some(set) = lock(&self.jwks).clone() {
            let age = set.fetched.elapsed();
            let fresh = set.uri == d.jwks_uri && age < DISCOVERY_TTL;
            if fresh && (!refetch || age < JWKS_REFETCH) {
                return Ok(set.keys);
            }
        }
        let what = format!("{}: the key set", p.name);
        let (status, doc) = p
            .http
            .json(p.http.get(&d.jwks_uri), &what, ProviderError::unexpected)
            .await?;
        if status != 200 {
            return Err(ProviderError::unexpected(format!(
                "{what} answered {status}"
            )));
        }
        let keys = Arc::new(
            parse_jwks(&doc).map_err(|m| ProviderError::unexpected(format!("{what}: {m}")))?,
        );
        *lock(&self.jwks) = Some(KeySet {
            uri: d.jwks_uri.clone(),
            fetched: Instant::now(),
            keys: keys.clone(),
        });
        Ok(keys)
    }

    pub async fn exchange(
        &self,
        p: &Provider,
        code: &str,
        nonce: &str,
    ) -> Result<ProviderUser, ProviderError> {
        let name = &p.name;
        let d = self.discovery(&p.http, name).await?;
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", &p.redirect_uri),
        ];
        let mut request = p
            .http
            .post(&d.token_endpoint)
            .header("accept", "application/json");
        if d.basic_auth {
            // RFC 6749 2.3.1: both parts form-encoded before base64.
            let enc =
                |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            let credentials = format!("{}:{}", enc(&p.client_id), enc(&p.secret));
            request = request.header(
                "authorization",
                format!("Basic {}", STANDARD.encode(credentials)),
            );
        } else {
            form.push(("client_id", &p.client_id));
            form.push(("client_secret", &p.secret));
        }
        let what = format!("{name}: the token request");
        let (status, token) = p
            .http
            .json(request.form(&form), &what, ProviderError::bad)
            .await?;
        if let Some(e) = oauth_error(&token) {
            return Err(ProviderError::bad(format!(
                "{name}: the code was refused: {e}"
            )));
        }
        let id_token = match token.get("id_token").and_then(Value::as_str) {
            Some(t) if (200..300).contains(&status) => t,
            _ => {
                return Err(ProviderError::bad(format!(
                    "{name}: the token answer ({status}) has no ID token"
                )))
            }
        };
        let text = |k: &str| {
            token
                .get(k)
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
                .map(str::to_string)
        };
        let (access_token, refresh_token) = (text("access_token"), text("refresh_token"));

        let mut issuers = vec![self.issuer.as_str()];
        issuers.extend(self.extra_issuers.iter().map(String::as_str));
        let keys = self.keys(p, &d, false).await?;
        let mut verified = verify_id_token(id_token, &keys, &p.client_id, &issuers, nonce);
        if verified == Err(VerifyError::UnknownKid) {
            let keys = self.keys(p, &d, true).await?;
            verified = verify_id_token(id_token, &keys, &p.client_id, &issuers, nonce);
        }
        let mut claims = verified.map_err(|e| {
            ProviderError::bad(match e {
                VerifyError::UnknownKid => {
                    format!("{name}: the ID token's key is not in the key set")
                }
                VerifyError::Bad(m) => format!("{name}: {m}"),
            })
        })?;

        let has_email = str_claim(&claims, "email").is_some_and(|e| !e.is_empty());
        if let (false, Some(userinfo), Some(at)) = (has_email, &d.userinfo_endpoint, &access_token)
        {
            let info = self.userinfo(p, userinfo, at).await?;
            if info.get("sub") != claims.get("sub") {
                return Err(ProviderError::bad(format!(
                    "{name}: the userinfo's sub is not the ID token's"
                )));
            }
            // The ID token's claims win; userinfo only fills in what it lacks.
            for (k, v) in info {
                if !TOKEN_CLAIMS.contains(&k.as_str()) {
                    claims.entry(k).or_insert(v);
                }
            }
        }
        Ok(user_from_claims(claims, access_token, refresh_token))
    }

    async fn userinfo(
        &self,
        p: &Provider,
        url: &str,
        access_token: &str,
    ) -> Result<Map<String, Value>, ProviderError> {
        let what = format!("{}: the userinfo", p.name);
        let request = p
            .http
            .get(url)
            .bearer_auth(access_token)
            .header("accept", "application/json");
        let (status, body) = p.http.json(request, &what, ProviderError::bad).await?;
        match body {
            Value::Object(m) if status == 200 => Ok(m),
            body => {
                let detail = oauth_error(&body)
                    .or_else(|| provider_text(body.get("message")))
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default();
                Err(ProviderError::bad(format!(
                    "{what} answered {status}{detail}"
                )))
            }
        }
    }
}
