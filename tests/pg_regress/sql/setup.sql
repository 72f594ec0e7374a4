-- Runs first: the extension, a helper that turns an error into "SQLSTATE message", and
-- a login-capable role that plays PostgREST's authenticator (not a superuser).
create extension auth_ext;

create function public.try(sql text) returns text
language plpgsql as $$
begin
  execute sql;
  return 'ok';
exception when others then
  return sqlstate || ' ' || sqlerrm;
end
$$;
grant execute on function public.try(text) to public;

create role regress_authenticator noinherit login;
grant anon, authenticated to regress_authenticator;
