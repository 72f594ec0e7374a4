-- Account flows end to end: sign-up confirmation, recovery and a password change, magic
-- link, six-digit code, email change, auth.user(), auth.update_user(), the outbox, the
-- delivery hook, rate limits, and every error. Tokens are read from the outbox as a
-- mailer would. Each statement is its own transaction, as each call is under PostgREST
-- (wrong codes are counted by autonomous transactions that must not wait for ours); what
-- the file creates is removed at the end (in a schema of its own rather than pg_temp: a
-- session with temporary tables runs no hook).
create schema flows_test;
set search_path = flows_test, public;
create table flows_test.before as
  select clock_timestamp() as started, array(select id from auth.users) as users;
create view flows_test.last_message as
  select m.recipient, m.email_action_type as action,
         m.message -> 'email_data' ->> 'token' as code,
         m.message -> 'email_data' ->> 'token_hash' as link,
         m.message -> 'email_data' ->> 'redirect_to' as redirect_to
    from auth.email_outbox m order by m.id desc limit 1;
grant usage on schema flows_test to public;
grant select on last_message to public;

-- 1. Sign-up with confirmation: the user object, no session, a message in the outbox.
set auth.require_email_confirmation = on;
select auth.sign_up('conf@example.io', 'password-conf-1', '{"name": "Conf"}') as u \gset
select :'u'::jsonb ? 'access_token' as has_session, :'u'::jsonb ->> 'email' as email,
       :'u'::jsonb ->> 'email_confirmed_at' as confirmed, :'u'::jsonb ? 'confirmation_sent_at' as sent_at_shown,
       jsonb_array_length(:'u'::jsonb -> 'identities') as identities;
select recipient, action, code ~ '^[0-9]{6}$' as six_digits, length(link) as link_length from last_message;
select array(select jsonb_object_keys(m.message) order by 1) as message_keys,
       array(select jsonb_object_keys(m.message -> 'email_data') order by 1) as email_data_keys,
       m.message -> 'email_data' ->> 'site_url' as site_url, m.message -> 'email_data' ->> 'redirect_to' as redirect_to,
       m.message -> 'user' ->> 'email' as user_email
  from auth.email_outbox m;
-- Only keyed hashes are stored: an HMAC under auth.secret_keys' key, so a copy of this
-- table alone cannot test the million possible codes (an unkeyed SHA-256 would).
select o.token_type, o.relates_to,
       o.token_hash = auth._otp_hash(l.link) as link_keyed,
       o.token_hash <> encode(sha256(convert_to(l.link, 'UTF8')), 'hex') as not_plain_sha256,
       o.code_hash = auth._otp_hash(o.id::text || ':' || l.code) as code_keyed,
       o.code_hash <> encode(sha256(convert_to(o.id::text || ':' || l.code, 'UTF8')), 'hex') as code_not_plain_sha256,
       o.code_hash <> l.code and o.token_hash <> l.link as no_plain_token,
       o.expires_at - o.created_at as lifetime
  from auth.one_time_tokens o, last_message l;
select try($$select auth.sign_in('conf@example.io', 'password-conf-1')$$) as unconfirmed_sign_in;
select code as c1 from last_message \gset
select try($$select auth.verify_otp('conf@example.io', '000000', 'signup')$$) as wrong_code;
select try(format('select auth.verify_otp(%L, %L, %L)', 'conf@example.io', :'c1', 'recovery')) as wrong_type;
select auth.verify_otp('CONF@example.io', :'c1', 'signup') as v \gset
select :'v'::jsonb ->> 'token_type' as token_type,
       auth.verify_jwt(:'v'::jsonb ->> 'access_token') -> 'amr' -> 0 ->> 'method' as amr,
       :'v'::jsonb -> 'user' ->> 'email_confirmed_at' is not null as confirmed,
       :'v'::jsonb -> 'user' -> 'identities' -> 0 -> 'identity_data' -> 'email_verified' as identity_verified;
select try(format('select auth.verify_otp(%L, %L, %L)', 'conf@example.io', :'c1', 'signup')) as used_twice;
select count(*) as tokens_left from auth.one_time_tokens;
select auth.sign_in('conf@example.io', 'password-conf-1') ->> 'token_type' as signs_in;

-- Signing up again: a confirmed address gets an obfuscated user (random id, one email
-- identity like a new user's: GoTrue's empty list would tell) and no message; the answer
-- has the same keys as a real one.
select count(*) as messages_before from auth.email_outbox \gset
select auth.sign_up('conf@example.io', 'another-password-1') as again \gset
select (:'again'::jsonb ->> 'id') <> (:'u'::jsonb ->> 'id') as random_id,
       jsonb_array_length(:'again'::jsonb -> 'identities') as identities,
       (select count(*) from auth.email_outbox) = :messages_before as nothing_sent,
       array(select jsonb_object_keys(:'again'::jsonb) except select jsonb_object_keys(:'u'::jsonb)) as extra_keys;
select try($$select auth.sign_in('conf@example.io', 'another-password-1')$$) as old_password_kept;
-- An unconfirmed address gets a new confirmation that replaces the old one, and the new
-- password replaces the first.
select auth.sign_up('twice@example.io', 'first-password-1') ->> 'email' as first;
select code as t1 from last_message \gset
select auth.sign_up('twice@example.io', 'second-password-2') ->> 'email' as second;
select code as t2 from last_message \gset
select count(*) as one_token from auth.one_time_tokens o join auth.users u on u.id = o.user_id where u.email = 'twice@example.io';
select try(format('select auth.verify_otp(%L, %L, %L)', 'twice@example.io', :'t1', 'signup')) as replaced_code
 where :'t1' <> :'t2';
select auth.verify_otp('twice@example.io', :'t2', 'email') ->> 'token_type' as new_code_works;
select try($$select auth.sign_in('twice@example.io', 'first-password-1')$$) as first_password;
select auth.sign_in('twice@example.io', 'second-password-2') ->> 'token_type' as second_password;
-- Expired tokens fail alike.
select auth.sign_up('late@example.io', 'late-password-1') ->> 'email' as late;
select code as late_code from last_message \gset
update auth.one_time_tokens set expires_at = now() - interval '1 second';
select try(format('select auth.verify_otp(%L, %L, %L)', 'late@example.io', :'late_code', 'signup')) as expired;
reset auth.require_email_confirmation;

-- 2. Recovery: the same answer for a known and an unknown address; one message.
select auth.sign_up('rec@example.io', 'password-rec-1') as r0 \gset
select count(*) as before from auth.email_outbox \gset
select auth.recover('rec@example.io') as known, auth.recover('nobody@example.io') as unknown;
select count(*) - :before as messages, (select recipient || ' ' || action from last_message) as sent
  from auth.email_outbox;
select link as rlink from last_message \gset
-- The link alone identifies the token (email NULL), as in a link's query string.
select auth.verify_otp(null, :'rlink', 'recovery') as rs \gset
select auth.verify_jwt(:'rs'::jsonb ->> 'access_token') -> 'amr' -> 0 ->> 'method' as amr;
set role authenticated;
select set_config('request.jwt.claims', auth.verify_jwt(:'rs'::jsonb ->> 'access_token')::text, false) is not null as claims_set;
select try($$select auth.update_user('{"password": "password-rec-1"}')$$) as same_password;
select try($$select auth.update_user('{"password": "short"}')$$) as weak;
select auth.update_user('{"password": "password-rec-2"}') ->> 'email' as password_changed;
reset role;
select try($$select auth.sign_in('rec@example.io', 'password-rec-1')$$) as old_password;
select auth.sign_in('rec@example.io', 'password-rec-2') ->> 'token_type' as new_password;
-- The password change ended the user's other session (from sign-up), kept this one.
select count(*) filter (where s.id = (auth.verify_jwt(:'rs'::jsonb ->> 'access_token') ->> 'session_id')::uuid) as kept,
       count(*) filter (where s.id = (auth.verify_jwt(:'r0'::jsonb ->> 'access_token') ->> 'session_id')::uuid) as ended
  from auth.sessions s;

-- 3. Magic link and code.
select auth.sign_in_with_otp('rec@example.io') as otp_known;
select recipient, action from last_message;
select link as mlink from last_message \gset
select auth.verify_jwt(auth.verify_otp('rec@example.io', :'mlink', 'magiclink') ->> 'access_token') -> 'amr' -> 0 ->> 'method' as amr;
-- create_user false: no account, no message, the same answer.
select count(*) as before from auth.email_outbox \gset
select auth.sign_in_with_otp('ghost@example.io', false) as no_create;
select (select count(*) from auth.email_outbox) - :before as messages,
       (select count(*) from auth.users where email = 'ghost@example.io') as users;
-- A new address becomes an unconfirmed user with the metadata given; the code signs in.
select auth.sign_in_with_otp('fresh@example.io', true, '{"plan": "free"}') as created;
select email_confirmed_at is null as unconfirmed, raw_user_meta_data, encrypted_password = '' as no_password
  from auth.users where email = 'fresh@example.io';
select code as fcode from last_message \gset
select auth.verify_otp('fresh@example.io', :'fcode', 'email') as fs \gset
select auth.verify_jwt(:'fs'::jsonb ->> 'access_token') -> 'amr' -> 0 ->> 'method' as amr,
       :'fs'::jsonb -> 'user' ->> 'email_confirmed_at' is not null as confirmed;
-- A user without a password cannot sign in with one.
select try($$select auth.sign_in('fresh@example.io', '')$$) as empty_password;

-- 4. auth.user() and auth.update_user(): data, email change.
set role authenticated;
select set_config('request.jwt.claims', auth.verify_jwt(:'fs'::jsonb ->> 'access_token')::text, false) is not null as claims_set;
select auth.user() ->> 'email' as me, auth.user() -> 'user_metadata' as metadata;
select auth.update_user('{"data": {"a": 1, "b": 2}}') -> 'user_metadata' as merged;
select auth.update_user('{"data": {"b": null, "c": [3]}}') -> 'user_metadata' as key_removed;
select try($$select auth.update_user('{"email": "rec@example.io"}')$$) as taken;
select try($$select auth.update_user('{"email": "not an email"}')$$) as invalid;
select auth.update_user('{"email": "Moved@Example.io"}', 'http://localhost:3000/welcome') as moved \gset
select :'moved'::jsonb ->> 'email' as still, :'moved'::jsonb ->> 'new_email' as new_email,
       :'moved'::jsonb ? 'email_change_sent_at' as sent_at_shown;
select recipient, action from last_message;
select redirect_to from last_message;
select code as ecode from last_message \gset
select try(format('select auth.verify_otp(%L, %L, %L)', 'fresh@example.io', :'ecode', 'email_change')) as old_address;
select auth.verify_otp('moved@example.io', :'ecode', 'email_change') as es \gset
select :'es'::jsonb -> 'user' ->> 'email' as email, :'es'::jsonb -> 'user' ? 'new_email' as pending,
       :'es'::jsonb -> 'user' -> 'identities' -> 0 ->> 'email' as identity_email,
       auth.verify_jwt(:'es'::jsonb ->> 'access_token') ->> 'email' as claim,
       auth.verify_jwt(:'es'::jsonb ->> 'access_token') -> 'amr' -> 0 ->> 'method' as amr;
-- Bad attributes.
select try($$select auth.update_user(null)$$) as null_attributes;
select try($$select auth.update_user('[1]')$$) as not_object;
select try($$select auth.update_user('{"role": "service_role"}')$$) as unknown_key;
select try($$select auth.update_user('{"data": "x"}')$$) as data_not_object;
select try($$select auth.update_user('{"password": 12345678}')$$) as password_not_string;
select try(format('select auth.update_user(%L)', jsonb_build_object('data', jsonb_build_object('big', repeat('x', 17000))))) as too_big;
-- No claims, a deleted session, an unknown user.
select set_config('request.jwt.claims', '', false) is not null as cleared;
select try($$select auth.user()$$) as no_claims;
select try($$select auth.update_user('{}')$$) as no_claims_update;
select set_config('request.jwt.claims', jsonb_build_object('sub', gen_random_uuid(), 'role', 'authenticated')::text, false) is not null as stranger;
select try($$select auth.user()$$) as unknown_user;
select set_config('request.jwt.claims', (auth.verify_jwt(:'fs'::jsonb ->> 'access_token') || '{"session_id": "00000000-0000-0000-0000-000000000001"}')::text, false) is not null as ended;
select try($$select auth.user()$$) as ended_session;
reset role;

-- 5. Errors of the public functions.
select try($$select auth.verify_otp('a@example.io', '123456', 'sms')$$) as bad_type;
select try($$select auth.verify_otp('a@example.io', '123456', null)$$) as null_type;
select try($$select auth.verify_otp('a@example.io', null, 'email')$$) as null_token;
select try($$select auth.verify_otp('a@example.io', '', 'email')$$) as empty_token;
select try(format('select auth.verify_otp(%L, %L, %L)', 'a@example.io', repeat('9', 1000), 'email')) as long_token;
select try($$select auth.verify_otp('not-an-email', '123456', 'email')$$) as bad_email;
select try($$select auth.verify_otp(null, '123456', 'email')$$) as code_without_email;
select try($$select auth.recover(null)$$) as recover_null;
select try($$select auth.recover('x@')$$) as recover_bad;
select try($$select auth.sign_in_with_otp('')$$) as otp_empty;
select try($$select auth.sign_in_with_otp('a@example.io', true, '[]')$$) as otp_data_array;
select try($$select auth.resend('recovery', 'a@example.io')$$) as resend_type;
select auth.resend('signup', 'nobody@example.io') as resend_unknown;

-- 6. Sending is rate-limited per address, known or not.
set auth.email_rate_limit = 2;
select auth.recover('limit@example.io') as one, auth.recover('limit@example.io') as two;
select try($$select auth.recover('limit@example.io')$$) as three;
select try($$select auth.recover('LIMIT@example.io')$$) as same_address;
select auth.recover('other-limit@example.io') as other_address;
update auth.rate_limits set window_start = now() - interval '2 hours' where key = 'email_send:limit@example.io';
select auth.recover('limit@example.io') as after_window;
reset auth.email_rate_limit;

-- 7. The delivery hook: a function of the deployment's receives each message instead of
-- the outbox; a failing hook fails the call and nothing is kept. (Hooks run as
-- supabase_auth_admin with search_path pg_catalog, pg_temp: they qualify their names, and
-- what they touch is granted to that role, as Supabase's hook documentation says.)
set auth.email_rate_limit = 0;
create table public.hook_log (m jsonb);
create function public.test_send_email(m jsonb) returns jsonb language sql
  as $$ insert into public.hook_log values (m); select '{}'::jsonb $$;
grant usage on schema public to supabase_auth_admin;
grant insert on public.hook_log to supabase_auth_admin;
create function public.failing_send_email(m jsonb) returns jsonb language plpgsql
  as $$ begin raise exception 'smtp down'; end $$;
create function public.refusing_send_email(m jsonb) returns jsonb language sql
  as $$ select '{"error": {"http_code": 429, "message": "quota reached"}}'::jsonb $$;
select count(*) as before from auth.email_outbox \gset
set auth.hook_send_email = 'public.test_send_email';
select auth.recover('rec@example.io') as via_hook;
select m -> 'email_data' ->> 'email_action_type' as action, m -> 'user' ->> 'email' as email,
       m -> 'email_data' ->> 'token' ~ '^[0-9]{6}$' as has_code,
       (select count(*) from auth.email_outbox) = :before as outbox_untouched
  from hook_log;
select o.token_hash as kept_hash from auth.one_time_tokens o join auth.users u on u.id = o.user_id
 where u.email = 'rec@example.io' and o.token_type = 'recovery_token' \gset
-- A session with temporary tables or types runs no hook: they would be found before the
-- hook's own unqualified names (a temporary "roles" table would feed it the caller's data).
create temporary table user_roles (user_id uuid, role text);
select try($$select auth.recover('rec@example.io')$$) as hook_with_temp_tables;
drop table pg_temp.user_roles;
set auth.hook_send_email = 'public.failing_send_email';
select try($$select auth.sign_in_with_otp('hooked@example.io')$$) as failing_hook;
select count(*) as no_user from auth.users where email = 'hooked@example.io';
set auth.hook_send_email = 'public.refusing_send_email';
select try($$select auth.recover('rec@example.io')$$) as refusing_hook;
select o.token_hash = :'kept_hash' as previous_token_kept from auth.one_time_tokens o join auth.users u on u.id = o.user_id
 where u.email = 'rec@example.io' and o.token_type = 'recovery_token';
set auth.hook_send_email = 'public.no_such_function';
select try($$select auth.recover('rec@example.io')$$) as missing_hook;
reset auth.hook_send_email;

-- 8. Redirects: within auth.site_url or the allow list, else auth.site_url.
set auth.site_url = 'https://app.example.io';
set auth.redirect_allow_list = 'myapp://callback, https://admin.example.io/';
select auth.recover('rec@example.io', 'https://app.example.io/reset') is not null as r1;
select auth.recover('rec@example.io', 'https://app.example.io.evil.io/') is not null as r2;
select auth.recover('rec@example.io', 'myapp://callback?x=1') is not null as r3;
select m.message -> 'email_data' ->> 'redirect_to' as redirect_to, m.message -> 'email_data' ->> 'site_url' as site_url
  from auth.email_outbox m order by m.id desc limit 3;
reset auth.site_url;
reset auth.redirect_allow_list;
reset auth.email_rate_limit;

-- 9. Who can read what: the outbox is service_role's; the token hashes are nobody's.
set role service_role;
select count(*) > 0 as service_reads_outbox from auth.email_outbox;
select try($$update auth.email_outbox set sent_at = now() where id = (select max(id) from auth.email_outbox)$$) as mark_sent;
select try($$update auth.email_outbox set message = '{}'$$) as rewrite_message;
select try($$select * from auth.one_time_tokens$$) as service_token_hashes;
set role authenticated;
select try($$select * from auth.email_outbox$$) as authenticated_outbox;
set role anon;
select try($$select * from auth.email_outbox$$) as anon_outbox;
select try($$select * from auth.rate_limits$$) as anon_rate_limits;
reset role;

-- 10. No token reaches the audit log.
select count(*) as audit_rows_with_a_token
  from auth.audit_log_entries a, auth.email_outbox m
 where strpos(a.payload::text, m.message -> 'email_data' ->> 'token_hash') > 0
    or strpos(a.payload::text, '"' || (m.message -> 'email_data' ->> 'token') || '"') > 0;
select array(select distinct a.payload ->> 'action' from auth.audit_log_entries a
               where a.created_at >= (select started from before) order by 1) as actions;

-- 11. Wrong codes count toward the lockout like wrong passwords.
set auth.lockout_max_failures = 3;
select auth.sign_in_with_otp('otp-lock@example.io') as sent;
select m.message -> 'email_data' ->> 'token' as lcode from auth.email_outbox m
 where m.recipient = 'otp-lock@example.io' order by m.id desc limit 1 \gset
select try(format('select auth.verify_otp(%L, %L, %L)', 'otp-lock@example.io', lpad(((:'lcode')::int + 1) % 1000000 || '', 6, '0'), 'email')) as wrong_1;
select try(format('select auth.verify_otp(%L, %L, %L)', 'otp-lock@example.io', lpad(((:'lcode')::int + 2) % 1000000 || '', 6, '0'), 'email')) as wrong_2;
select try(format('select auth.verify_otp(%L, %L, %L)', 'otp-lock@example.io', lpad(((:'lcode')::int + 3) % 1000000 || '', 6, '0'), 'email')) as wrong_3;
select key, count(*) as failures from auth.sign_in_failures where key = 'email:otp-lock@example.io' group by key;
select try(format('select auth.verify_otp(%L, %L, %L)', 'otp-lock@example.io', :'lcode', 'email')) as right_code_locked;
update auth.sign_in_failures set failed_at = now() - interval '1 hour' where key = 'email:otp-lock@example.io';
select auth.verify_otp('otp-lock@example.io', :'lcode', 'email') ->> 'token_type' as after_window;
select count(*) as counter_cleared from auth.sign_in_failures where key = 'email:otp-lock@example.io';
reset auth.lockout_max_failures;

-- Clean up for the files that follow.
delete from auth.users where id not in (select unnest(users) from before);
delete from auth.email_outbox;
delete from auth.rate_limits;
delete from auth.sign_in_failures;
delete from auth.audit_log_entries where created_at >= (select started from before);
revoke usage on schema public from supabase_auth_admin;
drop table public.hook_log;
drop function public.test_send_email(jsonb), public.failing_send_email(jsonb), public.refusing_send_email(jsonb);
drop schema flows_test cascade;
reset search_path;
