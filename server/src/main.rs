//! auth-ext-server: GoTrue's HTTP API over auth_ext's SQL functions, so that unmodified
//! Supabase clients work against a database with the extension. Stateless: any number of
//! copies can serve one database.

mod config;
mod db;
mod error;
mod handlers;
mod request;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use config::Config;
use error::ApiError;
use handlers::{account, admin, misc, token, verify};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tower_http::cors::{AllowOrigin, CorsLayer};

#[derive(Clone)]
pub struct App {
    pub db: db::Db,
    pub config: Arc<Config>,
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
        .layer(middleware::from_fn(log_request))
        .layer(cors)
        .with_state(state)
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
    let db = db::Db::new(&config.database_url, config.pool_size, config.pool_wait)?;
    let listen = config.listen;
    let state = App {
        db,
        config: Arc::new(config),
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    tracing::info!(%listen, "listening");
    axum::serve(
        listener,
        app(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await
    .map_err(|e| e.to_string())
}
