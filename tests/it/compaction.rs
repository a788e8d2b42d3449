//! Issue 18 part 3, compaction: the broker's statements that differ only in their IAM principal are one
//! list statement, and one principal's key statements that differ only in their secret are one
//! secret-list statement (never a statement listing both). Property tests with the broker's own evaluator: the compacted policies grant exactly
//! the union of the shares (never principal P1 the secret S2 because P2 reads S2 through the same key),
//! removing any one share's entries (reference-counted over the shares left) removes exactly its access,
//! and foreign statements keep their text.

use proptest::prelude::*;
use secret_broker::domain::ShareAction;
use secret_broker::policy::arn::{KmsKeyArn, PrincipalArn, SecretArn};
use secret_broker::policy::compose::{
    Grant, InstallationId, key_statement_for, one_principal_statements_for, resource_statements_for,
};
use secret_broker::policy::document::PolicyDocument;
use secret_broker::policy::eval::{self, Verdict};
use secret_broker::policy::merge::{self, Owner};
use serde_json::Value;

const KEY: &str = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
const FOREIGN_RESOURCE: &str = r#"{"Version":"2012-10-17","Statement":[{"Sid":"Ops","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:role/ops"},"Action":"secretsmanager:DescribeSecret","Resource":"*"},
 {"Sid" : "NoDelete", "Effect":"Deny","Principal":{"AWS":"arn:aws:iam::123456789012:role/intern"},"Action":"secretsmanager:DeleteSecret","Resource":"*"}]}"#;
const FOREIGN_KEY: &str = r#"{
  "Version" : "2012-10-17",
  "Id" : "key-default-1",
  "Statement" : [ {
    "Sid" : "Enable IAM User Permissions",
    "Effect" : "Allow",
    "Principal" : { "AWS" : "arn:aws:iam::111122223333:root" },
    "Action" : "kms:*",
    "Resource" : "*"
  } ]
}"#;
const STAGES: [Option<&str>; 3] = [None, Some("AWSCURRENT"), Some("AWSPREVIOUS")];

fn principals() -> Vec<PrincipalArn> {
    [
        "arn:aws:iam::200000000001:role/app-reader",
        "arn:aws:iam::200000000002:role/app-reader",
        "arn:aws:iam::200000000003:role/ci/deployer",
        "arn:aws:iam::200000000004:user/bob",
    ]
    .iter()
    .map(|p| PrincipalArn::parse_consumer(p).unwrap())
    .collect()
}

fn secrets() -> Vec<SecretArn> {
    [
        "arn:aws:secretsmanager:us-east-1:111122223333:secret:db/password-AbCdEf",
        "arn:aws:secretsmanager:us-east-1:111122223333:secret:db/password-other-123456",
        "arn:aws:secretsmanager:us-east-1:111122223333:secret:api-key-Zz9Yy8",
    ]
    .iter()
    .map(|s| SecretArn::parse(s).unwrap())
    .collect()
}

/// A share: (principal, secret, DescribeSecret too, stage).
type Share = (usize, usize, bool, Option<&'static str>);

/// Principals 0 and 1 come up more often than 2 and 3, so that a principal often has shares of
/// several secrets under the one key (secret lists form), alone or beside another principal.
fn share() -> impl Strategy<Value = Share> {
    (
        prop_oneof![2 => 0..2usize, 1 => 0..4usize],
        0..3usize,
        any::<bool>(),
        prop::sample::select(STAGES.to_vec()),
    )
}

fn grant(s: &Share) -> Grant {
    let mut actions = vec![ShareAction::GetSecretValue];
    if s.2 {
        actions.push(ShareAction::DescribeSecret);
    }
    Grant {
        secret: secrets()[s.1].clone(),
        principal: principals()[s.0].clone(),
        actions,
        version_stage: s.3.map(str::to_owned),
    }
}

/// What one share holds: (secret index or `None` for the key policy, entry).
fn entries(s: &Share) -> Vec<(Option<usize>, String)> {
    let g = grant(s);
    let inst = InstallationId::default();
    let mut out: Vec<(Option<usize>, String)> = resource_statements_for(&g, &inst)
        .iter()
        .map(|v| (Some(s.1), merge::entry_of(v)))
        .collect();
    let k = key_statement_for(&g, &inst);
    out.push((None, merge::entry_of(&k)));
    // The second name of the key entry, as the applier's `share_sids` has it.
    out.extend(merge::secret_list_entry(&k).map(|e| (None, e)));
    out
}

struct Policies {
    resource: Vec<PolicyDocument>,
    key: PolicyDocument,
}

fn apply(shares: &[Share]) -> Policies {
    let owner = Owner::default();
    let inst = InstallationId::default();
    let mut resource: Vec<PolicyDocument> = (0..3)
        .map(|_| PolicyDocument::parse(FOREIGN_RESOURCE).unwrap())
        .collect();
    let mut key = PolicyDocument::parse(FOREIGN_KEY).unwrap();
    for s in shares {
        let g = grant(s);
        for st in resource_statements_for(&g, &inst) {
            merge::upsert(&mut resource[s.1], &owner, &st).unwrap();
        }
        merge::upsert(&mut key, &owner, &key_statement_for(&g, &inst)).unwrap();
    }
    Policies { resource, key }
}

/// Removes `gone`'s entries that none of `left` holds (the reference count of each is the number of
/// shares left that hold it).
fn revoke(p: &mut Policies, gone: &Share, left: &[Share]) {
    let owner = Owner::default();
    let held: Vec<(Option<usize>, String)> = left.iter().flat_map(entries).collect();
    for (doc, entry) in entries(gone) {
        if held.contains(&(doc, entry.clone())) {
            continue;
        }
        let d = match doc {
            Some(i) => &mut p.resource[i],
            None => &mut p.key,
        };
        merge::remove(d, &owner, &entry);
    }
}

fn allowed(shares: &[Share], p: usize, s: usize, action: ShareAction, stage: Option<&str>) -> bool {
    shares.iter().any(|x| {
        x.0 == p
            && x.1 == s
            && match action {
                ShareAction::GetSecretValue => x.3.is_none() || x.3 == stage,
                ShareAction::DescribeSecret => x.2,
            }
    })
}

/// Every principal, secret, action and stage of the pools: the evaluator's decision over the compacted
/// policies equals what the shares grant; and every principal and secret: the key policy lets exactly
/// the principals with a share of the secret decrypt it.
fn assert_grants_exactly(p: &Policies, shares: &[Share]) -> Result<(), TestCaseError> {
    let identity = PolicyDocument::parse(
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["secretsmanager:GetSecretValue","secretsmanager:DescribeSecret","kms:Decrypt"],"Resource":"*"}]}"#,
    )
    .unwrap();
    let key = KmsKeyArn::parse(KEY).unwrap();
    let (ps, ss) = (principals(), secrets());
    let everyone: Vec<&str> = ps.iter().map(|p| p.as_str()).collect();
    let open = PolicyDocument::parse(
        &serde_json::json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
            "Principal": {"AWS": everyone}, "Action": "secretsmanager:GetSecretValue", "Resource": "*"}]})
        .to_string(),
    )
    .unwrap();
    for (pi, principal) in ps.iter().enumerate() {
        for (si, secret) in ss.iter().enumerate() {
            let res = Some(&p.resource[si]).filter(|d| !d.is_empty());
            for (action, stages) in [
                (ShareAction::GetSecretValue, &STAGES[..]),
                (ShareAction::DescribeSecret, &STAGES[..1]),
            ] {
                for stage in stages {
                    let got = eval::decide(&eval::Check {
                        principal,
                        secret,
                        key: &key,
                        version_stage: *stage,
                        identity_policy: &identity,
                        resource_policy: res,
                        key_policy: &p.key,
                        now: None,
                        action: action.as_str(),
                        guardrails: &eval::Guardrails::NONE,
                        org: None,
                    });
                    let want = if allowed(shares, pi, si, action, *stage) {
                        Verdict::Allow
                    } else {
                        Verdict::Deny
                    };
                    prop_assert_eq!(
                        got,
                        want,
                        "{} {} {} stage {:?}; shares {:?}",
                        principal,
                        secret,
                        action.as_str(),
                        stage,
                        shares
                    );
                }
            }
            // The key policy on its own (a resource policy that lets everyone read: the read then
            // rests on the decrypt): it lets exactly the principals with a share of the secret
            // decrypt it. The secret layer alone would hide a key statement granting P1 decrypt of S2
            // while S2's resource policy does not name P1; another statement (the owner's) may.
            let got = eval::decide(&eval::Check {
                principal,
                secret,
                key: &key,
                version_stage: None,
                identity_policy: &identity,
                resource_policy: Some(&open),
                key_policy: &p.key,
                now: None,
                action: ShareAction::GetSecretValue.as_str(),
                guardrails: &eval::Guardrails::NONE,
                org: None,
            });
            let want = if shares.iter().any(|x| x.0 == pi && x.1 == si) {
                Verdict::Allow
            } else {
                Verdict::Deny
            };
            prop_assert_eq!(
                got,
                want,
                "decrypt: {} {}; shares {:?}",
                principal,
                secret,
                shares
            );
        }
    }
    Ok(())
}

fn assert_foreign_kept(p: &Policies) -> Result<(), TestCaseError> {
    let fr = PolicyDocument::parse(FOREIGN_RESOURCE).unwrap();
    for d in &p.resource {
        for (i, f) in fr.statements().iter().enumerate() {
            prop_assert_eq!(d.statements()[i].raw(), f.raw());
        }
    }
    let fk = PolicyDocument::parse(FOREIGN_KEY).unwrap();
    prop_assert_eq!(p.key.statements()[0].raw(), fk.statements()[0].raw());
    Ok(())
}

/// Never both lists: a broker statement in the key policy that lists several principals names one
/// secret pattern, and one that names several patterns lists one principal (issue 18 part 3: P1 and
/// P2 with S1 and S2 in one statement would grant P1 the secret S2). Compacted: each principal is
/// alone in at most one broker key statement (its grants on several secrets are one secret-list
/// statement, or a list statement of several principals for one secret).
fn assert_never_both_lists(p: &Policies) -> Result<(), TestCaseError> {
    let owner = Owner::default();
    let mut alone = std::collections::HashMap::<String, usize>::new();
    for st in p.key.statements() {
        let s = st.parsed();
        if !s.sid.as_deref().is_some_and(|sid| owner.owns(sid)) {
            continue;
        }
        let patterns = s
            .condition
            .iter()
            .filter(|b| b.operator == "StringLike")
            .flat_map(|b| &b.entries)
            .filter(|(k, _)| k == "kms:EncryptionContext:SecretARN")
            .map(|(_, v)| v.len())
            .sum::<usize>();
        let listed = merge::members(st);
        prop_assert!(patterns >= 1 && !listed.is_empty(), "{}", st.raw());
        prop_assert!(listed.len() == 1 || patterns == 1, "{}", st.raw());
        if listed.len() == 1 {
            *alone.entry(listed[0].clone()).or_default() += 1;
        }
    }
    for (principal, n) in alone {
        prop_assert!(n <= 1, "{} is alone in {} key statements", principal, n);
    }
    Ok(())
}

/// How many of the key policy's broker statements are secret-list statements naming several secrets.
fn secret_lists(p: &Policies) -> usize {
    p.key
        .statements()
        .iter()
        .filter_map(|st| serde_json::from_str::<Value>(st.raw()).ok())
        .filter(merge::is_secret_list_statement)
        .filter(|v| v["Condition"]["StringLike"]["kms:EncryptionContext:SecretARN"].is_array())
        .count()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn compacted_policies_grant_exactly_the_shares_and_each_revokes_alone(
        shares in prop::collection::vec(share(), 1..13),
        gone in any::<prop::sample::Index>(),
    ) {
        let mut p = apply(&shares);
        assert_foreign_kept(&p)?;
        assert_never_both_lists(&p)?;
        assert_grants_exactly(&p, &shares)?;
        // A principal with grants on several secrets that no other principal shares: one secret list.
        let mut pairs: Vec<(usize, usize)> = shares.iter().map(|s| (s.0, s.1)).collect();
        pairs.sort_unstable();
        pairs.dedup();
        let lone = |pi: usize| {
            let mine: Vec<usize> = pairs.iter().filter(|x| x.0 == pi).map(|x| x.1).collect();
            mine.len() >= 2
                && mine.iter().all(|si| pairs.iter().all(|x| x.1 != *si || x.0 == pi))
        };
        let expected = (0..principals().len()).filter(|pi| lone(*pi)).count();
        prop_assert!(secret_lists(&p) >= expected, "{} {:?}", secret_lists(&p), shares);
        // Compacted: one resource statement per shape, whatever the number of principals.
        for (si, d) in p.resource.iter().enumerate() {
            let ours = d.statements().len() - 2;
            let shapes: std::collections::HashSet<(bool, Option<&str>)> = shares
                .iter()
                .filter(|s| s.1 == si)
                .flat_map(|s| {
                    let mut v = vec![(false, s.3)];
                    if s.2 {
                        v.push((true, None));
                    }
                    v
                })
                .collect();
            prop_assert_eq!(ours, shapes.len());
        }
        // Revoke one share: exactly its access goes (unless another share grants the same).
        let k = gone.index(shares.len());
        let mut left = shares.clone();
        let removed = left.remove(k);
        revoke(&mut p, &removed, &left);
        assert_foreign_kept(&p)?;
        assert_grants_exactly(&p, &left)?;
        // Adding it back is as good as never having removed it; removing it again likewise.
        let again = &[removed];
        for s in again {
            let g = grant(s);
            let inst = InstallationId::default();
            for st in resource_statements_for(&g, &inst) {
                merge::upsert(&mut p.resource[s.1], &Owner::default(), &st).unwrap();
            }
            merge::upsert(&mut p.key, &Owner::default(), &key_statement_for(&g, &inst)).unwrap();
        }
        assert_grants_exactly(&p, &shares)?;
        revoke(&mut p, &removed, &left);
        assert_grants_exactly(&p, &left)?;
        // Revoke the rest, in order: back to the foreign statements, byte for byte.
        while let Some(s) = left.pop() {
            revoke(&mut p, &s, &left);
        }
        for d in &p.resource {
            prop_assert_eq!(d.render(), PolicyDocument::parse(FOREIGN_RESOURCE).unwrap().render());
        }
        prop_assert_eq!(p.key.render(), FOREIGN_KEY);
    }
}

/// A statement written by a version before list statements (one per principal, its Sid from its whole
/// content) stays recognizable: its Sid is one the installation owns, it is not a list statement, and
/// removing it by its Sid leaves a list statement of the same grant for another principal alone.
#[test]
fn one_principal_statements_of_earlier_versions_are_removed_by_their_sid() {
    let owner = Owner::default();
    let inst = InstallationId::default();
    let a = grant(&(0, 0, false, Some("AWSCURRENT")));
    let b = grant(&(1, 0, false, Some("AWSCURRENT")));
    let (old_res, old_key) = one_principal_statements_for(&a, &inst);
    assert!(!merge::is_list_statement(&old_res[0]) && !merge::is_list_statement(&old_key));
    let new = resource_statements_for(&b, &inst);
    assert!(merge::is_list_statement(&new[0]));
    assert_ne!(old_res[0]["Sid"], new[0]["Sid"]);
    let mut doc = PolicyDocument::parse(FOREIGN_RESOURCE).unwrap();
    merge::upsert(&mut doc, &owner, &old_res[0]).unwrap();
    merge::upsert(&mut doc, &owner, &new[0]).unwrap();
    let old_entry = merge::entry_of(&old_res[0]);
    assert_eq!(old_entry, old_res[0]["Sid"].as_str().unwrap());
    assert!(merge::find_entry(&doc, &old_entry).is_some());
    assert!(merge::remove(&mut doc, &owner, &old_entry));
    assert_eq!(doc.statements().len(), 3);
    assert!(merge::find_entry(&doc, &merge::entry_of(&new[0])).is_some());
    // The earlier Sid is the one the earlier version computed: the content hash.
    let v: Value = serde_json::from_str(doc.statements()[2].raw()).unwrap();
    assert_eq!(v["Principal"]["AWS"], principals()[1].as_str());
}
