//! GitHub (and GitHub Enterprise): OAuth 2, then the user and its e-mail addresses from the
//! REST API. GitHub says which addresses are verified only in /user/emails.

use super::http::{oauth_error, provider_text};
use super::{Provider, ProviderError, ProviderUser};
use serde_json::{json, Map, Value};

pub(super) struct Github {
    /// https://github.com, or the Enterprise server's URL.
    pub base: String,
    /// https://api.github.com, or `{base}/api/v3`.
    pub api: String,
}

/// One entry of GET /user/emails.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Email {
    pub email: String,
    pub primary: bool,
    pub verified: bool,
}

/// The address to use: the primary if verified, else the first verified one, else the
/// primary (unverified). Returned lower-cased, with whether it is verified.
pub(super) fn choose_email(emails: &[Email]) -> Option<(String, bool)> {
    let pick = emails
        .iter()
        .find(|e| e.primary && e.verified)
        .or_else(|| emails.iter().find(|e| e.verified))
        .or_else(|| emails.iter().find(|e| e.primary))?;
    Some((pick.email.to_lowercase(), pick.verified))
}

fn parse_emails(body: &Value) -> Option<Vec<Email>> {
    let list = body.as_array()?;
    Some(
        list.iter()
            .filter_map(|e| {
                let email = e.get("email")?.as_str()?.trim();
                (!email.is_empty()).then(|| Email {
                    email: email.to_string(),
                    primary: e.get("primary").and_then(Value::as_bool) == Some(true),
                    verified: e.get("verified").and_then(Value::as_bool) == Some(true),
                })
            })
            .collect(),
    )
}

/// GitHub's numeric user id as text (a string id is taken as is).
fn subject(user: &Value) -> Option<String> {
    match user.get("id")? {
        Value::Number(n) if n.is_u64() => Some(n.to_string()),
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

impl Github {
    pub fn authorize_endpoint(&self) -> String {
        format!("{}/login/oauth/authorize", self.base)
    }

    pub async fn exchange(&self, p: &Provider, code: &str) -> Result<ProviderUser, ProviderError> {
        let name = &p.name;
        let request = p
            .http
            .post(&format!("{}/login/oauth/access_token", self.base))
            .header("accept", "application/json")
            .form(&[
                ("grant_type", "authorization_code"),
                ("client_id", &p.client_id),
                ("client_secret", &p.secret),
                ("code", code),
                ("redirect_uri", &p.redirect_uri),
            ]);
        let what = format!("{name}: the token request");
        let (status, token) = p.http.json(request, &what, ProviderError::bad).await?;
        // GitHub answers errors with 200 and an `error` member.
        if let Some(e) = oauth_error(&token) {
            return Err(ProviderError::bad(format!(
                "{name}: the code was refused: {e}"
            )));
        }
        let access_token = match token.get("access_token").and_then(Value::as_str) {
            Some(t) if (200..300).contains(&status) && !t.is_empty() => t.to_string(),
            _ => {
                return Err(ProviderError::bad(format!(
                    "{name}: the token answer ({status}) has no access token"
                )))
            }
        };
        let refresh_token = token
            .get("refresh_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .map(str::to_string);

        let user = self.api_get(p, "/user", &access_token).await?;
        let subject = subject(&user)
            .ok_or_else(|| ProviderError::bad(format!("{name}: the user has no id")))?;
        let emails = self.api_get(p, "/user/emails", &access_token).await?;
        let emails = parse_emails(&emails)
            .ok_or_else(|| ProviderError::bad(format!("{name}: the e-mail list is not a list")))?;
        let (email, email_verified) = match choose_email(&emails) {
            Some((e, v)) => (Some(e), v),
            None => (None, false),
        };

        let text = |key: &str| {
            user.get(key)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_string()))
        };
        // GoTrue's identity_data for GitHub (its Claims, empty members left out).
        let mut data = Map::new();
        data.insert("iss".into(), json!(self.api));
        data.insert("sub".into(), json!(subject));
        data.insert("provider_id".into(), json!(subject));
        if let Some(n) = text("name") {
            data.insert("name".into(), n.clone());
            data.insert("full_name".into(), n);
        }
        if let Some(login) = text("login") {
            data.insert("user_name".into(), login.clone());
            data.insert("preferred_username".into(), login);
        }
        if let Some(a) = text("avatar_url") {
            data.insert("avatar_url".into(), a);
        }
        if let Some(e) = &email {
            data.insert("email".into(), json!(e));
        }
        data.insert("email_verified".into(), json!(email_verified));
        data.insert("phone_verified".into(), json!(false));

        Ok(ProviderUser {
            subject,
            email,
            email_verified,
            identity_data: Value::Object(data),
            access_token: Some(access_token),
            refresh_token,
        })
    }

    async fn api_get(&self, p: &Provider, path: &str, token: &str) -> Result<Value, ProviderError> {
        let request = p
            .http
            .get(&format!("{}{path}", self.api))
            .bearer_auth(token)
            .header("accept", "application/vnd.github+json");
        let what = format!("{}: GET {path}", p.name);
        let (status, body) = p.http.json(request, &what, ProviderError::bad).await?;
        if status != 200 {
            let detail = provider_text(body.get("message"))
                .map(|m| format!(": {m}"))
                .unwrap_or_default();
            return Err(ProviderError::bad(format!(
                "{what} answered {status}{detail}"
            )));
        }
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(email: &str, primary: bool, verified: bool) -> Email {
        Email {
            email: email.into(),
            primary,
            verified,
        }
    }

    #[test]
    fn email_choice() {
        assert_eq!(choose_email(&[]), None);
        // The verified primary wins over an earlier verified address.
        assert_eq!(
            choose_email(&[e("a@x.com", false, true), e("B@X.com", true, true)]),
            Some(("b@x.com".into(), true))
        );
        // An unverified primary loses to a verified address.
        assert_eq!(
            choose_email(&[
                e("p@x.com", true, false),
                e("v1@x.com", false, true),
                e("v2@x.com", false, true)
            ]),
            Some(("v1@x.com".into(), true))
        );
        // Nothing verified: the primary, unverified.
        assert_eq!(
            choose_email(&[e("o@x.com", false, false), e("p@x.com", true, false)]),
            Some(("p@x.com".into(), false))
        );
        // Nothing verified and no primary: none.
        assert_eq!(choose_email(&[e("o@x.com", false, false)]), None);
    }

    #[test]
    fn email_list_parsing() {
        let body = json!([
            {"email": "a@x.com", "primary": true, "verified": "true"},
            {"email": "", "primary": false, "verified": true},
            {"primary": true, "verified": true},
            {"email": "b@x.com", "verified": true}
        ]);
        assert_eq!(
            parse_emails(&body),
            Some(vec![e("a@x.com", true, false), e("b@x.com", false, true)])
        );
        assert_eq!(parse_emails(&json!({"message": "Bad credentials"})), None);
        assert_eq!(subject(&json!({"id": 583231})), Some("583231".into()));
        assert_eq!(subject(&json!({"id": -1})), None);
        assert_eq!(subject(&json!({"id": null})), None);
    }
}
