//! `AUTH_EXTERNAL_<NAME>_*` variables to provider settings. Refused at startup: a provider
//! without a secret, an unknown name without an issuer, an issuer or base URL that is not
//! https (loopback hosts excepted, for tests), a variable that belongs to no provider.

use std::collections::BTreeMap;

const PREFIX: &str = "AUTH_EXTERNAL_";
/// Suffixes of a provider's variables, the longer before the ones they end with.
const FIELDS: &[&str] = &[
    "_REDIRECT_URI",
    "_CLIENT_ID",
    "_ENABLED",
    "_SECRET",
    "_ISSUER",
    "_SCOPES",
    "_URL",
];
const GOOGLE_ISSUER: &str = "https://accounts.google.com";

pub(super) struct Settings {
    pub name: String,
    pub enabled: bool,
    pub client_id: String,
    pub secret: String,
    pub redirect_uri: String,
    pub scopes: Vec<String>,
    pub kind: KindSettings,
}

pub(super) enum KindSettings {
    Github {
        base: String,
        api: String,
    },
    Oidc {
        issuer: String,
        /// Other `iss` values the provider is known to put in its ID tokens.
        extra_issuers: Vec<String>,
    },
}

/// Splits `AUTH_EXTERNAL_<NAME><FIELD>` into (NAME, FIELD).
fn split(var: &str) -> Option<(&str, &'static str)> {
    let rest = var.strip_prefix(PREFIX)?;
    FIELDS.iter().find_map(|f| {
        rest.strip_suffix(f)
            .filter(|name| !name.is_empty())
            .map(|name| (name, *f))
    })
}

fn valid_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

/// Checks that `value` is an https URL, or http on a loopback host (the fake providers of
/// the tests), without a query, fragment or credentials. `what` names it in the message.
pub(super) fn secure_url(what: &str, value: &str) -> Result<(), String> {
    let url = url::Url::parse(value).map_err(|e| format!("{what} is not a URL: {e}"))?;
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        None => false,
    };
    let scheme_ok = url.scheme() == "https" || (url.scheme() == "http" && loopback);
    if !scheme_ok || url.host().is_none() {
        return Err(format!(
            "{what} must be an https URL (http only for a loopback host), not {value:?}"
        ));
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err(format!(
            "{what} must not have a query, a fragment or credentials"
        ));
    }
    Ok(())
}

fn boolean(var: &str, value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!("{var} must be true or false, not {value:?}")),
    }
}

fn scope_list(text: &str) -> Vec<String> {
    let mut scopes = Vec::new();
    super::add_scopes(&mut scopes, text);
    scopes
}

pub(super) fn parse(
    vars: impl IntoIterator<Item = (String, String)>,
    external_url: &str,
) -> Result<Vec<Settings>, String> {
    // NAME -> FIELD -> value; empty values count as unset, as for the other settings.
    let mut by_name: BTreeMap<String, BTreeMap<&'static str, String>> = BTreeMap::new();
    for (var, value) in vars {
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        let Some((name, field)) = split(&var) else {
            continue;
        };
        if !valid_name(name) {
            return Err(format!(
                "{var}: a provider name is 1 to 32 of A-Z, 0-9 and _ in the variable"
            ));
        }
        by_name
            .entry(name.to_string())
            .or_default()
            .insert(field, value.to_string());
    }
    let mut settings = Vec::new();
    for (upper, fields) in by_name {
        let var = |field: &str| format!("{PREFIX}{upper}{field}");
        let Some(client_id) = fields.get("_CLIENT_ID").cloned() else {
            // ENABLED alone (turning off a provider that is not configured) is harmless.
            if let Some(field) = fields.keys().find(|f| **f != "_ENABLED") {
                return Err(format!(
                    "{} is set but {} is not: a provider needs a client id",
                    var(field),
                    var("_CLIENT_ID")
                ));
            }
            continue;
        };
        let name = upper.to_ascii_lowercase();
        let secret = fields
            .get("_SECRET")
            .cloned()
            .ok_or_else(|| format!("{} is required with {}", var("_SECRET"), var("_CLIENT_ID")))?;
        let enabled = match fields.get("_ENABLED") {
            Some(v) => boolean(&var("_ENABLED"), v)?,
            None => true,
        };
        let redirect_uri = match fields.get("_REDIRECT_URI") {
            Some(v) => {
                let url = url::Url::parse(v)
                    .map_err(|e| format!("{} is not a URL: {e}", var("_REDIRECT_URI")))?;
                if url.scheme() != "https" && url.scheme() != "http" {
                    return Err(format!("{} must be an http(s) URL", var("_REDIRECT_URI")));
                }
                v.clone()
            }
            None => format!("{external_url}/callback"),
        };
        let url = fields.get("_URL");
        let issuer = fields.get("_ISSUER");
        let (kind, default_scopes) = match name.as_str() {
            "github" => {
                if issuer.is_some() {
                    return Err(format!(
                        "{}: GitHub is OAuth 2, not OpenID Connect; set {} for GitHub Enterprise",
                        var("_ISSUER"),
                        var("_URL")
                    ));
                }
                let kind = match url {
                    None => KindSettings::Github {
                        base: "https://github.com".into(),
                        api: "https://api.github.com".into(),
                    },
                    Some(u) => {
                        secure_url(&var("_URL"), u)?;
                        let base = u.trim_end_matches('/').to_string();
                        // GitHub Enterprise serves its API under /api/v3 (as GoTrue assumes).
                        let api = format!("{base}/api/v3");
                        KindSettings::Github { base, api }
                    }
                };
                (kind, "user:email")
            }
            _ => {
                if url.is_some() {
                    return Err(format!(
                        "{} is only read for github; OpenID Connect providers take {}",
                        var("_URL"),
                        var("_ISSUER")
                    ));
                }
                let (issuer, extra_issuers) = match (name.as_str(), issuer) {
                    // Kept as written: `iss` is compared with it exactly.
                    (_, Some(i)) => {
                        secure_url(&var("_ISSUER"), i)?;
                        (i.clone(), Vec::new())
                    }
                    // Google's ID tokens may carry its issuer without the scheme.
                    ("google", None) => (GOOGLE_ISSUER.into(), vec!["accounts.google.com".into()]),
                    (_, None) => {
                        return Err(format!(
                            "unknown provider {name:?}: set {} to its OpenID Connect issuer \
                             (github and google are built in)",
                            var("_ISSUER")
                        ))
                    }
                };
                (
                    KindSettings::Oidc {
                        issuer,
                        extra_issuers,
                    },
                    "openid email profile",
                )
            }
        };
        let mut scopes = match fields.get("_SCOPES") {
            Some(s) => scope_list(s),
            None => scope_list(default_scopes),
        };
        // Without openid an OIDC provider sends no ID token, and the user cannot be read.
        if matches!(kind, KindSettings::Oidc { .. }) && !scopes.iter().any(|s| s == "openid") {
            scopes.insert(0, "openid".into());
        }
        settings.push(Settings {
            name,
            enabled,
            client_id,
            secret,
            redirect_uri,
            scopes,
            kind,
        });
    }
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::super::Providers;

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn parse(list: &[(&str, &str)]) -> Result<Providers, String> {
        Providers::from_vars(vars(list), "https://auth.example.com")
    }

    fn refused(list: &[(&str, &str)], needle: &str) {
        match parse(list) {
            Ok(_) => panic!("accepted {list:?}"),
            Err(e) => assert!(e.contains(needle), "{e:?} lacks {needle:?}"),
        }
    }

    #[test]
    fn none_configured() {
        let p = parse(&[("AUTH_EXTERNAL_URL", "https://x"), ("PATH", "/bin")]).unwrap();
        assert!(p.enabled().is_empty() && p.configured().is_empty());
    }

    #[test]
    fn providers_and_defaults() {
        let p = parse(&[
            ("AUTH_EXTERNAL_GITHUB_CLIENT_ID", "gh-id"),
            ("AUTH_EXTERNAL_GITHUB_SECRET", "gh-secret"),
            ("AUTH_EXTERNAL_GOOGLE_CLIENT_ID", "g-id"),
            ("AUTH_EXTERNAL_GOOGLE_SECRET", "g-secret"),
            ("AUTH_EXTERNAL_GOOGLE_ENABLED", "false"),
            ("AUTH_EXTERNAL_MY_IDP_CLIENT_ID", "m-id"),
            ("AUTH_EXTERNAL_MY_IDP_SECRET", "m-secret"),
            ("AUTH_EXTERNAL_MY_IDP_ISSUER", "https://idp.example.com/"),
            ("AUTH_EXTERNAL_MY_IDP_SCOPES", "email,groups"),
            (
                "AUTH_EXTERNAL_MY_IDP_REDIRECT_URI",
                "https://app.example.com/auth/v1/callback",
            ),
            ("AUTH_EXTERNAL_AZURE_ENABLED", "false"),
            ("AUTH_EXTERNAL_URL", "https://auth.example.com"),
        ])
        .unwrap();
        assert_eq!(p.configured(), ["github", "google", "my_idp"]);
        assert_eq!(p.enabled(), ["github", "my_idp"]);
        assert!(p.get("google").is_none());
        assert!(p.get("GITHUB").is_none());
        let gh = p.get("github").unwrap();
        assert_eq!(gh.name(), "github");
        assert_eq!(gh.redirect_uri, "https://auth.example.com/callback");
        assert_eq!(gh.scopes, ["user:email"]);
        match &gh.kind {
            super::super::Kind::Github(g) => {
                assert_eq!(g.base, "https://github.com");
                assert_eq!(g.api, "https://api.github.com");
            }
            _ => panic!("github is not GitHub"),
        }
        let m = p.get("my_idp").unwrap();
        assert_eq!(m.scopes, ["openid", "email", "groups"]);
        assert_eq!(m.redirect_uri, "https://app.example.com/auth/v1/callback");
        match &m.kind {
            super::super::Kind::Oidc(o) => assert_eq!(o.issuer, "https://idp.example.com/"),
            _ => panic!("my_idp is not OIDC"),
        }
    }

    #[test]
    fn github_enterprise_and_loopback() {
        let p = parse(&[
            ("AUTH_EXTERNAL_GITHUB_CLIENT_ID", "id"),
            ("AUTH_EXTERNAL_GITHUB_SECRET", "s"),
            ("AUTH_EXTERNAL_GITHUB_URL", "http://127.0.0.1:8080/"),
            ("AUTH_EXTERNAL_GOOGLE_CLIENT_ID", "id"),
            ("AUTH_EXTERNAL_GOOGLE_SECRET", "s"),
            ("AUTH_EXTERNAL_GOOGLE_ISSUER", "http://localhost:9000"),
            ("AUTH_EXTERNAL_X_CLIENT_ID", "id"),
            ("AUTH_EXTERNAL_X_SECRET", "s"),
            ("AUTH_EXTERNAL_X_ISSUER", "http://[::1]:9000/realm"),
        ])
        .unwrap();
        match &p.get("github").unwrap().kind {
            super::super::Kind::Github(g) => {
                assert_eq!(g.base, "http://127.0.0.1:8080");
                assert_eq!(g.api, "http://127.0.0.1:8080/api/v3");
            }
            _ => panic!("github is not GitHub"),
        }
        assert_eq!(p.enabled(), ["github", "google", "x"]);
    }

    #[test]
    fn refusals() {
        let gh = ("AUTH_EXTERNAL_GITHUB_CLIENT_ID", "id");
        let gs = ("AUTH_EXTERNAL_GITHUB_SECRET", "s");
        refused(&[gh], "AUTH_EXTERNAL_GITHUB_SECRET is required");
        refused(&[gh, ("AUTH_EXTERNAL_GITHUB_SECRET", "  ")], "is required");
        refused(
            &[
                ("AUTH_EXTERNAL_OKTA_CLIENT_ID", "id"),
                ("AUTH_EXTERNAL_OKTA_SECRET", "s"),
            ],
            "unknown provider \"okta\"",
        );
        refused(
            &[
                gh,
                gs,
                ("AUTH_EXTERNAL_GITHUB_URL", "http://github.example.com"),
            ],
            "must be an https URL",
        );
        refused(
            &[gh, gs, ("AUTH_EXTERNAL_GITHUB_URL", "http://10.0.0.1")],
            "must be an https URL",
        );
        refused(
            &[gh, gs, ("AUTH_EXTERNAL_GITHUB_URL", "github.com")],
            "not a URL",
        );
        refused(
            &[
                gh,
                gs,
                ("AUTH_EXTERNAL_GITHUB_URL", "https://u:p@github.com"),
            ],
            "credentials",
        );
        refused(
            &[
                gh,
                gs,
                ("AUTH_EXTERNAL_GITHUB_ISSUER", "https://github.com"),
            ],
            "not OpenID Connect",
        );
        refused(
            &[
                ("AUTH_EXTERNAL_OKTA_CLIENT_ID", "id"),
                ("AUTH_EXTERNAL_OKTA_SECRET", "s"),
                ("AUTH_EXTERNAL_OKTA_ISSUER", "http://okta.example.com"),
            ],
            "must be an https URL",
        );
        refused(
            &[
                ("AUTH_EXTERNAL_OKTA_CLIENT_ID", "id"),
                ("AUTH_EXTERNAL_OKTA_SECRET", "s"),
                ("AUTH_EXTERNAL_OKTA_ISSUER", "https://okta.example.com"),
                ("AUTH_EXTERNAL_OKTA_URL", "https://okta.example.com"),
            ],
            "only read for github",
        );
        refused(
            &[gh, gs, ("AUTH_EXTERNAL_GITHUB_ENABLED", "maybe")],
            "true or false",
        );
        refused(
            &[
                gh,
                gs,
                ("AUTH_EXTERNAL_GITHUB_REDIRECT_URI", "javascript:alert(1)"),
            ],
            "http(s) URL",
        );
        refused(
            &[gh, gs, ("AUTH_EXTERNAL_GITHUB_REDIRECT_URI", "/callback")],
            "not a URL",
        );
        refused(&[("AUTH_EXTERNAL_GITHUB_SECRET", "s")], "needs a client id");
        refused(
            &[("AUTH_EXTERNAL_Git-Hub_CLIENT_ID", "id")],
            "a provider name is 1 to 32",
        );
        refused(
            &[(
                "AUTH_EXTERNAL_ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_CLIENT_ID",
                "id",
            )],
            "a provider name is 1 to 32",
        );
    }
}
