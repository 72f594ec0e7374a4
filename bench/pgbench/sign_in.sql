\set u random(1, 100)
select auth.sign_in('pgb' || :u || '@example.com', 'pgbench-password-' || :u);
