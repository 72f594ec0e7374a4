//! Provider tests: authorization URLs, ID-token verification with keys made here, and
//! whole exchanges against small providers served in-process on loopback.

use super::oidc::{parse_jwks, user_from_claims, verify_id_token, VerifyError};
use super::*;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

const CLIENT_ID: &str = "client-1";
const SECRET: &str = "s3cret-value";
const CODE: &str = "the-code-123";
const STATE: &str = "state-abc";

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

// ---- keys ----

struct RsaKey {
    pem: String,
    n: String,
    e: String,
}

fn rsa_key(which: usize) -> &'static RsaKey {
    static KEYS: OnceLock<Vec<RsaKey>> = OnceLock::new();
    let keys = KEYS.get_or_init(|| {
        use rsa::pkcs8::EncodePrivateKey;
        use rsa::traits::PublicKeyParts;
        (0..2)
            .map(|_| {
                let k = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap();
                RsaKey {
                    pem: k.to_pkcs8_pem(Default::default()).unwrap().to_string(),
                    n: b64(&k.n().to_bytes_be()),
                    e: b64(&k.e().to_bytes_be()),
                }
            })
            .collect()
    });
    &keys[which]
}

fn rsa_jwk(which: usize, kid: &str) -> Value {
    let k = rsa_key(which);
    json!({"kty": "RSA", "kid": kid, "use": "sig", "n": k.n, "e": k.e})
}

fn rsa_sign(which: usize, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = kid.map(str::to_string);
    let key = EncodingKey::from_rsa_pem(rsa_key(which).pem.as_bytes()).unwrap();
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

fn claims(iss: &str, nonce: &str) -> Value {
    json!({
        "iss": iss, "sub": "user-42", "aud": CLIENT_ID, "exp": now() + 300, "iat": now(),
        "nonce": nonce, "email": "Ann@Example.com", "email_verified": true,
        "name": "Ann", "picture": "https://img.example.com/ann.png", "at_hash": "x"
    })
}

const ISS: &str = "https://idp.example.com";

fn verify(token: &str, keys: &Value) -> Result<serde_json::Map<String, Value>, VerifyError> {
    let keys = parse_jwks(keys).unwrap();
    verify_id_token(token, &keys, CLIENT_ID, &[ISS], &nonce_for(STATE))
}

fn refused(token: &str, keys: &Value, needle: &str) {
    match verify(token, keys) {
        Err(VerifyError::Bad(m)) => assert!(m.contains(needle), "{m:?} lacks {needle:?}"),
        other => panic!("expected a refusal with {needle:?}, got {other:?}"),
    }
}

// ---- nonce and authorization URLs ----

#[test]
fn nonce_is_the_hash_of_the_state() {
    assert_eq!(
        nonce_for("abc"),
        "ebb1cf5aac91468eb75207fb55d2fdda07ddc7a0a11fbc4b6dacca4d295b9506"
    );
    assert_ne!(nonce_for("abc"), nonce_for("abd"));
}

fn query(url: &str) -> (String, Vec<(String, String)>) {
    let u = url::Url::parse(url).unwrap();
    let base = format!("{}://{}{}", u.scheme(), u.authority(), u.path());
    (base, u.query_pairs().into_owned().collect())
}

fn one<'a>(pairs: &'a [(String, String)], k: &str) -> &'a str {
    let found: Vec<_> = pairs.iter().filter(|(key, _)| key == k).collect();
    assert_eq!(found.len(), 1, "{k} appears {} times", found.len());
    &found[0].1
}

fn github_vars(base: &str) -> Vec<(String, String)> {
    [
        ("AUTH_EXTERNAL_GITHUB_CLIENT_ID", CLIENT_ID),
        ("AUTH_EXTERNAL_GITHUB_SECRET", SECRET),
        ("AUTH_EXTERNAL_GITHUB_URL", base),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

#[tokio::test]
async fn github_authorize_url() {
    let mut vars = github_vars("https://github.example.com");
    vars.push((
        "AUTH_EXTERNAL_GITHUB_SCOPES".into(),
        "user:email read:org".into(),
    ));
    let p = Providers::from_vars(vars, "https://auth.example.com").unwrap();
    let gh = p.get("github").unwrap();
    let extra: Vec<(String, String)> = [
        ("login", "octocat"),
        ("allow_signup", "false"),
        ("client_id", "evil"),
        ("Redirect_URI", "https://evil.example.com"),
        ("state", "evil"),
        ("scope", "admin:org"),
        ("nonce", "evil"),
        ("response_type", "token"),
        ("code_challenge", "evil"),
        ("request_uri", "https://evil.example.com/req"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let url = gh
        .authorize_url(STATE, Some("repo  read:org,gist"), &extra)
        .await
        .unwrap();
    let (base, q) = query(&url);
    assert_eq!(base, "https://github.example.com/login/oauth/authorize");
    assert_eq!(one(&q, "client_id"), CLIENT_ID);
    assert_eq!(one(&q, "redirect_uri"), "https://auth.example.com/callback");
    assert_eq!(one(&q, "response_type"), "code");
    assert_eq!(one(&q, "state"), STATE);
    assert_eq!(one(&q, "scope"), "user:email read:org repo gist");
    assert_eq!(one(&q, "login"), "octocat");
    assert_eq!(one(&q, "allow_signup"), "false");
    for k in ["nonce", "code_challenge", "request_uri", "Redirect_URI"] {
        assert!(q.iter().all(|(key, _)| key != k), "{k} forwarded");
    }
    assert!(!url.contains(SECRET));
}

// ---- ID token verification ----

#[test]
fn id_token_verification() {
    let keys = json!({"keys": [rsa_jwk(0, "k0")]});
    let nonce = nonce_for(STATE);
    let good = rsa_sign(0, Some("k0"), &claims(ISS, &nonce));
    let c = verify(&good, &keys).unwrap();
    assert_eq!(c["sub"], "user-42");

    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims(ISS, &nonce);
        f(&mut c);
        rsa_sign(0, Some("k0"), &c)
    };
    refused(&with(&|c| c["aud"] = json!("other")), &keys, "aud");
    refused(&with(&|c| c["aud"] = json!(["a", "b"])), &keys, "aud");
    refused(
        &with(&|c| c["iss"] = json!("https://evil.example.com")),
        &keys,
        "issuer",
    );
    refused(&with(&|c| c["exp"] = json!(now() - 120)), &keys, "expired");
    refused(&with(&|c| c["nbf"] = json!(now() + 120)), &keys, "nbf");
    refused(
        &with(&|c| c["nonce"] = json!(nonce_for("other"))),
        &keys,
        "nonce",
    );
    refused(
        &with(&|c| drop(c.as_object_mut().map(|o| o.remove("nonce")))),
        &keys,
        "nonce",
    );
    refused(
        &with(&|c| drop(c.as_object_mut().map(|o| o.remove("exp")))),
        &keys,
        "lacks exp",
    );
    refused(&with(&|c| c["sub"] = json!("")), &keys, "sub");
    // Within the 30 s leeway an expired token still passes.
    assert!(verify(&with(&|c| c["exp"] = json!(now() - 10)), &keys).is_ok());
    // Several audiences: azp must be this client when present.
    let multi = with(&|c| {
        c["aud"] = json!([CLIENT_ID, "other"]);
        c["azp"] = json!("other");
    });
    refused(&multi, &keys, "azp");
    assert!(verify(&with(&|c| c["aud"] = json!([CLIENT_ID, "other"])), &keys).is_ok());

    // Signed by another key under the same kid.
    refused(
        &rsa_sign(1, Some("k0"), &claims(ISS, &nonce)),
        &keys,
        "signature",
    );
    // A kid the set lacks asks for a refetch.
    assert_eq!(
        verify(&rsa_sign(0, Some("k9"), &claims(ISS, &nonce)), &keys).err(),
        Some(VerifyError::UnknownKid)
    );
    // No kid: the only key is used; with two keys, refused.
    assert!(verify(&rsa_sign(0, None, &claims(ISS, &nonce)), &keys).is_ok());
    let two = json!({"keys": [rsa_jwk(0, "k0"), rsa_jwk(1, "k1")]});
    refused(
        &rsa_sign(0, None, &claims(ISS, &nonce)),
        &two,
        "names no key",
    );
    assert!(verify(&rsa_sign(1, Some("k1"), &claims(ISS, &nonce)), &two).is_ok());

    // alg none: an unsigned token.
    let unsigned = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","kid":"k0"}"#),
        b64(claims(ISS, &nonce).to_string().as_bytes())
    );
    refused(&unsigned, &keys, "alg is not supported");
    // HS256 keyed with the RSA public key (the algorithm-confusion attack): the key is
    // RS256, so the header's HS256 is refused before any MAC is computed.
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some("k0".into());
    for secret in [rsa_key(0).pem.as_bytes(), rsa_key(0).n.as_bytes()] {
        let forged = jsonwebtoken::encode(
            &h,
            &claims(ISS, &nonce),
            &EncodingKey::from_secret(secret).unwrap(),
        )
        .unwrap();
        refused(&forged, &keys, "alg is not its key's");
    }
    // An RS256 key declared PS256 in the set: an RS256 header is refused.
    let mut ps = rsa_jwk(0, "k0");
    ps["alg"] = json!("PS256");
    refused(&good, &json!({"keys": [ps]}), "alg is not its key's");
}

#[test]
fn es256_id_token() {
    use p256::pkcs8::EncodePrivateKey;
    let mut d = [0u8; 32];
    let key = loop {
        getrandom::fill(&mut d).unwrap();
        if let Ok(k) = p256::ecdsa::SigningKey::from_slice(&d) {
            break k;
        }
    };
    let point = key.verifying_key().to_sec1_bytes();
    let (x, y) = point[1..].split_at(32);
    let keys =
        json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "e", "x": b64(x), "y": b64(y)}]});
    let der = key.to_pkcs8_der().unwrap();
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("e".into());
    let nonce = nonce_for(STATE);
    let token = jsonwebtoken::encode(
        &header,
        &claims(ISS, &nonce),
        &EncodingKey::from_ec_der(der.as_bytes()),
    )
    .unwrap();
    assert!(verify(&token, &keys).is_ok());
    // An RS256 token under the EC key's kid.
    refused(
        &rsa_sign(0, Some("e"), &claims(ISS, &nonce)),
        &keys,
        "alg is not its key's",
    );
}

#[test]
fn key_set_parsing_skips_unusable_keys() {
    let short_n = b64(&[0xff; 128]);
    let set = json!({"keys": [
        {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
        {"kty": "RSA", "kid": "enc", "use": "enc", "n": rsa_key(0).n, "e": "AQAB"},
        {"kty": "RSA", "kid": "short", "n": short_n, "e": "AQAB"},
        {"kty": "RSA", "kid": "es", "alg": "ES256", "n": rsa_key(0).n, "e": "AQAB"},
        {"kty": "EC", "crv": "P-521", "kid": "p521", "x": "AA", "y": "AA"},
        {"kty": "RSA", "kid": "none", "alg": "none", "n": rsa_key(0).n, "e": "AQAB"},
        rsa_jwk(0, "good"),
    ]});
    let keys = parse_jwks(&set).unwrap();
    assert_eq!(keys.len(), 1);
    assert!(parse_jwks(&json!({"keys": "x"})).is_err());
}

#[test]
fn identity_data_from_claims() {
    let mut c = claims(ISS, "n").as_object().cloned().unwrap();
    c.insert("email_verified".into(), json!("true"));
    let u = user_from_claims(c, Some("at".into()), None);
    assert_eq!(u.subject, "user-42");
    assert_eq!(u.email.as_deref(), Some("ann@example.com"));
    assert!(u.email_verified);
    let d = u.identity_data.as_object().unwrap();
    for gone in ["aud", "exp", "iat", "nonce", "at_hash"] {
        assert!(!d.contains_key(gone), "{gone} kept");
    }
    assert_eq!(d["iss"], ISS);
    assert_eq!(d["provider_id"], "user-42");
    assert_eq!(d["full_name"], "Ann");
    assert_eq!(d["avatar_url"], "https://img.example.com/ann.png");
    assert_eq!(d["email_verified"], true);
    assert_eq!(d["phone_verified"], false);

    let mut c = claims(ISS, "n").as_object().cloned().unwrap();
    c.insert("email_verified".into(), json!("yes"));
    assert!(!user_from_claims(c, None, None).email_verified);
    let mut c = claims(ISS, "n").as_object().cloned().unwrap();
    c.remove("email");
    let u = user_from_claims(c, None, None);
    assert!(u.email.is_none() && !u.email_verified);
}

// ---- in-process providers ----

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    authorization: Option<String>,
    body: String,
}

type Reply = (u16, Vec<u8>);
type Route = Box<dyn Fn(&Seen) -> Reply + Send + Sync>;

struct Fake {
    base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Fake {
    fn seen(&self, path: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path == path)
            .cloned()
            .collect()
    }
}

/// Serves `routes` (given the server's base URL) on an ephemeral loopback port.
async fn fake(routes: impl FnOnce(&str) -> Route) -> Fake {
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let route: Arc<Route> = Arc::new(routes(&base));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (route, log) = (route.clone(), log.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (route, log) = (route.clone(), log.clone());
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let seen = Seen {
                            method: parts.method.to_string(),
                            path: parts.uri.path().to_string(),
                            authorization: parts
                                .headers
                                .get("authorization")
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_string),
                            body: String::from_utf8_lossy(&body).into_owned(),
                        };
                        let (status, body) = route(&seen);
                        log.lock().unwrap().push(seen);
                        let mut resp = hyper::Response::new(Full::new(Bytes::from(body)));
                        *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                        resp.headers_mut()
                            .insert("content-type", "application/json".parse().unwrap());
                        if status == 302 {
                            resp.headers_mut()
                                .insert("location", "/followed".parse().unwrap());
                        }
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Fake { base, seen }
}

fn ok(v: Value) -> Reply {
    (200, v.to_string().into_bytes())
}

fn form(body: &str) -> HashMap<String, String> {
    url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect()
}

/// A GitHub-shaped provider; `user` is the /user answer, `token` the token answer.
fn github_routes(token: Reply, user: Reply) -> impl FnOnce(&str) -> Route {
    move |_base| {
        Box::new(move |s: &Seen| match s.path.as_str() {
            "/login/oauth/access_token" => token.clone(),
            "/api/v3/user" if s.authorization.as_deref() == Some("Bearer gho_token") => {
                user.clone()
            }
            "/api/v3/user/emails" if s.authorization.as_deref() == Some("Bearer gho_token") => {
                ok(json!([
                    {"email": "old@example.com", "primary": false, "verified": true},
                    {"email": "Octo@Example.com", "primary": true, "verified": true}
                ]))
            }
            _ => (401, br#"{"message":"Bad credentials"}"#.to_vec()),
        })
    }
}

fn github_provider(base: &str) -> Arc<Provider> {
    Providers::from_vars(github_vars(base), "https://auth.example.com")
        .unwrap()
        .get("github")
        .unwrap()
}

#[tokio::test]
async fn github_exchange() {
    let token =
        ok(json!({"access_token": "gho_token", "token_type": "bearer", "scope": "user:email"}));
    let user = ok(
        json!({"id": 583231, "login": "octocat", "name": "The Octocat",
                         "avatar_url": "https://avatars.example.com/u/583231", "email": null}),
    );
    let f = fake(github_routes(token, user)).await;
    let gh = github_provider(&f.base);
    let u = gh.exchange(CODE, STATE).await.unwrap();
    assert_eq!(u.subject, "583231");
    assert_eq!(u.email.as_deref(), Some("octo@example.com"));
    assert!(u.email_verified);
    assert_eq!(u.access_token.as_deref(), Some("gho_token"));
    assert_eq!(u.refresh_token, None);
    assert_eq!(
        u.identity_data,
        json!({
            "iss": format!("{}/api/v3", f.base), "sub": "583231", "provider_id": "583231",
            "name": "The Octocat", "full_name": "The Octocat",
            "user_name": "octocat", "preferred_username": "octocat",
            "avatar_url": "https://avatars.example.com/u/583231",
            "email": "octo@example.com", "email_verified": true, "phone_verified": false
        })
    );
    let t = f.seen("/login/oauth/access_token");
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].method, "POST");
    let body = form(&t[0].body);
    assert_eq!(body["client_id"], CLIENT_ID);
    assert_eq!(body["client_secret"], SECRET);
    assert_eq!(body["code"], CODE);
    assert_eq!(body["redirect_uri"], "https://auth.example.com/callback");
}

#[tokio::test]
async fn github_errors() {
    // GitHub's error answer comes with 200; the provider echoing the code must not leak it.
    let token = ok(json!({"error": "bad_verification_code",
                          "error_description": format!("The code {CODE} is incorrect or expired.")}));
    let f = fake(github_routes(token, ok(json!({})))).await;
    let e = github_provider(&f.base)
        .exchange(CODE, STATE)
        .await
        .unwrap_err();
    assert_eq!(e.code, "bad_oauth_callback");
    assert!(e.message.contains("bad_verification_code"), "{e}");
    assert!(!e.message.contains(CODE), "{e}");

    // A user without an id.
    let token = ok(json!({"access_token": "gho_token"}));
    let f = fake(github_routes(token.clone(), ok(json!({"login": "x"})))).await;
    let e = github_provider(&f.base)
        .exchange(CODE, STATE)
        .await
        .unwrap_err();
    assert_eq!(
        (e.code, e.message.as_str()),
        ("bad_oauth_callback", "github: the user has no id")
    );

    // A user answer over 1 MiB (with a Content-Length).
    let big = (200, vec![b' '; (1 << 20) + 1]);
    let f = fake(github_routes(token.clone(), big)).await;
    let e = github_provider(&f.base)
        .exchange(CODE, STATE)
        .await
        .unwrap_err();
    assert!(e.message.contains("larger than 1 MiB"), "{e}");

    // A redirect is not followed.
    let f = fake(github_routes((302, b"{}".to_vec()), ok(json!({})))).await;
    let e = github_provider(&f.base)
        .exchange(CODE, STATE)
        .await
        .unwrap_err();
    assert_eq!(e.code, "bad_oauth_callback");
    assert!(e.message.contains("no access token"), "{e}");
    assert!(f.seen("/followed").is_empty());

    // Nobody listening: a network failure.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let e = github_provider(&base)
        .exchange(CODE, STATE)
        .await
        .unwrap_err();
    assert_eq!(e.code, "unexpected_failure");
    assert!(!e.message.contains(SECRET) && !e.message.contains(CODE));
}

/// A streamed (chunked, no Content-Length) answer that grows past 1 MiB is cut off.
#[tokio::test]
async fn oversized_streamed_answer() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                            transfer-encoding: chunked\r\n\r\n";
                if s.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, " ".repeat(64 * 1024));
                for _ in 0..64 {
                    if s.write_all(chunk.as_bytes()).await.is_err() {
                        return;
                    }
                }
                let _ = s.write_all(b"0\r\n\r\n").await;
            });
        }
    });
    let e = github_provider(&base)
        .exchange(CODE, STATE)
        .await
        .unwrap_err();
    assert_eq!(e.code, "bad_oauth_callback");
    assert!(e.message.contains("larger than 1 MiB"), "{e}");
}

// ---- OIDC ----

struct OidcFake {
    /// The ID token's claims, with {nonce} replaced by the request's nonce at signing.
    claims: Value,
    kid: &'static str,
    /// Keys published: (key index, kid); after the first fetch, `later` if set.
    published: Vec<(usize, &'static str)>,
    later: Option<Vec<(usize, &'static str)>>,
    auth_methods: Value,
    userinfo: Value,
}

fn oidc_routes(cfg: OidcFake) -> impl FnOnce(&str) -> Route {
    move |base| {
        let base = base.to_string();
        let fetches = std::sync::atomic::AtomicUsize::new(0);
        Box::new(move |s: &Seen| match s.path.as_str() {
            "/.well-known/openid-configuration" => ok(json!({
                "issuer": base,
                "authorization_endpoint": format!("{base}/authorize"),
                "token_endpoint": format!("{base}/token"),
                "jwks_uri": format!("{base}/jwks"),
                "userinfo_endpoint": format!("{base}/userinfo"),
                "token_endpoint_auth_methods_supported": cfg.auth_methods,
            })),
            "/jwks" => {
                let n = fetches.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let published = match &cfg.later {
                    Some(later) if n > 0 => later,
                    _ => &cfg.published,
                };
                let keys: Vec<Value> = published.iter().map(|(i, kid)| rsa_jwk(*i, kid)).collect();
                ok(json!({ "keys": keys }))
            }
            "/token" => {
                let f = form(&s.body);
                let mut c = cfg.claims.clone();
                c["iss"] = json!(base);
                c["nonce"] = json!(nonce_for(STATE));
                if f.get("code").map(String::as_str) != Some(CODE) {
                    return (400, br#"{"error":"invalid_grant"}"#.to_vec());
                }
                ok(
                    json!({"access_token": "at-1", "refresh_token": "rt-1", "token_type": "Bearer",
                          "id_token": rsa_sign(0, Some(cfg.kid), &c)}),
                )
            }
            "/userinfo" if s.authorization.as_deref() == Some("Bearer at-1") => {
                ok(cfg.userinfo.clone())
            }
            _ => (404, b"{}".to_vec()),
        })
    }
}

fn oidc_provider(base: &str) -> Arc<Provider> {
    let vars = [
        ("AUTH_EXTERNAL_ACME_CLIENT_ID", CLIENT_ID),
        ("AUTH_EXTERNAL_ACME_SECRET", SECRET),
        ("AUTH_EXTERNAL_ACME_ISSUER", base),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect::<Vec<_>>();
    Providers::from_vars(vars, "https://auth.example.com")
        .unwrap()
        .get("acme")
        .unwrap()
}

fn oidc_fake() -> OidcFake {
    OidcFake {
        claims: claims("", ""),
        kid: "k0",
        published: vec![(0, "k0")],
        later: None,
        auth_methods: json!(["client_secret_basic", "client_secret_post"]),
        userinfo: json!({}),
    }
}

#[tokio::test]
async fn oidc_authorize_url() {
    let f = fake(oidc_routes(oidc_fake())).await;
    let p = oidc_provider(&f.base);
    let extra = vec![
        ("prompt".to_string(), "consent".to_string()),
        ("nonce".to_string(), "evil".to_string()),
    ];
    let url = p
        .authorize_url(STATE, Some("groups email"), &extra)
        .await
        .unwrap();
    let (base, q) = query(&url);
    assert_eq!(base, format!("{}/authorize", f.base));
    assert_eq!(one(&q, "scope"), "openid email profile groups");
    assert_eq!(one(&q, "nonce"), nonce_for(STATE));
    assert_eq!(one(&q, "state"), STATE);
    assert_eq!(one(&q, "prompt"), "consent");
    // The discovery document is cached.
    p.authorize_url(STATE, None, &[]).await.unwrap();
    assert_eq!(f.seen("/.well-known/openid-configuration").len(), 1);
}

#[tokio::test]
async fn oidc_exchange() {
    let f = fake(oidc_routes(oidc_fake())).await;
    let p = oidc_provider(&f.base);
    let u = p.exchange(CODE, STATE).await.unwrap();
    assert_eq!(u.subject, "user-42");
    assert_eq!(u.email.as_deref(), Some("ann@example.com"));
    assert!(u.email_verified);
    assert_eq!(u.access_token.as_deref(), Some("at-1"));
    assert_eq!(u.refresh_token.as_deref(), Some("rt-1"));
    assert_eq!(u.identity_data["iss"], json!(f.base));
    assert_eq!(u.identity_data["full_name"], "Ann");
    // client_secret_basic, the code and the redirect URI in the form.
    let t = f.seen("/token");
    let expected = format!("Basic {}", STANDARD.encode(format!("{CLIENT_ID}:{SECRET}")));
    assert_eq!(t[0].authorization.as_deref(), Some(expected.as_str()));
    let body = form(&t[0].body);
    assert_eq!(body["code"], CODE);
    assert_eq!(body["redirect_uri"], "https://auth.example.com/callback");
    assert!(!body.contains_key("client_secret"));
    assert!(f.seen("/userinfo").is_empty());
    // The wrong state gives the wrong nonce.
    let e = p.exchange(CODE, "another-state").await.unwrap_err();
    assert_eq!(e.code, "bad_oauth_callback");
    assert!(e.message.contains("nonce"), "{e}");
    // A refused code.
    let e = p.exchange("wrong", STATE).await.unwrap_err();
    assert_eq!(e.message, "acme: the code was refused: invalid_grant");
}

#[tokio::test]
async fn oidc_post_auth_and_userinfo() {
    let mut cfg = oidc_fake();
    cfg.auth_methods = json!(["client_secret_post"]);
    cfg.claims.as_object_mut().unwrap().remove("email");
    cfg.userinfo = json!({"sub": "user-42", "email": "Ann@Example.com", "email_verified": "true",
                          "locale": "fr"});
    let f = fake(oidc_routes(cfg)).await;
    let u = oidc_provider(&f.base).exchange(CODE, STATE).await.unwrap();
    assert_eq!(u.email.as_deref(), Some("ann@example.com"));
    assert!(u.email_verified);
    assert_eq!(u.identity_data["locale"], "fr");
    let t = f.seen("/token");
    assert_eq!(t[0].authorization, None);
    let body = form(&t[0].body);
    assert_eq!(
        (body["client_id"].as_str(), body["client_secret"].as_str()),
        (CLIENT_ID, SECRET)
    );

    // A userinfo about someone else is refused.
    let mut cfg = oidc_fake();
    cfg.claims.as_object_mut().unwrap().remove("email");
    cfg.userinfo = json!({"sub": "user-43", "email": "eve@example.com", "email_verified": true});
    let f = fake(oidc_routes(cfg)).await;
    let e = oidc_provider(&f.base)
        .exchange(CODE, STATE)
        .await
        .unwrap_err();
    assert!(e.message.contains("userinfo's sub"), "{e}");
}

#[tokio::test]
async fn oidc_bad_tokens() {
    // Signed for another audience.
    let mut cfg = oidc_fake();
    cfg.claims["aud"] = json!("someone-else");
    let f = fake(oidc_routes(cfg)).await;
    let e = oidc_provider(&f.base)
        .exchange(CODE, STATE)
        .await
        .unwrap_err();
    assert_eq!(e.code, "bad_oauth_callback");
    assert!(e.message.contains("aud"), "{e}");

    // Signed with a key the set does not publish under its kid: one refetch, then refused.
    let mut cfg = oidc_fake();
    cfg.kid = "rotated";
    let f = fake(oidc_routes(cfg)).await;
    let p = oidc_provider(&f.base);
    let e = p.exchange(CODE, STATE).await.unwrap_err();
    assert!(e.message.contains("not in the key set"), "{e}");
    assert_eq!(
        f.seen("/jwks").len(),
        1,
        "refetched within a minute of the fetch"
    );
    let e = p.exchange(CODE, STATE).await.unwrap_err();
    assert!(e.message.contains("not in the key set"), "{e}");
    assert_eq!(f.seen("/jwks").len(), 1);

    // A rotation: the new kid is published on the next fetch, which an unknown kid makes
    // once the set is over a minute old.
    let mut cfg = oidc_fake();
    cfg.kid = "rotated";
    cfg.later = Some(vec![(1, "k0"), (0, "rotated")]);
    let f = fake(oidc_routes(cfg)).await;
    let p = oidc_provider(&f.base);
    assert!(p.exchange(CODE, STATE).await.is_err());
    age_key_set(&p, std::time::Duration::from_secs(61));
    let u = p.exchange(CODE, STATE).await.unwrap();
    assert_eq!(u.subject, "user-42");
    assert_eq!(f.seen("/jwks").len(), 2);

    // The discovery document names another issuer.
    let f =
        fake(|_| Box::new(|_: &Seen| ok(json!({"issuer": "https://evil.example.com"}))) as Route)
            .await;
    let e = oidc_provider(&f.base)
        .exchange(CODE, STATE)
        .await
        .unwrap_err();
    assert_eq!(e.code, "unexpected_failure");
    assert!(e.message.contains("issuer"), "{e}");
}

fn age_key_set(p: &Provider, by: std::time::Duration) {
    match &p.kind {
        Kind::Oidc(o) => o.age_key_set(by),
        Kind::Github(_) => panic!("not OIDC"),
    }
}
