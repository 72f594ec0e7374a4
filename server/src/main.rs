//! auth-ext-server: GoTrue's HTTP API over auth_ext's SQL functions, so that unmodified
//! Supabase clients work against a database with the extension. Stateless: any number of
//! copies can serve one database.

mod config;
mod db;
mod error;
mod handlers;
mod providers;
mod request;

use axum::extract::ConnectInfo;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use config::Config;
use error::ApiError;
use handlers::{account, admin, mfa, misc, oauth, token, verify};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::ServiceExt;
use tower_http::cors::{AllowOrigin, CorsLayer};

#[derive(Clone)]
pub struct App {
    pub db: db::Db,
    pub config: Arc<Config>,
    /// KiB of request bodies that may be held at once (AUTH_BODY_BUDGET).
    pub body_budget: Arc<tokio::sync::Semaphore>,
    /// The OAuth / OpenID Connect providers (AUTH_EXTERNAL_*).
    pub providers: Arc<providers::Providers>,
}

fn routes() -> Router<App> {
    Router::new()
        .route("/health", get(misc::health))
        .route("/settings", get(misc::settings))
        .route("/.well-known/jwks.json", get(misc::jwks))
        .route("/signup", post(account::signup))
        .route("/token", post(token::token))
        .route("/logout", post(token::logout))
        .route("/recover", post(account::recover))
        .route("/otp", post(account::otp))
        .route("/magiclink", post(account::magiclink))
        .route("/resend", post(account::resend))
        .route("/verify", get(verify::verify_get).post(verify::verify_post))
        .route("/user", get(account::get_user).put(account::update_user))
        .route("/reauthenticate", get(account::reauthenticate))
        .route("/authorize", get(oauth::authorize))
        .route("/callback", get(oauth::callback).post(oauth::callback))
        .route("/user/identities/authorize", get(oauth::link))
        .route(
            "/user/identities/{id}",
            axum::routing::delete(oauth::unlink),
        )
        .route("/factors", post(mfa::enroll))
        .route("/factors/{id}", axum::routing::delete(mfa::unenroll))
        .route("/factors/{id}/challenge", post(mfa::challenge))
        .route("/factors/{id}/verify", post(mfa::verify))
        .route(
            "/factors/recovery-codes/regenerate",
            post(mfa::regenerate_recovery_codes),
        )
        .route(
            "/factors/recovery-codes/verify",
            post(mfa::verify_recovery_code),
        )
        .route("/admin/users/{id}/factors", get(admin::list_factors))
        .route(
            "/admin/users/{id}/factors/{factor_id}",
            axum::routing::delete(admin::delete_factor),
        )
        .route("/invite", post(admin::invite))
        .route("/admin/generate_link", post(admin::generate_link))
        .route(
            "/admin/users",
            get(admin::list_users).post(admin::create_user),
        )
        .route(
            "/admin/users/{id}",
            get(admin::get_user)
                .put(admin::update_user)
                .delete(admin::delete_user),
        )
}

fn cors(config: &Config) -> CorsLayer {
    let origins = if config.cors_origins.iter().any(|o| o == "*") {
        // GoTrue allows credentials with any origin by echoing it.
        AllowOrigin::mirror_request()
    } else {
        AllowOrigin::list(
            config
                .cors_origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok()),
        )
    };
    let headers = [
        "accept",
        "authorization",
        "content-type",
        "x-client-ip",
        "x-client-info",
        "x-jwt-aud",
        "x-use-cookie",
        "x-supabase-api-version",
        "apikey",
    ]
    .map(HeaderName::from_static);
    CorsLayer::new()
        .allow_origin(origins)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers(headers)
        .expose_headers(
            ["x-total-count", "link", "x-supabase-api-version"].map(HeaderName::from_static),
        )
        .allow_credentials(true)
}

pub fn app(state: App) -> Router {
    let timeout = state.config.request_timeout;
    let body_limit = state.config.body_limit;
    let cors = cors(&state.config);
    Router::new()
        .merge(routes())
        .nest("/auth/v1", routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn(
            move |req: Request, next: Next| async move {
                match tokio::time::timeout(timeout, next.run(req)).await {
                    Ok(r) => r,
                    Err(_) => ApiError::new(
                        StatusCode::GATEWAY_TIMEOUT,
                        "request_timeout",
                        "Processing this request timed out, please retry after a moment.",
                    )
                    .into_response(),
                }
            },
        ))
        .layer(middleware::from_fn(error::shape_errors))
        .layer(middleware::from_fn(no_store))
        .layer(middleware::from_fn(log_request))
        .layer(cors)
        .with_state(state)
}

/// Answers carry tokens and users: no cache keeps them (the JWKS sets its own policy).
async fn no_store(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    response
        .headers_mut()
        .entry(axum::http::header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "Not Found")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "Method Not Allowed",
    )
}

/// One line per request: method, path (never the query string, which can hold a token),
/// status and time. Bodies and headers are never logged.
async fn log_request(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().chars().take(200).collect::<String>();
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16();
    let error_code = response
        .headers()
        .get("x-sb-error-code")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    tracing::info!(
        %method,
        path,
        status,
        error_code,
        ms = started.elapsed().as_secs_f64() * 1e3,
        "request"
    );
    response
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down: finishing requests in flight");
}

fn main() {
    let arg = std::env::args().nth(1);
    match arg.as_deref() {
        Some("--help" | "-h") => {
            print!("{}", config::HELP);
            return;
        }
        Some("--version" | "-V") => {
            println!("auth-ext-server {}", env!("CARGO_PKG_VERSION"));
            return;
        }
        Some(other) => {
            eprintln!("auth-ext-server: unknown argument {other:?} (try --help)");
            std::process::exit(2);
        }
        None => {}
    }
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("auth-ext-server: {e} (try --help)");
            std::process::exit(2);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    if config.log_json {
        logs.json().init();
    } else {
        logs.init();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("auth-ext-server: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(serve(config)) {
        tracing::error!(error = %e, "server stopped");
        std::process::exit(1);
    }
}

async fn serve(config: Config) -> Result<(), String> {
    let db = db::Db::new(
        &config.database_url,
        config.pool_size,
        config.pool_wait,
        config.request_timeout,
    )?;
    db.check_setup().await;
    let providers = providers::Providers::from_env(&config.external_url)?;
    if !providers.enabled().is_empty() {
        tracing::info!(providers = ?providers.enabled(), "sign-in providers");
        db.check_oauth_role().await;
    }
    let listen = config.listen;
    let budget_kib = (config.body_budget / 1024).clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
    let (max_connections, header_timeout, grace) = (
        config.max_connections,
        config.header_timeout,
        config.shutdown_grace,
    );
    let state = App {
        db,
        config: Arc::new(config),
        body_budget: Arc::new(tokio::sync::Semaphore::new(budget_kib)),
        providers: Arc::new(providers),
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    tracing::info!(%listen, "listening");
    let router = app(state);
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let graceful = GracefulShutdown::new();
    let connections = Arc::new(tokio::sync::Semaphore::new(max_connections));
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        // At most AUTH_MAX_CONNECTIONS open at once: the next waits to be accepted.
        let permit = tokio::select! {
            p = connections.clone().acquire_owned() => p.map_err(|e| e.to_string())?,
            _ = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            router.clone().oneshot(req)
        });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = connection.await;
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("every request finished"),
        _ = tokio::time::sleep(grace) => tracing::warn!("shutdown grace over: closing the remaining connections"),
    }
    Ok(())
}
