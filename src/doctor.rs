//! `secret-broker doctor`: checks, with the service's configuration, what the broker needs to work:
//! the database and its migrations, the audit chain, the AWS credentials and region, and for a given
//! secret the broker's own read permissions on it and on its key. Read-only towards AWS: DescribeSecret,
//! GetResourcePolicy, DescribeKey and GetKeyPolicy, never GetSecretValue, never a write.
//!
//! Also the least-privilege IAM policy the broker needs, from [`crate::aws::CALLS`] (the calls the AWS
//! adapter makes; a test keeps the two equal).

use serde_json::{Value, json};

use crate::aws::errors::statement_for;
use crate::aws::{CALLS, KmsApi, SecretsApi};
use crate::config::Config;
use crate::policy::arn::SecretArn;

/// One check: its name, and `Ok(detail)` or `Err(one-line fix)`.
#[derive(Debug, Clone)]
pub struct Check {
    /// What was checked.
    pub name: String,
    /// What was found, or what to do.
    pub outcome: Result<String, String>,
}

impl Check {
    fn new(name: impl Into<String>, outcome: Result<String, String>) -> Self {
        Self {
            name: name.into(),
            outcome,
        }
    }
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.outcome {
            Ok(d) => write!(f, "ok    {}: {d}", self.name),
            Err(fix) => write!(f, "FAIL  {}: {fix}", self.name),
        }
    }
}

/// The least-privilege IAM policy of the broker's role: one statement per service, with exactly the
/// actions of [`CALLS`].
pub fn iam_policy() -> Value {
    iam_policy_for("aws")
}

/// [`iam_policy`] for a role in `partition` (`aws-us-gov`, `aws-cn`, ...): its resources are that
/// partition's ARNs, as `arn:aws:` ones match nothing there.
pub fn iam_policy_for(partition: &str) -> Value {
    let mut statements: Vec<Value> = Vec::new();
    for (sid, resource) in [
        (
            "BrokerSecretPolicies",
            format!("arn:{partition}:secretsmanager:*:*:secret:*"),
        ),
        (
            "BrokerKeyPolicies",
            format!("arn:{partition}:kms:*:*:key/*"),
        ),
    ] {
        let actions: Vec<&str> = CALLS
            .iter()
            .copied()
            .filter(|a| statement_for(a) == sid)
            .collect();
        statements.push(json!({
            "Sid": sid,
            "Effect": "Allow",
            "Action": actions,
            "Resource": resource,
        }));
    }
    json!({"Version": "2012-10-17", "Statement": statements})
}

/// The database, its migrations and the audit chain.
pub async fn check_store(config: &Config) -> Vec<Check> {
    let path = &config.database.0;
    // Shown with a PostgreSQL URL's password hidden.
    let shown = crate::store::describe_database(path);
    let server = crate::store::is_postgres(path);
    let mut out = Vec::new();
    if !server && !path.exists() {
        out.push(Check::new(
            "database",
            Err(format!(
                "{shown} does not exist: run `secret-broker migrate` (or `serve`) with this configuration, or set BROKER_DATABASE"
            )),
        ));
        return out;
    }
    // Read-only: doctor reports pending migrations, `migrate` (or `serve`) applies them.
    match crate::store::pending_migrations(path) {
        Ok(pending) => {
            out.push(Check::new("database", Ok(format!("{shown} opens"))));
            if !pending.is_empty() {
                out.push(Check::new(
                    "migrations",
                    Err(format!(
                        "{} pending ({}): run `secret-broker migrate` with this configuration (serve applies them at start)",
                        pending.len(),
                        pending.join(", ")
                    )),
                ));
                // Opening the store would apply them: the audit chain is checked once they are.
                return out;
            }
            out.push(Check::new("migrations", Ok("up to date".into())));
        }
        Err(e) => {
            out.push(Check::new(
                "database",
                Err(if server {
                    format!("{e}: check the URL, that the server answers, and the credentials")
                } else {
                    format!("{e}: check the path, its permissions and free disk space")
                }),
            ));
            return out;
        }
    }
    let store = match crate::store::Store::open(
        path,
        crate::store::StoreOptions {
            read_connections: 1,
            writer_max_batch: config.writer_max_batch.0,
        },
    ) {
        Ok(s) => s,
        Err(e) => {
            out.push(Check::new(
                "audit chain",
                Err(format!("cannot open the store: {e}")),
            ));
            return out;
        }
    };
    out.push(Check::new(
        "audit chain",
        match store.read(crate::store::audit::verify).await {
            Ok(v) if v.ok => Ok(match (v.head_seq, v.head) {
                (Some(seq), Some(h)) => format!("{} rows intact, head {seq} {h}", v.rows),
                _ => "empty".into(),
            }),
            Ok(v) => Err(format!(
                "broken at row {}: restore the database from a backup and run `secret-broker audit verify`",
                v.first_broken_seq.unwrap_or_default()
            )),
            Err(e) => Err(format!("cannot read the audit log: {e}")),
        },
    ));
    out
}

/// The AWS credentials and region.
pub async fn check_aws_setup(
    config: &Config,
    sdk: &aws_config::SdkConfig,
    secrets: &dyn SecretsApi,
) -> Vec<Check> {
    let mut out = Vec::new();
    out.push(Check::new(
        "AWS credentials",
        match secrets.credentials().await {
            Some(Ok(source)) => Ok(format!("from {source}")),
            Some(Err(why)) => Err(format!(
                "{why}: set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, run with an instance or task role, or set BROKER_APPLY_SHARES=false"
            )),
            None => Ok("not needed".into()),
        },
    ));
    out.push(Check::new(
        "AWS region",
        match (sdk.region(), config.assume_role_arn.0.as_deref()) {
            (Some(r), _) => Ok(format!("{r} (calls go to each secret's own region)")),
            (None, Some(_)) => Err(
                "none, and assume_role_arn needs one for STS: set AWS_REGION (e.g. AWS_REGION=us-east-1)"
                    .into(),
            ),
            (None, None) => Ok("none set; calls go to each secret's own region".into()),
        },
    ));
    out
}

/// The broker's read permissions on `secret` and on its key (read-only calls only).
pub async fn check_secret(secret: &str, secrets: &dyn SecretsApi, kms: &dyn KmsApi) -> Vec<Check> {
    let mut out = Vec::new();
    let arn = match SecretArn::parse(secret) {
        Ok(a) => a,
        Err(e) => {
            out.push(Check::new("secret ARN", Err(e.to_string())));
            return out;
        }
    };
    let info = match secrets.describe_secret(arn.as_str()).await {
        Ok(i) => {
            out.push(Check::new(
                "secretsmanager:DescribeSecret",
                Ok("allowed".into()),
            ));
            i
        }
        Err(e) => {
            out.push(Check::new(
                "secretsmanager:DescribeSecret",
                Err(e.to_string()),
            ));
            return out;
        }
    };
    out.push(Check::new(
        "secretsmanager:GetResourcePolicy",
        secrets
            .get_resource_policy(arn.as_str())
            .await
            .map(|p| match p {
                Some(_) => "allowed (the secret has a resource policy)".into(),
                None => "allowed (the secret has no resource policy yet)".into(),
            })
            .map_err(|e| e.to_string()),
    ));
    if info.deleted {
        out.push(Check::new(
            "secret",
            Err(format!(
                "scheduled for deletion: restore it (aws secretsmanager restore-secret --region {} --secret-id <ARN>)",
                arn.region()
            )),
        ));
    }
    let key_id = match info.kms_key_id.as_deref() {
        Some(k) if !crate::apply::key::is_aws_managed_alias(k) => k.to_owned(),
        _ => {
            out.push(Check::new(
                "secret's key",
                Err(crate::apply::key::aws_managed_key(&arn).message),
            ));
            return out;
        }
    };
    let key = match kms.describe_key(&key_id, arn.region()).await {
        Ok(k) => {
            out.push(Check::new("kms:DescribeKey", Ok("allowed".into())));
            k
        }
        Err(e) => {
            out.push(Check::new("kms:DescribeKey", Err(e.to_string())));
            return out;
        }
    };
    if key.key_manager != "CUSTOMER" {
        out.push(Check::new(
            "secret's key",
            Err(crate::apply::key::aws_managed_key(&arn).message),
        ));
        return out;
    }
    out.push(Check::new(
        "secret's key",
        if key.enabled {
            Ok(format!("{} is customer managed and enabled", key.arn))
        } else {
            Err(crate::apply::key::key_not_enabled(&key.arn, &key.key_state).message)
        },
    ));
    out.push(Check::new(
        "kms:GetKeyPolicy",
        kms.get_key_policy(&key.arn)
            .await
            .map(|_| "allowed".into())
            .map_err(|e| e.to_string()),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_iam_policy_grants_exactly_the_calls_and_no_secret_value() {
        let p = iam_policy();
        let mut granted: Vec<String> = p["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["Action"].as_array().unwrap().clone())
            .map(|a| a.as_str().unwrap().to_owned())
            .collect();
        granted.sort();
        let mut calls: Vec<String> = CALLS.iter().map(|s| s.to_string()).collect();
        calls.sort();
        assert_eq!(granted, calls);
        assert!(!p.to_string().contains("GetSecretValue"));
        assert!(
            !p.to_string().contains("\"*\""),
            "no wildcard action or resource"
        );
    }
}
