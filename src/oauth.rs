//! The Rust half of provider sign-in (sql/oauth.sql holds the rules): a provider's tokens,
//! when auth.keep_provider_tokens asks to keep them until a PKCE code is exchanged, are
//! sealed like TOTP secrets (XChaCha20-Poly1305 under the key of secrets at rest), bound to
//! their flow state and kind, so a sealed token copied to another row does not open.

use crate::error::OrRaise;
use crate::mfa;
use pgrx::prelude::*;

fn binding(flow_id: &pgrx::Uuid, kind: &str) -> String {
    format!(
        "provider_{kind}_token:{}",
        crate::claims::uuid_text(flow_id)
    )
}

/// SQL: a provider token sealed for the flow state `flow_id` (`kind`: access or refresh).
#[pg_extern(volatile)]
fn _seal_provider_token(flow_id: pgrx::Uuid, kind: &str, token: &str) -> String {
    mfa::seal(&binding(&flow_id, kind), token.as_bytes()).or_raise()
}

/// SQL: the provider token sealed by _seal_provider_token for the same flow and kind.
#[pg_extern(volatile)]
fn _open_provider_token(flow_id: pgrx::Uuid, kind: &str, sealed: &str) -> String {
    let bytes = mfa::open(&binding(&flow_id, kind), sealed).or_raise();
    String::from_utf8(bytes)
        .map_err(|_| {
            crate::error::AuthError::StoredData("a sealed provider token is not text".into())
        })
        .or_raise()
}
