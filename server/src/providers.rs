//! Social login: the OAuth 2 and OpenID Connect providers the server talks to (GitHub,
//! Google, any OIDC issuer). The server makes the network calls the database must not make
//! (the code exchange, the provider's user, its keys); every rule about users and identities
//! stays in the extension, which gets the `ProviderUser` read here.
//!
//! Configuration: `AUTH_EXTERNAL_<NAME>_*` variables (`config.rs`' help text lists them).

mod config;
mod github;
mod http;
mod oidc;
#[cfg(test)]
mod tests;

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The configured providers, by lower-case name.
pub struct Providers {
    all: BTreeMap<String, Arc<Provider>>,
}

impl Providers {
    /// Reads the `AUTH_EXTERNAL_<NAME>_*` variables. `external_url` is the server's public
    /// URL without a trailing slash: the default redirect URI is `{external_url}/callback`.
    pub fn from_env(external_url: &str) -> Result<Providers, String> {
        Self::from_vars(std::env::vars(), external_url)
    }

    pub fn from_vars(
        vars: impl IntoIterator<Item = (String, String)>,
        external_url: &str,
    ) -> Result<Providers, String> {
        let settings = config::parse(vars, external_url)?;
        let http = http::Http::new()?;
        let all = settings
            .into_iter()
            .map(|s| {
                let kind = match s.kind {
                    config::KindSettings::Github { base, api } => {
                        Kind::Github(github::Github { base, api })
                    }
                    config::KindSettings::Oidc {
                        issuer,
                        extra_issuers,
                    } => Kind::Oidc(oidc::Oidc::new(issuer, extra_issuers)),
                };
                let provider = Provider {
                    name: s.name.clone(),
                    enabled: s.enabled,
                    client_id: s.client_id,
                    secret: s.secret,
                    redirect_uri: s.redirect_uri,
                    scopes: s.scopes,
                    kind,
                    http: http.clone(),
                };
                (s.name, Arc::new(provider))
            })
            .collect();
        Ok(Providers { all })
    }

    /// An enabled provider by its lower-case name.
    pub fn get(&self, name: &str) -> Option<Arc<Provider>> {
        self.all.get(name).filter(|p| p.enabled).cloned()
    }

    /// Names of the enabled providers, sorted (GET /settings' `external`).
    pub fn enabled(&self) -> Vec<String> {
        self.all
            .values()
            .filter(|p| p.enabled)
            .map(|p| p.name.clone())
            .collect()
    }

    /// Names of every configured provider, enabled or not, sorted.
    pub fn configured(&self) -> Vec<String> {
        self.all.keys().cloned().collect()
    }
}

/// One configured provider. Not `Debug`: it holds the client secret.
pub struct Provider {
    name: String,
    enabled: bool,
    client_id: String,
    secret: String,
    redirect_uri: String,
    /// The configured scopes (or the kind's defaults), in order, without duplicates.
    scopes: Vec<String>,
    kind: Kind,
    http: http::Http,
}

enum Kind {
    Github(github::Github),
    Oidc(oidc::Oidc),
}

/// What a provider says about the user who signed in.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderUser {
    /// The provider's stable user id (GitHub's numeric id as text, OIDC's `sub`).
    pub subject: String,
    /// Lower-cased.
    pub email: Option<String>,
    /// True only when the provider says this address is verified.
    pub email_verified: bool,
    /// GoTrue-shaped `identity_data`.
    pub identity_data: serde_json::Value,
    pub access_token: Option<String>,
    pub refresh_token: Option<String>,
}

/// A failure talking to a provider. `code` is a GoTrue error code (`bad_oauth_callback`
/// when the provider refused the code or answered something unusable, `unexpected_failure`
/// when it could not be reached or timed out). The message never holds the client secret,
/// the code or a token.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderError {
    pub code: &'static str,
    pub message: String,
}

impl ProviderError {
    fn bad(message: impl Into<String>) -> ProviderError {
        ProviderError {
            code: "bad_oauth_callback",
            message: message.into(),
        }
    }

    fn unexpected(message: impl Into<String>) -> ProviderError {
        ProviderError {
            code: "unexpected_failure",
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ProviderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// The OIDC nonce of a flow: hex(SHA-256("auth_ext-oidc-nonce:" || state)). The state is
/// single-use and checked by the database, so an ID token whose nonce is derived from the
/// callback's state belongs to this flow; nothing more needs storing.
pub fn nonce_for(state: &str) -> String {
    let digest = Sha256::new()
        .chain_update(b"auth_ext-oidc-nonce:")
        .chain_update(state.as_bytes())
        .finalize();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Query parameters of the authorization URL that only the server sets: forwarding them
/// from the /authorize request would let a caller change the client, where the code goes,
/// the flow's binding (state, nonce, PKCE) or, with a request object, all of them.
const RESERVED_PARAMS: &[&str] = &[
    "client_id",
    "redirect_uri",
    "response_type",
    "state",
    "scope",
    "nonce",
    "code_challenge",
    "code_challenge_method",
    "request",
    "request_uri",
];

/// Splits a scope list on spaces and commas, appending the new ones in order.
fn add_scopes(scopes: &mut Vec<String>, text: &str) {
    for s in text.split([' ', ',', '\t', '\n']).filter(|s| !s.is_empty()) {
        if !scopes.iter().any(|have| have == s) {
            scopes.push(s.to_string());
        }
    }
}

impl Provider {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The provider's authorization URL the browser is sent to. `scopes` (space-separated)
    /// are added to the configured ones; `extra` are other query parameters to forward,
    /// except the reserved ones (`RESERVED_PARAMS`), which are dropped. OIDC URLs carry
    /// `nonce = nonce_for(state)`; building one may fetch the discovery document.
    pub async fn authorize_url(
        &self,
        state: &str,
        scopes: Option<&str>,
        extra: &[(String, String)],
    ) -> Result<String, ProviderError> {
        let (endpoint, nonce) = match &self.kind {
            Kind::Github(g) => (g.authorize_endpoint(), None),
            Kind::Oidc(o) => (
                o.discovery(&self.http, &self.name)
                    .await?
                    .authorization_endpoint
                    .clone(),
                Some(nonce_for(state)),
            ),
        };
        let mut url = url::Url::parse(&endpoint).map_err(|_| {
            ProviderError::unexpected(format!(
                "{}: the authorization endpoint is not a URL",
                self.name
            ))
        })?;
        let mut all_scopes = self.scopes.clone();
        if let Some(s) = scopes {
            add_scopes(&mut all_scopes, s);
        }
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("client_id", &self.client_id)
                .append_pair("redirect_uri", &self.redirect_uri)
                .append_pair("response_type", "code")
                .append_pair("scope", &all_scopes.join(" "))
                .append_pair("state", state);
            if let Some(n) = &nonce {
                q.append_pair("nonce", n);
            }
            for (k, v) in extra {
                let reserved = RESERVED_PARAMS.iter().any(|r| r.eq_ignore_ascii_case(k));
                if !k.is_empty() && !reserved {
                    q.append_pair(k, v);
                }
            }
        }
        Ok(url.into())
    }

    /// Exchanges the callback's `code` and reads the user. `state` is the callback's state
    /// (already checked by the database), for the OIDC nonce.
    pub async fn exchange(&self, code: &str, state: &str) -> Result<ProviderUser, ProviderError> {
        let result = match &self.kind {
            Kind::Github(g) => g.exchange(self, code).await,
            Kind::Oidc(o) => o.exchange(self, code, &nonce_for(state)).await,
        };
        // Provider texts end up in messages; a provider echoing what it was sent must not
        // carry the secret or the code into a redirect or a log.
        result.map_err(|mut e| {
            for secret in [self.secret.as_str(), code] {
                if secret.len() >= 4 {
                    e.message = e.message.replace(secret, "[redacted]");
                }
            }
            e
        })
    }
}
