//! In-backend tests (`cargo pgrx test`): the pieces that need a live Postgres.

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    fn session(sql: &str) -> serde_json::Value {
        Spi::get_one::<pgrx::JsonB>(sql).unwrap().unwrap().0 // ok: test
    }

    #[pg_test]
    fn sign_up_then_sign_in_issue_verifiable_tokens() {
        let s = session(
            "select auth.sign_up('Unit@Example.io', 'correct horse battery', '{\"name\":\"u\"}')",
        );
        assert_eq!(s["token_type"], "bearer");
        assert_eq!(s["user"]["email"], "unit@example.io");
        assert_eq!(s["user"]["user_metadata"]["name"], "u");
        assert_eq!(s["user"]["app_metadata"]["provider"], "email");
        let s2 = session("select auth.sign_in('unit@EXAMPLE.io', 'correct horse battery')");
        assert_eq!(s2["user"]["id"], s["user"]["id"]);
        let token = s2["access_token"].as_str().unwrap();
        let claims =
            Spi::get_one_with_args::<pgrx::JsonB>("select auth.verify_jwt($1)", &[token.into()])
                .unwrap()
                .unwrap()
                .0;
        assert_eq!(claims["sub"], s["user"]["id"]);
        assert_eq!(claims["role"], "authenticated");
        assert_eq!(claims["aal"], "aal1");
        assert_eq!(claims["amr"][0]["method"], "password");
        let sessions = Spi::get_one::<i64>("select count(*) from auth.sessions").unwrap();
        assert_eq!(sessions, Some(2));
        let stored = Spi::get_one_with_args::<i64>(
            "select count(*) from auth.refresh_tokens where token = $1",
            &[s2["refresh_token"].as_str().unwrap().into()],
        )
        .unwrap();
        assert_eq!(
            stored,
            Some(0),
            "refresh tokens are stored hashed, never in plain text"
        );
    }

    #[pg_test]
    fn password_hashes_are_argon2id_phc() {
        Spi::run("select auth.sign_up('hash@example.io', 'correct horse battery')").unwrap();
        let h = Spi::get_one::<String>(
            "select encrypted_password from auth.users where email = 'hash@example.io'",
        )
        .unwrap()
        .unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
    }

    #[pg_test]
    fn claims_follow_the_setting_within_a_transaction() {
        let a = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11";
        let b = "b0eebc99-9c0b-4ef8-bb6d-6bb9bd380a22";
        let uid = || {
            Spi::get_one::<pgrx::Uuid>("select auth.uid()")
                .unwrap()
                .map(|u| u.to_string())
        };
        Spi::run(&format!("select set_config('request.jwt.claims', '{{\"sub\":\"{a}\",\"role\":\"authenticated\"}}', true)")).unwrap();
        assert_eq!(uid().as_deref(), Some(a));
        Spi::run(&format!(
            "select set_config('request.jwt.claims', '{{\"sub\":\"{b}\"}}', true)"
        ))
        .unwrap();
        assert_eq!(uid().as_deref(), Some(b));
        assert_eq!(Spi::get_one::<String>("select auth.role()").unwrap(), None);
        // The legacy per-claim setting wins.
        Spi::run(&format!(
            "select set_config('request.jwt.claim.sub', '{a}', true)"
        ))
        .unwrap();
        assert_eq!(uid().as_deref(), Some(a));
        Spi::run("select set_config('request.jwt.claim.sub', '', true)").unwrap();
        Spi::run("select set_config('request.jwt.claims', 'not json', true)").unwrap();
        assert_eq!(uid(), None);
        assert!(Spi::get_one::<pgrx::JsonB>("select auth.jwt()")
            .unwrap()
            .is_none());
    }

    #[pg_test]
    fn a_new_secret_takes_effect_at_once_and_old_tokens_fail() {
        let t1 = Spi::get_one::<String>("select auth.sign_jwt('{\"role\":\"anon\"}')")
            .unwrap()
            .unwrap();
        Spi::get_one_with_args::<pgrx::JsonB>("select auth.verify_jwt($1)", &[t1.as_str().into()])
            .unwrap();
        Spi::run("select auth.set_jwt_secret('a-new-secret-of-at-least-thirty-two-chars')")
            .unwrap();
        let still = Spi::get_one_with_args::<bool>(
            "select exists (select 1 from auth.signing_keys where secret = 'a-new-secret-of-at-least-thirty-two-chars' and state = 'in_use')",
            &[],
        )
        .unwrap();
        assert_eq!(still, Some(true));
        let t2 = Spi::get_one::<String>("select auth.sign_jwt('{\"role\":\"anon\"}')")
            .unwrap()
            .unwrap();
        assert_ne!(t1, t2);
        let ok = Spi::get_one_with_args::<pgrx::JsonB>(
            "select auth.verify_jwt($1)",
            &[t2.as_str().into()],
        );
        assert!(ok.is_ok());
    }

    #[pg_test(error = "bad_jwt: invalid signature")]
    fn a_token_signed_with_the_old_secret_is_rejected() {
        let t1 = Spi::get_one::<String>("select auth.sign_jwt('{\"role\":\"anon\"}')")
            .unwrap()
            .unwrap();
        Spi::run("select auth.set_jwt_secret('a-new-secret-of-at-least-thirty-two-chars')")
            .unwrap();
        let _ = Spi::get_one_with_args::<pgrx::JsonB>(
            "select auth.verify_jwt($1)",
            &[t1.as_str().into()],
        );
    }

    #[pg_test(error = "invalid_credentials: Invalid login credentials")]
    fn unknown_email_is_invalid_credentials() {
        let _ = Spi::run("select auth.sign_in('nobody@example.io', 'whatever-password')");
    }

    #[pg_test]
    fn bcrypt_users_sign_in_and_are_upgraded() {
        // A GoTrue-era user: bcrypt hash ("password123", cost 4) inserted directly.
        Spi::run(
            "insert into auth.users (id, aud, role, email, encrypted_password, raw_app_meta_data, raw_user_meta_data, created_at, updated_at)
             values (gen_random_uuid(), 'authenticated', 'authenticated', 'old@example.io',
                     '$2a$04$OiktQQtFCoZzbtaErx00rO11f72tvAHkfZ8qsMqK9iPh1jwJXVXgy',
                     '{\"provider\":\"email\",\"providers\":[\"email\"]}', '{}', now(), now())",
        )
        .unwrap();
        Spi::run("select auth.sign_in('old@example.io', 'password123')").unwrap();
        let h = Spi::get_one::<String>(
            "select encrypted_password from auth.users where email = 'old@example.io'",
        )
        .unwrap()
        .unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        Spi::run("select auth.sign_in('old@example.io', 'password123')").unwrap();
    }

    fn try_verify(token: &str) -> String {
        Spi::run(
            "create or replace function pg_temp.try_verify(t text) returns text language plpgsql as $$ \
             begin perform auth.verify_jwt(t); return 'ok'; \
             exception when others then return sqlstate || ' ' || sqlerrm; end $$",
        )
        .unwrap(); // ok: test
        Spi::get_one_with_args::<String>("select pg_temp.try_verify($1)", &[token.into()])
            .unwrap()
            .unwrap() // ok: test
    }

    #[pg_test]
    fn verification_is_remembered_per_token_and_forgotten_on_key_change() {
        Spi::run(
            "select auth.promote_signing_key(auth.create_signing_key('ES256', 'cache-test') ->> 'kid')",
        )
        .unwrap();
        let token = Spi::get_one::<String>(
            "select auth.sign_jwt('{\"sub\":\"x\",\"role\":\"authenticated\"}')",
        )
        .unwrap()
        .unwrap();
        assert!(token.starts_with("eyJ"));
        let before = crate::keys::verified_memory().unwrap().0;
        for _ in 0..3 {
            assert_eq!(try_verify(&token), "ok");
        }
        assert_eq!(crate::keys::verified_memory().unwrap().0, before + 1);
        // An HS256 token is remembered too, from its second check on (a token seen once
        // costs a hash), with the jsonb that check built: every later check returns the
        // same claims.
        Spi::run("select auth.promote_signing_key(auth.create_signing_key('HS256', 'hs-cache') ->> 'kid')")
            .unwrap();
        let hs = Spi::get_one::<String>(
            "select auth.sign_jwt('{\"sub\":\"y\",\"n\":1.50,\"aud\":\"a\",\"exp\":9999999999}')",
        )
        .unwrap()
        .unwrap();
        let claims = |t: &str| {
            Spi::get_one_with_args::<String>("select auth.verify_jwt($1)::text", &[t.into()])
                .unwrap()
                .unwrap()
        };
        let first = claims(&hs);
        assert!(first.contains("\"n\": 1.5,"), "{first}");
        // (Promoting the HS256 key dropped the memory with the keys.)
        assert_eq!(crate::keys::verified_memory().unwrap().0, 0);
        assert_eq!(claims(&hs), first);
        assert_eq!(crate::keys::verified_memory().unwrap().0, 1);
        assert_eq!(claims(&hs), first);
        assert_eq!(try_verify(&token), "ok");
        assert_eq!(crate::keys::verified_memory().unwrap().0, 2);
        // A remembered token's time and audience claims are checked again at every use,
        // against the clock and the policy of that call.
        let policy = crate::config::verify_policy();
        let now = crate::sessions::unix_now();
        assert!(crate::keys::verify_text(&hs, now, &policy).is_ok());
        let late = crate::keys::verify_text(&hs, 9_999_999_999 + 31, &policy).unwrap_err();
        assert!(late.to_string().contains("expired"), "{late}");
        Spi::run("set local auth.jwt_aud = 'b'").unwrap();
        assert!(
            try_verify(&hs).starts_with("28000 bad_jwt"),
            "{}",
            try_verify(&hs)
        );
        Spi::run("set local auth.jwt_aud = 'a'").unwrap();
        assert_eq!(try_verify(&hs), "ok");
        assert_eq!(crate::keys::verified_memory().unwrap().0, 2);
        // Revocation drops the memory at once: the remembered tokens now fail.
        Spi::run("select auth.revoke_signing_key('cache-test')").unwrap();
        assert_eq!(crate::keys::verified_memory().unwrap().0, 0);
        assert_eq!(
            try_verify(&token),
            "28000 bad_jwt: signing key \"cache-test\" has been revoked"
        );
        assert_eq!(try_verify(&hs), "ok");
        Spi::run("select auth.promote_signing_key(auth.create_signing_key('EdDSA') ->> 'kid')")
            .unwrap();
        Spi::run("select auth.revoke_signing_key('hs-cache')").unwrap();
        assert_eq!(
            try_verify(&hs),
            "28000 bad_jwt: signing key \"hs-cache\" has been revoked"
        );
    }

    #[pg_test]
    fn the_verified_token_memory_is_bounded_in_bytes() {
        Spi::run("set auth.token_cache_size = '256kB'").unwrap();
        Spi::run(
            "select auth.promote_signing_key(auth.create_signing_key('EdDSA', 'bound-test') ->> 'kid')",
        )
        .unwrap();
        // 200 distinct tokens with 8 KB of metadata each: about 10 MB were they all kept.
        let big = "x".repeat(8 * 1024);
        for i in 0..200 {
            let token = Spi::get_one_with_args::<String>(
                "select auth.sign_jwt(jsonb_build_object('sub', $1::text, 'role', 'authenticated', \
                     'user_metadata', jsonb_build_object('blob', $2::text)))",
                &[i.to_string().into(), big.as_str().into()],
            )
            .unwrap()
            .unwrap();
            assert_eq!(try_verify(&token), "ok");
            let (entries, bytes) = crate::keys::verified_memory().unwrap();
            assert!(bytes <= 256 * 1024, "{bytes} bytes in {entries} entries");
        }
        let (entries, _) = crate::keys::verified_memory().unwrap();
        assert!(entries > 0, "the memory still works under the bound");
        // A token larger than a quarter of the bound is verified but never kept.
        let huge = "y".repeat(20 * 1024);
        let token = Spi::get_one_with_args::<String>(
            "select auth.sign_jwt(jsonb_build_object('sub', 'h', 'blob', $1::text))",
            &[huge.as_str().into()],
        )
        .unwrap()
        .unwrap();
        let before = crate::keys::verified_memory().unwrap().0;
        assert_eq!(try_verify(&token), "ok");
        assert_eq!(crate::keys::verified_memory().unwrap().0, before);
    }

    #[pg_test]
    fn uuid_forms_follow_uuid_in() {
        let want = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11";
        for s in [
            want,
            "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
            "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
            "a0eebc999c0b4ef8bb6d6bb9bd380a11",
            "a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11",
            "{a0eebc999c0b4ef8bb6d6bb9bd380a11}",
            "a0eebc99-9c0b4ef8-bb6d6bb9-bd380a11",
        ] {
            let u = crate::claims::parse_uuid(s).unwrap_or_else(|| panic!("{s}"));
            assert_eq!(crate::claims::uuid_text(&u), want, "{s}");
        }
        for s in [
            "",
            "not-a-uuid",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a111",
            "-a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11-",
            "a0eebc99--9c0b-4ef8-bb6d-6bb9bd380a11",
            "a0eebc9-99c0b-4ef8-bb6d-6bb9bd380a11",
            "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "a0eebc99 9c0b 4ef8 bb6d 6bb9bd380a11",
            "urn:uuid:a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "{a0eebc999c0b4ef8bb6d6bb9bd380a11",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1g",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11\u{0}",
        ] {
            assert!(crate::claims::parse_uuid(s).is_none(), "{s}");
        }
        // The uuid crate writes what uuid_out writes.
        let u = crate::claims::parse_uuid(want).unwrap();
        assert_eq!(crate::claims::uuid_text(&u), want);
        let pg = Spi::get_one_with_args::<String>("select $1::uuid::text", &[want.into()])
            .unwrap()
            .unwrap();
        assert_eq!(crate::claims::uuid_text(&u), pg);
    }

    #[pg_test]
    fn claims_parse_extracts_like_arrow_text() {
        let p = crate::claims::parse(br#"{"sub":"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11","role":"authenticated","email":"a@x.io"}"#);
        assert!(p.sub.is_some());
        assert_eq!(
            p.sub_uuid.map(|u| crate::claims::uuid_text(&u)).as_deref(),
            p.sub.as_deref()
        );
        assert_eq!(p.role.as_deref(), Some("authenticated"));
        assert_eq!(p.email.as_deref(), Some("a@x.io"));
        let p = crate::claims::parse(br#"{"sub":"nope","role":5,"email":null}"#);
        assert_eq!(p.sub.as_deref(), Some("nope"));
        assert!(p.sub_uuid.is_none());
        assert_eq!(p.role.as_deref(), Some("5"));
        assert!(p.email.is_none());
        for bad in [&b"not json"[..], b"[1,2]", b"\"str\"", b"{", b"{\"sub\":"] {
            let p = crate::claims::parse(bad);
            assert!(p.object.is_none() && p.sub.is_none() && p.role.is_none());
        }
    }
}
