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
}

#[derive(Debug, Clone)]
pub struct Ctx {
    /// `request.headers`: a JSON object of lower-cased header names.
    pub headers: String,
    pub method: String,
    pub path: String,
    pub auth: Auth,
}

const KEYED: &str = "select pg_catalog.set_config('request.headers', $1, true), \
    pg_catalog.set_config('request.method', $2, true), \
    pg_catalog.set_config('request.path', $3, true), \
    auth.authenticate_request($4, $5)";
const ANONYMOUS: &str = "select pg_catalog.set_config('request.headers', $1, true), \
    pg_catalog.set_config('request.method', $2, true), \
    pg_catalog.set_config('request.path', $3, true), \
    pg_catalog.set_config('role', 'anon', true)";

#[derive(Clone)]
pub struct Db {
    pool: Pool,
}

impl Db {
    pub fn new(url: &str, size: usize, wait: Duration) -> Result<Db, String> {
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
        Ok(Db { pool })
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
        let task = tokio::spawn(async move {
            let client = pool.get().await.map_err(|e| {
                tracing::warn!(error = %e, "no database connection");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unexpected_failure",
                    "No database connection is free; try again shortly",
                )
            })?;
            run(&client, &ctx, sql, &params).await
        });
        task.await.unwrap_or_else(|e| {
            tracing::error!(error = %e, "request task failed");
            Err(ApiError::unexpected())
        })
    }
}

async fn run(
    client: &tokio_postgres::Client,
    ctx: &Ctx,
    sql: &str,
    params: &[Param],
) -> Result<Value, ApiError> {
    let (context_sql, apikey, bearer) = match &ctx.auth {
        Auth::Keyed { apikey, bearer } => (KEYED, Some(apikey.as_str()), bearer.as_deref()),
        Auth::Anonymous => (ANONYMOUS, None, None),
    };
    let mut context: Vec<(&(dyn ToSql + Sync), Type)> = vec![
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
