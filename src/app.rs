//! The application state shared by every handler.

use std::sync::Arc;

use crate::apply::{Applier, Settings};
use crate::auth::Authenticator;
use crate::auth::oidc::Oidc;
use crate::auth::oidc_login::OidcLogin;
use crate::aws::sdk::{SdkAws, Tuning, load_config};
use crate::aws::{KmsApi, SecretsApi};
use crate::config::Config;
use crate::domain::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::notify::Notifier;
use crate::store::{Store, StoreOptions};

/// Everything a request needs: configuration, the store, the clock and the AWS applier.
pub struct App {
    /// Configuration in force.
    pub config: Config,
    /// The database.
    pub store: Store,
    /// The source of "now".
    pub clock: Arc<dyn Clock>,
    /// Applies and revokes shares on AWS.
    pub applier: Arc<Applier>,
    /// Delivers webhook notifications, when configured.
    pub(crate) notifier: Option<Arc<Notifier>>,
    /// Set when shutdown begins: `/readyz` answers 503 from then on.
    pub draining: std::sync::atomic::AtomicBool,
    /// Decides who a bearer token is (broker tokens, and JWTs from the configured OIDC issuer) and
    /// audits the refusals.
    pub auth: Authenticator,
    /// The console's OIDC sign-in (authorization code with PKCE), when `oidc_client_id` is set.
    pub(crate) oidc_login: Option<Arc<OidcLogin>>,
    /// Which refusals of signed-in callers are written to the audit log.
    pub(crate) refusals: crate::refusals::RefusalAudit,
}

/// The AWS side of an [`App`].
pub struct AwsParts {
    /// Secrets Manager.
    pub(crate) secrets: Arc<dyn SecretsApi>,
    /// KMS.
    pub(crate) kms: Arc<dyn KmsApi>,
}

impl AwsParts {
    /// Both traits from one aws-sdk implementation.
    pub fn sdk(sdk: SdkAws) -> Self {
        let sdk = Arc::new(sdk);
        Self {
            secrets: sdk.clone(),
            kms: sdk,
        }
    }
}

impl App {
    /// Opens the store named by the configuration (migrating it), with the system clock and AWS clients
    /// from the standard chain (plus `assume_role_arn`).
    pub async fn open(config: Config) -> Result<Arc<Self>> {
        let sdk = load_config(config.assume_role_arn.0.as_deref()).await;
        let tuning = Tuning {
            max_attempts: config.aws_max_attempts.0 as u32,
            secrets_policy_rate: config.aws_policy_rate.0 as u32,
            put_key_policy_rate: config.aws_put_key_policy_rate.0 as u32,
            ..Tuning::default()
        };
        let aws = SdkAws::new(sdk, tuning);
        aws.report(config.assume_role_arn.0.as_deref(), config.apply_shares.0)
            .await;
        Self::open_with(config, Arc::new(SystemClock), AwsParts::sdk(aws))
    }

    /// Same, with a given clock and AWS clients (tests point them at the emulator).
    pub fn open_with(config: Config, clock: Arc<dyn Clock>, aws: AwsParts) -> Result<Arc<Self>> {
        let store = Store::open(
            &config.database.0,
            StoreOptions {
                read_connections: config.read_connections.0,
                writer_max_batch: config.writer_max_batch.0,
            },
        )?;
        let notifier = match (&config.webhook_url.0, &config.webhook_secret.0) {
            (Some(url), Some(secret)) => Some(Arc::new(Notifier::new(
                url.clone(),
                secret.clone(),
                config.webhook_max_attempts.0 as u32,
                config.webhook_backoff.0,
            )?)),
            _ => None,
        };
        let oidc = Oidc::from_config(&config, clock.clone())
            .map_err(|e| Error::Unavailable(format!("{e:#}")))?;
        let oidc_login =
            OidcLogin::from_config(&config).map_err(|e| Error::Unavailable(format!("{e:#}")))?;
        let applier = Applier::new(
            store.clone(),
            clock.clone(),
            aws.secrets,
            aws.kms,
            Settings {
                enabled: config.apply_shares.0,
                coalesce: config.apply_coalesce.0,
                write_attempts: config.policy_write_attempts.0 as u32,
                notify: notifier.is_some(),
                installation: config.installation_id.clone(),
                lease: config.apply_lease.0,
            },
        );
        let auth = Authenticator::new(store.clone(), clock.clone(), oidc);
        Ok(Arc::new(Self {
            config,
            store,
            clock,
            applier,
            notifier,
            draining: std::sync::atomic::AtomicBool::new(false),
            auth,
            oidc_login,
            refusals: crate::refusals::RefusalAudit::default(),
        }))
    }

    /// Whether a JWT from the configured OIDC issuer can carry the admin role (so that revoking the
    /// last admin token does not leave the broker without an admin).
    pub(crate) fn oidc_maps_admin(&self) -> bool {
        self.auth.oidc().is_some()
            && (self.config.oidc_role_map.0.is_empty()
                || self
                    .config
                    .oidc_role_map
                    .0
                    .iter()
                    .any(|(_, r)| *r == crate::domain::Role::Admin))
    }

    /// Whether events are written to the outbox.
    pub(crate) fn notify_enabled(&self) -> bool {
        self.notifier.is_some()
    }
}
