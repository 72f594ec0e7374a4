-- verify_jwt, authenticate, sign_jwt, set_jwt_secret. The fixed tokens below were made
-- by an independent HS256 implementation with the secret set here.
begin;
select auth.set_jwt_secret('regress-secret-regress-secret-regress-secret');
\set valid 'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhMGVlYmM5OS05YzBiLTRlZjgtYmI2ZC02YmI5YmQzODBhMTEiLCJyb2xlIjoiYXV0aGVudGljYXRlZCIsImF1ZCI6ImF1dGhlbnRpY2F0ZWQiLCJlbWFpbCI6ImV4dEBleGFtcGxlLmlvIiwiZXhwIjo0MTAyNDQ0ODAwLCJpYXQiOjE3MDAwMDAwMDB9.7FVHrSdXEreXxmfMSAc8RAWt76hy-5v3QWGy9d-90cE'
\set expired 'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhMGVlYmM5OS05YzBiLTRlZjgtYmI2ZC02YmI5YmQzODBhMTEiLCJyb2xlIjoiYXV0aGVudGljYXRlZCIsImF1ZCI6ImF1dGhlbnRpY2F0ZWQiLCJlbWFpbCI6ImV4dEBleGFtcGxlLmlvIiwiZXhwIjoxMDAwMDAwMDAwLCJpYXQiOjE3MDAwMDAwMDB9.wPu3zxTVwtXwPNaO_21RgKwdZ1FPTYKMM-H_4rRR1Sc'
\set nbf 'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhMGVlYmM5OS05YzBiLTRlZjgtYmI2ZC02YmI5YmQzODBhMTEiLCJyb2xlIjoiYXV0aGVudGljYXRlZCIsImF1ZCI6ImF1dGhlbnRpY2F0ZWQiLCJlbWFpbCI6ImV4dEBleGFtcGxlLmlvIiwiZXhwIjo0MTAyNDQ0ODAwLCJpYXQiOjE3MDAwMDAwMDAsIm5iZiI6NDEwMjQ0NDAwMH0.eAWz70DfAk5L-sj6KPggPdqxvxFKKkUu_XNvIx003WA'
\set iatfuture 'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhMGVlYmM5OS05YzBiLTRlZjgtYmI2ZC02YmI5YmQzODBhMTEiLCJyb2xlIjoiYXV0aGVudGljYXRlZCIsImF1ZCI6ImF1dGhlbnRpY2F0ZWQiLCJlbWFpbCI6ImV4dEBleGFtcGxlLmlvIiwiZXhwIjo0MTAyNDQ0ODAwLCJpYXQiOjQxMDI0NDQwMDB9.ewU2AeHTErvbUEnDt3VVXwoIHw8jGH0_4WBwpYBDW8I'
\set wrongkey 'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhMGVlYmM5OS05YzBiLTRlZjgtYmI2ZC02YmI5YmQzODBhMTEiLCJyb2xlIjoiYXV0aGVudGljYXRlZCIsImF1ZCI6ImF1dGhlbnRpY2F0ZWQiLCJlbWFpbCI6ImV4dEBleGFtcGxlLmlvIiwiZXhwIjo0MTAyNDQ0ODAwLCJpYXQiOjE3MDAwMDAwMDB9.mzRWvMrRPHpeqfu9fK0UcK_y77fGjx5o0C8dwGlHWnk'
\set hs512 'eyJhbGciOiJIUzUxMiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhMGVlYmM5OS05YzBiLTRlZjgtYmI2ZC02YmI5YmQzODBhMTEiLCJyb2xlIjoiYXV0aGVudGljYXRlZCIsImF1ZCI6ImF1dGhlbnRpY2F0ZWQiLCJlbWFpbCI6ImV4dEBleGFtcGxlLmlvIiwiZXhwIjo0MTAyNDQ0ODAwLCJpYXQiOjE3MDAwMDAwMDB9.E86LkBU2_XIkvujcba-KjkW5X627oQkWArQ9sedYUrabmw2hWRs0KR2n7UT9hW3uAHLs7Ghp7QDPBtl4-633kw'
\set none 'eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhMGVlYmM5OS05YzBiLTRlZjgtYmI2ZC02YmI5YmQzODBhMTEiLCJyb2xlIjoiYXV0aGVudGljYXRlZCIsImF1ZCI6ImF1dGhlbnRpY2F0ZWQiLCJlbWFpbCI6ImV4dEBleGFtcGxlLmlvIiwiZXhwIjo0MTAyNDQ0ODAwLCJpYXQiOjE3MDAwMDAwMDB9.'
\set tampered 'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhMGVlYmM5OS05YzBiLTRlZjgtYmI2ZC02YmI5YmQzODBhMTEiLCJyb2xlIjoic2VydmljZV9yb2xlIiwiYXVkIjoiYXV0aGVudGljYXRlZCIsImVtYWlsIjoiZXh0QGV4YW1wbGUuaW8iLCJleHAiOjQxMDI0NDQ4MDAsImlhdCI6MTcwMDAwMDAwMH0.7FVHrSdXEreXxmfMSAc8RAWt76hy-5v3QWGy9d-90cE'
\set service 'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJyb2xlIjoic2VydmljZV9yb2xlIiwiaXNzIjoic3VwYWJhc2UiLCJpYXQiOjE3MDAwMDAwMDAsImV4cCI6NDEwMjQ0NDgwMH0.WEUI4HAfFEETK2V1ZsTvQd1_vv5uGwxNzLuZA133Xio'
\set anon 'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJyb2xlIjoiYW5vbiIsImlzcyI6InN1cGFiYXNlIiwiaWF0IjoxNzAwMDAwMDAwLCJleHAiOjQxMDI0NDQ4MDB9.RY627V5GmP2QEL4UYY7u3jD05r3mvZ4CLzZoaqFC_aM'
\set noaud 'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhMGVlYmM5OS05YzBiLTRlZjgtYmI2ZC02YmI5YmQzODBhMTEiLCJyb2xlIjoiYXV0aGVudGljYXRlZCIsImV4cCI6NDEwMjQ0NDgwMH0.eC04YgEZz4YgfQodP6uczub6EVRKT8z2uQSlDCA8GFI'
\set norole 'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhMGVlYmM5OS05YzBiLTRlZjgtYmI2ZC02YmI5YmQzODBhMTEiLCJleHAiOjQxMDI0NDQ4MDB9.xsFF08joI9qYVyRSWebw8Xx0aWQgFGRUURZFw2LW9yk'
\set nosuchrole 'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhMGVlYmM5OS05YzBiLTRlZjgtYmI2ZC02YmI5YmQzODBhMTEiLCJyb2xlIjoibm9fc3VjaF9yb2xlIiwiZXhwIjo0MTAyNDQ0ODAwfQ.Jdp4-7A9fMxeOUjyfpCGYeWcnpbRiglriaBzDyoD3xs'

-- A token from another implementation verifies; its claims come back unchanged.
select auth.verify_jwt(:'valid');

-- Everything else is 28000 bad_jwt with the reason.
select try(format('select auth.verify_jwt(%L)', :'expired'));
select try(format('select auth.verify_jwt(%L)', :'nbf'));
select try(format('select auth.verify_jwt(%L)', :'iatfuture'));
select try(format('select auth.verify_jwt(%L)', :'wrongkey'));
select try(format('select auth.verify_jwt(%L)', :'hs512'));
select try(format('select auth.verify_jwt(%L)', :'none'));
select try(format('select auth.verify_jwt(%L)', :'tampered'));
select try($$select auth.verify_jwt('')$$);
select try($$select auth.verify_jwt(null)$$);
select try($$select auth.verify_jwt('garbage')$$);
select try($$select auth.verify_jwt('a.b')$$);
select try($$select auth.verify_jwt('a.b.c.d')$$);
select try($$select auth.verify_jwt('...')$$);
select try($$select auth.verify_jwt('e30.e30.e30')$$);
select try(format('select auth.verify_jwt(%L)', 'Bearer ' || :'valid'));
select try(format('select auth.verify_jwt(%L)', repeat('a', 70000)));

-- The audience and issuer checks, when configured.
set local auth.jwt_aud = 'authenticated';
select auth.verify_jwt(:'valid') ->> 'aud' as aud_ok;
select try(format('select auth.verify_jwt(%L)', :'noaud'));
set local auth.jwt_aud = 'someone-else';
select try(format('select auth.verify_jwt(%L)', :'valid'));
reset auth.jwt_aud;
set local auth.jwt_verify_issuer = on;
select try(format('select auth.verify_jwt(%L)', :'service'));
set local auth.jwt_issuer = 'supabase';
select auth.verify_jwt(:'service') ->> 'role' as issuer_ok;
reset auth.jwt_verify_issuer;
reset auth.jwt_issuer;

-- Our own tokens round-trip; sign_jwt adds iat but no exp (API keys are long-lived).
select auth.verify_jwt(auth.sign_jwt('{"role": "anon", "iss": "supabase"}')) - 'iat' as api_key_claims;
select auth.verify_jwt(auth.sign_jwt('{"role": "anon"}')) ? 'iat' as has_iat;
select try($$select auth.sign_jwt('[1]')$$);
select try($$select auth.sign_jwt(null)$$);

-- set_jwt_secret: at least 32 characters; a short one is refused and changes nothing.
select try($$select auth.set_jwt_secret('too-short')$$);
select try($$select auth.set_jwt_secret(null)$$);
select auth.verify_jwt(:'valid') ->> 'sub' as still_verifies;
select count(*) as in_use_keys from auth.signing_keys where state = 'in_use';

-- authenticate: PostgREST's per-request setup, for a connection that is not a superuser.
set session authorization regress_authenticator;
select auth.authenticate(:'valid') ->> 'sub' as authenticated_sub;
select current_user, auth.uid(), auth.role(), auth.email(), auth.jwt() ->> 'aud' as jwt_aud;
reset role;
select auth.authenticate(:'anon') ->> 'role' as anon_role;
select current_user, auth.uid();
reset role;
select auth.authenticate(:'norole') ->> 'sub' as no_role_claim_means_anon;
select current_user;
reset role;
-- A role the connection was not granted, a role that does not exist, a bad token.
select try(format('select auth.authenticate(%L)', :'service'));
select try(format('select auth.authenticate(%L)', :'nosuchrole'));
select try(format('select auth.authenticate(%L)', :'expired'));
select current_user;
reset session authorization;
rollback;
