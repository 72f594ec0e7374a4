-- A todo app as a Supabase user writes it: RLS with user_id = auth.uid(), a profile
-- trigger on auth.users, queried the way PostgREST does (set local role + claims).
begin;
create table public.profiles (
  id uuid primary key references auth.users (id) on delete cascade,
  full_name text
);
-- Supabase's documented trigger, unchanged.
create function public.handle_new_user() returns trigger
language plpgsql security definer set search_path = ''
as $$
begin
  insert into public.profiles (id, full_name) values (new.id, new.raw_user_meta_data ->> 'full_name');
  return new;
end;
$$;
create trigger on_auth_user_created after insert on auth.users
  for each row execute procedure public.handle_new_user();

create table public.todos (
  id bigint generated always as identity primary key,
  user_id uuid not null default auth.uid() references auth.users (id),
  task text not null
);
alter table public.todos enable row level security;
create policy "own todos" on public.todos for all to authenticated
  using (user_id = auth.uid()) with check (user_id = auth.uid());
grant select, insert, update, delete on public.todos to authenticated;
grant select on public.todos to anon;

select (auth.sign_up('one@example.io', 'password-one-1', '{"full_name": "User One"}') -> 'access_token') #>> '{}' as t1 \gset
select (auth.sign_up('two@example.io', 'password-two-2', '{"full_name": "User Two"}') -> 'access_token') #>> '{}' as t2 \gset
select auth.verify_jwt(:'t1')::text as c1, auth.verify_jwt(:'t2')::text as c2 \gset
select auth.verify_jwt(:'t1') ->> 'sub' as u1, auth.verify_jwt(:'t2') ->> 'sub' as u2 \gset
select p.full_name from public.profiles p join auth.users u on u.id = p.id order by u.email;

-- Request as user one.
set local role authenticated;
select set_config('request.jwt.claims', :'c1', true) is not null as claims_set;
insert into public.todos (task) values ('one: buy milk'), ('one: walk dog');
select try(format('insert into public.todos (user_id, task) values (%L, %L)', :'u2', 'one posing as two'));
reset role;

-- Request as user two.
set local role authenticated;
select set_config('request.jwt.claims', :'c2', true) is not null as claims_set;
insert into public.todos (task) values ('two: write report');
select task from public.todos order by id;
with u as (update public.todos set task = 'hijacked' where task like 'one:%' returning 1)
select count(*) as rows_hijacked from u;
with d as (delete from public.todos where task like 'one:%' returning 1)
select count(*) as rows_deleted from d;
reset role;

-- User one sees exactly their own rows, untouched by user two.
set local role authenticated;
select set_config('request.jwt.claims', :'c1', true) is not null as claims_set;
select task from public.todos order by id;
-- The (select auth.uid()) form gives the same rows.
select count(*) from public.todos where user_id = (select auth.uid());
reset role;

-- anon: no rows, and no access to auth.*
set local role anon;
select set_config('request.jwt.claims', '{"role": "anon"}', true);
select count(*) as anon_sees from public.todos;
select try('select count(*) from auth.users');
reset role;

-- Without claims an authenticated request sees nothing (fail closed).
set local role authenticated;
select set_config('request.jwt.claims', '', true);
select count(*) as no_claims_sees from public.todos;
reset role;
rollback;
