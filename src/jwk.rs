//! Key material: generation from the operating system's CSPRNG, import of private keys (PEM
//! or JWK), the form we store them in (PKCS#8 PEM; the secret string for HS256), and public
//! JWKs (RFC 7517/7518/8037) for `auth.jwks()` and for trusted issuers' key sets.
//! Pure Rust, unit-tested with plain `#[test]`.

use crate::jwt::{b64, unb64, Alg, Key, Material};
use ed25519_dalek::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
use jsonwebtoken::{DecodingKey, EncodingKey};
use rsa::pkcs1::{DecodeRsaPrivateKey as _, EncodeRsaPrivateKey as _};
use rsa::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, RsaPrivateKey, RsaPublicKey};
use serde_json::{Map, Value};

/// RSA moduli accepted: 2048 bits at least (RFC 7518 §3.3), at most 8192 so that a hostile
/// key set cannot make each verification arbitrarily slow.
pub const RSA_MIN_BITS: usize = 2048;
pub const RSA_MAX_BITS: usize = 8192;
/// The shortest HS256 secret accepted (PostgREST's rule).
pub const HS256_MIN_LEN: usize = 32;

type Res<T> = Result<T, String>;

fn random_bytes<const N: usize>() -> Res<[u8; N]> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).map_err(|e| format!("random number generator failed: {e}"))?;
    Ok(buf)
}

fn pem<E: std::fmt::Display>(r: Result<impl AsRef<str>, E>) -> Res<String> {
    r.map(|s| s.as_ref().to_string())
        .map_err(|e| format!("cannot encode the key: {e}"))
}

/// The modulus size rule, for our keys and issuers' keys alike.
fn check_rsa_bits(key: &impl PublicKeyParts) -> Res<()> {
    let bits = key.size() * 8;
    if (RSA_MIN_BITS..=RSA_MAX_BITS).contains(&bits) {
        Ok(())
    } else {
        Err(format!(
            "RSA keys must have {RSA_MIN_BITS} to {RSA_MAX_BITS} bits, this one has {bits}"
        ))
    }
}

fn rsa_public_parts(public: &RsaPublicKey) -> (DecodingKey, Map<String, Value>) {
    let (n, e) = (public.n().to_bytes_be(), public.e().to_bytes_be());
    let mut jwk = Map::new();
    jwk.insert("kty".into(), "RSA".into());
    jwk.insert("n".into(), b64(&n).into());
    jwk.insert("e".into(), b64(&e).into());
    (DecodingKey::from_rsa_raw_components(&n, &e), jwk)
}

fn rsa_material(private: RsaPrivateKey) -> Res<Material> {
    check_rsa_bits(&private)?;
    private
        .validate()
        .map_err(|_| "the RSA private key is inconsistent".to_string())?;
    let der = private
        .to_pkcs1_der()
        .map_err(|e| format!("cannot encode the key: {e}"))?;
    let (decoding, jwk) = rsa_public_parts(&private.to_public_key());
    Material::new(
        Alg::RS256,
        Some(&EncodingKey::from_rsa_der(der.as_bytes())),
        &decoding,
        Some(jwk),
    )
}

fn rsa_public(public: RsaPublicKey) -> Res<Material> {
    check_rsa_bits(&public)?;
    let (decoding, _) = rsa_public_parts(&public);
    Material::new(Alg::RS256, None, &decoding, None)
}

fn es256_public_parts(
    public: &p256::ecdsa::VerifyingKey,
) -> Res<(DecodingKey, Map<String, Value>)> {
    let point = public.to_sec1_bytes();
    // Uncompressed SEC1: 0x04 || x || y.
    let (x, y) = point
        .get(1..)
        .filter(|xy| xy.len() == 64)
        .ok_or("the P-256 point is not uncompressed")?
        .split_at(32);
    let mut jwk = Map::new();
    jwk.insert("kty".into(), "EC".into());
    jwk.insert("crv".into(), "P-256".into());
    jwk.insert("x".into(), b64(x).into());
    jwk.insert("y".into(), b64(y).into());
    Ok((DecodingKey::from_ec_der(&point), jwk))
}

fn es256_material(private: p256::ecdsa::SigningKey) -> Res<Material> {
    let der = private
        .to_pkcs8_der()
        .map_err(|e| format!("cannot encode the key: {e}"))?;
    let (decoding, jwk) = es256_public_parts(private.verifying_key())?;
    Material::new(
        Alg::ES256,
        Some(&EncodingKey::from_ec_der(der.as_bytes())),
        &decoding,
        Some(jwk),
    )
}

fn eddsa_public_parts(public: &ed25519_dalek::VerifyingKey) -> (DecodingKey, Map<String, Value>) {
    let mut jwk = Map::new();
    jwk.insert("kty".into(), "OKP".into());
    jwk.insert("crv".into(), "Ed25519".into());
    jwk.insert("x".into(), b64(public.as_bytes()).into());
    (DecodingKey::from_ed_der(public.as_bytes()), jwk)
}

fn eddsa_material(private: ed25519_dalek::SigningKey) -> Res<Material> {
    let der = private
        .to_pkcs8_der()
        .map_err(|e| format!("cannot encode the key: {e}"))?;
    let (decoding, jwk) = eddsa_public_parts(&private.verifying_key());
    Material::new(
        Alg::EdDSA,
        Some(&EncodingKey::from_ed_der(der.as_bytes())),
        &decoding,
        Some(jwk),
    )
}

/// A new private key of `alg`, as (stored form, material). HS256: 256 random bits as a
/// 43-character base64url string.
pub fn generate(alg: Alg) -> Res<(String, Material)> {
    match alg {
        Alg::HS256 => {
            let secret = b64(&random_bytes::<32>()?);
            let m = Material::hmac(secret.as_bytes())?;
            Ok((secret, m))
        }
        Alg::ES256 => {
            // A uniformly random 256-bit string is a valid scalar except with probability
            // about 2^-32; draw again in that case.
            for _ in 0..8 {
                let bytes = random_bytes::<32>()?;
                if let Ok(k) = p256::ecdsa::SigningKey::from_slice(&bytes) {
                    let stored = pem(k.to_pkcs8_pem(Default::default()))?;
                    return Ok((stored, es256_material(k)?));
                }
            }
            Err("could not draw a P-256 scalar".into())
        }
        Alg::EdDSA => {
            let k = ed25519_dalek::SigningKey::from_bytes(&random_bytes::<32>()?);
            let stored = pem(k.to_pkcs8_pem(Default::default()))?;
            Ok((stored, eddsa_material(k)?))
        }
        Alg::RS256 => {
            let k = RsaPrivateKey::new(&mut rand_core::OsRng, RSA_MIN_BITS)
                .map_err(|e| format!("RSA key generation failed: {e}"))?;
            let stored = pem(k.to_pkcs8_pem(Default::default()))?;
            Ok((stored, rsa_material(k)?))
        }
    }
}

/// The material of a key in its stored form (what `generate` and `import` return).
pub fn load(alg: Alg, stored: &str) -> Res<Material> {
    let bad = || format!("stored {} key cannot be read", alg.name());
    match alg {
        Alg::HS256 => Material::hmac(stored.as_bytes()).map_err(|_| bad()),
        Alg::ES256 => {
            es256_material(p256::ecdsa::SigningKey::from_pkcs8_pem(stored).map_err(|_| bad())?)
        }
        Alg::EdDSA => {
            eddsa_material(ed25519_dalek::SigningKey::from_pkcs8_pem(stored).map_err(|_| bad())?)
        }
        Alg::RS256 => rsa_material(RsaPrivateKey::from_pkcs8_pem(stored).map_err(|_| bad())?),
    }
}

/// Read a private key given as PEM (PKCS#8 `PRIVATE KEY`, PKCS#1 `RSA PRIVATE KEY`, SEC1
/// `EC PRIVATE KEY`) or as a private JWK. `hint`, when given, must agree with the key.
/// Returns the algorithm and the stored form.
pub fn import(text: &str, hint: Option<Alg>) -> Res<(Alg, String, Material)> {
    let text = text.trim();
    let (alg, stored, material) = if text.starts_with('{') {
        import_jwk(text, hint)?
    } else if text.starts_with("-----BEGIN") {
        import_pem(text, hint)?
    } else if hint == Some(Alg::HS256) {
        if text.len() < HS256_MIN_LEN {
            return Err(format!(
                "an HS256 secret must be at least {HS256_MIN_LEN} characters"
            ));
        }
        (
            Alg::HS256,
            text.to_string(),
            Material::hmac(text.as_bytes())?,
        )
    } else {
        return Err("the key must be a PEM private key or a private JWK".into());
    };
    if let Some(h) = hint {
        if h != alg {
            return Err(format!(
                "the key is {} but {} was asked for",
                alg.name(),
                h.name()
            ));
        }
    }
    Ok((alg, stored, material))
}

fn import_pem(text: &str, hint: Option<Alg>) -> Res<(Alg, String, Material)> {
    if text.contains("-----BEGIN RSA PRIVATE KEY-----") {
        let k = RsaPrivateKey::from_pkcs1_pem(text)
            .map_err(|_| "the PKCS#1 RSA private key cannot be read".to_string())?;
        let stored = pem(k.to_pkcs8_pem(Default::default()))?;
        return Ok((Alg::RS256, stored, rsa_material(k)?));
    }
    if text.contains("-----BEGIN EC PRIVATE KEY-----") {
        let k = p256::SecretKey::from_sec1_pem(text).map_err(|_| {
            "the EC private key cannot be read (only P-256 is accepted)".to_string()
        })?;
        let k = p256::ecdsa::SigningKey::from(k);
        let stored = pem(k.to_pkcs8_pem(Default::default()))?;
        return Ok((Alg::ES256, stored, es256_material(k)?));
    }
    if !text.contains("-----BEGIN PRIVATE KEY-----") {
        return Err(
            "expected a PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY PEM block (public keys and encrypted keys are not accepted)"
                .into(),
        );
    }
    // PKCS#8 names the algorithm inside; try the parsers in turn, the hinted one first.
    let order: Vec<Alg> = match hint {
        Some(h) => vec![h],
        None => vec![Alg::ES256, Alg::EdDSA, Alg::RS256],
    };
    for alg in order {
        if alg == Alg::HS256 {
            break;
        }
        if alg == Alg::RS256 {
            if let Ok(k) = RsaPrivateKey::from_pkcs8_pem(text) {
                let stored = pem(k.to_pkcs8_pem(Default::default()))?;
                return Ok((alg, stored, rsa_material(k)?));
            }
            continue;
        }
        if let Ok(m) = load(alg, text) {
            // Re-encode so the stored form is canonical whatever the input's line breaks.
            let stored = match alg {
                Alg::ES256 => pem(p256::ecdsa::SigningKey::from_pkcs8_pem(text)
                    .map_err(|e| e.to_string())?
                    .to_pkcs8_pem(Default::default()))?,
                Alg::EdDSA => pem(ed25519_dalek::SigningKey::from_pkcs8_pem(text)
                    .map_err(|e| e.to_string())?
                    .to_pkcs8_pem(Default::default()))?,
                _ => text.to_string(),
            };
            return Ok((alg, stored, m));
        }
    }
    Err(match hint {
        Some(h) => format!("the PKCS#8 private key is not a {} key", h.name()),
        None => "the PKCS#8 private key is not a P-256, Ed25519 or RSA key".into(),
    })
}

fn field<'a>(jwk: &'a Map<String, Value>, name: &str) -> Res<&'a str> {
    jwk.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("the JWK has no \"{name}\""))
}

fn field_bytes(jwk: &Map<String, Value>, name: &str) -> Res<Vec<u8>> {
    unb64(field(jwk, name)?, "").map_err(|_| format!("the JWK's \"{name}\" is not base64url"))
}

fn fixed<const N: usize>(bytes: Vec<u8>, name: &str) -> Res<[u8; N]> {
    bytes
        .try_into()
        .map_err(|_| format!("the JWK's \"{name}\" must be {N} bytes"))
}

/// The algorithm a JWK stands for: its `alg` when present, else what its type implies.
fn jwk_alg(jwk: &Map<String, Value>) -> Res<Alg> {
    let kty = field(jwk, "kty")?;
    let implied = match (kty, jwk.get("crv").and_then(Value::as_str)) {
        ("oct", _) => Alg::HS256,
        ("RSA", _) => Alg::RS256,
        ("EC", Some("P-256")) => Alg::ES256,
        ("OKP", Some("Ed25519")) => Alg::EdDSA,
        ("EC", c) | ("OKP", c) => {
            return Err(format!(
                "curve {} is not supported (P-256 and Ed25519 are)",
                c.unwrap_or("(none)")
            ))
        }
        (k, _) => return Err(format!("key type {k} is not supported")),
    };
    match jwk.get("alg") {
        None => Ok(implied),
        Some(Value::String(a)) if Alg::from_name(a) == Some(implied) => Ok(implied),
        Some(a) => Err(format!(
            "the JWK's alg {a} does not fit its key type (expected {})",
            implied.name()
        )),
    }
}

fn import_jwk(text: &str, hint: Option<Alg>) -> Res<(Alg, String, Material)> {
    let Ok(Value::Object(jwk)) = serde_json::from_str::<Value>(text) else {
        return Err("the JWK is not a JSON object".into());
    };
    let alg = jwk_alg(&jwk)?;
    if hint.is_some_and(|h| h != alg) {
        return Err(format!(
            "the JWK is {} but {} was asked for",
            alg.name(),
            hint.map(Alg::name).unwrap_or("")
        ));
    }
    match alg {
        Alg::HS256 => {
            let k = field_bytes(&jwk, "k")?;
            let secret = String::from_utf8(k).map_err(|_| {
                "this HS256 JWK's key bytes are not text; HS256 secrets are stored as text"
                    .to_string()
            })?;
            if secret.len() < HS256_MIN_LEN {
                return Err(format!(
                    "an HS256 secret must be at least {HS256_MIN_LEN} bytes"
                ));
            }
            let m = Material::hmac(secret.as_bytes())?;
            Ok((alg, secret, m))
        }
        Alg::ES256 => {
            let d = fixed::<32>(field_bytes(&jwk, "d")?, "d")?;
            let k = p256::ecdsa::SigningKey::from_slice(&d)
                .map_err(|_| "the JWK's \"d\" is not a P-256 private key".to_string())?;
            // The public half, when given, must belong to d.
            if jwk.contains_key("x") {
                let public = es256_public(&jwk)?;
                if public != *k.verifying_key() {
                    return Err("the JWK's x/y do not belong to its d".into());
                }
            }
            let stored = pem(k.to_pkcs8_pem(Default::default()))?;
            Ok((alg, stored, es256_material(k)?))
        }
        Alg::EdDSA => {
            let d = fixed::<32>(field_bytes(&jwk, "d")?, "d")?;
            let k = ed25519_dalek::SigningKey::from_bytes(&d);
            if jwk.contains_key("x") && field_bytes(&jwk, "x")? != k.verifying_key().to_bytes() {
                return Err("the JWK's x does not belong to its d".into());
            }
            let stored = pem(k.to_pkcs8_pem(Default::default()))?;
            Ok((alg, stored, eddsa_material(k)?))
        }
        Alg::RS256 => {
            let int = |name: &str| field_bytes(&jwk, name).map(|b| BigUint::from_bytes_be(&b));
            let k = RsaPrivateKey::from_components(
                int("n")?,
                int("e")?,
                int("d")?,
                vec![int("p")?, int("q")?],
            )
            .map_err(|_| "the RSA JWK's n, e, d, p, q are inconsistent".to_string())?;
            let stored = pem(k.to_pkcs8_pem(Default::default()))?;
            Ok((alg, stored, rsa_material(k)?))
        }
    }
}

fn es256_public(jwk: &Map<String, Value>) -> Res<p256::ecdsa::VerifyingKey> {
    let x = fixed::<32>(field_bytes(jwk, "x")?, "x")?;
    let y = fixed::<32>(field_bytes(jwk, "y")?, "y")?;
    let mut sec1 = Vec::with_capacity(65);
    sec1.push(4);
    sec1.extend_from_slice(&x);
    sec1.extend_from_slice(&y);
    p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1)
        .map_err(|_| "the JWK's x/y are not a point on P-256".to_string())
}

/// A verification key from a public JWK (a trusted issuer's key set). Symmetric keys are
/// refused: a key set that others publish cannot hold a secret.
pub fn from_public_jwk(jwk: &Map<String, Value>) -> Res<Key> {
    let alg = jwk_alg(jwk)?;
    if let Some(u) = jwk.get("use") {
        if u.as_str() != Some("sig") {
            return Err("the JWK's use is not \"sig\"".into());
        }
    }
    let kid = match jwk.get("kid") {
        None => None,
        Some(Value::String(k)) if !k.is_empty() => Some(k.clone()),
        Some(_) => return Err("the JWK's kid is not a non-empty string".into()),
    };
    let material = match alg {
        Alg::HS256 => {
            return Err("symmetric (oct) keys cannot be trusted from a key set".into());
        }
        Alg::ES256 => {
            let (decoding, _) = es256_public_parts(&es256_public(jwk)?)?;
            Material::new(alg, None, &decoding, None)?
        }
        Alg::EdDSA => {
            let x = fixed::<32>(field_bytes(jwk, "x")?, "x")?;
            let public = ed25519_dalek::VerifyingKey::from_bytes(&x)
                .map_err(|_| "the JWK's x is not an Ed25519 public key".to_string())?;
            if public.is_weak() {
                return Err("the JWK's x is a weak Ed25519 key".into());
            }
            let (decoding, _) = eddsa_public_parts(&public);
            Material::new(alg, None, &decoding, None)?
        }
        Alg::RS256 => {
            let n = BigUint::from_bytes_be(&field_bytes(jwk, "n")?);
            let e = BigUint::from_bytes_be(&field_bytes(jwk, "e")?);
            rsa_public(
                RsaPublicKey::new(n, e)
                    .map_err(|_| "the RSA JWK's n or e is not usable".to_string())?,
            )?
        }
    };
    Ok(Key { kid, alg, material })
}

/// The public JWK of a key (`kty`, curve or modulus, `kid`, `alg`, `use`), or None for a
/// symmetric or revoked key, which has nothing to publish.
pub fn public_jwk(key: &Key) -> Option<Map<String, Value>> {
    let mut jwk = key.public_jwk()?.clone();
    if let Some(kid) = &key.kid {
        jwk.insert("kid".into(), kid.as_str().into());
    }
    jwk.insert("alg".into(), key.alg.name().into());
    jwk.insert("use".into(), "sig".into());
    jwk.insert("key_ops".into(), Value::from(vec!["verify"]));
    Some(jwk)
}

/// The keys of a JWKS (`{"keys": [...]}`), or of a single JWK. Keys of types we do not
/// verify (encryption keys, other curves) are skipped and named in the second list; a
/// malformed key of a supported type is an error. At least one usable key is required.
pub fn parse_jwks(jwks: &Value) -> Res<(Vec<Key>, Vec<String>)> {
    let list: Vec<&Map<String, Value>> = match jwks {
        Value::Object(o) if o.contains_key("keys") => match o.get("keys") {
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_object()
                        .ok_or("every entry of keys must be a JSON object")
                })
                .collect::<Result<_, _>>()?,
            _ => return Err("the JWKS's keys must be an array".into()),
        },
        Value::Object(o) if o.contains_key("kty") => vec![o],
        _ => return Err("expected a JWKS ({\"keys\": [...]}) or a JWK".into()),
    };
    let mut keys = Vec::new();
    let mut skipped = Vec::new();
    for (i, jwk) in list.into_iter().enumerate() {
        let name = jwk
            .get("kid")
            .and_then(Value::as_str)
            .map(|k| k.chars().take(64).collect::<String>())
            .unwrap_or_else(|| format!("#{}", i + 1));
        let usable = jwk.get("use").is_none_or(|u| u.as_str() == Some("sig"))
            && jwk_alg(jwk).is_ok_and(|a| !a.is_symmetric());
        if !usable {
            skipped.push(name);
            continue;
        }
        keys.push(from_public_jwk(jwk).map_err(|e| format!("key \"{name}\": {e}"))?);
    }
    if keys.is_empty() {
        return Err("the key set has no ES256, RS256 or EdDSA signing key".into());
    }
    Ok((keys, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::{sign, verify, JwtError, VerifyPolicy};
    use serde_json::json;

    fn key_of(alg: Alg, kid: &str) -> (String, Key) {
        let (stored, material) = generate(alg).unwrap();
        (
            stored,
            Key {
                kid: Some(kid.into()),
                alg,
                material,
            },
        )
    }

    fn claims() -> Map<String, Value> {
        json!({"sub": "u1", "role": "authenticated"})
            .as_object()
            .cloned()
            .unwrap()
    }

    #[test]
    fn every_algorithm_signs_verifies_and_reloads() {
        for alg in Alg::ALL {
            let (stored, key) = key_of(alg, "k1");
            let t = sign(&claims(), &key).unwrap();
            assert!(verify(&t, std::slice::from_ref(&key), 0, &VerifyPolicy::default()).is_ok());
            // The stored form loads back into the same key.
            let again = Key {
                kid: Some("k1".into()),
                alg,
                material: load(alg, &stored).unwrap(),
            };
            assert!(
                verify(&t, &[again], 0, &VerifyPolicy::default()).is_ok(),
                "{alg:?}"
            );
            // The public JWK alone verifies, and carries no private member.
            if let Some(jwk) = public_jwk(&key) {
                for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
                    assert!(!jwk.contains_key(private), "{alg:?} leaks {private}");
                }
                let public = from_public_jwk(&jwk).unwrap();
                assert!(verify(&t, &[public], 0, &VerifyPolicy::default()).is_ok());
            } else {
                assert_eq!(alg, Alg::HS256);
            }
        }
    }

    #[test]
    fn import_round_trips_pem_and_jwk() {
        for alg in [Alg::ES256, Alg::EdDSA, Alg::RS256] {
            let (stored, key) = key_of(alg, "k");
            let (a, stored2, _) = import(&stored, None).unwrap();
            assert_eq!(a, alg);
            assert_eq!(stored, stored2);
            let (a, _, _) = import(&stored, Some(alg)).unwrap();
            assert_eq!(a, alg);
            let other = if alg == Alg::ES256 {
                Alg::EdDSA
            } else {
                Alg::ES256
            };
            assert!(import(&stored, Some(other)).is_err());
            // A public JWK is not a private key.
            let jwk = Value::Object(public_jwk(&key).unwrap()).to_string();
            assert!(
                import(&jwk, None).is_err(),
                "{alg:?} public JWK imported as private"
            );
        }
    }

    #[test]
    fn rfc8037_ed25519_private_jwk_signs_the_rfc_signature() {
        // RFC 8037 appendix A.1 (key) and A.4 (signature over the A.4 signing input).
        let jwk = r#"{"kty":"OKP","crv":"Ed25519",
            "d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A",
            "x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#;
        let (alg, _, material) = import(jwk, None).unwrap();
        assert_eq!(alg, Alg::EdDSA);
        let key = Key {
            kid: None,
            alg,
            material,
        };
        let input = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc";
        let sig = "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";
        assert_eq!(b64(&key.sign_input(input.as_bytes()).unwrap()), sig);
        // The RFC's payload is plain text, not claims: check the signature alone.
        let token = format!("{input}.{sig}");
        let parsed = crate::jwt::parse(&token).unwrap();
        assert_eq!(parsed.verify_signature(std::slice::from_ref(&key)), Ok(()));
        let forged = format!("{input}x.{sig}");
        let parsed = crate::jwt::parse(&forged).unwrap();
        assert_eq!(parsed.verify_signature(&[key]), Err(JwtError::BadSignature));
        // A mismatched x is refused.
        let bad = jwk.replace("11qY", "21qY");
        assert!(import(&bad, None).is_err());
    }

    #[test]
    fn rfc7515_a2_rs256_signs_the_rfc_signature_and_a3_es256_verifies() {
        // RFC 7515 appendix A.2: RSASSA-PKCS1-v1_5 is deterministic, so the signature
        // over the example's signing input must come out byte for byte.
        let (alg, _, material) = import(RFC7515_A2_JWK, None).unwrap();
        assert_eq!(alg, Alg::RS256);
        let key = Key {
            kid: None,
            alg,
            material,
        };
        let (input, sig) = RFC7515_A2_TOKEN.rsplit_once('.').unwrap();
        assert_eq!(b64(&key.sign_input(input.as_bytes()).unwrap()), sig);
        let c = verify(
            RFC7515_A2_TOKEN,
            &[key],
            1_300_819_380,
            &VerifyPolicy::default(),
        )
        .unwrap();
        assert_eq!(c["iss"], json!("joe"));
        // A.3: ECDSA signatures are randomised; the example's must verify with its key.
        let (alg, _, material) = import(RFC7515_A3_JWK, None).unwrap();
        assert_eq!(alg, Alg::ES256);
        let key = Key {
            kid: None,
            alg,
            material,
        };
        let c = verify(
            RFC7515_A3_TOKEN,
            std::slice::from_ref(&key),
            1_300_819_380,
            &VerifyPolicy::default(),
        )
        .unwrap();
        assert_eq!(c["http://example.com/is_root"], json!(true));
        // And expired a second later, with the RFC's exp.
        let p = VerifyPolicy::default();
        assert_eq!(
            verify(RFC7515_A3_TOKEN, &[key], 1_300_819_381, &p),
            Err(JwtError::Expired)
        );
    }

    #[test]
    fn bad_key_material_is_refused_with_a_reason() {
        for (text, want) in [
            ("", "PEM private key or a private JWK"),
            ("not a key", "PEM private key or a private JWK"),
            ("{", "not a JSON object"),
            (r#"{"kty":"EC","crv":"P-384","d":"AA"}"#, "P-384"),
            (r#"{"kty":"EC","crv":"P-256","d":"AA"}"#, "32 bytes"),
            (r#"{"kty":"OKP","crv":"Ed25519"}"#, "no \"d\""),
            (r#"{"kty":"RSA","alg":"ES256"}"#, "does not fit"),
            (r#"{"kty":"oct","k":"c2hvcnQ"}"#, "at least 32"),
            (
                "-----BEGIN PUBLIC KEY-----\nAA\n-----END PUBLIC KEY-----",
                "public keys",
            ),
            (
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----",
                "not a P-256",
            ),
        ] {
            let e = import(text, None).err().unwrap_or_default();
            assert!(e.contains(want), "{text:?}: {e}");
        }
        // A 1024-bit RSA key is refused by size.
        let small = RsaPrivateKey::new(&mut rand_core::OsRng, 1024).unwrap();
        let small = small.to_pkcs8_pem(Default::default()).unwrap();
        let e = import(&small, None).err().unwrap_or_default();
        assert!(e.contains("2048"), "{e}");
    }

    #[test]
    fn jwks_parsing_keeps_signing_keys_and_names_the_rest() {
        let (_, es) = key_of(Alg::ES256, "es");
        let (_, ed) = key_of(Alg::EdDSA, "ed");
        let jwks = json!({"keys": [
            public_jwk(&es).unwrap(),
            public_jwk(&ed).unwrap(),
            {"kty": "RSA", "use": "enc", "kid": "enc1", "n": "AQAB", "e": "AQAB"},
            {"kty": "EC", "crv": "P-521", "kid": "p521", "x": "AA", "y": "AA"},
            {"kty": "oct", "kid": "secret", "k": "AAAA"},
        ]});
        let (keys, skipped) = parse_jwks(&jwks).unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(skipped, vec!["enc1", "p521", "secret"]);
        // A broken key of a supported type is an error, not silently dropped.
        let broken =
            json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "b", "x": "AA", "y": "AA"}]});
        assert!(parse_jwks(&broken).unwrap_err().contains("key \"b\""));
        assert!(parse_jwks(&json!({"keys": []})).is_err());
        assert!(parse_jwks(&json!([1])).is_err());
        // A single JWK is accepted as a set of one.
        assert_eq!(
            parse_jwks(&Value::Object(public_jwk(&es).unwrap()))
                .unwrap()
                .0
                .len(),
            1
        );
    }

    #[test]
    fn a_key_embedded_in_the_header_is_never_used() {
        // The attacker signs with a key of their own and puts its public JWK (and a jku)
        // in the header, naming our kid: the token is checked with our key only.
        let (_, ours) = key_of(Alg::ES256, "ours");
        let (_, theirs) = key_of(Alg::ES256, "ours");
        let header = json!({"alg": "ES256", "kid": "ours", "jwk": public_jwk(&theirs).unwrap(),
                            "jku": "https://attacker.example/jwks.json"});
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(Value::Object(claims()).to_string().as_bytes())
        );
        let sig = b64(&theirs.sign_input(input.as_bytes()).unwrap());
        let token = format!("{input}.{sig}");
        assert_eq!(
            verify(&token, &[ours], 0, &VerifyPolicy::default()),
            Err(JwtError::BadSignature)
        );
    }

    #[test]
    fn alg_confusion_with_the_rsa_public_key_as_hmac_secret_fails() {
        // The classic attack: sign HS256 with the RSA public key's bytes, name its kid.
        let (_, rs) = key_of(Alg::RS256, "rsa1");
        let jwk = Value::Object(public_jwk(&rs).unwrap()).to_string();
        let forger = Key::hmac(Some("rsa1".into()), jwk.as_bytes());
        let t = sign(&claims(), &forger).unwrap();
        assert_eq!(
            verify(&t, std::slice::from_ref(&rs), 0, &VerifyPolicy::default()),
            Err(JwtError::AlgMismatch {
                kid: "rsa1".into(),
                key: Alg::RS256,
                token: Alg::HS256
            })
        );
        // Without a kid there is no HS256 key to try at all.
        let forger = Key::hmac(None, jwk.as_bytes());
        let t = sign(&claims(), &forger).unwrap();
        assert_eq!(
            verify(&t, &[rs], 0, &VerifyPolicy::default()),
            Err(JwtError::NoKey(Alg::HS256))
        );
    }

    const RFC7515_A2_JWK: &str = r#"{"kty":"RSA",
      "n":"ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ",
      "e":"AQAB",
      "d":"Eq5xpGnNCivDflJsRQBXHx1hdR1k6Ulwe2JZD50LpXyWPEAeP88vLNO97IjlA7_GQ5sLKMgvfTeXZx9SE-7YwVol2NXOoAJe46sui395IW_GO-pWJ1O0BkTGoVEn2bKVRUCgu-GjBVaYLU6f3l9kJfFNS3E0QbVdxzubSu3Mkqzjkn439X0M_V51gfpRLI9JYanrC4D4qAdGcopV_0ZHHzQlBjudU2QvXt4ehNYTCBr6XCLQUShb1juUO1ZdiYoFaFQT5Tw8bGUl_x_jTj3ccPDVZFD9pIuhLhBOneufuBiB4cS98l2SR_RQyGWSeWjnczT0QU91p1DhOVRuOopznQ",
      "p":"4BzEEOtIpmVdVEZNCqS7baC4crd0pqnRH_5IB3jw3bcxGn6QLvnEtfdUdiYrqBdss1l58BQ3KhooKeQTa9AB0Hw_Py5PJdTJNPY8cQn7ouZ2KKDcmnPGBY5t7yLc1QlQ5xHdwW1VhvKn-nXqhJTBgIPgtldC-KDV5z-y2XDwGUc",
      "q":"uQPEfgmVtjL0Uyyx88GZFF1fOunH3-7cepKmtH4pxhtCoHqpWmT8YAmZxaewHgHAjLYsp1ZSe7zFYHj7C6ul7TjeLQeZD_YwD66t62wDmpe_HlB-TnBA-njbglfIsRLtXlnDzQkv5dTltRJ11BKBBypeeF6689rjcJIDEz9RWdc",
      "dp":"BwKfV3Akq5_MFZDFZCnW-wzl-CCo83WoZvnLQwCTeDv8uzluRSnm71I3QCLdhrqE2e9YkxvuxdBfpT_PI7Yz-FOKnu1R6HsJeDCjn12Sk3vmAktV2zb34MCdy7cpdTh_YVr7tss2u6vneTwrA86rZtu5Mbr1C1XsmvkxHQAdYo0",
      "dq":"h_96-mK1R_7glhsum81dZxjTnYynPbZpHziZjeeHcXYsXaaMwkOlODsWa7I9xXDoRwbKgB719rrmI2oKr6N3Do9U0ajaHF-NKJnwgjMd2w9cjz3_-kyNlxAr2v4IKhGNpmM5iIgOS1VZnOZ68m6_pbLBSp3nssTdlqvd0tIiTHU",
      "qi":"IYd7DHOhrWvxkwPQsRM2tOgrjbcrfvtQJipd-DlcxyVuuM9sQLdgjVk2oy26F0EmpScGLq2MowX7fhd_QJQ3ydy5cY7YIBi87w93IKLEdfnbJtoOPLUW0ITrJReOgo1cq9SbsxYawBgfp_gh6A5603k2-ZQwVK0JKSHuLFkuQ3U"}"#;

    const RFC7515_A2_TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw";

    const RFC7515_A3_JWK: &str = r#"{"kty":"EC","crv":"P-256",
      "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
      "y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
      "d":"jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI"}"#;

    const RFC7515_A3_TOKEN: &str = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";
}
