-- The demo: what a PostgREST deployment does, in plain SQL.
\pset footer off
create extension auth_ext;

-- The login role of the API layer (PostgREST's "authenticator"): it can switch to anon and
-- authenticated, nothing else.
do $$ begin
  if not exists (select from pg_roles where rolname = 'authenticator') then
    create role authenticator login noinherit password 'authenticator';
  end if;
end $$;
grant anon, authenticated to authenticator;

-- An app table protected by the policy every Supabase tutorial writes.
create table public.todos (
  id bigint generated always as identity primary key,
  user_id uuid not null default auth.uid() references auth.users (id),
  task text not null
);
alter table public.todos enable row level security;
create policy "own todos" on public.todos for all to authenticated
  using (user_id = auth.uid()) with check (user_id = auth.uid());
grant select, insert, update, delete on public.todos to authenticated;

\echo '-- sign up two users (as anon, like an RPC call through PostgREST)'
begin;
set local role anon;
select auth.sign_up('alice@example.com', 'alice-password-1', '{"name": "Alice"}') -> 'user' ->> 'email' as signed_up;
select auth.sign_up('bob@example.com', 'bob-password-22', '{"name": "Bob"}') -> 'user' ->> 'email' as signed_up;
commit;

\echo '-- sign in: GoTrue''s session object'
select jsonb_pretty(auth.sign_in('alice@example.com', 'alice-password-1') - 'access_token' - 'refresh_token') as session;
select auth.sign_in('alice@example.com', 'alice-password-1') ->> 'access_token' as alice_token \gset
select auth.sign_in('bob@example.com', 'bob-password-22') ->> 'access_token' as bob_token \gset

\echo '-- each request: authenticate with the bearer token, then query through RLS'
set session authorization authenticator;
begin;
select auth.authenticate(:'alice_token') ->> 'email' as request_by;
insert into public.todos (task) values ('Alice: buy milk'), ('Alice: call mom');
commit;
begin;
select auth.authenticate(:'bob_token') ->> 'email' as request_by;
insert into public.todos (task) values ('Bob: fix the bike');
select current_user, auth.uid() as uid, task from public.todos;
commit;
begin;
select auth.authenticate(:'alice_token') ->> 'email' as request_by;
select current_user, auth.uid() as uid, task from public.todos;
commit;
reset session authorization;
\echo '-- a bad token'
\set ON_ERROR_STOP 0
select auth.verify_jwt('not.a.token');
