-- Runs outside a transaction block, one request per statement as under PostgREST: the
-- counters are written by autonomous transactions, and its users use their own emails.
-- Brute-force lockout: failed sign-ins are counted per account and per client IP in a
-- window (committed although each failing call raises); past the threshold even the right
-- password is refused until the window passes.
set auth.lockout_max_failures = 3;
set auth.lockout_ip_max_failures = 5;
set auth.lockout_window = '15min';
select auth.sign_up('lock@example.io', 'the-right-password') ->> 'token_type' as signed_up;

-- Three wrong passwords lock the account.
select try($$select auth.sign_in('lock@example.io', 'wrong-password-1')$$);
select try($$select auth.sign_in('lock@example.io', 'wrong-password-2')$$);
select try($$select auth.sign_in('lock@example.io', 'wrong-password-3')$$);
select key, count(*) as failures from auth.sign_in_failures where key like 'email:lock@%' group by key order by key;
select try($$select auth.sign_in('lock@example.io', 'the-right-password')$$);
select try($$select auth.sign_in('LOCK@example.io', 'the-right-password')$$);
-- Other accounts are not affected.
select auth.sign_up('other@example.io', 'the-other-password') ->> 'token_type' as other_signs_up;
select auth.sign_in('other@example.io', 'the-other-password') ->> 'token_type' as other_signs_in;

-- When the window has passed (it slides: each failure counts for 15 minutes), the right
-- password works again and clears the count.
update auth.sign_in_failures set failed_at = now() - interval '16 minutes' where key = 'email:lock@example.io';
select auth.sign_in('lock@example.io', 'the-right-password') ->> 'token_type' as after_window;
select count(*) as counters_left from auth.sign_in_failures where key = 'email:lock@example.io';

-- A success before the threshold clears the count too.
select try($$select auth.sign_in('lock@example.io', 'wrong-password-4')$$);
select auth.sign_in('lock@example.io', 'the-right-password') ->> 'token_type' as success_clears;
select count(*) as counters_left from auth.sign_in_failures where key = 'email:lock@example.io';

-- Unknown emails are counted the same way (a probe cannot tell them apart).
select try($$select auth.sign_in('ghost@example.io', 'x-password-1')$$);
select try($$select auth.sign_in('ghost@example.io', 'x-password-2')$$);
select try($$select auth.sign_in('ghost@example.io', 'x-password-3')$$);
select try($$select auth.sign_in('ghost@example.io', 'x-password-4')$$);

-- Per client IP, from PostgREST's request.headers: five failures from one address lock
-- that address for every account.
select set_config('request.headers', '{"x-forwarded-for": "192.0.2.10"}', false) is not null as headers_set;
select try(format('select auth.sign_in(%L, %L)', 'ip' || g || '@example.io', 'wrong')) from generate_series(1, 5) g;
select try($$select auth.sign_in('other@example.io', 'the-other-password')$$);
select set_config('request.headers', '{"x-forwarded-for": "192.0.2.11"}', false) is not null as other_ip;
select auth.sign_in('other@example.io', 'the-other-password') ->> 'token_type' as other_ip_signs_in;
select set_config('request.headers', '', false) is not null as headers_cleared;

-- 0 disables each limit.
set auth.lockout_max_failures = 0;
select try($$select auth.sign_in('ghost@example.io', 'x-password-5')$$) as counted_but_not_locked;

-- Leave nothing behind for the files that follow (this one commits as it goes).
reset auth.lockout_max_failures;
reset auth.lockout_ip_max_failures;
reset auth.lockout_window;
delete from auth.users where email in ('lock@example.io', 'other@example.io');
delete from auth.sign_in_failures;
