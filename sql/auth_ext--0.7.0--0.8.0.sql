-- auth_ext 0.7.0 -> 0.8.0: sign-in through OAuth and OpenID Connect providers (the HTTP
-- server's /authorize and /callback; auth.oauth_states), identity linking and unlinking,
-- and token signing and verification without a SQL wrapper on the hot path.
\echo Use "ALTER EXTENSION auth_ext UPDATE TO '0.8.0'" to load this file. \quit

-- ---------------------------------------------------------------------------------------
-- Tokens (sign_jwt / verify_jwt speed).
-- ---------------------------------------------------------------------------------------

-- auth.sign_jwt becomes the Rust function itself, without the SECURITY DEFINER wrapper:
-- the key cache's load takes the owner's rights and a pinned search_path on its own, so
-- the hot path needs neither (src/tokens.rs). Replaced in place, so its grants stay;
-- then the same grants as a fresh install, stated again.
CREATE OR REPLACE FUNCTION auth."sign_jwt"(
	"claims" jsonb /* Option < JsonbArg > */
) RETURNS TEXT /* String */
VOLATILE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'sign_jwt_wrapper';
comment on function auth.sign_jwt(jsonb) is
  'Sign arbitrary claims with the in-use key (API keys for anon/service_role). service_role and owner only.';
revoke all on function auth.sign_jwt(jsonb) from public;
grant execute on function auth.sign_jwt(jsonb) to service_role;
-- Its former inner function; the library keeps the symbol for databases not yet updated.
drop function auth._sign_jwt(text);

-- ---------------------------------------------------------------------------------------
-- OAuth and OIDC providers, identity linking.
-- ---------------------------------------------------------------------------------------
