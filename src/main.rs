//! The `secret-broker` command: serve the API, migrate the database, create tokens, verify the audit
//! log, print the OpenAPI document or the configuration reference.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use secret_broker::api;
use secret_broker::app::App;
use secret_broker::auth::token as tokens;
use secret_broker::config::Config;
use secret_broker::domain::{Role, fmt_time};
use secret_broker::store::{self, audit};

#[derive(Parser)]
#[command(
    name = "secret-broker",
    version,
    about = "Brokers cross-account access to AWS Secrets Manager secrets"
)]
struct Cli {
    /// TOML configuration file (unknown keys are refused); BROKER_* variables override it.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP service (migrates the database first).
    Serve,
    /// Apply pending database migrations and exit; with --from FILE --to URL, copy a SQLite database
    /// into an empty PostgreSQL database and verify the copied audit chain.
    Migrate {
        /// The SQLite database file to copy (with --to).
        #[arg(long, requires = "to")]
        from: Option<PathBuf>,
        /// The PostgreSQL database to copy it into, as a postgres:// URL (with --from).
        #[arg(long, requires = "from")]
        to: Option<PathBuf>,
    },
    /// Manage bearer tokens.
    Tokens {
        #[command(subcommand)]
        command: TokensCommand,
    },
    /// Link Slack users to broker identities, for approving from Slack (issue 21).
    Slack {
        #[command(subcommand)]
        command: SlackCommand,
    },
    /// Inspect the audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Print the OpenAPI document (as committed in openapi/openapi.json).
    Openapi,
    /// Print the configuration reference (a Markdown table), or with --print-defaults a TOML file of
    /// every setting at its default.
    Config {
        /// Print a TOML configuration file with every default instead of the table.
        #[arg(long)]
        print_defaults: bool,
    },
    /// Seed a database for benchmarks (scripts/bench).
    #[command(hide = true)]
    BenchSeed {
        /// Shares to add.
        #[arg(long, default_value_t = 1000)]
        shares: u64,
        /// Audit rows to add.
        #[arg(long, default_value_t = 5000)]
        audit: u64,
    },
    /// Probe a running service (for container health checks): exit 0 when /readyz answers 200.
    Health {
        /// The URL to probe (default: /readyz on BROKER_LISTEN).
        #[arg(long)]
        url: Option<String>,
    },
    /// Check what the broker needs, with the service's configuration: the database, its migrations,
    /// the audit chain, AWS credentials and region, and with --secret-arn the broker's read permissions
    /// on that secret and its key (read-only calls). Prints each check as ok or a one-line fix; exit 1
    /// when any fails.
    Doctor {
        /// A secret to check the broker's permissions on (DescribeSecret, GetResourcePolicy,
        /// DescribeKey, GetKeyPolicy; never GetSecretValue, never a write).
        #[arg(long, value_name = "ARN")]
        secret_arn: Option<String>,
        /// Print the least-privilege IAM policy the broker's role needs, and exit.
        #[arg(long)]
        print_iam_policy: bool,
        /// The partition of the broker's role, for --print-iam-policy (aws-us-gov for GovCloud,
        /// aws-cn for China): its resources are that partition's ARNs.
        #[arg(long, value_name = "PARTITION", default_value = "aws", requires = "print_iam_policy",
              value_parser = ["aws", "aws-cn", "aws-us-gov", "aws-iso", "aws-iso-b", "aws-iso-e", "aws-iso-f", "aws-eusc"])]
        partition: String,
    },
    /// Compose the three policy documents for a share, offline (no AWS call), merged into existing
    /// policies when given; exit 1 when a finding is an error.
    Plan(PlanArgs),
    /// Explain whether a principal can read a secret across accounts, offline, from the three policies;
    /// prints `{decision, layers, reasons, not_evaluated}`; exit 0 allow, 1 deny, 3 unknown.
    Check(CheckArgs),
}

#[derive(clap::Args)]
struct CheckArgs {
    /// The consumer, in another account than the secret: IAM user, role or account-root ARN, or a
    /// 12-digit account id (read as partition aws).
    #[arg(long)]
    principal: String,
    /// The secret's full ARN.
    #[arg(long)]
    secret_arn: String,
    /// The full ARN of the secret's KMS key.
    #[arg(long)]
    kms_key_arn: String,
    /// The consumer's identity policy (JSON file; put all of the principal's statements in one document).
    #[arg(long, value_name = "FILE")]
    identity_policy: PathBuf,
    /// The secret's resource policy (JSON file); omit when the secret has none.
    #[arg(long, value_name = "FILE")]
    resource_policy: Option<PathBuf>,
    /// The key policy (JSON file); needed for GetSecretValue (DescribeSecret does not decrypt).
    #[arg(long, value_name = "FILE")]
    key_policy: Option<PathBuf>,
    /// The --version-stage the consumer passes to GetSecretValue, if any.
    #[arg(long)]
    version_stage: Option<String>,
    /// The region the consumer calls (must be the secret's region).
    #[arg(long)]
    region: Option<String>,
    /// The action the consumer calls: secretsmanager:GetSecretValue (with the decrypt layer) or
    /// secretsmanager:DescribeSecret.
    #[arg(long, default_value = "secretsmanager:GetSecretValue")]
    action: String,
    /// The consumer's permissions boundary (JSON file), if it has one: it must allow too.
    #[arg(long, value_name = "FILE")]
    permissions_boundary: Option<PathBuf>,
    /// The session policy of the consumer's role session (JSON file), if one was passed.
    #[arg(long, value_name = "FILE")]
    session_policy: Option<PathBuf>,
    /// An SCP level of the consumer's account (JSON file; repeat once per level: root, each OU, the
    /// account): each must allow.
    #[arg(long = "scp", value_name = "FILE")]
    service_control_policies: Vec<PathBuf>,
    /// An RCP level of the secret's account (JSON file; repeat once per level): each must allow.
    #[arg(long = "rcp", value_name = "FILE")]
    resource_control_policies: Vec<PathBuf>,
    /// The organization of the consumer's account (aws:PrincipalOrgID), e.g. o-a1b2c3d4e5: without it a
    /// statement narrowed to an organization is unknown.
    #[arg(long)]
    principal_org_id: Option<String>,
    /// The organization path of the consumer's account (aws:PrincipalOrgPaths), e.g.
    /// o-a1b2c3d4e5/r-ab12/ou-ab12-11111111/: without it a statement narrowed to an OU is unknown.
    #[arg(long)]
    principal_org_path: Option<String>,
}

#[derive(clap::Args)]
struct PlanArgs {
    /// The secret's full ARN (with its 6-character suffix).
    #[arg(long)]
    secret_arn: String,
    /// The full ARN of the secret's customer-managed KMS key.
    #[arg(long)]
    kms_key_arn: String,
    /// The consumer: IAM user, role or account-root ARN, or a 12-digit account id.
    #[arg(long)]
    principal: String,
    /// Version stage the consumer may read.
    #[arg(long, default_value = "AWSCURRENT", conflicts_with = "any_stage")]
    version_stage: String,
    /// Allow any version stage (no VersionStage condition).
    #[arg(long)]
    any_stage: bool,
    /// Actions, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "secretsmanager:GetSecretValue"
    )]
    actions: Vec<String>,
    /// The secret's current resource policy (JSON file) to merge into.
    #[arg(long, value_name = "FILE")]
    resource_policy: Option<PathBuf>,
    /// The key's current policy (JSON file) to merge into.
    #[arg(long, value_name = "FILE")]
    key_policy: Option<PathBuf>,
    /// The installation whose statements the plan writes (default: installation_id from the
    /// configuration); statements of other installations are foreign.
    #[arg(long, value_name = "ID")]
    installation_id: Option<secret_broker::policy::compose::InstallationId>,
}

#[derive(Subcommand)]
enum TokensCommand {
    /// Create a token; prints it as the last line (only its hash is stored, so keep it now).
    Create {
        /// Actor name recorded in approvals and the audit log (letters, digits, ._@-).
        #[arg(long)]
        name: String,
        /// requester, approver, auditor or admin.
        #[arg(long)]
        role: Role,
        /// Lifetime such as 90d or 12h (default: no expiry).
        #[arg(long)]
        expires_in: Option<secret_broker::config::Span>,
    },
}

#[derive(Subcommand)]
enum SlackCommand {
    /// Link a Slack user (by id, never by display name) to a broker name: their Approve and Reject
    /// clicks decide as that name while it holds the approver or admin role through a live credential.
    /// Replaces an earlier link of the user.
    Link {
        /// Slack workspace (team) id, e.g. T0123ABCD.
        #[arg(long)]
        team: String,
        /// Slack user id, e.g. U0123ABCD (profile, "Copy member ID").
        #[arg(long)]
        user: String,
        /// Broker name: the name of the person's tokens, or oidc:<sub>.
        #[arg(long)]
        name: String,
    },
    /// Remove a Slack user's link.
    Unlink {
        /// Slack workspace (team) id.
        #[arg(long)]
        team: String,
        /// Slack user id.
        #[arg(long)]
        user: String,
    },
    /// List the links as JSON lines.
    Links,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Walk the hash chain; exit 1 and name the first broken row if it is broken.
    Verify {
        /// A head kept earlier (an `audit.anchor` event or log line, or the `head_seq` of an earlier
        /// verify): the chain must still reach this row. Give with --head-hash.
        #[arg(long, requires = "head_hash", value_parser = clap::value_parser!(i64).range(1..))]
        head_seq: Option<i64>,
        /// That row's hash (64 hex digits).
        #[arg(long, requires = "head_seq")]
        head_hash: Option<String>,
    },
    /// Print the chain's head (sequence number and hash) to keep outside the database.
    Head,
}

fn init_logging(config: &Config) {
    let sub =
        secret_broker::logging::subscriber(config, std::env::var("RUST_LOG").ok(), std::io::stderr);
    let _ = tracing::subscriber::set_global_default(sub);
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Openapi => {
            print!("{}", api::openapi_json());
            return ExitCode::SUCCESS;
        }
        Command::Config { print_defaults } => {
            print!(
                "{}",
                if print_defaults {
                    defaults_toml()
                } else {
                    reference_markdown()
                }
            );
            return ExitCode::SUCCESS;
        }
        Command::Check(args) => {
            return match check(&args) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            };
        }
        Command::Plan(args) => {
            return match plan(&args, cli.config.as_deref()) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            };
        }
        _ => {}
    }
    let config = match Config::load(cli.config.as_deref(), std::env::vars()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut config = config;
    if matches!(cli.command, Command::Doctor { .. })
        && config.log == "info"
        && std::env::var_os("RUST_LOG").is_none()
    {
        // doctor prints each failure as a one-line fix; the SDK's error chain behind it (`aws call
        // failed`) is for RUST_LOG=warn, not for its screen.
        config.log = "info,secret_broker::aws::errors=error".into();
    }
    init_logging(&config);
    match run(cli.command, config).await {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// `slack link | unlink | links`: the links an admin sets, audited as done by the command line.
async fn slack(config: &Config, command: SlackCommand) -> anyhow::Result<ExitCode> {
    use secret_broker::api::slack::{cli_link, cli_unlink};
    let store = open_store(config)?;
    let now = fmt_time(time::OffsetDateTime::now_utc());
    match command {
        SlackCommand::Link { team, user, name } => {
            let link = cli_link(&store, team, user, name, now.clone())
                .await
                .map_err(|m| anyhow::anyhow!(m))?;
            let what = if link.name.starts_with("oidc:") {
                format!(
                    "their clicks decide as {} while it is signed in to the console through OIDC with \
                     a roles claim that maps to approver or admin",
                    link.name
                )
            } else {
                match secret_broker::api::slack::cli_link_role(&store, link.name.clone(), now)
                    .await?
                {
                    Some(role) => format!(
                        "their clicks decide as {}, which holds the {role} role now (through a live \
                         broker token)",
                        link.name
                    ),
                    None => format!(
                        "{} holds no live approver or admin token now, so their clicks are refused \
                         until it does (secret-broker tokens create --name {} --role approver)",
                        link.name, link.name
                    ),
                }
            };
            eprintln!(
                "linked Slack user {} of team {} to {}: {what}",
                link.user_id, link.team_id, link.name
            );
            Ok(ExitCode::SUCCESS)
        }
        SlackCommand::Unlink { team, user } => {
            cli_unlink(&store, team.clone(), user.clone(), now).await?;
            eprintln!("removed the link of Slack user {user} of team {team}");
            Ok(ExitCode::SUCCESS)
        }
        SlackCommand::Links => {
            for l in store.read(secret_broker::store::slack::list_links).await? {
                println!(
                    "{}",
                    serde_json::json!({"team_id": l.team_id, "user_id": l.user_id, "name": l.name, "created_by": l.created_by, "created_at": l.created_at})
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn run(command: Command, config: Config) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve => serve(config).await,
        Command::Doctor {
            secret_arn,
            print_iam_policy,
            partition,
        } => {
            if print_iam_policy {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&secret_broker::doctor::iam_policy_for(
                        &partition
                    ))?
                );
                return Ok(ExitCode::SUCCESS);
            }
            doctor(&config, secret_arn.as_deref()).await
        }
        Command::Migrate {
            from: Some(from),
            to: Some(to),
        } => {
            let copied = store::copy::sqlite_to_postgres(&from, &to)?;
            for (table, n) in &copied.rows {
                eprintln!("copied {n} row(s) of {table}");
            }
            eprintln!(
                "{} now holds {}; its audit chain verifies ({} row(s), head {})",
                store::describe_database(&to),
                from.display(),
                copied.chain_rows,
                copied.head.as_deref().unwrap_or("none")
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate { .. } => {
            let applied = store::migrate_database(&config.database.0)?;
            for m in &applied {
                eprintln!("applied {}", m.name);
            }
            eprintln!(
                "{} is up to date ({} migration(s) applied now)",
                config.database,
                applied.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Tokens {
            command:
                TokensCommand::Create {
                    name,
                    role,
                    expires_in,
                },
        } => {
            let store = open_store(&config)?;
            let now_t = time::OffsetDateTime::now_utc();
            let expires_at = expires_in
                .map(|s| time::Duration::try_from(s.0).map(|d| fmt_time(now_t + d)))
                .transpose()?;
            let token = tokens::create_with_expiry(
                &store,
                &fmt_time(now_t),
                "cli",
                &name,
                role,
                expires_at,
            )
            .await?;
            let article = if role.as_str().starts_with(['a', 'e', 'i', 'o', 'u']) {
                "an"
            } else {
                "a"
            };
            eprintln!("created {article} {role} token for {name}; it is shown only now:");
            println!("{token}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Slack { command } => slack(&config, command).await,
        Command::Audit {
            command: AuditCommand::Head,
        } => {
            let store = open_store(&config)?;
            match store.read(audit::head).await? {
                Some(a) => {
                    println!("{}", serde_json::to_string(&a)?);
                    Ok(ExitCode::SUCCESS)
                }
                None => {
                    eprintln!("the audit log is empty: there is no head yet");
                    Ok(ExitCode::from(1))
                }
            }
        }
        Command::Audit {
            command:
                AuditCommand::Verify {
                    head_seq,
                    head_hash,
                },
        } => {
            let anchor = match (head_seq, head_hash) {
                (Some(seq), Some(hash)) => {
                    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                        anyhow::bail!(
                            "--head-hash: must be 64 hex digits (the hash of the anchored row), not {hash:?}"
                        );
                    }
                    Some(audit::Anchor {
                        seq,
                        hash: hash.to_ascii_lowercase(),
                    })
                }
                _ => None,
            };
            let store = open_store(&config)?;
            let v = store
                .read(move |c| audit::verify_against(c, anchor.as_ref()))
                .await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(if v.ok {
                ExitCode::SUCCESS
            } else {
                eprintln!(
                    "audit chain broken at seq {}: {}",
                    v.first_broken_seq.unwrap_or_default(),
                    v.reason.as_deref().unwrap_or("")
                );
                ExitCode::from(1)
            })
        }
        Command::Health { url } => health(url, &config).await,
        Command::BenchSeed { shares, audit } => {
            let s = secret_broker::store::bench::seed(&config.database.0, shares, audit)?;
            println!("{}", serde_json::to_string(&s)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Openapi | Command::Config { .. } | Command::Plan(_) | Command::Check(_) => {
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<ExitCode> {
    use std::net::SocketAddr;
    use std::sync::{Arc, OnceLock};
    use tower::ServiceExt;

    let listen = config.listen;
    // Certificate problems stop the start before the port is taken.
    let tls = match (&config.tls_cert.0, &config.tls_key.0) {
        (Some(cert), Some(key)) => Some(secret_broker::tls::acceptor(
            std::path::Path::new(cert),
            std::path::Path::new(key),
        )?),
        _ => None,
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e} (set BROKER_LISTEN)"))?;
    let addr = listener.local_addr()?;
    // One server for the whole life of the process. While the database is migrated and interrupted
    // work recovered it is alive, not ready: /healthz answers, everything else 503.
    let starting = axum::Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .fallback(|| async {
            secret_broker::api::problem::problem(
                503,
                "starting: applying database migrations and recovering interrupted work".into(),
            )
        });
    let slot: Arc<OnceLock<axum::Router>> = Arc::new(OnceLock::new());
    let routed = {
        let slot = slot.clone();
        tower::service_fn(move |req: axum::extract::Request| {
            let router = slot.get().cloned().unwrap_or_else(|| starting.clone());
            router.oneshot(req)
        })
    };
    let make = axum::Router::new()
        .fallback_service(routed)
        .into_make_service_with_connect_info::<SocketAddr>();
    let (app_tx, app_rx) = tokio::sync::oneshot::channel::<Arc<App>>();
    // Set when SIGTERM/SIGINT arrives: the server stops accepting, the worker stops, and from then on
    // everything has shutdown_grace to finish.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let signalled = stop.clone();
    let signal_at: Arc<OnceLock<tokio::time::Instant>> = Arc::default();
    let at = signal_at.clone();
    // Closing the listener resets connections the kernel had accepted but the server had not yet read
    // from; serving on for the drain (while /readyz says 503) lets those be answered first.
    let drain = config.shutdown_drain.0.min(config.shutdown_grace.0);
    let shutdown = async move {
        match app_rx.await {
            Ok(app) => {
                shutdown_signal(app).await;
                let _ = at.set(tokio::time::Instant::now());
                let _ = signalled.send(true);
                tokio::time::sleep(drain).await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let server = match tls {
        Some(acceptor) => {
            let per_address = config
                .max_concurrent_per_address
                .0
                .map(|_| secret_broker::tls::MAX_HANDSHAKES_PER_ADDRESS);
            let l = secret_broker::tls::TlsListener::new(listener, acceptor, per_address)?;
            use axum::serve::ListenerExt;
            tokio::spawn(
                axum::serve(l.tap_io(|_| ()), make)
                    .with_graceful_shutdown(shutdown)
                    .into_future(),
            )
        }
        None => tokio::spawn(
            axum::serve(listener, make)
                .with_graceful_shutdown(shutdown)
                .into_future(),
        ),
    };
    let app = App::open(config).await?;
    app.applier.recover().await?;
    secret_broker::worker::anchor(&app, "start").await?;
    let _ = slot.set(secret_broker::server::router(app.clone()));
    if let Some(oidc) = app.auth.oidc().cloned() {
        // Fetched now and then every oidc_jwks_refresh; a failure keeps the last good keys.
        tokio::spawn(async move {
            match oidc.refresh().await {
                Ok(n) => tracing::info!(
                    issuer = oidc.issuer(),
                    keys = n,
                    "OIDC issuer's keys loaded"
                ),
                Err(e) => {
                    tracing::error!(issuer = oidc.issuer(), error = %e, "cannot load the OIDC issuer's keys: JWTs are refused until they load")
                }
            }
            let mut tick = tokio::time::interval(oidc.refresh_interval());
            tick.tick().await;
            loop {
                tick.tick().await;
                let _ = oidc.refresh().await;
            }
        });
    }
    {
        // The console's OIDC sign-in endpoints: a problem shows in the log at start.
        let app = app.clone();
        tokio::spawn(
            async move { secret_broker::console::oidc_login::discover_at_start(&app).await },
        );
    }
    tracing::info!(
        database = %app.store.describe(),
        backend = app.store.backend().as_str(),
        apply_shares = app.applier.enabled(),
        oidc = app.auth.oidc().is_some(),
        "secret-broker listening on {scheme}://{addr}"
    );
    let worker = secret_broker::worker::spawn(app.clone(), stopped.clone());
    let _ = app_tx.send(app.clone());
    let grace = app.config.shutdown_grace.0;
    // One deadline, shutdown_grace after the signal, for everything: graceful shutdown waits for every
    // open connection (and a client can keep one open without ever finishing a request), then the
    // worker and any apply in progress.
    let deadline_at = {
        let signal_at = signal_at.clone();
        move || {
            signal_at
                .get()
                .copied()
                .unwrap_or_else(tokio::time::Instant::now)
                + grace
        }
    };
    let mut server = server;
    let mut signal = stopped;
    let deadline = {
        let deadline_at = deadline_at.clone();
        async move {
            let _ = signal.wait_for(|s| *s).await;
            tokio::time::sleep_until(deadline_at()).await;
        }
    };
    tokio::select! {
        res = &mut server => res??,
        () = deadline => {
            tracing::warn!("connections still open {} after the shutdown signal; closing them", app.config.shutdown_grace);
            server.abort();
        }
    }
    let _ = stop.send(true);
    let drained = tokio::time::timeout_at(deadline_at(), async {
        let _ = worker.await;
        app.applier.wait_idle().await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            "shutdown grace of {} ran out with AWS work in flight; it is journaled and resumed at the next start",
            app.config.shutdown_grace
        );
    }
    if let Err(e) = secret_broker::worker::anchor(&app, "shutdown").await {
        tracing::error!(error = %e, "could not anchor the audit chain's head at shutdown");
    }
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// The store alone, for commands that need no AWS.
async fn doctor(config: &Config, secret_arn: Option<&str>) -> anyhow::Result<ExitCode> {
    use secret_broker::aws::sdk::{SdkAws, Tuning, load_config};
    use secret_broker::doctor;
    let mut checks = doctor::check_store(config).await;
    let sdk = load_config(config.assume_role_arn.0.as_deref()).await;
    let aws = SdkAws::new(
        sdk.clone(),
        Tuning {
            max_attempts: config.aws_max_attempts.0 as u32,
            ..Tuning::default()
        },
    );
    checks.extend(doctor::check_aws_setup(config, &sdk, &aws).await);
    if let Some(arn) = secret_arn {
        checks.extend(doctor::check_secret(arn, &aws, &aws).await);
    }
    let mut failed = 0;
    for c in &checks {
        println!("{c}");
        failed += usize::from(c.outcome.is_err());
    }
    if failed == 0 {
        println!("all {} checks ok", checks.len());
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "{failed} of {} checks failed (AWS's own answers and request ids: run again with RUST_LOG=warn)",
            checks.len()
        );
        Ok(ExitCode::from(1))
    }
}

fn open_store(config: &Config) -> anyhow::Result<store::Store> {
    Ok(store::Store::open(
        &config.database.0,
        store::StoreOptions {
            read_connections: 1,
            writer_max_batch: config.writer_max_batch.0,
        },
    )?)
}

async fn shutdown_signal(app: std::sync::Arc<App>) {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    app.draining
        .store(true, std::sync::atomic::Ordering::SeqCst);
    tracing::info!("shutting down: finishing in-flight requests");
}

fn plan(args: &PlanArgs, config: Option<&std::path::Path>) -> anyhow::Result<ExitCode> {
    use secret_broker::domain::ShareAction;
    use secret_broker::policy::arn::{KmsKeyArn, PrincipalArn, SecretArn};
    use secret_broker::policy::compose::Grant;
    use secret_broker::policy::plan::{Existing, plan};

    let secret =
        SecretArn::parse(&args.secret_arn).map_err(|e| anyhow::anyhow!("--secret-arn: {e}"))?;
    let key =
        KmsKeyArn::parse(&args.kms_key_arn).map_err(|e| anyhow::anyhow!("--kms-key-arn: {e}"))?;
    let principal =
        PrincipalArn::parse(&args.principal).map_err(|e| anyhow::anyhow!("--principal: {e}"))?;
    let mut actions = args
        .actions
        .iter()
        .map(|a| ShareAction::parse(a.trim()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("--actions: {e}"))?;
    actions.sort();
    actions.dedup();
    if !actions.contains(&ShareAction::GetSecretValue) {
        anyhow::bail!("--actions: must include secretsmanager:GetSecretValue");
    }
    let read = |p: &Option<PathBuf>| -> anyhow::Result<Option<String>> {
        p.as_ref()
            .map(|p| {
                std::fs::read_to_string(p)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))
            })
            .transpose()
    };
    let resource_policy = read(&args.resource_policy)?;
    let key_policy = read(&args.key_policy)?;
    let grant = Grant {
        secret,
        principal,
        actions,
        version_stage: (!args.any_stage).then(|| args.version_stage.clone()),
    };
    let installation = match &args.installation_id {
        Some(id) => id.clone(),
        None => Config::load(config, std::env::vars())?.installation_id,
    };
    let p = plan(
        &grant,
        &key,
        &Existing {
            resource_policy: resource_policy.as_deref(),
            key_policy: key_policy.as_deref(),
        },
        &secret_broker::policy::merge::Owner::new(installation),
    )?;
    println!("{}", p.to_json());
    Ok(if p.has_errors() {
        eprintln!("the plan has findings of severity error: nothing should be written");
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn check(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    use secret_broker::domain::ShareAction;
    use secret_broker::policy::arn::{KmsKeyArn, PrincipalArn, SecretArn};
    use secret_broker::policy::document::PolicyDocument;
    use secret_broker::policy::eval::{Check, Guardrails, OrgContext, Verdict, check};

    let secret =
        SecretArn::parse(&args.secret_arn).map_err(|e| anyhow::anyhow!("--secret-arn: {e}"))?;
    let key =
        KmsKeyArn::parse(&args.kms_key_arn).map_err(|e| anyhow::anyhow!("--kms-key-arn: {e}"))?;
    let principal =
        PrincipalArn::parse(&args.principal).map_err(|e| anyhow::anyhow!("--principal: {e}"))?;
    if let Some(r) = &args.region
        && r != secret.region()
    {
        anyhow::bail!(
            "--region: the secret lives in {}; GetSecretValue must be called there (got {r})",
            secret.region()
        );
    }
    let load = |flag: &str, p: &PathBuf| -> anyhow::Result<PolicyDocument> {
        let text = std::fs::read_to_string(p)
            .map_err(|e| anyhow::anyhow!("{flag}: cannot read {}: {e}", p.display()))?;
        PolicyDocument::parse(&text).map_err(|e| anyhow::anyhow!("{flag} {}: {e}", p.display()))
    };
    let identity = load("--identity-policy", &args.identity_policy)?;
    let resource = args
        .resource_policy
        .as_ref()
        .map(|p| load("--resource-policy", p))
        .transpose()?;
    if key.region() != secret.region() {
        anyhow::bail!(
            "--kms-key-arn: the key is in {} but the secret in {}: Secrets Manager encrypts a secret with a key of its own region",
            key.region(),
            secret.region()
        );
    }
    if principal.partition() != secret.partition() {
        anyhow::bail!(
            "--principal: {principal} is in partition {} but the secret is in {}: partitions are isolated, \
             so no policy can grant it (give an ARN in {}, e.g. arn:{}:iam::{}:root)",
            principal.partition(),
            secret.partition(),
            secret.partition(),
            secret.partition(),
            principal.account()
        );
    }
    if principal.account() == secret.account() {
        // The evaluator models cross-account reads (both sides must allow). In one account a resource
        // policy naming the account delegates to IAM there, which it does not model: refuse, as
        // /v1/access-checks does, rather than answer.
        anyhow::bail!(
            "--principal: {principal} is in the secret's own account {}: check explains cross-account reads; \
             same-account access is decided by that account's identity policies",
            secret.account()
        );
    }
    let action = ShareAction::parse(&args.action).map_err(|e| anyhow::anyhow!("--action: {e}"))?;
    let key_policy = match &args.key_policy {
        Some(p) => load("--key-policy", p)?,
        None if action == ShareAction::GetSecretValue => anyhow::bail!(
            "--key-policy: required for {}: it is read through the key's policy (give the key policy as a JSON file)",
            action.as_str()
        ),
        // DescribeSecret calls no KMS operation: no decrypt layer, so no key policy is consulted.
        None => PolicyDocument::parse(r#"{"Statement": []}"#)?,
    };
    let many = |flag: &str, files: &[PathBuf]| -> anyhow::Result<Option<Vec<PolicyDocument>>> {
        if files.is_empty() {
            return Ok(None);
        }
        files
            .iter()
            .map(|p| load(flag, p))
            .collect::<anyhow::Result<Vec<_>>>()
            .map(Some)
    };
    let guardrails = Guardrails {
        permissions_boundary: args
            .permissions_boundary
            .as_ref()
            .map(|p| load("--permissions-boundary", p))
            .transpose()?,
        session_policy: args
            .session_policy
            .as_ref()
            .map(|p| load("--session-policy", p))
            .transpose()?,
        service_control_policies: many("--scp", &args.service_control_policies)?,
        resource_control_policies: many("--rcp", &args.resource_control_policies)?,
    };
    let mut org = OrgContext::default();
    if let Some(id) = &args.principal_org_id {
        PrincipalArn::check_caller_org_id(id)
            .map_err(|e| anyhow::anyhow!("--principal-org-id: {e}"))?;
        org.org_id = Some(id.clone());
    }
    if let Some(path) = &args.principal_org_path {
        PrincipalArn::check_caller_org_path(path)
            .map_err(|e| anyhow::anyhow!("--principal-org-path: {e}"))?;
        org.org_paths = Some(vec![path.clone()]);
    }
    let org = (org != OrgContext::default()).then_some(org);
    let result = check(&Check {
        principal: &principal,
        secret: &secret,
        key: &key,
        version_stage: args.version_stage.as_deref(),
        identity_policy: &identity,
        resource_policy: resource.as_ref(),
        key_policy: &key_policy,
        now: Some(time::OffsetDateTime::now_utc()),
        action: action.as_str(),
        guardrails: &guardrails,
        org: org.as_ref(),
    });
    println!("{}", serde_json::to_string_pretty(&result)?);
    Ok(match result.decision {
        Verdict::Allow => ExitCode::SUCCESS,
        Verdict::Deny => ExitCode::from(1),
        Verdict::Unknown => ExitCode::from(3),
    })
}

async fn health(url: Option<String>, config: &Config) -> anyhow::Result<ExitCode> {
    use http_body_util::{BodyExt, Empty};
    let url = url.unwrap_or_else(|| {
        let mut a = config.listen;
        if a.ip().is_unspecified() {
            a.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        format!("http://{a}/readyz")
    });
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<hyper::body::Bytes>>();
    let req = hyper::Request::get(&url).body(Empty::new())?;
    let resp = tokio::time::timeout(std::time::Duration::from_secs(5), client.request(req))
        .await
        .map_err(|_| anyhow::anyhow!("{url} did not answer within 5 s"))??;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    if status.is_success() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("{url}: {status} {}", String::from_utf8_lossy(&body));
        Ok(ExitCode::from(1))
    }
}

fn defaults_toml() -> String {
    let mut s = String::from(
        "# secret-broker configuration: every setting at its default.\n\
         # Pass with --config FILE; a BROKER_<NAME> variable overrides any setting.\n",
    );
    for r in Config::reference() {
        let value =
            if r.default.parse::<i64>().is_ok() || r.default == "true" || r.default == "false" {
                r.default.clone()
            } else {
                toml::Value::String(r.default.clone()).to_string()
            };
        s.push_str(&format!(
            "\n# {} ({})\n{} = {}\n",
            r.doc, r.env, r.key, value
        ));
    }
    s
}

fn reference_markdown() -> String {
    let mut s = String::from("| setting | variable | default | meaning |\n|---|---|---|---|\n");
    for r in Config::reference() {
        s.push_str(&format!(
            "| `{}` | `{}` | `{}` | {} |\n",
            r.key, r.env, r.default, r.doc
        ));
    }
    s
}
