//! The three documents of a share (DESIGN.md section 4):
//!
//! - a statement for the secret's **resource policy** allowing the consumer the share's actions on
//!   `Resource: "*"` (the secret itself), limited to a version stage when the share names one;
//! - a statement for the **key policy** of the secret's customer-managed key allowing the consumer
//!   `kms:Decrypt` only through Secrets Manager in the secret's region and only for this secret;
//! - the consumer's **identity policy**, for the consumer account to attach: the actions on
//!   `arn:...:secret:<name>-??????` and `kms:Decrypt` on the full key ARN.
//!
//! Broker statements carry the Sid prefix [`SID_PREFIX`] and a suffix derived from their content, so two
//! shares that need the same grant produce the same statement (merged once, removed when the last share
//! that needs it goes).

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::arn::{KmsKeyArn, PrincipalArn, SecretArn};
use crate::domain::ShareAction;

/// Every broker-owned statement's Sid starts with this (alphanumeric, as Sids must be).
pub const SID_PREFIX: &str = "SecretBroker";

/// What a share grants, as far as the documents are concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The secret.
    pub secret: SecretArn,
    /// The consumer.
    pub principal: PrincipalArn,
    /// Sorted, without duplicates; includes GetSecretValue.
    pub actions: Vec<ShareAction>,
    /// `None`: any stage.
    pub version_stage: Option<String>,
}

/// The composed documents.
#[derive(Debug, Clone, PartialEq)]
pub struct Composed {
    /// Statement for the secret's resource policy.
    pub resource_statement: Value,
    /// Statement for the key policy.
    pub key_statement: Value,
    /// The consumer's identity policy (a whole document).
    pub identity_policy: Value,
}

/// `arn:...:secret:<name>-??????`: matches the secret whatever its random suffix, and nothing else
/// (`name-*` would also match `name-other-AbCdEf`).
pub fn secret_pattern(secret: &SecretArn) -> String {
    format!("{}-??????", secret.without_suffix())
}

/// `secretsmanager.<region>.amazonaws.com`, the `kms:ViaService` value Secrets Manager sends to KMS.
/// The same form is used in every partition, as the KMS condition-key documentation gives it.
pub fn via_service(secret: &SecretArn) -> String {
    format!("secretsmanager.{}.amazonaws.com", secret.region())
}

/// Sid for a statement: prefix, a letter for the document, and 16 hex digits of SHA-256 over the
/// statement's content (without its Sid).
fn sid(kind: char, content: &Value) -> String {
    let digest = Sha256::digest(content.to_string().as_bytes());
    format!("{SID_PREFIX}{kind}{}", &hex::encode(digest)[..16])
}

fn with_sid(kind: char, content: Value) -> Value {
    let id = sid(kind, &content);
    let mut m = Map::new();
    m.insert("Sid".into(), Value::String(id));
    if let Value::Object(c) = content {
        m.extend(c);
    }
    Value::Object(m)
}

fn one_or_many(mut v: Vec<String>) -> Value {
    if v.len() == 1 {
        Value::String(v.remove(0))
    } else {
        Value::Array(v.into_iter().map(Value::String).collect())
    }
}

/// Composes the three documents for `grant` with the secret's key.
pub fn compose(grant: &Grant, key: &KmsKeyArn) -> Composed {
    let actions: Vec<String> = grant
        .actions
        .iter()
        .map(|a| a.as_str().to_owned())
        .collect();
    let principal = json!({"AWS": grant.principal.as_str()});

    let mut resource = json!({
        "Effect": "Allow",
        "Principal": principal,
        "Action": one_or_many(actions.clone()),
        "Resource": "*",
    });
    if let Some(stage) = &grant.version_stage {
        resource["Condition"] = json!({
            "ForAnyValue:StringEquals": {"secretsmanager:VersionStage": stage}
        });
    }

    let key_statement = json!({
        "Effect": "Allow",
        "Principal": principal,
        "Action": "kms:Decrypt",
        "Resource": "*",
        "Condition": {
            "StringEquals": {"kms:ViaService": via_service(&grant.secret)},
            "StringLike": {"kms:EncryptionContext:SecretARN": secret_pattern(&grant.secret)}
        }
    });

    let identity_policy = json!({
        "Version": super::document::VERSION,
        "Statement": [
            {
                "Sid": format!("{SID_PREFIX}ReadSecret"),
                "Effect": "Allow",
                "Action": one_or_many(actions),
                "Resource": secret_pattern(&grant.secret),
            },
            {
                "Sid": format!("{SID_PREFIX}DecryptSecret"),
                "Effect": "Allow",
                "Action": "kms:Decrypt",
                "Resource": key.as_str(),
            }
        ]
    });

    Composed {
        resource_statement: with_sid('S', resource),
        key_statement: with_sid('K', key_statement),
        identity_policy,
    }
}

/// The AWS CLI call the consumer runs, with `--version-stage` when the share requires a stage.
pub fn consumer_cli(grant: &Grant) -> String {
    let mut cmd = format!(
        "aws secretsmanager get-secret-value --secret-id {}",
        grant.secret.as_str()
    );
    if let Some(stage) = &grant.version_stage {
        cmd.push_str(&format!(" --version-stage {stage}"));
    }
    cmd.push_str(&format!(" --region {}", grant.secret.region()));
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn grant(
        secret: &str,
        principal: &str,
        actions: &[ShareAction],
        stage: Option<&str>,
    ) -> Grant {
        Grant {
            secret: SecretArn::parse(secret).unwrap(),
            principal: PrincipalArn::parse(principal).unwrap(),
            actions: actions.to_vec(),
            version_stage: stage.map(str::to_owned),
        }
    }

    const SECRET: &str =
        "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-password-AbCdEf";
    const KEY: &str = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    const USER: &str = "arn:aws:iam::444455556666:user/alice";

    fn without_sid(v: &Value) -> Value {
        let mut v = v.clone();
        v.as_object_mut().unwrap().remove("Sid");
        v
    }

    /// The canonical case: owner 111122223333, consumer user in 444455556666, AWSCURRENT.
    #[test]
    fn golden_canonical_documents() {
        let c = compose(
            &grant(
                SECRET,
                USER,
                &[ShareAction::GetSecretValue],
                Some("AWSCURRENT"),
            ),
            &KmsKeyArn::parse(KEY).unwrap(),
        );
        assert_eq!(
            without_sid(&c.resource_statement),
            json!({
                "Effect": "Allow",
                "Principal": {"AWS": "arn:aws:iam::444455556666:user/alice"},
                "Action": "secretsmanager:GetSecretValue",
                "Resource": "*",
                "Condition": {"ForAnyValue:StringEquals": {"secretsmanager:VersionStage": "AWSCURRENT"}}
            })
        );
        assert_eq!(
            without_sid(&c.key_statement),
            json!({
                "Effect": "Allow",
                "Principal": {"AWS": "arn:aws:iam::444455556666:user/alice"},
                "Action": "kms:Decrypt",
                "Resource": "*",
                "Condition": {
                    "StringEquals": {"kms:ViaService": "secretsmanager.us-east-1.amazonaws.com"},
                    "StringLike": {"kms:EncryptionContext:SecretARN": "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-password-??????"}
                }
            })
        );
        assert_eq!(
            c.identity_policy,
            json!({
                "Version": "2012-10-17",
                "Statement": [
                    {"Sid": "SecretBrokerReadSecret", "Effect": "Allow", "Action": "secretsmanager:GetSecretValue",
                     "Resource": "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-password-??????"},
                    {"Sid": "SecretBrokerDecryptSecret", "Effect": "Allow", "Action": "kms:Decrypt",
                     "Resource": "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"}
                ]
            })
        );
        // Exact text, key order included: what is written to AWS.
        assert_eq!(
            serde_json::to_string(&c.key_statement).unwrap(),
            format!(
                r#"{{"Sid":"{}","Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::444455556666:user/alice"}},"Action":"kms:Decrypt","Resource":"*","Condition":{{"StringEquals":{{"kms:ViaService":"secretsmanager.us-east-1.amazonaws.com"}},"StringLike":{{"kms:EncryptionContext:SecretARN":"arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-password-??????"}}}}}}"#,
                c.key_statement["Sid"].as_str().unwrap()
            )
        );
        assert_eq!(
            consumer_cli(&grant(
                SECRET,
                USER,
                &[ShareAction::GetSecretValue],
                Some("AWSCURRENT")
            )),
            "aws secretsmanager get-secret-value --secret-id \
             arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-password-AbCdEf --version-stage AWSCURRENT \
             --region us-east-1"
        );
    }

    #[test]
    fn table_of_principal_forms_partitions_regions_stages_and_actions() {
        struct Case {
            secret: &'static str,
            key: &'static str,
            principal: &'static str,
            actions: &'static [ShareAction],
            stage: Option<&'static str>,
            via: &'static str,
            pattern: &'static str,
        }
        use ShareAction::*;
        let cases = [
            Case {
                secret: SECRET,
                key: KEY,
                principal: "arn:aws:iam::444455556666:role/team/svc/app-reader",
                actions: &[GetSecretValue],
                stage: Some("AWSCURRENT"),
                via: "secretsmanager.us-east-1.amazonaws.com",
                pattern: "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-password-??????",
            },
            Case {
                secret: SECRET,
                key: KEY,
                principal: "444455556666",
                actions: &[GetSecretValue],
                stage: None,
                via: "secretsmanager.us-east-1.amazonaws.com",
                pattern: "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-password-??????",
            },
            Case {
                secret: "arn:aws-cn:secretsmanager:cn-north-1:111122223333:secret:app-Xy12Z9",
                key: "arn:aws-cn:kms:cn-north-1:111122223333:key/mrk-1234abcd12ab34cd56ef1234567890ab",
                principal: "arn:aws-cn:iam::444455556666:root",
                actions: &[GetSecretValue, DescribeSecret],
                stage: Some("AWSCURRENT"),
                via: "secretsmanager.cn-north-1.amazonaws.com",
                pattern: "arn:aws-cn:secretsmanager:cn-north-1:111122223333:secret:app-??????",
            },
            Case {
                secret: "arn:aws-us-gov:secretsmanager:us-gov-west-1:111122223333:secret:a-b-c-123456",
                key: "arn:aws-us-gov:kms:us-gov-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
                principal: "arn:aws-us-gov:iam::444455556666:user/ci/deployer",
                actions: &[GetSecretValue, DescribeSecret],
                stage: Some("AWSPREVIOUS"),
                via: "secretsmanager.us-gov-west-1.amazonaws.com",
                pattern: "arn:aws-us-gov:secretsmanager:us-gov-west-1:111122223333:secret:a-b-c-??????",
            },
        ];
        for c in cases {
            let g = grant(c.secret, c.principal, c.actions, c.stage);
            let k = KmsKeyArn::parse(c.key).unwrap();
            let out = compose(&g, &k);
            let p = PrincipalArn::parse(c.principal).unwrap();
            let actions: Vec<&str> = c.actions.iter().map(|a| a.as_str()).collect();
            let action_value = if actions.len() == 1 {
                json!(actions[0])
            } else {
                json!(actions)
            };
            let r = &out.resource_statement;
            assert_eq!(r["Principal"], json!({"AWS": p.as_str()}));
            assert_eq!(r["Action"], action_value);
            assert_eq!(r["Resource"], "*");
            match c.stage {
                Some(s) => assert_eq!(
                    r["Condition"]["ForAnyValue:StringEquals"]["secretsmanager:VersionStage"],
                    s
                ),
                None => assert!(r.get("Condition").is_none(), "no stage, no condition"),
            }
            let kst = &out.key_statement;
            assert_eq!(kst["Principal"], json!({"AWS": p.as_str()}));
            assert_eq!(kst["Condition"]["StringEquals"]["kms:ViaService"], c.via);
            assert_eq!(
                kst["Condition"]["StringLike"]["kms:EncryptionContext:SecretARN"],
                c.pattern
            );
            let id = &out.identity_policy["Statement"];
            assert_eq!(id[0]["Resource"], c.pattern);
            assert_eq!(id[0]["Action"], action_value);
            assert_eq!(id[1]["Resource"], c.key);
            assert!(!c.pattern.ends_with("-*"));
            let cli = consumer_cli(&g);
            assert_eq!(cli.contains("--version-stage"), c.stage.is_some(), "{cli}");
        }
    }

    #[test]
    fn sids_are_alphanumeric_and_shared_by_equal_grants() {
        let k = KmsKeyArn::parse(KEY).unwrap();
        let a = compose(
            &grant(
                SECRET,
                USER,
                &[ShareAction::GetSecretValue],
                Some("AWSCURRENT"),
            ),
            &k,
        );
        let b = compose(
            &grant(
                SECRET,
                USER,
                &[ShareAction::GetSecretValue],
                Some("AWSCURRENT"),
            ),
            &k,
        );
        let c = compose(
            &grant(SECRET, USER, &[ShareAction::GetSecretValue], None),
            &k,
        );
        let d = compose(
            &grant(
                SECRET,
                "arn:aws:iam::444455556666:user/bob",
                &[ShareAction::GetSecretValue],
                None,
            ),
            &k,
        );
        assert_eq!(a, b);
        assert_ne!(
            a.resource_statement["Sid"], c.resource_statement["Sid"],
            "stage is part of the grant"
        );
        assert_eq!(
            a.key_statement["Sid"], c.key_statement["Sid"],
            "decrypt does not depend on the stage"
        );
        assert_ne!(c.key_statement["Sid"], d.key_statement["Sid"]);
        for s in [&a.resource_statement["Sid"], &a.key_statement["Sid"]] {
            let s = s.as_str().unwrap();
            assert!(
                s.starts_with(SID_PREFIX) && s.chars().all(|c| c.is_ascii_alphanumeric()),
                "{s}"
            );
        }
    }
}
