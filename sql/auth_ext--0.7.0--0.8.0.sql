-- auth_ext 0.7.0 -> 0.8.0: sign-in through OAuth and OpenID Connect providers (the HTTP
-- server's /authorize and /callback; auth.oauth_states), identity linking and unlinking,
-- and token signing and verification without a SQL wrapper on the hot path.
\echo Use "ALTER EXTENSION auth_ext UPDATE TO '0.8.0'" to load this file. \quit

-- ---------------------------------------------------------------------------------------
-- Tokens (sign_jwt / verify_jwt speed).
-- ---------------------------------------------------------------------------------------

-- ---------------------------------------------------------------------------------------
-- OAuth and OIDC providers, identity linking.
-- ---------------------------------------------------------------------------------------
