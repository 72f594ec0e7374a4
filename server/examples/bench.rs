//! The server's overhead: requests per second and p50/p99 latency of
//! `grant_type=refresh_token`, `grant_type=password` and `GET /user` at 1, 8 and 32 clients
//! through the server, beside the same transactions sent straight to PostgreSQL in the same
//! run (the same four statements, pipelined the same way); then a bounded soak of mixed
//! traffic that counts every answer by status and code and samples the server's memory.
//! Run by bench/http.sh, which starts a cluster and the server and sets:
//! AUTH_URL, ANON_KEY, SQL_DSN (the server's role), SERVER_PID, BENCH_SECONDS,
//! SOAK_SECONDS, BENCH_USERS (accounts prepared with password BENCH_PASSWORD).

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::NoTls;

type Http = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

const PASSWORD: &str = "bench password 1234";

struct Env {
    url: String,
    anon: String,
    dsn: String,
    users: usize,
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Work {
    Refresh,
    Password,
    User,
}

impl Work {
    fn name(self) -> &'static str {
        match self {
            Work::Refresh => "refresh_token",
            Work::Password => "password",
            Work::User => "GET /user",
        }
    }
}

/// What one client holds: its account, its latest refresh token and access token.
#[derive(Clone)]
struct Account {
    email: String,
    refresh: String,
    access: String,
}

fn var(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

async fn http(
    client: &Http,
    env: &Env,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    raw(client, env, method, path, bearer, body).await
}

async fn raw(
    client: &Http,
    env: &Env,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: String,
) -> (u16, Value) {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("{}{}", env.url, path))
        .header("apikey", &env.anon)
        .header(
            "authorization",
            format!("Bearer {}", bearer.unwrap_or(&env.anon)),
        )
        .header("content-type", "application/json");
    req = req.header("x-supabase-api-version", "2024-01-01");
    let Ok(req) = req.body(Full::new(Bytes::from(body))) else {
        return (0, Value::Null);
    };
    match client.request(req).await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            (
                status,
                serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            )
        }
        Err(_) => (0, Value::Null),
    }
}

const CONTEXT: &str = "select pg_catalog.set_config('statement_timeout', $1, true), \
    pg_catalog.set_config('request.headers', $2, true), \
    pg_catalog.set_config('request.method', $3, true), \
    pg_catalog.set_config('request.path', $4, true), \
    auth.authenticate_request($5, $6)";

/// The same transaction the server sends, straight to the database.
async fn sql(
    db: &tokio_postgres::Client,
    env: &Env,
    bearer: Option<&str>,
    call: &str,
    args: &[&str],
) -> Result<Value, String> {
    let headers = r#"{"x-forwarded-for":"127.0.0.1","user-agent":"bench"}"#;
    let bearer = bearer.map(str::to_string);
    let ctx: Vec<(&(dyn ToSql + Sync), Type)> = vec![
        (&"29500ms", Type::TEXT),
        (&headers, Type::TEXT),
        (&"POST", Type::TEXT),
        (&"/token", Type::TEXT),
        (&env.anon, Type::TEXT),
        (&bearer, Type::TEXT),
    ];
    let params: Vec<(&(dyn ToSql + Sync), Type)> = args
        .iter()
        .map(|a| (a as &(dyn ToSql + Sync), Type::TEXT))
        .collect();
    let (b, c, r, k) = tokio::join!(
        db.query_typed("begin", &[]),
        db.query_typed(CONTEXT, &ctx),
        db.query_typed(call, &params),
        db.query_typed("commit", &[]),
    );
    b.map_err(|e| e.to_string())?;
    c.map_err(|e| e.to_string())?;
    let rows = r.map_err(|e| e.to_string())?;
    k.map_err(|e| e.to_string())?;
    rows.first()
        .and_then(|row| row.try_get::<_, Option<Value>>(0).ok().flatten())
        .ok_or_else(|| "no answer".to_string())
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn update(account: &mut Account, session: &Value) {
    if let (Some(r), Some(a)) = (
        session["refresh_token"].as_str(),
        session["access_token"].as_str(),
    ) {
        account.refresh = r.to_string();
        account.access = a.to_string();
    }
}

/// One client's loop over one workload, through HTTP or SQL, until `stop`.
async fn client_loop(
    env: Arc<Env>,
    work: Work,
    via_sql: bool,
    mut account: Account,
    stop: Instant,
) -> (Vec<f64>, usize) {
    let http_client: Http = Client::builder(TokioExecutor::new()).build_http();
    let db = if via_sql {
        match tokio_postgres::connect(&env.dsn, NoTls).await {
            Ok((c, conn)) => {
                tokio::spawn(conn);
                Some(c)
            }
            Err(e) => {
                eprintln!("connect: {e}");
                return (vec![], 1);
            }
        }
    } else {
        None
    };
    let (mut lat, mut errors) = (Vec::new(), 0);
    while Instant::now() < stop {
        let t = Instant::now();
        let ok = match (work, &db) {
            (Work::Refresh, None) => {
                let (s, v) = http(
                    &http_client,
                    &env,
                    "POST",
                    "/token?grant_type=refresh_token",
                    None,
                    Some(json!({"refresh_token": account.refresh})),
                )
                .await;
                update(&mut account, &v);
                s == 200
            }
            (Work::Refresh, Some(db)) => match sql(
                db,
                &env,
                None,
                "select auth.refresh($1)",
                &[&account.refresh],
            )
            .await
            {
                Ok(v) => {
                    update(&mut account, &v);
                    true
                }
                Err(_) => false,
            },
            (Work::Password, None) => {
                let (s, _) = http(
                    &http_client,
                    &env,
                    "POST",
                    "/token?grant_type=password",
                    None,
                    Some(json!({"email": account.email, "password": PASSWORD})),
                )
                .await;
                s == 200
            }
            (Work::Password, Some(db)) => sql(
                db,
                &env,
                None,
                "select auth.sign_in($1, $2)",
                &[&account.email, PASSWORD],
            )
            .await
            .is_ok(),
            (Work::User, None) => {
                http(
                    &http_client,
                    &env,
                    "GET",
                    "/user",
                    Some(&account.access),
                    None,
                )
                .await
                .0 == 200
            }
            (Work::User, Some(db)) => {
                sql(db, &env, Some(&account.access), "select auth.user()", &[])
                    .await
                    .is_ok()
            }
        };
        lat.push(t.elapsed().as_secs_f64() * 1e3);
        if !ok {
            errors += 1;
        }
    }
    (lat, errors)
}

async fn sign_in_all(env: &Env) -> Vec<Account> {
    let client: Http = Client::builder(TokioExecutor::new()).build_http();
    let mut out = Vec::new();
    for i in 0..env.users {
        let email = format!("bench{i}@example.com");
        let (s, v) = http(
            &client,
            env,
            "POST",
            "/token?grant_type=password",
            None,
            Some(json!({"email": email, "password": PASSWORD})),
        )
        .await;
        if s != 200 {
            eprintln!("sign-in of {email} failed: {s} {v}");
            std::process::exit(1);
        }
        let mut a = Account {
            email,
            refresh: String::new(),
            access: String::new(),
        };
        update(&mut a, &v);
        out.push(a);
    }
    out
}

async fn measure(
    env: &Arc<Env>,
    work: Work,
    via_sql: bool,
    clients: usize,
    seconds: f64,
) -> (f64, f64, f64, usize) {
    // Fresh sessions for every run: a refresh chain is per client.
    let accounts = sign_in_all(env).await;
    let stop = Instant::now() + Duration::from_secs_f64(seconds);
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            tokio::spawn(client_loop(
                env.clone(),
                work,
                via_sql,
                accounts[i % accounts.len()].clone(),
                stop,
            ))
        })
        .collect();
    let (mut lat, mut errors) = (Vec::new(), 0);
    for t in tasks {
        if let Ok((l, e)) = t.await {
            lat.extend(l);
            errors += e;
        }
    }
    lat.sort_by(f64::total_cmp);
    (
        lat.len() as f64 / seconds,
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        errors,
    )
}

fn rss_kib(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

async fn soak(env: Arc<Env>, seconds: f64, pid: String) {
    let accounts = sign_in_all(&env).await;
    let counts: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
    let stop = Instant::now() + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for (i, account) in accounts.into_iter().enumerate().take(16) {
        let (env, counts) = (env.clone(), counts.clone());
        tasks.push(tokio::spawn(async move {
            let client: Http = Client::builder(TokioExecutor::new()).build_http();
            let mut account = account;
            let mut n = i;
            while Instant::now() < stop {
                n += 1;
                let (label, (status, v)) = match n % 20 {
                    0 => ("password", http(&client, &env, "POST", "/token?grant_type=password", None, Some(json!({"email": account.email, "password": PASSWORD}))).await),
                    1 => ("wrong password", http(&client, &env, "POST", "/token?grant_type=password", None, Some(json!({"email": format!("nobody{i}-{n}@example.com"), "password": "wrong"}))).await),
                    2 => ("malformed JSON", raw(&client, &env, "POST", "/signup", None, "{\"email\": ".into()).await),
                    3..=8 => {
                        let r = http(&client, &env, "POST", "/token?grant_type=refresh_token", None, Some(json!({"refresh_token": account.refresh}))).await;
                        update(&mut account, &r.1);
                        ("refresh", r)
                    }
                    _ => ("user", http(&client, &env, "GET", "/user", Some(&account.access), None).await),
                };
                let code = v["code"].as_str().unwrap_or("");
                let key = format!("{label}: {status}{}{code}", if code.is_empty() { "" } else { " " });
                *counts.lock().unwrap_or_else(|e| e.into_inner()).entry(key).or_default() += 1;
            }
        }));
    }
    let started = Instant::now();
    let mut samples = Vec::new();
    while Instant::now() < stop {
        samples.push((started.elapsed().as_secs(), rss_kib(&pid).unwrap_or(0)));
        tokio::time::sleep(
            Duration::from_secs(10)
                .min(stop.saturating_duration_since(Instant::now()) + Duration::from_millis(1)),
        )
        .await;
    }
    for t in tasks {
        let _ = t.await;
    }
    samples.push((started.elapsed().as_secs(), rss_kib(&pid).unwrap_or(0)));
    let counts = counts.lock().unwrap_or_else(|e| e.into_inner());
    let total: usize = counts.values().sum();
    println!(
        "soak: {seconds:.0} s of mixed traffic at 16 clients, {total} requests ({:.0}/s)",
        total as f64 / seconds
    );
    for (k, v) in counts.iter() {
        println!("  {v:>8}  {k}");
    }
    let rss: Vec<String> = samples
        .iter()
        .map(|(t, kib)| format!("{t}s {:.1}", *kib as f64 / 1024.0))
        .collect();
    println!("server memory (RSS MiB) over time: {}", rss.join(", "));
}

#[tokio::main]
async fn main() {
    let env = Arc::new(Env {
        url: var("AUTH_URL", "http://127.0.0.1:9999"),
        anon: var("ANON_KEY", ""),
        dsn: var("SQL_DSN", ""),
        users: var("BENCH_USERS", "32").parse().unwrap_or(32),
    });
    let seconds: f64 = var("BENCH_SECONDS", "5").parse().unwrap_or(5.0);
    let soak_seconds: f64 = var("SOAK_SECONDS", "180").parse().unwrap_or(180.0);
    let pid = var("SERVER_PID", "");
    println!(
        "{:<14} {:>7} | {:>9} {:>8} {:>8} | {:>9} {:>8} {:>8} | {:>10} {:>6}",
        "workload",
        "clients",
        "http req/s",
        "p50 ms",
        "p99 ms",
        "sql tx/s",
        "p50 ms",
        "p99 ms",
        "http / sql",
        "errors"
    );
    for work in [Work::Refresh, Work::Password, Work::User] {
        for clients in [1, 8, 32] {
            let (sr, s50, s99, se) = measure(&env, work, true, clients, seconds).await;
            let (hr, h50, h99, he) = measure(&env, work, false, clients, seconds).await;
            println!(
                "{:<14} {:>7} | {:>10.0} {:>8.2} {:>8.2} | {:>9.0} {:>8.2} {:>8.2} | {:>10.2} {:>6}",
                work.name(), clients, hr, h50, h99, sr, s50, s99, hr / sr, he + se
            );
        }
    }
    if soak_seconds > 0.0 {
        soak(env, soak_seconds, pid).await;
    }
}
