-- Bad input matrix: every public function, every kind of bad input. Each gets a
-- documented error with a SQLSTATE; nothing is written (counted at the end).
begin;
select count(*) as users_before from auth.users \gset

-- NULLs and empty strings.
select try($$select auth.sign_up(null, null, null)$$);
select try($$select auth.sign_up('', '', '{}')$$);
select try($$select auth.sign_in(null, 'password-1')$$);
select try($$select auth.sign_in('', '')$$);
select try($$select auth.refresh(null)$$);
select try($$select auth.refresh('')$$);
select try($$select auth.verify_jwt(null)$$);
select try($$select auth.verify_jwt('')$$);
select try($$select auth.authenticate(null)$$);
select try($$select auth.sign_jwt(null)$$);
select try($$select auth.set_jwt_secret(null)$$);
select try($$select auth.set_jwt_secret('')$$);
select try($$select auth.sign_out(null)$$);
select try($$select auth.cleanup(null)$$);

-- One-megabyte strings everywhere.
select try(format('select auth.sign_up(%L, %L)', repeat('a', 1000000) || '@example.io', 'password-1234'));
select try(format('select auth.sign_up(%L, %L)', 'big@example.io', repeat('p', 1000000)));
select try(format('select auth.sign_in(%L, %L)', repeat('a', 1000000), 'password-1234'));
select try(format('select auth.sign_in(%L, %L)', 'big@example.io', repeat('p', 1000000)));
select try(format('select auth.verify_jwt(%L)', repeat('a', 1000000)));
select try(format('select auth.authenticate(%L)', repeat('a.', 500000)));
select try(format('select auth.refresh(%L)', repeat('r', 1000000)));
select try(format('select auth.sign_up(%L, %L, %L)', 'big@example.io', 'password-1234',
                  json_build_object('blob', repeat('x', 1000000))));

-- Unusual emails: case and surrounding whitespace are normalised; everything else that
-- is not a plain ASCII address is refused.
select e as email, try(format('select auth.sign_up(%L, %L)', e, 'short')) as outcome
  from unnest(array[
    ' Mixed.Case@Example.IO ', E'\ttab@example.io\n', 'two@@example.io', 'no-at-sign', '@example.io',
    'local@', 'local@nodot', 'a..b@example.io', '.a@example.io', 'a.@example.io', 'a@-x.io', 'a@x-.io',
    'a@x..io', 'a b@example.io', E'a\u0001b@example.io', 'ünïcödé@example.io', 'user@exämple.io',
    'ｕｓｅｒ@example.io', '"quoted"@example.io', 'a@[127.0.0.1]', repeat('l', 65) || '@example.io',
    'x@' || repeat('d', 64) || '.io']) e;

-- Passwords at and past the limits (too short is weak_password; too long is refused
-- before any hashing).
select try($$select auth.sign_up('pw@example.io', 'seven77')$$);
select try(format('select auth.sign_up(%L, %L)', 'pw@example.io', repeat('é', 257)));
select try(format('select auth.sign_in(%L, %L)', 'pw@example.io', repeat('é', 257)));

-- Metadata: not an object, too deep for the parser, too large, numbers out of range.
select left(m, 24) as metadata, try(format('select auth.sign_up(%L, %L, %L::jsonb)', 'meta@example.io', 'password-1234', m)) as outcome
  from unnest(array['[]', '"text"', '42', 'null', 'true',
                    repeat('{"a":', 200) || '1' || repeat('}', 200),
                    '{"n": 1e400}']) m;
select try(format('select auth.sign_up(%L, %L, %L::jsonb)', 'meta@example.io', 'password-1234',
                  (select json_object_agg('k' || g, repeat('v', 100)) from generate_series(1, 200) g)));

-- Tokens with the wrong number of segments, or none.
select t as token, try(format('select auth.verify_jwt(%L)', t)) as outcome
  from unnest(array['abc', 'a.b', 'a.b.c.d', '...', '....', '.', 'a..c', '..c', 'Bearer a.b.c', ' a.b.c ']) t;

-- The HTTP server's entry points: API keys, email links, PKCE codes and challenges.
select try($$select auth.authenticate_request(null, null)$$);
select try($$select auth.authenticate_request('', '')$$);
select try(format('select auth.authenticate_request(%L, null)', repeat('a', 1000000)));
select try(format('select auth.authenticate_request(%L, null)', repeat('a.', 500000)));
select auth.verify_link(null, null) -> 'error' as verify_link_nulls;
select auth.verify_link('', 'magiclink') -> 'error' ->> 'code' as verify_link_empty;
select auth.verify_link(repeat('t', 1000000), 'magiclink') -> 'error' as verify_link_1mb;
select length(auth.verify_link(null, 'magiclink', repeat('r', 1000000)) ->> 'redirect_to') as redirect_1mb_replaced;
select try($$select auth.exchange_code_for_session(null, null)$$);
select try($$select auth.exchange_code_for_session('', '')$$);
select try(format('select auth.exchange_code_for_session(%L, %L)', repeat('c', 1000000), 'v'));
select try(format('select auth.exchange_code_for_session(%L, %L)', 'c', repeat('v', 1000000)));
select try(format('select auth.recover(%L, null, %L, %L)', 'pkce@example.io', repeat('a', 1000000), 's256'));
select try(format('select auth.recover(%L, null, %L, %L)', 'pkce@example.io', repeat('a', 43), repeat('m', 1000000)));
select try(format('select auth.recover(%L, null, %L, %L)', 'pkce@example.io', repeat('é', 43), 'plain'));
select try(format('select auth.recover(%L, null, %L, %L)', 'pkce@example.io', repeat('a', 42) || E'\n', 'plain'));

-- Nothing was written by any of it.
select count(*) - :users_before as users_written from auth.users;
select count(*) as sessions_written from auth.sessions;
rollback;
