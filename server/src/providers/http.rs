//! The HTTP client for provider calls: 10 s per call, no redirects followed (a provider
//! endpoint that redirects is an error, not a hop to wherever it points), answers read in
//! chunks and refused past 1 MiB, JSON only.

use super::ProviderError;
use serde_json::Value;
use std::time::Duration;

pub(super) const TIMEOUT: Duration = Duration::from_secs(10);
pub(super) const MAX_BODY: usize = 1 << 20;

#[derive(Clone)]
pub(super) struct Http {
    client: reqwest::Client,
}

impl Http {
    pub fn new() -> Result<Http, String> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(TIMEOUT)
            .connect_timeout(TIMEOUT)
            .user_agent(concat!("auth-ext-server/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client for providers: {e}"))?;
        Ok(Http { client })
    }

    pub fn get(&self, url: &str) -> reqwest::RequestBuilder {
        self.client.get(url)
    }

    pub fn post(&self, url: &str) -> reqwest::RequestBuilder {
        self.client.post(url)
    }

    /// Sends `request` and reads a JSON answer of any status: (status, body). `what` names
    /// the call in messages ("github: the token request ..."); a network failure or timeout
    /// is `unexpected_failure`, an answer too large or not JSON is `bad`.
    pub async fn json(
        &self,
        request: reqwest::RequestBuilder,
        what: &str,
        bad: fn(String) -> ProviderError,
    ) -> Result<(u16, Value), ProviderError> {
        let mut response = request.send().await.map_err(|e| network(what, e))?;
        let status = response.status().as_u16();
        if response
            .content_length()
            .is_some_and(|n| n > MAX_BODY as u64)
        {
            return Err(bad(format!("{what}: the answer is larger than 1 MiB")));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| network(what, e))? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(bad(format!("{what}: the answer is larger than 1 MiB")));
            }
            body.extend_from_slice(&chunk);
        }
        match serde_json::from_slice(&body) {
            Ok(v) => Ok((status, v)),
            Err(_) if (300..400).contains(&status) => Err(bad(format!(
                "{what}: answered with a redirect ({status}), which is not followed"
            ))),
            Err(_) => Err(bad(format!("{what}: the answer ({status}) is not JSON"))),
        }
    }
}

fn network(what: &str, e: reqwest::Error) -> ProviderError {
    // Without the URL: ours hold no secret, but a message has no use for it either.
    let e = e.without_url();
    let why = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "could not connect".to_string()
    } else {
        e.to_string()
    };
    ProviderError::unexpected(format!("{what}: {why}"))
}

/// A short text from a provider for a message: at most 200 characters, no control
/// characters.
pub(super) fn provider_text(v: Option<&Value>) -> Option<String> {
    let text = v?.as_str()?;
    let cleaned: String = text.chars().filter(|c| !c.is_control()).take(200).collect();
    (!cleaned.is_empty()).then_some(cleaned)
}

/// `error` and `error_description` of an OAuth error answer, as "error (description)".
pub(super) fn oauth_error(body: &Value) -> Option<String> {
    let error = provider_text(body.get("error"))?;
    Some(match provider_text(body.get("error_description")) {
        Some(d) => format!("{error} ({d})"),
        None => error,
    })
}
