//! Placeholder: replaced by the provider clients.
use std::collections::HashMap;
use std::sync::Arc;

pub struct Providers {
    map: HashMap<String, Arc<Provider>>,
}
pub struct Provider {
    name: String,
}
pub struct ProviderUser {
    pub subject: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub identity_data: serde_json::Value,
    pub access_token: Option<String>,
    pub refresh_token: Option<String>,
}
pub struct ProviderError {
    pub code: &'static str,
    pub message: String,
}
impl Providers {
    pub fn from_env(_external_url: &str) -> Result<Providers, String> {
        Ok(Providers {
            map: HashMap::new(),
        })
    }
    pub fn get(&self, name: &str) -> Option<Arc<Provider>> {
        self.map.get(name).cloned()
    }
    pub fn enabled(&self) -> Vec<String> {
        self.map.keys().cloned().collect()
    }
}
impl Provider {
    pub fn name(&self) -> &str {
        &self.name
    }
    pub async fn authorize_url(
        &self,
        _state: &str,
        _scopes: Option<&str>,
        _extra: &[(String, String)],
    ) -> Result<String, ProviderError> {
        Err(ProviderError {
            code: "unexpected_failure",
            message: "stub".into(),
        })
    }
    pub async fn exchange(&self, _code: &str, _state: &str) -> Result<ProviderUser, ProviderError> {
        Err(ProviderError {
            code: "unexpected_failure",
            message: "stub".into(),
        })
    }
}
