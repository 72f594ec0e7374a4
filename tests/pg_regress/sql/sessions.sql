-- Sessions: refresh rotation, reuse, sign-out scopes, limits, bans, session_check, cleanup.
-- (Reuse after the interval revokes the session in a transaction of its own; its committed
-- effect is shown by the client tests, since this file rolls back.)
begin;
select auth.sign_up('sess@example.io', 'password-sess-1') as s1 \gset
select auth.refresh(:'s1'::jsonb ->> 'refresh_token') as r1 \gset

-- A refresh returns the same session shape, a new refresh token, the same session.
select array(select jsonb_object_keys(:'r1'::jsonb) order by 1) as session_keys;
select :'r1'::jsonb ->> 'refresh_token' <> :'s1'::jsonb ->> 'refresh_token' as new_refresh_token,
       auth.verify_jwt(:'r1'::jsonb ->> 'access_token') ->> 'session_id'
         = auth.verify_jwt(:'s1'::jsonb ->> 'access_token') ->> 'session_id' as same_session,
       auth.verify_jwt(:'r1'::jsonb ->> 'access_token') -> 'amr' -> 0 ->> 'method' as amr_method,
       auth.verify_jwt(:'r1'::jsonb ->> 'access_token') -> 'amr' -> 0 -> 'timestamp'
         = auth.verify_jwt(:'s1'::jsonb ->> 'access_token') -> 'amr' -> 0 -> 'timestamp' as amr_kept;
-- Stored: the old token revoked, its child active, parent = the old token's hash.
select t.revoked, t.parent = encode(sha256(convert_to(:'s1'::jsonb ->> 'refresh_token', 'UTF8')), 'hex') as child_of_first
  from auth.refresh_tokens t order by t.id;
select refreshed_at is not null as refreshed_at_recorded from auth.sessions;

-- Inside the reuse interval a rotated token still yields a valid session (another tab).
select auth.refresh(:'s1'::jsonb ->> 'refresh_token') as r2 \gset
select auth.verify_jwt(:'r2'::jsonb ->> 'access_token') ->> 'session_id'
         = auth.verify_jwt(:'s1'::jsonb ->> 'access_token') ->> 'session_id' as same_session;
select auth.refresh(:'r2'::jsonb ->> 'refresh_token') ->> 'token_type' as sibling_refreshes;
select auth.refresh(:'r1'::jsonb ->> 'refresh_token') ->> 'token_type' as first_child_refreshes;

-- Unknown, empty, NULL and absurd tokens.
select try($$select auth.refresh('not-a-token')$$);
select try($$select auth.refresh('')$$);
select try($$select auth.refresh(null)$$);
select try(format('select auth.refresh(%L)', repeat('x', 100000)));

-- After the interval: refresh_token_already_used (class 28).
update auth.refresh_tokens set updated_at = now() - interval '11 seconds' where revoked;
select try(format('select auth.refresh(%L)', :'s1'::jsonb ->> 'refresh_token'));

-- Session limits, shortened by settings and by moving timestamps back (no sleeping).
select auth.sign_up('limits@example.io', 'password-limits') as l \gset
set local auth.session_timebox = 3600;
update auth.sessions set created_at = now() - interval '2 hours' where user_id = (:'l'::jsonb -> 'user' ->> 'id')::uuid;
select try(format('select auth.refresh(%L)', :'l'::jsonb ->> 'refresh_token'));
reset auth.session_timebox;
select auth.refresh(:'l'::jsonb ->> 'refresh_token') as l2 \gset
set local auth.session_inactivity_timeout = 600;
update auth.sessions set refreshed_at = (now() - interval '20 minutes') at time zone 'UTC' where user_id = (:'l'::jsonb -> 'user' ->> 'id')::uuid;
select try(format('select auth.refresh(%L)', :'l2'::jsonb ->> 'refresh_token'));
update auth.sessions set refreshed_at = (now() - interval '5 minutes') at time zone 'UTC' where user_id = (:'l'::jsonb -> 'user' ->> 'id')::uuid;
select auth.refresh(:'l2'::jsonb ->> 'refresh_token') ->> 'token_type' as active_recently;
reset auth.session_inactivity_timeout;
-- Single session per user: a newer sign-in ends the older session.
select auth.sign_in('limits@example.io', 'password-limits') as l3 \gset
set local auth.session_single_per_user = on;
select try(format('select auth.refresh(%L)', :'l'::jsonb ->> 'refresh_token'));
select auth.refresh(:'l3'::jsonb ->> 'refresh_token') ->> 'token_type' as newest_session_refreshes;
reset auth.session_single_per_user;

-- A ban blocks refresh too.
update auth.users set banned_until = now() + interval '1 day' where email = 'limits@example.io';
select try(format('select auth.refresh(%L)', :'l3'::jsonb ->> 'refresh_token'));
update auth.users set banned_until = null where email = 'limits@example.io';

-- Sign-out scopes, with the claims PostgREST would set.
select auth.sign_up('out@example.io', 'password-out-1') as o1 \gset
select auth.sign_in('out@example.io', 'password-out-1') as o2 \gset
select auth.sign_in('out@example.io', 'password-out-1') as o3 \gset
select auth.sign_in('out@example.io', 'password-out-1') as o4 \gset
select (:'o1'::jsonb -> 'user' ->> 'id') as out_uid \gset
select count(*) as sessions_before from auth.sessions where user_id = :'out_uid';
set local role authenticated;
select set_config('request.jwt.claims', auth.verify_jwt(:'o1'::jsonb ->> 'access_token')::text, true) is not null as claims_set;
select auth.sign_out('local');
reset role;
select count(*) as after_local from auth.sessions where user_id = :'out_uid';
select try(format('select auth.refresh(%L)', :'o1'::jsonb ->> 'refresh_token'));
set local role authenticated;
select set_config('request.jwt.claims', auth.verify_jwt(:'o2'::jsonb ->> 'access_token')::text, true) is not null as claims_set;
select auth.sign_out('others');
reset role;
select count(*) as after_others,
       bool_and(id = (auth.verify_jwt(:'o2'::jsonb ->> 'access_token') ->> 'session_id')::uuid) as only_caller_left
  from auth.sessions where user_id = :'out_uid';
select auth.sign_in('out@example.io', 'password-out-1') as o5 \gset
set local role authenticated;
select set_config('request.jwt.claims', auth.verify_jwt(:'o5'::jsonb ->> 'access_token')::text, true) is not null as claims_set;
select auth.sign_out();
reset role;
select count(*) as after_global from auth.sessions where user_id = :'out_uid';
-- The caller's session is gone now: signing out again, or without claims, is refused.
set local role authenticated;
select try($$select auth.sign_out('local')$$);
select try($$select auth.sign_out('everything')$$);
select set_config('request.jwt.claims', '', true) is not null as claims_cleared;
select try($$select auth.sign_out()$$);
reset role;
set local role anon;
select try($$select auth.sign_out()$$);
reset role;

-- session_check: an access token of an ended session reads as no claims at all.
select auth.sign_in('out@example.io', 'password-out-1') as o6 \gset
select auth.verify_jwt(:'o6'::jsonb ->> 'access_token')::text as o6_claims \gset
set local role authenticated;
select set_config('request.jwt.claims', :'o6_claims', true) is not null as claims_set;
select auth.uid() = (:'out_uid')::uuid as uid_before_sign_out;
select auth.sign_out('local');
select auth.uid() = (:'out_uid')::uuid as uid_without_check;
reset role;
set local auth.session_check = on;
set local role authenticated;
select auth.uid() as uid_with_check, auth.jwt() as jwt_with_check, auth.role() as role_with_check;
-- Tokens without a session (API keys) are unaffected.
select set_config('request.jwt.claims', '{"role": "anon", "iss": "supabase"}', true) is not null as claims_set;
select auth.role() as api_key_role;
reset role;
reset auth.session_check;

-- The audit log: one entry per event, never a token or a hash.
select payload ->> 'action' as action, count(*)
  from auth.audit_log_entries
 where payload ->> 'actor_username' in ('sess@example.io', 'limits@example.io', 'out@example.io')
    or payload -> 'traits' ->> 'reason' = 'refresh_token_reuse'
 group by 1 order by 1;
select count(*) as entries_holding_secrets
  from auth.audit_log_entries a, auth.refresh_tokens t
 where strpos(a.payload::text, t.token) > 0 or strpos(a.payload::text, '$argon2') > 0;

-- cleanup: ended sessions and long-revoked tokens, in bounded batches.
update auth.sessions set not_after = now() - interval '1 minute' where user_id = (:'l'::jsonb -> 'user' ->> 'id')::uuid;
update auth.refresh_tokens set updated_at = now() - interval '2 days' where revoked;
select try('select auth.cleanup(0)');
select auth.cleanup(1) as first_batch;
select auth.cleanup(1000) as second_batch;
select auth.cleanup() as nothing_left;
set local role service_role;
select auth.cleanup() as as_service_role;
reset role;
set local role authenticated;
select try('select auth.cleanup()');
reset role;
rollback;
