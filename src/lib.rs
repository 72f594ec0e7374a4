//! auth_ext: Supabase-Auth-compatible authentication inside PostgreSQL.
//! This file only wires the modules, the SQL files and `_PG_init` together.

use pgrx::prelude::*;

mod autonomous;
mod claims;
mod config;
mod db;
mod error;
mod flows;
mod hashing;
mod hooks;
mod jwk;
mod jwt;
mod keys;
mod lockout;
mod metadata;
mod mfa;
mod password;
mod pkce;
mod planner;
mod refresh;
mod request;
mod sessions;
mod shmem;
mod tokens;
mod users;

::pgrx::pg_module_magic!();

extension_sql_file!("../sql/bootstrap.sql", bootstrap);
extension_sql_file!("../sql/flows.sql", name = "flows");
extension_sql_file!("../sql/admin.sql", name = "admin");
extension_sql_file!("../sql/mfa.sql", name = "mfa");
extension_sql_file!("../sql/finalize.sql", finalize);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    config::register();
    keys::register_invalidation();
    lockout::register_callbacks();
    shmem::init();
}

#[cfg(any(test, feature = "pg_test"))]
mod pg_tests;

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
