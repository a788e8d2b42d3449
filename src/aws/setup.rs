//! What the AWS configuration chain found: region, credential source, assumed role, endpoint
//! override. Said once at start (one line, or one warning when no credentials resolve), and kept for
//! `/readyz` and `doctor`: resolving credentials asks the credential source (environment, profile,
//! instance role), never an AWS API, and the answer is reused for [`CHECK_TTL`].

use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use aws_credential_types::Credentials;
use aws_credential_types::credential_feature::AwsCredentialFeature;
use aws_credential_types::provider::ProvideCredentials;

use super::errors::CREDENTIAL_SOURCES;

/// How long a credential check is reused.
pub(crate) const CHECK_TTL: Duration = Duration::from_secs(60);

/// The longest a credential resolution may take (an unreachable instance metadata service).
pub(crate) const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the credentials came from, in words.
pub(crate) fn source_of(c: &Credentials) -> &'static str {
    use AwsCredentialFeature as F;
    let features = c
        .get_property::<Vec<AwsCredentialFeature>>()
        .cloned()
        .unwrap_or_default();
    for f in features.iter().rev() {
        let name = match f {
            F::CredentialsStsAssumeRole => "an assumed role",
            F::CredentialsEnvVars => "environment variables (AWS_ACCESS_KEY_ID)",
            F::CredentialsEnvVarsStsWebIdToken | F::CredentialsProfileStsWebIdToken => {
                "web identity (AWS_WEB_IDENTITY_TOKEN_FILE)"
            }
            F::CredentialsProfile
            | F::CredentialsProfileSourceProfile
            | F::CredentialsProfileNamedProvider => "the shared config/credentials files (profile)",
            F::CredentialsProfileSso | F::CredentialsSso => "AWS SSO (profile)",
            F::CredentialsProfileProcess | F::CredentialsProcess => {
                "a credential_process (profile)"
            }
            F::CredentialsHttp => "the ECS container role",
            F::CredentialsImds => "the EC2 instance role",
            _ => continue,
        };
        return name;
    }
    "credentials set in code"
}

/// The outcome of resolving credentials once: their source, or why none resolved.
pub(crate) type CredentialCheck = Result<&'static str, String>;

/// Resolves the configuration's credentials once (bounded by [`RESOLVE_TIMEOUT`]).
pub(crate) async fn resolve(config: &SdkConfig) -> CredentialCheck {
    let Some(provider) = config.credentials_provider() else {
        return Err("no credential provider is configured".into());
    };
    match tokio::time::timeout(RESOLVE_TIMEOUT, provider.provide_credentials()).await {
        Ok(Ok(c)) => Ok(source_of(&c)),
        Ok(Err(e)) => {
            tracing::debug!(error = %aws_smithy_types::error::display::DisplayErrorContext(&e), "credentials did not resolve");
            Err(format!(
                "no AWS credentials found (tried {CREDENTIAL_SOURCES})"
            ))
        }
        Err(_) => Err(format!(
            "resolving AWS credentials took longer than {} s",
            RESOLVE_TIMEOUT.as_secs()
        )),
    }
}

/// A credential check and when it was made.
#[derive(Debug, Default)]
pub(crate) struct CachedCheck(tokio::sync::Mutex<Option<(Instant, CredentialCheck)>>);

impl CachedCheck {
    /// The last check when younger than [`CHECK_TTL`], or a new one.
    pub(crate) async fn get(&self, config: &SdkConfig) -> CredentialCheck {
        let mut slot = self.0.lock().await;
        if let Some((at, c)) = slot.as_ref()
            && at.elapsed() < CHECK_TTL
        {
            return c.clone();
        }
        let c = resolve(config).await;
        *slot = Some((Instant::now(), c.clone()));
        c
    }
}

/// The one line (or one warning) saying what the AWS configuration is.
pub(crate) fn log_setup(
    config: &SdkConfig,
    check: &CredentialCheck,
    assume_role: Option<&str>,
    applying: bool,
) {
    let region = config
        .region()
        .map(|r| r.to_string())
        .unwrap_or_else(|| "none (each call uses its ARN's region)".into());
    let endpoint = config.endpoint_url().unwrap_or("none");
    let role = assume_role.unwrap_or("none");
    match check {
        Ok(source) => tracing::info!(
            region = %region,
            credentials = source,
            assume_role = role,
            endpoint_override = endpoint,
            applying,
            "AWS: credentials from {source}, region {region}, assumed role {role}, endpoint override {endpoint}"
        ),
        Err(why) if applying => tracing::warn!(
            region = %region,
            "AWS: {why}: approved shares will fail until credentials are configured (AWS_PROFILE, \
             AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or an instance/task role), or set \
             BROKER_APPLY_SHARES=false to run without AWS"
        ),
        Err(why) => tracing::info!(
            region = %region,
            "AWS: {why}; applying shares is off (BROKER_APPLY_SHARES=false), so none are needed"
        ),
    }
}
