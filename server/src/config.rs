//! The one place that reads configuration: environment variables, each with a default
//! except the database URL. Rules about users and tokens are the database's settings
//! (`auth.*`), not the server's: SQL callers and HTTP callers see the same ones.

use std::net::SocketAddr;
use std::time::Duration;

pub const HELP: &str = "\
auth-ext-server: GoTrue's HTTP API (what supabase-js and the other Supabase clients call)
over the auth_ext extension's SQL functions. Serves every endpoint at / and under /auth/v1.

Usage: auth-ext-server [--help | --version]

Configuration (environment variables):
  AUTH_DATABASE_URL       required; postgres://user:password@host:port/dbname or
                          'host=... dbname=... user=...'. The user is the server's own login
                          role: NOINHERIT, granted anon, authenticated and service_role.
  AUTH_LISTEN             address to listen on                          [127.0.0.1:9999]
  AUTH_EXTERNAL_URL       the URL clients reach this server at (the /verify links that
                          admin generate_link returns)   [http://AUTH_LISTEN; localhost
                                                          for an unspecified address]
  AUTH_CORS_ORIGINS       comma-separated allowed origins, or *         [*]
  AUTH_TRUSTED_PROXIES    proxies in front of this server whose X-Forwarded-For entries
                          are kept (0: only the connection's address counts)  [0]
  AUTH_POOL_SIZE          database connections                          [16]
  AUTH_POOL_WAIT_MS       how long a request waits for a connection     [5000]
  AUTH_BODY_LIMIT         request body limit in bytes (GoTrue: 1 MiB)   [1048576]
  AUTH_BODY_BUDGET        bytes of request bodies held at once; more waits,
                          then 503                                      [67108864]
  AUTH_MAX_CONNECTIONS    open client connections; more wait to be accepted [1024]
  AUTH_HEADER_TIMEOUT_MS  time a client has to send a request's headers [10000]
  AUTH_SHUTDOWN_GRACE_MS  on SIGTERM, time requests in flight get       [10000]
  AUTH_REQUEST_TIMEOUT_MS a request's time limit, in milliseconds      [30000]
  AUTH_LOG                log filter (tracing's EnvFilter syntax)       [info]
  AUTH_LOG_FORMAT         json or text                                  [json]

Social login providers, one set of variables per provider NAME (github, google, or any name
of A-Z, 0-9 and _ for an OpenID Connect provider); the name in URLs is lower-case:
  AUTH_EXTERNAL_<NAME>_CLIENT_ID     the client id; setting it configures the provider
  AUTH_EXTERNAL_<NAME>_SECRET        required; the client secret
  AUTH_EXTERNAL_<NAME>_ENABLED       false keeps a configured provider off       [true]
  AUTH_EXTERNAL_<NAME>_REDIRECT_URI  the callback URL registered at the provider
                                                        [AUTH_EXTERNAL_URL/callback]
  AUTH_EXTERNAL_<NAME>_SCOPES        scopes, space- or comma-separated, replacing the
                                     defaults (github: user:email; OpenID Connect:
                                     openid email profile; openid is always asked for)
  AUTH_EXTERNAL_GITHUB_URL           GitHub Enterprise's URL (its API at URL/api/v3)
                                                                 [https://github.com]
  AUTH_EXTERNAL_<NAME>_ISSUER        an OpenID Connect provider's issuer, as its
                                     discovery document spells it; required for names
                                     other than github and google
                                                  [google: https://accounts.google.com]
Provider URLs must be https (http only on a loopback host). Calls to providers time out
after 10 s, follow no redirects and read at most 1 MiB.

The database must let the server's role see the client's address: the server appends the
connection's address to X-Forwarded-For (after the AUTH_TRUSTED_PROXIES entries it keeps),
so set `alter role <server role> set auth.trusted_proxies = 1` (as a superuser).
Logs never contain a password, token, key or request body.
";

#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: String,
    pub listen: SocketAddr,
    pub external_url: String,
    pub cors_origins: Vec<String>,
    pub trusted_proxies: usize,
    pub pool_size: usize,
    pub pool_wait: Duration,
    pub body_limit: usize,
    pub body_budget: usize,
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub shutdown_grace: Duration,
    pub request_timeout: Duration,
    pub log_filter: String,
    pub log_json: bool,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn number<T: std::str::FromStr>(name: &str, default: T) -> Result<T, String> {
    match var(name) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| format!("{name} must be a number, not {v:?}")),
    }
}

impl Config {
    pub fn from_env() -> Result<Config, String> {
        let database_url = var("AUTH_DATABASE_URL").ok_or("AUTH_DATABASE_URL is required")?;
        let listen_text = var("AUTH_LISTEN").unwrap_or_else(|| "127.0.0.1:9999".into());
        let listen: SocketAddr = listen_text
            .parse()
            .map_err(|_| format!("AUTH_LISTEN must be an address:port, not {listen_text:?}"))?;
        let reachable = if listen.ip().is_unspecified() {
            format!("http://localhost:{}", listen.port())
        } else {
            format!("http://{listen}")
        };
        let external_url = var("AUTH_EXTERNAL_URL")
            .unwrap_or(reachable)
            .trim_end_matches('/')
            .to_string();
        url::Url::parse(&external_url)
            .map_err(|e| format!("AUTH_EXTERNAL_URL is not a URL: {e}"))?;
        let cors_origins = var("AUTH_CORS_ORIGINS")
            .unwrap_or_else(|| "*".into())
            .split(',')
            .map(|o| o.trim().trim_end_matches('/').to_string())
            .filter(|o| !o.is_empty())
            .collect();
        let pool_size = number("AUTH_POOL_SIZE", 16usize)?;
        if pool_size == 0 {
            return Err("AUTH_POOL_SIZE must be at least 1".into());
        }
        let log_format = var("AUTH_LOG_FORMAT").unwrap_or_else(|| "json".into());
        if log_format != "json" && log_format != "text" {
            return Err(format!(
                "AUTH_LOG_FORMAT must be json or text, not {log_format:?}"
            ));
        }
        Ok(Config {
            database_url,
            listen,
            external_url,
            cors_origins,
            trusted_proxies: number("AUTH_TRUSTED_PROXIES", 0usize)?,
            pool_size,
            pool_wait: Duration::from_millis(number("AUTH_POOL_WAIT_MS", 5000u64)?),
            body_limit: number("AUTH_BODY_LIMIT", 1usize << 20)?,
            body_budget: number("AUTH_BODY_BUDGET", 64usize << 20)?,
            max_connections: number("AUTH_MAX_CONNECTIONS", 1024usize)?.max(1),
            header_timeout: Duration::from_millis(number("AUTH_HEADER_TIMEOUT_MS", 10_000u64)?),
            shutdown_grace: Duration::from_millis(number("AUTH_SHUTDOWN_GRACE_MS", 10_000u64)?),
            request_timeout: Duration::from_millis(number("AUTH_REQUEST_TIMEOUT_MS", 30_000u64)?),
            log_filter: var("AUTH_LOG").unwrap_or_else(|| "info".into()),
            log_json: log_format == "json",
        })
    }
}
