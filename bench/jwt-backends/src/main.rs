//! Sign and first verify (a token never seen) per algorithm, µs per call, with whichever
//! jsonwebtoken backend the features select: through `encode`/`decode` (which make the
//! signer or verifier from the key at every call) and with the provider's signer and
//! verifier made once, as the extension keeps them.
use ed25519_dalek::pkcs8::EncodePrivateKey as _;
use p256::pkcs8::EncodePrivateKey as _;
use jsonwebtoken::signature::{Signer as _, Verifier as _};
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rsa::pkcs1::EncodeRsaPrivateKey as _;
use rsa::traits::PublicKeyParts;
use serde_json::{json, Value};
use std::time::Instant;

fn keys(alg: Algorithm) -> (EncodingKey, DecodingKey) {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).unwrap();
    match alg {
        Algorithm::HS256 => (
            EncodingKey::from_secret(&seed).unwrap(),
            DecodingKey::from_secret(&seed).unwrap(),
        ),
        Algorithm::ES256 => {
            let k = p256::ecdsa::SigningKey::from_slice(&seed).unwrap();
            let der = k.to_pkcs8_der().unwrap();
            let point = k.verifying_key().to_sec1_bytes();
            (EncodingKey::from_ec_der(der.as_bytes()), DecodingKey::from_ec_der(&point))
        }
        Algorithm::EdDSA => {
            let k = ed25519_dalek::SigningKey::from_bytes(&seed);
            let der = k.to_pkcs8_der().unwrap();
            (
                EncodingKey::from_ed_der(der.as_bytes()),
                DecodingKey::from_ed_der(k.verifying_key().as_bytes()),
            )
        }
        _ => {
            let k = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap();
            let der = k.to_pkcs1_der().unwrap();
            (
                EncodingKey::from_rsa_der(der.as_bytes()),
                DecodingKey::from_rsa_raw_components(&k.n().to_bytes_be(), &k.e().to_bytes_be()),
            )
        }
    }
}

fn main() {
    let backend = if cfg!(feature = "aws_lc_rs") { "aws_lc_rs" } else { "rust_crypto" };
    #[cfg(feature = "aws_lc_rs")]
    let provider = &jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER;
    #[cfg(not(feature = "aws_lc_rs"))]
    let provider = &jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER;
    println!("| backend | alg | encode µs | decode µs | sign, signer kept µs | verify, verifier kept µs |");
    for alg in [Algorithm::HS256, Algorithm::ES256, Algorithm::RS256, Algorithm::EdDSA] {
        let (enc, dec) = keys(alg);
        let n = match alg {
            Algorithm::RS256 => 200,
            Algorithm::HS256 => 20_000,
            _ => 2_000,
        };
        let mut v = Validation::new(alg);
        v.validate_exp = false;
        v.required_spec_claims.clear();
        v.validate_aud = false;
        let header = Header::new(alg);
        let t = Instant::now();
        let tokens: Vec<String> = (0..n)
            .map(|i| {
                let c = json!({"sub": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "role": "authenticated", "n": i});
                encode(&header, &c, &enc).unwrap()
            })
            .collect();
        let sign = t.elapsed().as_secs_f64() * 1e6 / n as f64;
        let t = Instant::now();
        for tok in &tokens {
            decode::<Value>(tok, &dec, &v).unwrap();
        }
        let verify = t.elapsed().as_secs_f64() * 1e6 / n as f64;
        let signer = (provider.signer_factory)(&alg, &enc).unwrap();
        let verifier = (provider.verifier_factory)(&alg, &dec).unwrap();
        let t = Instant::now();
        let sigs: Vec<(Vec<u8>, Vec<u8>)> = tokens
            .iter()
            .map(|tok| {
                let input = tok.rsplit_once('.').unwrap().0.as_bytes().to_vec();
                let sig = signer.try_sign(&input).unwrap();
                (input, sig)
            })
            .collect();
        let kept_sign = t.elapsed().as_secs_f64() * 1e6 / n as f64;
        let t = Instant::now();
        for (input, sig) in &sigs {
            verifier.verify(input, sig).unwrap();
        }
        let kept_verify = t.elapsed().as_secs_f64() * 1e6 / n as f64;
        println!("| {backend} | {alg:?} | {sign:.1} | {verify:.1} | {kept_sign:.1} | {kept_verify:.1} |");
    }
}
