//! One transaction per request, as PostgREST runs it: the request's settings and role,
//! then one extension function. The four statements (begin, context, call, commit) are
//! sent together and answered together: one round trip. Unnamed statements only
//! (`query_typed`), so the server works through PgBouncer in transaction pooling mode.

use crate::error::ApiError;
use axum::http::StatusCode;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use serde_json::Value;
use std::time::Duration;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::NoTls;

/// A parameter of the extension call.
#[derive(Debug, Clone)]
pub enum Param {
    Text(Option<String>),
    Json(Option<Value>),
    Bool(Option<bool>),
    Int(Option<i32>),
}

impl Param {
    pub fn text(v: Option<&str>) -> Param {
        Param::Text(v.map(str::to_string))
    }
}

/// Who the request acts as.
#[derive(Debug, Clone)]
pub enum Auth {
    /// The gateway's check and `auth.authenticate`: the API key, and the bearer token when
    /// there is one (else the key acts).
    Keyed {
        apikey: String,
        bearer: Option<String>,
    },
    /// Endpoints a browser opens without a key (the e-mail link, the JWKS, health): anon.
    Anonymous,
    /// A provider's callback, after the server read the user from the provider: the role
    /// auth_oauth, the only one that may finish a provider sign-in.
    OAuthCallback,
}

#[derive(Debug, Clone)]
pub struct Ctx {
    /// `request.headers`: a JSON object of lower-cased header names.
    pub headers: String,
    pub method: String,
    pub path: String,
    pub auth: Auth,
}

// The statement timeout (local to the transaction, so safe through PgBouncer) ends the call
// before the request's own time limit: a request answered 504 has not written anything.
const KEYED: &str = "select pg_catalog.set_config('statement_timeout', $1, true), \
    pg_catalog.set_config('request.headers', $2, true), \
    pg_catalog.set_config('request.method', $3, true), \
    pg_catalog.set_config('request.path', $4, true), \
    auth.authenticate_request($5, $6)";
const ANONYMOUS: &str = "select pg_catalog.set_config('statement_timeout', $1, true), \
    pg_catalog.set_config('request.headers', $2, true), \
    pg_catalog.set_config('request.method', $3, true), \
    pg_catalog.set_config('request.path', $4, true), \
    pg_catalog.set_config('role', 'anon', true)";
const OAUTH_CALLBACK: &str = "select pg_catalog.set_config('statement_timeout', $1, true), \
    pg_catalog.set_config('request.headers', $2, true), \
    pg_catalog.set_config('request.method', $3, true), \
    pg_catalog.set_config('request.path', $4, true), \
    pg_catalog.set_config('role', 'auth_oauth', true)";

#[derive(Clone)]
pub struct Db {
    pool: Pool,
    /// `statement_timeout` for the extension call, e.g. `29500ms`.
    statement_timeout: String,
}

impl Db {
    pub fn new(
        url: &str,
        size: usize,
        wait: Duration,
        request_timeout: Duration,
    ) -> Result<Db, String> {
        let mut pg: tokio_postgres::Config =
            url.parse().map_err(|e| format!("AUTH_DATABASE_URL: {e}"))?;
        if pg.get_application_name().is_none() {
            pg.application_name("auth-ext-server");
        }
        let manager = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(size)
            .wait_timeout(Some(wait))
            .create_timeout(Some(wait))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| format!("connection pool: {e}"))?;
        let statement = request_timeout
            .saturating_sub(Duration::from_millis(500))
            .max(Duration::from_millis(100));
        Ok(Db {
            pool,
            statement_timeout: format!("{}ms", statement.as_millis()),
        })
    }

    /// A warning at startup when the server's role does not trust the one hop the server
    /// writes: every client would then share one address for the per-address limits.
    pub async fn check_setup(&self) {
        let Ok(client) = self.pool.get().await else {
            tracing::warn!("the database is not reachable yet");
            return;
        };
        let trusted = client
            .query_opt(
                "select pg_catalog.current_setting('auth.trusted_proxies', true)",
                &[],
            )
            .await
            .ok()
            .flatten()
            .and_then(|r| r.get::<_, Option<String>>(0))
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0);
        if trusted == 0 {
            tracing::warn!(
                "auth.trusted_proxies is 0 for this role: the database sees no client address \
                 (alter role <server role> set auth.trusted_proxies = 1)"
            );
        }
    }

    /// A warning at startup when sign-in providers are configured but the server's role may
    /// not finish a provider sign-in (every callback would then fail).
    pub async fn check_oauth_role(&self) {
        let Ok(client) = self.pool.get().await else {
            return;
        };
        let member = client
            .query_opt("select pg_catalog.pg_has_role('auth_oauth', 'MEMBER')", &[])
            .await
            .ok()
            .flatten()
            .and_then(|r| r.get::<_, Option<bool>>(0))
            .unwrap_or(false);
        if !member {
            tracing::warn!(
                "sign-in providers are configured but this role is not a member of auth_oauth \
                 (grant auth_oauth to <server role>): every /callback will fail"
            );
        }
    }

    /// Runs `sql` (one extension call whose one column is json/jsonb, or no row) in the
    /// request's transaction and returns that value. The work runs in a task of its own, so
    /// a client that hangs up cannot leave a connection mid-transaction.
    pub async fn call(
        &self,
        ctx: Ctx,
        sql: &'static str,
        params: Vec<Param>,
    ) -> Result<Value, ApiError> {
        let pool = self.pool.clone();
        let timeout = self.statement_timeout.clone();
        let (cancel_tx, cancel_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let client = pool.get().await.map_err(|e| {
                tracing::warn!(error = %e, "no database connection");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unexpected_failure",
                    "No database connection is free; try again shortly",
                )
            })?;
            let _ = cancel_tx.send(client.cancel_token());
            run(&client, &ctx, &timeout, sql, &params).await
        });
        // Dropped before the task ends (the request's time limit), the call is cancelled:
        // it rolls back rather than committing after the client was told it failed.
        let mut guard = CancelOnDrop(Some(cancel_rx));
        let result = task.await.unwrap_or_else(|e| {
            tracing::error!(error = %e, "request task failed");
            Err(ApiError::unexpected())
        });
        guard.0 = None;
        result
    }
}

struct CancelOnDrop(Option<tokio::sync::oneshot::Receiver<tokio_postgres::CancelToken>>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(mut rx) = self.0.take() {
            if let Ok(token) = rx.try_recv() {
                tokio::spawn(async move {
                    let _ = token.cancel_query(NoTls).await;
                });
            }
        }
    }
}

async fn run(
    client: &tokio_postgres::Client,
    ctx: &Ctx,
    statement_timeout: &String,
    sql: &str,
    params: &[Param],
) -> Result<Value, ApiError> {
    let (context_sql, apikey, bearer) = match &ctx.auth {
        Auth::Keyed { apikey, bearer } => (KEYED, Some(apikey.as_str()), bearer.as_deref()),
        Auth::Anonymous => (ANONYMOUS, None, None),
        Auth::OAuthCallback => (OAUTH_CALLBACK, None, None),
    };
    let mut context: Vec<(&(dyn ToSql + Sync), Type)> = vec![
        (statement_timeout, Type::TEXT),
        (&ctx.headers, Type::TEXT),
        (&ctx.method, Type::TEXT),
        (&ctx.path, Type::TEXT),
    ];
    if context_sql == KEYED {
        context.push((&apikey, Type::TEXT));
        context.push((&bearer, Type::TEXT));
    }
    let call: Vec<(&(dyn ToSql + Sync), Type)> = params
        .iter()
        .map(|p| -> (&(dyn ToSql + Sync), Type) {
            match p {
                Param::Text(v) => (v, Type::TEXT),
                Param::Json(v) => (v, Type::JSONB),
                Param::Bool(v) => (v, Type::BOOL),
                Param::Int(v) => (v, Type::INT4),
            }
        })
        .collect();
    // Polled together, the four are written to the connection before any answer is read.
    let (begin, context, result, commit) = tokio::join!(
        client.query_typed("begin", &[]),
        client.query_typed(context_sql, &context),
        client.query_typed(sql, &call),
        client.query_typed("commit", &[]),
    );
    let first_error = [
        begin.as_ref().err(),
        context.as_ref().err(),
        result.as_ref().err(),
    ]
    .into_iter()
    .flatten()
    .next();
    if let Some(e) = first_error {
        return Err(ApiError::from_db(e));
    }
    let rows = result.map_err(|e| ApiError::from_db(&e))?;
    commit.map_err(|e| ApiError::from_db(&e))?;
    let Some(row) = rows.first() else {
        return Ok(Value::Null);
    };
    row.try_get::<_, Option<Value>>(0)
        .map(Option::unwrap_or_default)
        .map_err(|e| {
            tracing::error!(error = %e, "an extension call answered something that is not JSON");
            ApiError::unexpected()
        })
}
