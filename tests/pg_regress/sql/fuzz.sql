-- 100,000 random and mutated inputs through the public functions: tokens, refresh tokens,
-- emails, user metadata and claims JSON. Every outcome is tallied by SQLSTATE and code: no crash, no internal
-- error (XX000), every failure a documented one. Deterministic (fixed seed).
begin;
select setseed(0.42);
select auth.set_jwt_secret('fuzz-secret-fuzz-secret-fuzz-secret-0000') is null as secret_set;
-- Tokens carry the key's kid, a random uuid: fix it too, so the base token is the same
-- in every run.
update auth.signing_keys set kid = 'fuzz-key' where state = 'in_use';
select set_config('fuzz.base', auth.sign_jwt('{"sub": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "role": "authenticated", "aud": "authenticated", "iat": 1700000000, "exp": 4102444800}'), true) is not null as base_token;
create temp table outcomes (fn text, state text, code text, unchanged boolean default false);

-- One to four random edits: replace, delete or insert a character, or truncate.
create function pg_temp.mutate(t text) returns text language plpgsql as $$
declare
  s text := t;
  pos int;
  c text;
  alphabet text := 'ABCxyz019-_.=+/ {}":,@é' || chr(1);
begin
  for i in 1..(1 + floor(random() * 4)::int) loop
    pos := 1 + floor(random() * greatest(length(s), 1))::int;
    c := substr(alphabet, 1 + floor(random() * length(alphabet))::int, 1);
    case floor(random() * 4)::int
      when 0 then s := overlay(s placing c from pos for 1);
      when 1 then s := overlay(s placing '' from pos for 1);
      when 2 then s := overlay(s placing c from pos for 0);
      else s := left(s, pos - 1);
    end case;
  end loop;
  return s;
end $$;

create function pg_temp.attempt(fn text, query text, arg text, original text default null) returns void language plpgsql as $$
begin
  execute query using arg;
  insert into outcomes values (fn, 'ok', '', arg = original);
exception when others then
  insert into outcomes values (fn, sqlstate, split_part(sqlerrm, ':', 1), arg = original);
end $$;

do $$
declare
  base text := current_setting('fuzz.base');
  arg text;
begin
  for i in 1..60000 loop
    arg := case when i % 10 = 0 then md5(i::text) || '.' || md5(random()::text) else pg_temp.mutate(base) end;
    perform pg_temp.attempt('verify_jwt', 'select auth.verify_jwt($1)', arg, base);
  end loop;
  for i in 1..10000 loop
    perform pg_temp.attempt('refresh', 'select auth.refresh($1)', pg_temp.mutate('kX0d8fJ2-aQ1_zz9LmNoPqRsTuVwXyZ0'));
  end loop;
  -- A too-short password stops every sign-up after the email checks: no hashing.
  for i in 1..15000 loop
    perform pg_temp.attempt('sign_up email', 'select auth.sign_up($1, ''short'')', pg_temp.mutate('Some.User+tag@Example.io'));
  end loop;
  -- JSON: as user metadata (a too-short password again stops before hashing) and as claims.
  for i in 1..10000 loop
    perform pg_temp.attempt('sign_up metadata', 'select auth.sign_up(''fuzz@example.io'', ''short'', $1::jsonb)',
      pg_temp.mutate('{"a": [1, {"b": "c"}], "n": 1e10, "s": "x", "t": true, "z": null}'));
  end loop;
  for i in 1..5000 loop
    perform pg_temp.attempt('sign_jwt json', 'select auth.sign_jwt($1::jsonb)',
      pg_temp.mutate('{"a": [1, {"b": "c"}], "n": 1e10, "s": "x", "t": true, "z": null}'));
  end loop;
end $$;

select count(*) as inputs from outcomes;
select fn, state, code, coalesce(unchanged, false) as unchanged, count(*) from outcomes group by 1, 2, 3, 4 order by 1, 2, 3, 4;
select count(*) as internal_errors from outcomes where state = 'XX000' or state = '';
-- Only an unchanged token verifies: a mutation that reproduced the original.
select count(*) as changed_tokens_that_verified from outcomes where fn = 'verify_jwt' and state = 'ok' and not unchanged;
rollback;
