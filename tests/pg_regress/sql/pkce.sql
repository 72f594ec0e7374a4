-- PKCE for the email links, as GoTrue does it: a link sent with a code_challenge carries the
-- pkce_ prefix; opening it (auth.verify_link) gives an auth code instead of a session; the
-- code and the verifier give the session (auth.exchange_code_for_session), once. Calls are
-- made as anon, each statement its own transaction as under an HTTP server (a wrong
-- verifier is written down by an autonomous transaction that must see the flow state
-- committed); what the file creates is removed at the end.
create schema pkce_test;
set search_path = pkce_test, public;
create table pkce_test.before as
  select clock_timestamp() as started, array(select id from auth.users) as users;
create view pkce_test.last_message as
  select m.recipient, m.email_action_type as action, m.message -> 'email_data' ->> 'token_hash' as link
    from auth.email_outbox m order by m.id desc limit 1;
-- What a client does with its verifier: the challenge of RFC 7636 (base64url of SHA-256).
create function pkce_test.s256(verifier text) returns text
language sql immutable
return translate(rtrim(encode(sha256(convert_to(verifier, 'UTF8')), 'base64'), '='), '+/', '-_');
grant usage on schema pkce_test to public;
grant execute on function pkce_test.s256(text) to public;
set auth.email_rate_limit = 0;
set auth.redirect_allow_list = 'https://app.example.io';
\set v1 'verifier-one-0123456789-0123456789-0123456789'
\set v2 'verifier-two-0123456789-0123456789-0123456789'

-- 1. The parameters are checked before anything is sent: both or neither, s256 or plain
-- (in any case), 43 to 128 characters of [A-Za-z0-9._~-].
select count(*) as outbox_before from auth.email_outbox \gset
set role anon;
select try(format('select auth.sign_in_with_otp(%L, code_challenge => %L)', 'pkce@example.io', pkce_test.s256(:'v1'))) as challenge_only;
select try(format('select auth.sign_in_with_otp(%L, code_challenge_method => %L)', 'pkce@example.io', 's256')) as method_only;
select try(format('select auth.recover(%L, null, %L, %L)', 'pkce@example.io', pkce_test.s256(:'v1'), 'sha512')) as bad_method;
select try(format('select auth.resend(%L, %L, null, %L, %L)', 'signup', 'pkce@example.io', 'short', 's256')) as short_challenge;
select try(format('select auth.sign_up(%L, %L, null, null, %L, %L)', 'pkce@example.io', 'pkce-password-1', repeat('a', 43) || '+', 'plain')) as bad_character;
select try(format('select auth.sign_in_with_otp(%L, code_challenge => %L, code_challenge_method => %L)', 'pkce@example.io', repeat('a', 129), 'plain')) as too_long;
-- Empty strings count as absent, as in GoTrue.
select auth.sign_in_with_otp('pkce@example.io', code_challenge => '', code_challenge_method => '') as empty_is_absent;
reset role;
select count(*) - :outbox_before as messages, (select left(link, 5) = 'pkce_' from last_message) as prefixed
  from auth.email_outbox;

-- 2. A magic link for a PKCE flow: the prefix, and a flow state without a code yet.
set role anon;
select auth.sign_in_with_otp('pkce@example.io', code_challenge => pkce_test.s256(:'v1'), code_challenge_method => 'S256') as sent;
reset role;
select link as l1 from last_message \gset
select left(:'l1', 5) as prefix, length(:'l1') as link_length;
select f.code_challenge_method, f.code_challenge = pkce_test.s256(:'v1') as challenge_kept, f.provider_type,
       f.authentication_method, f.auth_code, f.auth_code_issued_at is null as no_code_yet, u.email
  from auth.flow_state f join auth.users u on u.id = f.user_id;
-- The stored token is the one after the prefix (as its keyed hash).
select count(*) as token_stored from auth.one_time_tokens o where o.token_hash = auth._otp_hash(substr(:'l1', 6));

-- 3. Opening the link: an auth code, no session; only the code's SHA-256 is stored. The
-- redirect is checked as for sending: outside auth.site_url and the allow list, site_url.
set role anon;
select auth.verify_link(:'l1', 'magiclink', 'https://evil.example/steal') as opened \gset
reset role;
select array(select jsonb_object_keys(:'opened'::jsonb) order by 1) as answer_keys,
       :'opened'::jsonb ->> 'redirect_to' as redirect_to, length(:'opened'::jsonb ->> 'code') as code_length;
select :'opened'::jsonb ->> 'code' as code1 \gset
select f.auth_code = encode(sha256(convert_to(:'code1', 'UTF8')), 'hex') as code_hashed,
       f.auth_code <> :'code1' as code_not_stored, f.auth_code_issued_at is not null as issued
  from auth.flow_state f;
select u.email_confirmed_at is not null as confirmed, count(s.id) as sessions
  from auth.users u left join auth.sessions s on s.user_id = u.id
 where u.email = 'pkce@example.io' group by u.email_confirmed_at;
-- The link is used up.
set role anon;
select auth.verify_link(:'l1', 'magiclink') -> 'error' as opened_twice;

-- 4. The exchange: the code and the verifier give a session whose amr is the flow's.
select auth.exchange_code_for_session(:'code1', :'v1') as s1 \gset
reset role;
select :'s1'::jsonb ->> 'token_type' as token_type, :'s1'::jsonb -> 'user' ->> 'email' as email,
       auth.verify_jwt(:'s1'::jsonb ->> 'access_token') -> 'amr' -> 0 ->> 'method' as amr,
       (select count(*) from auth.flow_state) as flow_states_left;
set role anon;
select try(format('select auth.exchange_code_for_session(%L, %L)', :'code1', :'v1')) as exchanged_twice;
select try(format('select auth.exchange_code_for_session(%L, %L)', 'no-such-code', :'v1')) as unknown_code;
select try(format('select auth.exchange_code_for_session(%L, %L)', '', :'v1')) as empty_code;
select try(format('select auth.exchange_code_for_session(%L, null)', :'code1')) as no_verifier;
reset role;

-- 5. A wrong verifier uses the code up: the flow state is deleted although the call fails
-- (an autonomous transaction), and the failure counts toward the lockout of the flow and
-- of the client address.
set request.headers = '{"x-forwarded-for": "203.0.113.77"}';
set role anon;
select auth.sign_in_with_otp('pkce@example.io', code_challenge => pkce_test.s256(:'v1'), code_challenge_method => 's256') as sent;
reset role;
select link as l2 from last_message \gset
set role anon;
select auth.verify_link(:'l2', 'magiclink') ->> 'code' as code2 \gset
select try(format('select auth.exchange_code_for_session(%L, %L)', :'code2', :'v2')) as wrong_verifier;
select try(format('select auth.exchange_code_for_session(%L, %L)', :'code2', :'v1')) as right_verifier_too_late;
reset role;
select count(*) as flow_states from auth.flow_state;
select split_part(key, ':', 1) as counter, count(*) as failures from auth.sign_in_failures
 where key like 'pkce:%' or key = 'ip:203.0.113.77' group by 1 order by 1;
select a.payload -> 'traits' ->> 'reason' as reason, a.payload -> 'traits' ->> 'grant_type' as grant_type, a.ip_address
  from auth.audit_log_entries a
 where a.payload ->> 'action' = 'login_failed' and a.created_at >= (select started from before)
   and a.payload -> 'traits' ->> 'grant_type' = 'pkce';
reset request.headers;

-- 6. Codes expire 5 minutes after they are issued.
set role anon;
select auth.sign_in_with_otp('pkce@example.io', code_challenge => pkce_test.s256(:'v1'), code_challenge_method => 's256') as sent;
reset role;
select link as l3 from last_message \gset
set role anon;
select auth.verify_link(:'l3', 'magiclink') ->> 'code' as code3 \gset
reset role;
update auth.flow_state set auth_code_issued_at = now() - interval '5 minutes 1 second';
set role anon;
select try(format('select auth.exchange_code_for_session(%L, %L)', :'code3', :'v1')) as expired;
reset role;
-- auth.cleanup deletes it (and flows whose link expired unopened).
select auth.cleanup() -> 'flow_state' as cleaned;
select count(*) as left_after from auth.flow_state;

-- 7. A plain challenge is stored as it is (as GoTrue stores it), so a copy of the table
-- holds the verifier; it still exchanges nothing: the table has only the code's hash.
set role anon;
select auth.sign_in_with_otp('pkce@example.io', code_challenge => :'v2', code_challenge_method => 'plain') as sent;
reset role;
select link as l4 from last_message \gset
set role anon;
select auth.verify_link(:'l4', 'magiclink') ->> 'code' as code4 \gset
reset role;
create table pkce_test.stolen as select auth_code, code_challenge, code_challenge_method from auth.flow_state;
select code_challenge_method, code_challenge = :'v2' as verifier_in_the_copy from pkce_test.stolen;
select auth_code as stolen_code, code_challenge as stolen_verifier from pkce_test.stolen \gset
set role anon;
select try(format('select auth.exchange_code_for_session(%L, %L)', :'stolen_code', :'stolen_verifier')) as stolen_copy;
-- The copy did not use the code up (it never found it); the real code still works.
select auth.exchange_code_for_session(:'code4', :'v2') -> 'user' ->> 'email' as plain_exchange;
reset role;

-- 8. verify_otp takes a PKCE link too (GoTrue's POST /verify): the prefix is dropped and a
-- session is the answer; the flow state is left to expire.
set role anon;
select auth.sign_in_with_otp('pkce@example.io', code_challenge => pkce_test.s256(:'v1'), code_challenge_method => 's256') as sent;
reset role;
select link as l5 from last_message \gset
set role anon;
select auth.verify_jwt(auth.verify_otp(null, :'l5', 'magiclink') ->> 'access_token') -> 'amr' -> 0 ->> 'method' as verify_otp_amr;
reset role;
delete from auth.flow_state;

-- 9. verify_link answers failures instead of raising, with the redirect, and keeps nothing
-- of the failed call; a wrong link counts toward the lockout as in verify_otp.
set request.headers = '{"x-forwarded-for": "203.0.113.78"}';
set role anon;
select auth.verify_link('pkce_' || repeat('x', 43), 'magiclink', 'https://app.example.io/done') as wrong_link;
select auth.verify_link(repeat('y', 43), 'signup') as wrong_plain_link;
select auth.verify_link(null, 'magiclink') as no_token;
select auth.verify_link(repeat('y', 43), 'email') as email_type;
reset role;
select count(*) as ip_failures from auth.sign_in_failures where key = 'ip:203.0.113.78';
reset request.headers;
-- A PKCE link whose flow state is gone: flow_state_not_found, and the link is not used up
-- (the subtransaction took the verification back), so the same link still works.
set role anon;
select auth.sign_in_with_otp('pkce@example.io', code_challenge => pkce_test.s256(:'v1'), code_challenge_method => 's256') as sent;
reset role;
select link as l6 from last_message \gset
delete from auth.flow_state;
set role anon;
select auth.verify_link(:'l6', 'magiclink', 'https://app.example.io/done') as no_flow;
reset role;
select count(*) as token_kept from auth.one_time_tokens o where o.token_hash = auth._otp_hash(substr(:'l6', 6));
set role anon;
select auth.verify_otp(null, :'l6', 'magiclink') ->> 'token_type' as link_still_works;

-- 10. An ordinary link through verify_link: the session, and the allowed redirect.
select auth.sign_in_with_otp('pkce@example.io') as sent;
reset role;
select link as l7 from last_message \gset
set role anon;
select v ->> 'redirect_to' as redirect_to, v -> 'session' ->> 'token_type' as token_type,
       auth.verify_jwt(v -> 'session' ->> 'access_token') -> 'amr' -> 0 ->> 'method' as amr
  from auth.verify_link(:'l7', 'magiclink', 'https://app.example.io/welcome') v;
reset role;

-- 11. Every flow that sends a link: sign-up confirmation (amr email/signup), its resend,
-- recovery, and an email change (update_user takes the parameters in its attributes, as
-- GoTrue's PUT /user body has them).
set auth.require_email_confirmation = on;
set role anon;
select auth.sign_up('pkce-signup@example.io', 'pkce-password-1', '{}', null, pkce_test.s256(:'v1'), 's256') ? 'access_token' as session_at_sign_up;
select auth.resend('signup', 'pkce-signup@example.io', null, pkce_test.s256(:'v2'), 's256') as resent;
reset role;
select f.authentication_method, f.code_challenge = pkce_test.s256(:'v2') as newest_challenge, count(*) over () as flows
  from auth.flow_state f;
select link as l8 from last_message \gset
set role anon;
select auth.exchange_code_for_session(auth.verify_link(:'l8', 'signup') ->> 'code', :'v2') as s8 \gset
reset role;
select auth.verify_jwt(:'s8'::jsonb ->> 'access_token') -> 'amr' -> 0 ->> 'method' as signup_amr,
       :'s8'::jsonb -> 'user' ->> 'email_confirmed_at' is not null as confirmed;
reset auth.require_email_confirmation;
set role anon;
select auth.recover('pkce-signup@example.io', null, pkce_test.s256(:'v1'), 'S256') as recovery_sent;
reset role;
select link as l9 from last_message \gset
set role anon;
select auth.verify_jwt(auth.exchange_code_for_session(auth.verify_link(:'l9', 'recovery') ->> 'code', :'v1') ->> 'access_token')
       -> 'amr' -> 0 ->> 'method' as recovery_amr;
set role authenticated;
select set_config('request.jwt.claims', auth.verify_jwt(:'s8'::jsonb ->> 'access_token')::text, false) is not null as claims_set;
select try($$select auth.update_user('{"email": "pkce-new@example.io", "code_challenge": "short", "code_challenge_method": "s256"}')$$) as bad_challenge;
select auth.update_user(jsonb_build_object('email', 'pkce-new@example.io', 'code_challenge', pkce_test.s256(:'v1'),
                                           'code_challenge_method', 's256')) ->> 'new_email' as new_email;
reset request.jwt.claims;
reset role;
select recipient, action, left(link, 5) as prefix from last_message;
select link as l10 from last_message \gset
set role anon;
select auth.exchange_code_for_session(auth.verify_link(:'l10', 'email_change') ->> 'code', :'v1') -> 'user' ->> 'email' as changed_to;
reset role;

-- 12. The flow states are the owner's alone; the helpers are not callable.
set role anon;
select try('select * from auth.flow_state') as anon_reads_flows;
select try($$select auth._pkce_verifier_matches('plain', 'x', 'x')$$) as anon_calls_helper;
set role service_role;
select try('select * from auth.flow_state') as service_reads_flows;
reset role;
-- No code, link or verifier reaches the audit log.
select count(*) as audit_rows_with_a_secret
  from auth.audit_log_entries a
 where a.created_at >= (select started from before)
   and (strpos(a.payload::text, :'code1') > 0 or strpos(a.payload::text, :'v1') > 0 or strpos(a.payload::text, substr(:'l1', 6)) > 0);

-- Clean up for the files that follow.
delete from auth.users where id not in (select unnest(users) from before);
delete from auth.email_outbox;
delete from auth.rate_limits;
delete from auth.sign_in_failures;
delete from auth.audit_log_entries where created_at >= (select started from before);
reset auth.email_rate_limit;
reset auth.redirect_allow_list;
drop schema pkce_test cascade;
reset search_path;
