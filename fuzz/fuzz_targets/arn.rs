//! Every text parser of `policy::arn` (and `ShareAction::parse`) on arbitrary UTF-8.
//!
//! The input is split at its first newline into two strings `a` and `b`; each parser runs on both.
//! On success the invariants the code promises are checked: the value keeps the text it was given
//! (`as_str`, `Display`), parsing its text again gives an equal value, the accessors return the
//! parts the text is made of, and `compose::secret_pattern` matches the secret and no other one.
//! On failure, the message ends with an example of a valid value ("every error ends with an
//! example of a valid one").
#![no_main]

use libfuzzer_sys::fuzz_target;
use secret_broker::domain::ShareAction;
use secret_broker::policy::arn::{KmsKeyArn, PARTITIONS, PrincipalArn, PrincipalKind, SecretArn};
use secret_broker::policy::compose::{secret_pattern, via_service};
use secret_broker::policy::eval::{Caller, glob};

const SECRET_EXAMPLE: &str =
    "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-password-AbCdEf";
const KEY_EXAMPLE: &str =
    "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
const PRINCIPAL_EXAMPLES: &str = "arn:aws:iam::444455556666:role/app-reader, \
arn:aws:iam::444455556666:user/ci/deployer or arn:aws:iam::444455556666:root";

fn is_account(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

fn secret(s: &str) -> Option<SecretArn> {
    match SecretArn::parse(s) {
        Ok(a) => {
            assert_eq!(a.as_str(), s, "a secret ARN keeps its text");
            assert_eq!(a.to_string(), s, "Display is the text");
            assert_eq!(
                SecretArn::parse(&a.to_string()).as_ref(),
                Ok(&a),
                "re-parse"
            );
            assert!(PARTITIONS.contains(&a.partition()), "{s}");
            assert!(is_account(a.account()), "{s}");
            assert!(!a.name().is_empty() && a.name().len() <= 512, "{s}");
            assert!(
                !a.name().contains('*') && !a.name().contains('?'),
                "a secret ARN names one secret: {s}"
            );
            assert_eq!(
                a.without_suffix(),
                format!(
                    "arn:{}:secretsmanager:{}:{}:secret:{}",
                    a.partition(),
                    a.region(),
                    a.account(),
                    a.name()
                ),
                "the accessors are the parts of {s}"
            );
            let suffix = s
                .strip_prefix(a.without_suffix())
                .and_then(|r| r.strip_prefix('-'))
                .expect("the ARN is its stem, '-' and the suffix");
            assert!(
                suffix.len() == 6 && suffix.bytes().all(|b| b.is_ascii_alphanumeric()),
                "6-character suffix: {s}"
            );
            assert!(
                glob(&secret_pattern(&a), a.as_str()),
                "the pattern matches its own secret: {s}"
            );
            assert_eq!(
                via_service(&a),
                format!("secretsmanager.{}.amazonaws.com", a.region())
            );
            Some(a)
        }
        Err(e) => {
            let m = e.to_string();
            assert!(
                m.ends_with(SECRET_EXAMPLE),
                "a secret ARN error ends with an example: {s:?} -> {m:?}"
            );
            None
        }
    }
}

fn key(s: &str) -> Option<KmsKeyArn> {
    match KmsKeyArn::parse(s) {
        Ok(k) => {
            assert_eq!(k.as_str(), s);
            assert_eq!(k.to_string(), s);
            assert_eq!(KmsKeyArn::parse(&k.to_string()).as_ref(), Ok(&k));
            assert!(PARTITIONS.contains(&k.partition()), "{s}");
            assert!(is_account(k.account()), "{s}");
            let stem = format!(
                "arn:{}:kms:{}:{}:key/",
                k.partition(),
                k.region(),
                k.account()
            );
            let id = s
                .strip_prefix(&stem)
                .unwrap_or_else(|| panic!("the accessors are the parts of {s}"));
            let hex = |t: &str| {
                t.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            };
            let uuid = id.len() == 36
                && id.split('-').map(str::len).eq([8, 4, 4, 4, 12])
                && hex(&id.replace('-', ""));
            let mrk = id
                .strip_prefix("mrk-")
                .is_some_and(|h| h.len() == 32 && hex(h));
            assert!(uuid || mrk, "a key id is a UUID or mrk-<32 hex>: {s}");
            Some(k)
        }
        Err(e) => {
            let m = e.to_string();
            assert!(
                m.ends_with(KEY_EXAMPLE),
                "a key ARN error ends with an example: {s:?} -> {m:?}"
            );
            None
        }
    }
}

fn principal(s: &str) -> Option<PrincipalArn> {
    match PrincipalArn::parse(s) {
        Ok(p) => {
            if is_account(s) {
                assert_eq!(p.as_str(), format!("arn:aws:iam::{s}:root"), "normalised");
            } else {
                assert_eq!(p.as_str(), s, "a principal keeps its text");
            }
            assert_eq!(p.to_string(), p.as_str());
            assert_eq!(
                PrincipalArn::parse(p.as_str()).as_ref(),
                Ok(&p),
                "parsing is idempotent"
            );
            assert!(PARTITIONS.contains(&p.partition()), "{s}");
            assert!(is_account(p.account()), "{s}");
            assert!(
                !p.as_str().contains('*') && !p.as_str().contains('?'),
                "a principal names one identity: {s}"
            );
            let stem = format!("arn:{}:iam::{}:", p.partition(), p.account());
            let resource = p
                .as_str()
                .strip_prefix(&stem)
                .unwrap_or_else(|| panic!("the accessors are the parts of {s}"));
            match p.kind() {
                PrincipalKind::AccountRoot => assert_eq!(resource, "root"),
                PrincipalKind::User => assert!(resource.starts_with("user/"), "{s}"),
                PrincipalKind::Role => assert!(resource.starts_with("role/"), "{s}"),
                PrincipalKind::Organization | PrincipalKind::OrgUnit => {
                    panic!("PrincipalArn::parse makes IAM principals only: {s}")
                }
            }
            if p.kind() != PrincipalKind::AccountRoot {
                let name = resource.rsplit('/').next().unwrap_or("");
                assert!(!name.is_empty() && name.len() <= 64, "{s}");
            }
            let c = Caller::from_principal(&p);
            assert_eq!(c.account, p.account());
            assert_eq!(c.partition, p.partition());
            assert_eq!(
                c.arn.is_none(),
                p.kind() == PrincipalKind::AccountRoot,
                "only an account root stands for an unknown identity"
            );
            Some(p)
        }
        Err(e) => {
            let m = e.to_string();
            assert!(
                m.ends_with(PRINCIPAL_EXAMPLES),
                "a principal error ends with examples: {s:?} -> {m:?}"
            );
            None
        }
    }
}

fn action(s: &str) {
    if let Ok(a) = ShareAction::parse(s) {
        assert!(a.as_str().eq_ignore_ascii_case(s));
        assert_eq!(ShareAction::parse(a.as_str()), Ok(a));
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (a, b) = text.split_once('\n').unwrap_or((text, ""));
    let sa = secret(a);
    let sb = secret(b);
    key(a);
    key(b);
    principal(a);
    principal(b);
    action(a);
    if let (Some(x), Some(y)) = (sa, sb) {
        // "matches the secret whatever its random suffix, and nothing else".
        assert_eq!(
            glob(&secret_pattern(&x), y.as_str()),
            x.without_suffix() == y.without_suffix(),
            "{} against {}",
            secret_pattern(&x),
            y
        );
    }
});
