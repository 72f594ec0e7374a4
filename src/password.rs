//! Password policy, hashing (argon2id, PHC strings) and verification, including the bcrypt
//! hashes that GoTrue and pgcrypto's `crypt()` write, so imported users can sign in and are
//! upgraded to argon2id on their first success.

use crate::error::{AuthError, AuthResult};
use argon2::{Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version};

/// argon2id cost parameters (memory in KiB, passes). Parallelism is always 1: a backend is
/// one thread, and p=1 is what OWASP's figures assume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cost {
    pub memory_kib: u32,
    pub iterations: u32,
}

impl Cost {
    #[cfg(test)]
    pub const OWASP: Cost = Cost {
        memory_kib: 19456,
        iterations: 2,
    };

    fn hasher(self) -> AuthResult<Argon2<'static>> {
        let params = Params::new(self.memory_kib, self.iterations, 1, None)
            .map_err(|e| AuthError::Unexpected(format!("argon2 parameters: {e}")))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }
}

/// bcrypt costs above this are refused rather than verified: cost 31 would take days and a
/// single such row must not let anyone pin a backend.
const MAX_BCRYPT_COST: u32 = 16;

/// Length policy, in characters. Checked before any hashing work.
pub fn check_policy(password: &str, min: usize, max: usize) -> AuthResult<()> {
    let n = password.chars().count();
    if n > max {
        return Err(AuthError::ValidationFailed(format!(
            "Password cannot be longer than {max} characters"
        )));
    }
    if n < min {
        return Err(AuthError::WeakPassword(format!(
            "Password should be at least {min} characters"
        )));
    }
    Ok(())
}

/// A new argon2id PHC string with a fresh random salt.
pub fn hash(password: &str, cost: Cost) -> AuthResult<String> {
    let h = cost
        .hasher()?
        .hash_password(password.as_bytes())
        .map_err(|e| AuthError::Unexpected(format!("password hashing failed: {e}")))?;
    Ok(h.to_string())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Wrong password, or a stored value we cannot use.
    Mismatch,
    /// Right password and the stored hash is as strong as `cost` asks.
    Match,
    /// Right password, but the stored hash is bcrypt or weaker argon2: rehash it now.
    MatchNeedsRehash,
}

/// Verify `password` against a stored hash. Unknown formats are a mismatch, never an error:
/// the caller reports one `invalid_credentials` either way.
pub fn verify(password: &str, stored: &str, cost: Cost) -> Verdict {
    if stored.starts_with("$argon2") {
        let Ok(parsed) = PasswordHash::new(stored) else {
            return Verdict::Mismatch;
        };
        // The stored hash's own parameters drive verification (argon2i/id, any cost short
        // of absurd: a row written around the API must not let anyone pin a backend or
        // make it allocate gigabytes).
        match Params::try_from(&parsed) {
            Ok(p) if within_bounds(&p, cost) => {}
            _ => return Verdict::Mismatch,
        }
        if Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_err()
        {
            return Verdict::Mismatch;
        }
        let weaker = match Params::try_from(&parsed) {
            Ok(p) => {
                parsed.algorithm.as_str() != "argon2id"
                    || p.m_cost() < cost.memory_kib
                    || p.t_cost() < cost.iterations
            }
            Err(_) => true,
        };
        if weaker {
            Verdict::MatchNeedsRehash
        } else {
            Verdict::Match
        }
    } else if is_bcrypt(stored) {
        match bcrypt_cost(stored) {
            Some(c) if c <= MAX_BCRYPT_COST => {}
            _ => return Verdict::Mismatch,
        }
        match bcrypt::verify(password.as_bytes(), stored) {
            Ok(true) => Verdict::MatchNeedsRehash,
            _ => Verdict::Mismatch,
        }
    } else {
        Verdict::Mismatch
    }
}

/// The most work a stored argon2 hash may ask of a verification: four times the current
/// cost, at least 256 MiB and 16 passes, and parallelism of at most 16.
fn within_bounds(p: &Params, cost: Cost) -> bool {
    p.m_cost() <= cost.memory_kib.saturating_mul(4).max(256 * 1024)
        && p.t_cost() <= cost.iterations.saturating_mul(4).max(16)
        && p.p_cost() <= 16
}

fn is_bcrypt(s: &str) -> bool {
    ["$2a$", "$2b$", "$2y$"].iter().any(|p| s.starts_with(p))
}

fn bcrypt_cost(s: &str) -> Option<u32> {
    s.get(4..6)?.parse().ok()
}

/// The fixed hash that stands in for a missing one: it parses with the current cost, so
/// verifying against it is one argon2id computation, and no password matches it.
fn dummy_hash(cost: Cost) -> String {
    format!(
        "$argon2id$v=19$m={},t={},p=1$YXV0aF9leHQgZHVtbXkgc2FsdA$\
         ZHVtbXkgaGFzaDogbm8gcGFzc3dvcmQgbWF0Y2hlcyBpdC4",
        cost.memory_kib, cost.iterations
    )
}

/// Spend the time a real verification would, for an email with no usable hash, so that an
/// unknown email and a wrong password cannot be told apart by timing. Nothing is computed
/// to make the dummy hash, so a backend's first unknown-address sign-in costs what its
/// first known-address one does.
pub fn burn_verification(password: &str, cost: Cost) {
    let _ = verify(password, &dummy_hash(cost), cost);
}

#[cfg(test)]
mod tests {
    use super::*;

    // Cheap parameters keep unit tests fast; the policy floor is enforced by the settings.
    const FAST: Cost = Cost {
        memory_kib: 1024,
        iterations: 1,
    };

    #[test]
    fn argon2id_round_trip_and_phc_format() {
        let h = hash("correct horse", Cost::OWASP).unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert_eq!(verify("correct horse", &h, Cost::OWASP), Verdict::Match);
        assert_eq!(verify("Correct horse", &h, Cost::OWASP), Verdict::Mismatch);
    }

    #[test]
    fn salts_differ() {
        assert_ne!(hash("same", FAST).unwrap(), hash("same", FAST).unwrap());
    }

    #[test]
    fn weaker_argon2_asks_for_rehash() {
        let h = hash("pw-pw-pw-pw", FAST).unwrap();
        assert_eq!(
            verify("pw-pw-pw-pw", &h, Cost::OWASP),
            Verdict::MatchNeedsRehash
        );
        assert_eq!(verify("pw-pw-pw-pw", &h, FAST), Verdict::Match);
    }

    #[test]
    fn bcrypt_variants_verify_and_ask_for_rehash() {
        let b = bcrypt::hash("hunter2hunter2", 4).unwrap(); // $2b$
        assert_eq!(
            verify("hunter2hunter2", &b, FAST),
            Verdict::MatchNeedsRehash
        );
        assert_eq!(verify("hunter3hunter3", &b, FAST), Verdict::Mismatch);
        for prefix in ["$2a$", "$2y$"] {
            let v = format!("{prefix}{}", &b[4..]);
            assert_eq!(
                verify("hunter2hunter2", &v, FAST),
                Verdict::MatchNeedsRehash,
                "{v}"
            );
        }
        // pgcrypto: select crypt('password', gen_salt('bf', 4));
        let pgcrypto = "$2a$04$7w4/.2DHCFkJsa8c5fkdp.nwVQ6DbjcE63oDSekiKCjxOjca//d6O";
        assert_eq!(
            verify("password", pgcrypto, FAST),
            Verdict::MatchNeedsRehash
        );
    }

    #[test]
    fn absurd_bcrypt_cost_and_garbage_are_mismatches() {
        let b = bcrypt::hash("x", 4).unwrap();
        let huge = format!("$2b$31{}", &b[6..]);
        assert_eq!(verify("x", &huge, FAST), Verdict::Mismatch);
        for s in ["", "plain", "$argon2id$", "$2b$", "$2b$xx$", "$1$abc$def"] {
            assert_eq!(verify("x", s, FAST), Verdict::Mismatch, "{s}");
        }
    }

    #[test]
    fn absurd_argon2_parameters_are_mismatches() {
        let h = hash("x-password", FAST).unwrap();
        let huge_m = h.replace("m=1024", "m=4194304");
        assert_eq!(verify("x-password", &huge_m, FAST), Verdict::Mismatch);
        let huge_t = h.replace("t=1", "t=1000");
        assert_eq!(verify("x-password", &huge_t, FAST), Verdict::Mismatch);
    }

    #[test]
    fn the_dummy_hash_has_the_current_cost_and_matches_nothing() {
        let dummy = dummy_hash(FAST);
        let parsed = PasswordHash::new(&dummy).unwrap();
        let p = Params::try_from(&parsed).unwrap();
        assert_eq!((p.m_cost(), p.t_cost()), (FAST.memory_kib, FAST.iterations));
        assert_eq!(verify("", &dummy, FAST), Verdict::Mismatch);
        assert_eq!(verify("dummy password", &dummy, FAST), Verdict::Mismatch);
    }

    #[test]
    fn policy_counts_characters() {
        assert!(check_policy("12345678", 8, 16).is_ok());
        assert_eq!(
            check_policy("1234567", 8, 16).unwrap_err().code(),
            "weak_password"
        );
        assert_eq!(
            check_policy(&"x".repeat(17), 8, 16).unwrap_err().code(),
            "validation_failed"
        );
        // Eight characters, sixteen bytes: counts as eight.
        assert!(check_policy("ééééééééé", 8, 9).is_ok());
    }
}
