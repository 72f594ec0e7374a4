-- Signing keys: rotation walk-through, attacks on verification, trusted third-party
-- issuers, and the RFC 7515 / RFC 8037 examples as fixed vectors.
begin;
create extension pgcrypto;
create function pg_temp.b64url(b bytea) returns text language sql
  as $$ select translate(encode(b, 'base64'), E'+/=\n', '-_') $$;
create function pg_temp.header(token text) returns jsonb language sql as $$
  select convert_from(decode(rpad(translate(split_part(token, '.', 1), '-_', '+/'),
         (length(split_part(token, '.', 1)) + 3) / 4 * 4, '='), 'base64'), 'utf8')::jsonb $$;
-- A token signed with HMAC-SHA256 by an arbitrary key: the forger's tool.
create function pg_temp.forge(header jsonb, claims jsonb, key bytea) returns text language sql as $$
  select s || '.' || pg_temp.b64url(hmac(convert_to(s, 'utf8'), key, 'sha256'))
    from (select pg_temp.b64url(convert_to(header::text, 'utf8')) || '.'
                 || pg_temp.b64url(convert_to(claims::text, 'utf8')) as s) x $$;
create function pg_temp.claims(sub text, extra jsonb default '{}') returns jsonb language sql as $$
  select jsonb_build_object('sub', sub, 'role', 'authenticated',
                            'exp', extract(epoch from now())::bigint + 600) || extra $$;
create function pg_temp.verify(token text) returns text language sql as $$
  select public.try(format('select auth.verify_jwt(%L)', token)) $$;

-- 1. Rotation. A fresh install signs with a generated HS256 key; add key A (ES256) as a
-- standby key, publish it, then promote it.
select algorithm, state, public_jwk is null as no_public_half from auth.list_signing_keys();
select auth.create_signing_key('ES256', 'key-a') - 'created_at' - 'updated_at' - 'public_jwk' as key_a;
select (select count(*) from jsonb_array_elements(auth.jwks() -> 'keys') k where k ->> 'kid' = 'key-a') as a_published_while_standby;
select auth.promote_signing_key('key-a') ->> 'state' as a_state;
select algorithm, state from auth.list_signing_keys() order by created_at;
select auth.sign_jwt(pg_temp.claims('a0000000-0000-4000-8000-00000000000a')) as token_a \gset
select pg_temp.header(:'token_a') as header_a;
select auth.verify_jwt(:'token_a') ->> 'sub' as a_verifies;

-- 2. Rotate to key B (EdDSA): A becomes previously_used and its tokens still verify.
select auth.create_signing_key('EdDSA', 'key-b') ->> 'state' as b_state;
select auth.promote_signing_key('key-b') ->> 'state' as b_state;
select kid, state from auth.list_signing_keys() where kid like 'key-%' order by kid;
select auth.verify_jwt(:'token_a') ->> 'sub' as a_still_verifies;
select auth.sign_jwt(pg_temp.claims('b0000000-0000-4000-8000-00000000000b')) as token_b \gset
select pg_temp.header(:'token_b') ->> 'alg' as alg_b, pg_temp.header(:'token_b') ->> 'kid' as kid_b;
select array_agg(k ->> 'kid' order by k ->> 'kid') as published
  from jsonb_array_elements(auth.jwks() -> 'keys') k where k ->> 'kid' like 'key-%';
-- Promoting the key in use again changes nothing.
select auth.promote_signing_key('key-b') ->> 'state' as b_again;

-- 3. Revoke A: its tokens fail at once, by name; B's pass; A leaves the JWKS and keeps no
-- private part.
select auth.revoke_signing_key('key-a') ->> 'state' as a_state;
select pg_temp.verify(:'token_a') as token_a_after_revocation;
select auth.verify_jwt(:'token_b') ->> 'sub' as b_verifies;
select secret is null as a_secret_erased, public_jwk is not null as a_public_kept
  from auth.signing_keys where kid = 'key-a';
select count(*) as a_in_jwks from jsonb_array_elements(auth.jwks() -> 'keys') k where k ->> 'kid' = 'key-a';
-- B's token works through the per-request path, under the authenticator role.
set local session authorization regress_authenticator;
select auth.authenticate(:'token_b') ->> 'role' as role, current_user, auth.uid();
reset session authorization;
-- Every state change was audited, without key material.
select payload ->> 'action' as action, payload -> 'traits' ->> 'kid' as kid
  from auth.audit_log_entries where payload -> 'traits' ->> 'kid' like 'key-%' order by created_at, 1;
select count(*) as audit_rows_with_key_material from auth.audit_log_entries a, auth.signing_keys k
 where k.secret is not null and strpos(a.payload::text, k.secret) > 0;

-- Management errors; none leaves a row behind.
select count(*) as keys_before from auth.signing_keys \gset
select try($$select auth.promote_signing_key('key-a')$$);
select try($$select auth.revoke_signing_key('key-b')$$);
select try($$select auth.promote_signing_key('no-such-key')$$);
select try($$select auth.revoke_signing_key(null)$$);
select try($$select auth.create_signing_key('ES512')$$);
select try($$select auth.create_signing_key('es256')$$);
select try($$select auth.create_signing_key(null)$$);
select try($$select auth.create_signing_key('ES256', 'key-b')$$);
select try($$select auth.create_signing_key('ES256', '')$$);
select try($$select auth.import_signing_key(null)$$);
select try($$select auth.import_signing_key('not a key')$$);
select try($$select auth.import_signing_key('-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----')$$);
select try($$select auth.import_signing_key('{"kty":"EC","crv":"P-384","d":"AA"}')$$);
select try($$select auth.import_signing_key('{"kty":"oct","k":"c2hvcnQ"}')$$);
select count(*) = :keys_before as nothing_half_written from auth.signing_keys;

-- Import an HS256 secret given as a JWK (PEM keys: the client tests import keys made by
-- an independent library).
select auth.import_signing_key('{"kty":"oct","k":"' || pg_temp.b64url(convert_to(repeat('s', 40), 'utf8')) || '"}',
                               'HS256', 'imported-hs') ->> 'algorithm' as imported;
select try($$select auth.import_signing_key('{"kty":"oct","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA"}', 'ES256')$$);

-- 4. Attacks. Each is 28000 bad_jwt with the reason.
select auth.create_signing_key('RS256', 'key-r') ->> 'kid' as kid;
select public_jwk as rsa_public from auth.signing_keys where kid = 'key-r' \gset
-- Algorithm confusion: HS256 "signed" with the RSA public key, naming its kid...
select pg_temp.verify(pg_temp.forge('{"alg":"HS256","kid":"key-r"}', pg_temp.claims('c0000000-0000-4000-8000-00000000000c'),
                                    convert_to(:'rsa_public', 'utf8'))) as alg_confusion;
-- ... and without a kid, where only the HS256 keys are tried.
select pg_temp.verify(pg_temp.forge('{"alg":"HS256"}', pg_temp.claims('c0000000-0000-4000-8000-00000000000c'),
                                    convert_to(:'rsa_public', 'utf8'))) as alg_confusion_no_kid;
-- alg none, in any case, with or without a signature.
select pg_temp.verify(pg_temp.b64url('{"alg":"none"}') || '.' || pg_temp.b64url(convert_to(pg_temp.claims('x')::text, 'utf8')) || '.') as alg_none;
select pg_temp.verify(pg_temp.b64url('{"alg":"None","kid":"key-b"}') || '.' || pg_temp.b64url(convert_to(pg_temp.claims('x')::text, 'utf8')) || '.AAAA') as alg_none_kid;
-- Unknown kid, and a kid naming a revoked key (with a signature from nowhere).
select pg_temp.verify(pg_temp.forge('{"alg":"HS256","kid":"no-such-key"}', pg_temp.claims('x'), 'k')) as unknown_kid;
select pg_temp.verify(pg_temp.forge('{"alg":"ES256","kid":"key-a"}', pg_temp.claims('x'), 'k')) as revoked_kid;
-- B's header on A's token: the signature does not match.
select pg_temp.verify(pg_temp.b64url(convert_to(pg_temp.header(:'token_b')::text, 'utf8')) || '.'
                      || split_part(:'token_a', '.', 2) || '.' || split_part(:'token_a', '.', 3)) as swapped_header;
-- Wrong issuer for our own tokens, when the issuer is checked.
set local auth.jwt_verify_issuer = on;
select pg_temp.verify(auth.sign_jwt(pg_temp.claims('x', '{"iss":"https://someone-else.example"}'))) as wrong_issuer;
select auth.verify_jwt(auth.sign_jwt(pg_temp.claims('x', '{"iss":"auth_ext"}'))) ->> 'iss' as own_issuer;
reset auth.jwt_verify_issuer;
-- Wrong audience, when one is required.
set local auth.jwt_aud = 'authenticated';
select pg_temp.verify(auth.sign_jwt(pg_temp.claims('x', '{"aud":"another-app"}'))) as wrong_audience;
reset auth.jwt_aud;

-- 5. Trusted issuers. The outside issuer here is a key of ours, promoted just long enough
-- to sign its tokens and then deleted: only its public JWK is registered.
create role regress_editor nologin;
grant regress_editor to regress_authenticator;
create role regress_bypass nologin bypassrls;
select auth.create_signing_key('RS256', 'idp-key') ->> 'kid' as kid;
select auth.promote_signing_key('idp-key') ->> 'state' as idp_signing;
select auth.sign_jwt(pg_temp.claims('d0000000-0000-4000-8000-00000000000d',
       '{"iss":"https://idp.example","aud":"my-app","role":"service_role","app_metadata":{"tier":"editor"}}')) as idp_editor \gset
select auth.sign_jwt(pg_temp.claims('d0000000-0000-4000-8000-00000000000d',
       '{"iss":"https://idp.example","aud":["x","my-app"]}')) as idp_plain \gset
select auth.sign_jwt(pg_temp.claims('d0000000-0000-4000-8000-00000000000d',
       '{"iss":"https://idp.example","aud":"someone-elses-app"}')) as idp_wrong_aud \gset
select auth.sign_jwt(pg_temp.claims('d0000000-0000-4000-8000-00000000000d',
       '{"iss":"https://idp.example","aud":"my-app","exp":1000}')) as idp_expired \gset
select auth.sign_jwt('{"sub":"d0000000-0000-4000-8000-00000000000d","iss":"https://idp.example","aud":"my-app"}') as idp_no_exp \gset
select public_jwk as idp_jwk from auth.signing_keys where kid = 'idp-key' \gset
select auth.promote_signing_key('key-b') ->> 'kid' as back_to;
-- The outside issuer keeps its key; this database forgets it.
delete from auth.signing_keys where kid = 'idp-key';
-- Before registration the issuer is unknown.
select pg_temp.verify(:'idp_plain') as unregistered;
-- Registration checks everything it is given.
select try($$select auth.set_trusted_issuer('https://idp.example', '{"keys":[]}', '{my-app}')$$);
select try($$select auth.set_trusted_issuer('https://idp.example', '{"keys":[{"kty":"oct","k":"AAAA"}]}', '{my-app}')$$);
select try(format('select auth.set_trusted_issuer(%L, %L, null)', 'https://idp.example', jsonb_build_object('keys', jsonb_build_array(:'idp_jwk'::jsonb))));
select try(format('select auth.set_trusted_issuer(%L, %L, %L)', 'https://idp.example', jsonb_build_object('keys', jsonb_build_array(:'idp_jwk'::jsonb)), '{}'));
select try(format('select auth.set_trusted_issuer(%L, %L, %L, %L, %L)', 'https://idp.example', jsonb_build_object('keys', jsonb_build_array(:'idp_jwk'::jsonb)), '{my-app}', '{role}', '{"editor":"no_such_role"}'));
select try(format('select auth.set_trusted_issuer(%L, %L, %L, %L, %L)', 'https://idp.example', jsonb_build_object('keys', jsonb_build_array(:'idp_jwk'::jsonb)), '{my-app}', '{role}', '{"admin":"service_role"}'));
select try(format('select auth.set_trusted_issuer(%L, %L, %L, %L, %L, %L)', 'https://idp.example', jsonb_build_object('keys', jsonb_build_array(:'idp_jwk'::jsonb)), '{my-app}', '{role}', '{}', 'regress_bypass'));
select try(format('select auth.set_trusted_issuer(%L, %L, %L)', 'auth_ext', jsonb_build_object('keys', jsonb_build_array(:'idp_jwk'::jsonb)), '{my-app}'));
select try(format('select auth.set_trusted_issuer(%L, %L, %L, %L, %L)', 'https://idp.example', jsonb_build_object('keys', jsonb_build_array(:'idp_jwk'::jsonb)), '{my-app}', '{role}', '{"editor": 1}'));
select count(*) as issuers_after_errors from auth.trusted_issuers;
-- Now register it: the role comes from app_metadata.tier, mapped; anything else is
-- authenticated. The token's own "role" claim is never taken as it is.
select auth.set_trusted_issuer('https://idp.example',
         jsonb_build_object('keys', jsonb_build_array(:'idp_jwk'::jsonb, '{"kty":"EC","crv":"P-521","kid":"skipped","x":"AA","y":"AA"}'::jsonb)),
         '{my-app}', '{app_metadata,tier}', '{"editor":"regress_editor"}') - 'role_claim' as registered;
select auth.verify_jwt(:'idp_editor') ->> 'role' as editor_role,
       auth.verify_jwt(:'idp_plain') ->> 'role' as plain_role;
select pg_temp.verify(:'idp_wrong_aud') as wrong_audience;
select pg_temp.verify(:'idp_expired') as expired;
select pg_temp.verify(:'idp_no_exp') as no_exp;
-- Our own key cannot speak for the issuer: a token claiming its iss but signed by us fails.
select pg_temp.verify(auth.sign_jwt(pg_temp.claims('x', '{"iss":"https://idp.example","aud":"my-app"}'))) as forged_by_us;
-- The issuer's token drives RLS helpers through auth.authenticate: its role and claims,
-- but never a local account. Its sub is the issuer's subject: auth.uid() is NULL even
-- when a local user has that very id, and the account functions refuse it.
insert into auth.users (id, aud, role, email, encrypted_password, created_at, updated_at)
values ('d0000000-0000-4000-8000-00000000000d', 'authenticated', 'authenticated', 'victim@example.io', '', now(), now());
grant execute on function auth."user"(), auth.update_user(jsonb, text), auth.sign_out(text) to regress_editor;
set local session authorization regress_authenticator;
select auth.authenticate(:'idp_editor') ->> 'role' as role, current_user, auth.uid(), auth.jwt() ->> 'iss' as iss;
select try('select auth.user()') as reads_account;
select try($$select auth.update_user('{"password": "taken-over-1"}')$$) as changes_account;
select try('select auth.sign_out()') as signs_out;
reset session authorization;
-- Only an identity linked to exactly this issuer and subject (what a sign-in with its ID
-- token records) makes the subject a local user.
insert into auth.identities (provider_id, user_id, identity_data, provider, created_at, updated_at)
values ('d0000000-0000-4000-8000-00000000000d', 'd0000000-0000-4000-8000-00000000000d',
        '{"iss": "https://other-idp.example", "sub": "d0000000-0000-4000-8000-00000000000d"}', 'https://other-idp.example', now(), now());
set local session authorization regress_authenticator;
select auth.authenticate(:'idp_editor') is not null as authenticated, auth.uid() as linked_elsewhere;
reset session authorization;
update auth.identities set identity_data = identity_data || '{"iss": "https://idp.example"}'
 where provider_id = 'd0000000-0000-4000-8000-00000000000d';
set local session authorization regress_authenticator;
select auth.authenticate(:'idp_editor') is not null as authenticated, auth.uid() as linked;
select try('select auth.user()') as linked_still_no_account_access;
reset session authorization;
delete from auth.users where id = 'd0000000-0000-4000-8000-00000000000d';
-- Without a default role, a token the map does not cover is refused.
select auth.set_trusted_issuer('https://idp.example',
         jsonb_build_object('keys', jsonb_build_array(:'idp_jwk'::jsonb)),
         '{my-app}', '{app_metadata,tier}', '{"editor":"regress_editor"}', null) ->> 'default_role' as no_default;
select pg_temp.verify(:'idp_plain') as unmapped;
select auth.verify_jwt(:'idp_editor') ->> 'role' as still_mapped;
-- service_role can read the registrations.
set local role service_role;
select issuer, audiences, role_claim, default_role from auth.trusted_issuers;
reset role;
-- Dropped: its tokens fail at once.
select auth.drop_trusted_issuer('https://idp.example') as dropped, auth.drop_trusted_issuer('https://idp.example') as dropped_twice;
select pg_temp.verify(:'idp_editor') as after_drop;

-- 6. Fixed vectors. RFC 7515 A.2 (RS256) and A.3 (ES256) keys imported from their JWKs;
-- the examples' signatures verify (then the 2011 exp stops them), a changed byte does not.
select auth.import_signing_key('{"kty":"RSA",
  "n":"ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ",
  "e":"AQAB",
  "d":"Eq5xpGnNCivDflJsRQBXHx1hdR1k6Ulwe2JZD50LpXyWPEAeP88vLNO97IjlA7_GQ5sLKMgvfTeXZx9SE-7YwVol2NXOoAJe46sui395IW_GO-pWJ1O0BkTGoVEn2bKVRUCgu-GjBVaYLU6f3l9kJfFNS3E0QbVdxzubSu3Mkqzjkn439X0M_V51gfpRLI9JYanrC4D4qAdGcopV_0ZHHzQlBjudU2QvXt4ehNYTCBr6XCLQUShb1juUO1ZdiYoFaFQT5Tw8bGUl_x_jTj3ccPDVZFD9pIuhLhBOneufuBiB4cS98l2SR_RQyGWSeWjnczT0QU91p1DhOVRuOopznQ",
  "p":"4BzEEOtIpmVdVEZNCqS7baC4crd0pqnRH_5IB3jw3bcxGn6QLvnEtfdUdiYrqBdss1l58BQ3KhooKeQTa9AB0Hw_Py5PJdTJNPY8cQn7ouZ2KKDcmnPGBY5t7yLc1QlQ5xHdwW1VhvKn-nXqhJTBgIPgtldC-KDV5z-y2XDwGUc",
  "q":"uQPEfgmVtjL0Uyyx88GZFF1fOunH3-7cepKmtH4pxhtCoHqpWmT8YAmZxaewHgHAjLYsp1ZSe7zFYHj7C6ul7TjeLQeZD_YwD66t62wDmpe_HlB-TnBA-njbglfIsRLtXlnDzQkv5dTltRJ11BKBBypeeF6689rjcJIDEz9RWdc"}',
  'RS256', 'rfc7515-a2') ->> 'algorithm' as a2;
select auth.import_signing_key('{"kty":"EC","crv":"P-256",
  "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
  "y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
  "d":"jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI"}', null, 'rfc7515-a3') ->> 'algorithm' as a3;
select pg_temp.verify('eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw') as rfc7515_a2;
select pg_temp.verify('eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw') as rfc7515_a2_tampered;
select pg_temp.verify('eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q') as rfc7515_a3;
select pg_temp.verify('eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1R') as rfc7515_a3_tampered;
rollback;
