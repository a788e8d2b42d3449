//! Test harness: a real App over a real SQLite file in a temp dir, a clock the test moves, and helpers
//! to call the router as a client would.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use secret_broker::app::{App, AwsParts};
use secret_broker::aws::sdk::{SdkAws, Tuning};
use secret_broker::config::{Config, Flag};
use secret_broker::domain::{Clock, Role};
use serde_json::Value;
use time::OffsetDateTime;
use tower::ServiceExt;

/// A clock that only moves when told to.
pub struct ManualClock(Mutex<OffsetDateTime>);

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        *self.0.lock().unwrap()
    }
}

impl ManualClock {
    #[allow(dead_code)]
    pub fn advance(&self, d: std::time::Duration) {
        let mut t = self.0.lock().unwrap();
        *t += d;
    }
}

/// The canonical test secret (owner account 111122223333).
pub const SECRET: &str =
    "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-password-AbCdEf";
/// A consumer role in account 444455556666.
pub const ROLE: &str = "arn:aws:iam::444455556666:role/app-reader";

pub struct TestApp {
    pub app: Arc<App>,
    pub router: Router,
    pub clock: Arc<ManualClock>,
    _dir: tempfile::TempDir,
    pub config: Config,
    pub faults: crate::moto::Faults,
    aws: bool,
    /// Where the AWS clients send requests (the emulator, or a proxy in front of it).
    endpoint: Option<String>,
}

/// A response as a client sees it.
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Resp {
    /// Asserts the status and, for errors, that the body is problem+json with that status.
    #[track_caller]
    pub fn expect(self, status: u16) -> Self {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.text
        );
        if status >= 400 {
            assert_eq!(
                self.headers
                    .get("content-type")
                    .map(|v| v.to_str().unwrap()),
                Some("application/problem+json"),
                "error without problem+json: {}",
                self.text
            );
            assert_eq!(self.body["status"], status, "{}", self.text);
            assert!(
                self.body["type"]
                    .as_str()
                    .unwrap()
                    .starts_with("urn:secret-broker:problem:")
            );
            assert!(!self.body["detail"].as_str().unwrap().is_empty());
        }
        self
    }
}

impl TestApp {
    pub fn new() -> Self {
        Self::with(|_| {})
    }

    /// An app that does not apply shares (AWS clients point at a closed loopback port).
    pub fn with(tweak: impl FnOnce(&mut Config)) -> Self {
        Self::build(false, None, tweak)
    }

    /// An app that applies shares to the emulator (started on first use).
    pub fn with_aws(tweak: impl FnOnce(&mut Config)) -> Self {
        Self::build(true, None, tweak)
    }

    /// An app that applies shares through `endpoint` (a [`crate::moto::HoldingProxy`] in front of the
    /// emulator).
    pub fn with_aws_via(endpoint: &str, tweak: impl FnOnce(&mut Config)) -> Self {
        Self::build(true, Some(endpoint.to_owned()), tweak)
    }

    fn build(aws: bool, endpoint: Option<String>, tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::load(None, Vec::<(String, String)>::new()).unwrap();
        config.database.0 = match crate::pg::backend() {
            crate::pg::Backend::Sqlite => dir.path().join("broker.db"),
            crate::pg::Backend::Postgres => crate::pg::fresh_database().into(),
        };
        config.apply_shares = Flag(aws);
        config.apply_coalesce.0 = std::time::Duration::from_millis(20);
        // Tests send many requests from one address with one token; tests of the limits turn them on.
        config.token_rate_limit.0 = None;
        config.address_rate_limit.0 = None;
        config.max_concurrent_per_address.0 = None;
        tweak(&mut config);
        let clock = Arc::new(ManualClock(Mutex::new(
            time::macros::datetime!(2026-11-29 12:00 UTC),
        )));
        let faults = crate::moto::Faults::default();
        let app = Self::open(&config, clock.clone(), aws, endpoint.as_deref(), &faults);
        let router = secret_broker::server::router(app.clone());
        Self {
            app,
            router,
            clock,
            _dir: dir,
            config,
            faults,
            aws,
            endpoint,
        }
    }

    fn open(
        config: &Config,
        clock: Arc<ManualClock>,
        aws: bool,
        endpoint: Option<&str>,
        faults: &crate::moto::Faults,
    ) -> Arc<App> {
        let (sdk, tuning) = if aws {
            let m = crate::moto::moto();
            (
                m.sdk_config_at(endpoint.unwrap_or(&m.endpoint)),
                Tuning {
                    max_attempts: 3,
                    initial_backoff: std::time::Duration::from_millis(5),
                    interceptors: vec![
                        aws_smithy_runtime_api::client::interceptors::SharedInterceptor::new(
                            faults.clone(),
                        ),
                    ],
                    ..Tuning::default()
                },
            )
        } else {
            (
                aws_config::SdkConfig::builder()
                    .behavior_version(aws_config::BehaviorVersion::latest())
                    .region(aws_config::Region::new("us-east-1"))
                    .endpoint_url("http://127.0.0.1:9")
                    .credentials_provider(
                        aws_credential_types::provider::SharedCredentialsProvider::new(
                            aws_credential_types::Credentials::new(
                                "test", "test", None, None, "test",
                            ),
                        ),
                    )
                    .build(),
                Tuning {
                    max_attempts: 1,
                    ..Tuning::default()
                },
            )
        };
        App::open_with(
            config.clone(),
            clock,
            AwsParts::sdk(SdkAws::new(sdk, tuning)),
        )
        .unwrap()
    }

    /// A new App over the same database and emulator, as after a restart.
    pub fn restart(&self) -> Self {
        self.restart_with(|_| {})
    }

    /// [`TestApp::restart`] with settings changed by `tweak`.
    pub fn restart_with(&self, tweak: impl FnOnce(&mut Config)) -> Self {
        let mut config = self.config.clone();
        tweak(&mut config);
        let app = Self::open(
            &config,
            self.clock.clone(),
            self.aws,
            self.endpoint.as_deref(),
            &self.faults,
        );
        let router = secret_broker::server::router(app.clone());
        Self {
            app,
            router,
            clock: self.clock.clone(),
            _dir: tempfile::tempdir().unwrap(),
            config,
            faults: self.faults.clone(),
            aws: self.aws,
            endpoint: self.endpoint.clone(),
        }
    }

    /// Waits until the applier has nothing scheduled or running.
    pub async fn settle(&self) {
        tokio::time::timeout(
            std::time::Duration::from_secs(60),
            self.app.applier.wait_idle(),
        )
        .await
        .expect("the applier did not settle within 60 s");
    }

    /// Creates a token the way the CLI does.
    pub async fn token(&self, name: &str, role: Role) -> String {
        secret_broker::auth::token::create(
            &self.app.store,
            "2026-11-29T12:00:00Z",
            "cli",
            name,
            role,
        )
        .await
        .unwrap()
    }

    pub async fn raw(&self, req: Request<Body>) -> Resp {
        self.raw_from(req, LOOPBACK).await
    }

    /// Sends `req` as a client at `peer` would (the server sets the connection's address); the
    /// future owns what it needs, so it can be spawned.
    pub fn send(
        &self,
        mut req: Request<Body>,
        peer: std::net::SocketAddr,
    ) -> impl std::future::Future<Output = axum::response::Response> + Send + 'static {
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        let router = self.router.clone();
        async move { router.oneshot(req).await.unwrap() }
    }

    /// [`TestApp::raw`] from a given client address.
    pub async fn raw_from(&self, req: Request<Body>, peer: std::net::SocketAddr) -> Resp {
        let resp = self.send(req, peer).await;
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            body,
            text,
        }
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let mut b = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        let req = match body {
            Some(v) => b
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&v).unwrap()))
                .unwrap(),
            None => b.body(Body::empty()).unwrap(),
        };
        self.raw(req).await
    }

    /// `GET /metrics` as a Prometheus scraper holding an auditor token would.
    pub async fn scrape_metrics(&self) -> Resp {
        let token = self.token("metrics-scraper", Role::Auditor).await;
        self.call(Method::GET, "/metrics", Some(&token), None).await
    }

    /// A POST without a body (approve, cancel, retry, repair).
    pub async fn post_empty(&self, path: &str, token: &str) -> Resp {
        self.call(Method::POST, path, Some(token), None).await
    }

    pub async fn get(&self, path: &str, token: &str) -> Resp {
        self.call(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Resp {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    /// Requests the canonical share and returns its id.
    pub async fn request_share(&self, token: &str) -> String {
        let r = self
            .post(
                "/v1/shares",
                token,
                serde_json::json!({"secret_arn": SECRET, "principal_arn": ROLE, "justification": "billing job"}),
            )
            .await
            .expect(201);
        r.body["id"].as_str().unwrap().to_owned()
    }

    /// A direct connection to the database (the SQLite file or the PostgreSQL database), for counting
    /// rows and tampering.
    pub fn db(&self) -> secret_broker::store::db::Direct {
        secret_broker::store::open_direct(&self.config.database.0).unwrap()
    }

    /// The statement that drops one of the audit table's append-only triggers, in the backend's SQL.
    pub fn drop_audit_trigger(&self, name: &str) -> String {
        match crate::pg::backend() {
            crate::pg::Backend::Sqlite => format!("DROP TRIGGER {name}"),
            crate::pg::Backend::Postgres => format!("DROP TRIGGER {name} ON audit"),
        }
    }

    /// The newest audit row: actor, action and details.
    pub fn last_audit(&self) -> (String, String, Value) {
        let (actor, action, details): (String, String, String) = self
            .db()
            .query_row(
                "SELECT actor, action, details FROM audit ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        (actor, action, serde_json::from_str(&details).unwrap())
    }

    /// How many shares have `status`.
    pub fn count_status(&self, status: &str) -> i64 {
        self.db()
            .query_row(
                "SELECT count(*) FROM shares WHERE status = ?1",
                [status],
                |r| r.get(0),
            )
            .unwrap()
    }

    pub fn count(&self, table: &str) -> i64 {
        self.db()
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    }

    /// The audit actions in order.
    pub fn audit_actions(&self) -> Vec<String> {
        let db = self.db();
        let mut s = db.prepare("SELECT action FROM audit ORDER BY seq").unwrap();
        s.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    /// Every audit row's details, in order, joined by spaces (on either backend).
    pub fn audit_details(&self) -> String {
        let db = self.db();
        let mut s = db
            .prepare("SELECT details FROM audit ORDER BY seq")
            .unwrap();
        s.query_map([], |r| r.get::<_, String>(0))
            .unwrap()
            .map(Result::unwrap)
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A requester, an approver and an admin.
pub struct Actors {
    pub alice: String,
    pub bob: String,
    pub root: String,
}

pub async fn actors(t: &TestApp) -> Actors {
    Actors {
        alice: t.token("alice", Role::Requester).await,
        bob: t.token("bob", Role::Approver).await,
        root: t.token("root", Role::Admin).await,
    }
}

/// Alice requests a share (with `extra` fields merged into the body); its id.
pub async fn request(
    t: &TestApp,
    a: &Actors,
    secret: &str,
    principal: &str,
    extra: Value,
) -> String {
    let mut body = serde_json::json!({"secret_arn": secret, "principal_arn": principal, "justification": "test"});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    t.post("/v1/shares", &a.alice, body).await.expect(201).body["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Bob approves.
pub async fn approve(t: &TestApp, a: &Actors, id: &str) {
    t.call(
        Method::POST,
        &format!("/v1/shares/{id}/approve"),
        Some(&a.bob),
        None,
    )
    .await
    .expect(200);
}

/// The client address of test requests, as a server would see it.
pub const LOOPBACK: std::net::SocketAddr =
    std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 40000);

/// Bob approves all of them at once (concurrent requests).
pub async fn approve_all(t: &TestApp, a: &Actors, ids: &[String]) {
    let mut set = tokio::task::JoinSet::new();
    for id in ids {
        let req = Request::post(format!("/v1/shares/{id}/approve"))
            .header("authorization", format!("Bearer {}", a.bob))
            .body(Body::empty())
            .unwrap();
        let sent = t.send(req, LOOPBACK);
        set.spawn(async move { sent.await.status() });
    }
    while let Some(s) = set.join_next().await {
        assert_eq!(s.unwrap(), StatusCode::OK);
    }
}

/// The share as the API shows it.
pub async fn share(t: &TestApp, a: &Actors, id: &str) -> Value {
    t.get(&format!("/v1/shares/{id}"), &a.root)
        .await
        .expect(200)
        .body
}

/// A policy's statements, whether `Statement` is an object or an array.
pub fn statements(policy: &str) -> Vec<Value> {
    let v: Value = serde_json::from_str(policy).unwrap();
    match &v["Statement"] {
        Value::Array(a) => a.clone(),
        o => vec![o.clone()],
    }
}

/// A policy's text without the statements granting `principal`: what a hand edit that deletes them
/// leaves behind.
/// A statement listing several principals (the broker's list statements, issue 18) loses that one from
/// its list.
pub fn without_principal(policy: &str, principal: &str) -> String {
    let kept: Vec<Value> = statements(policy)
        .into_iter()
        .filter_map(|mut s| match s["Principal"]["AWS"].clone() {
            Value::String(p) if p == principal => None,
            Value::Array(list) => {
                let rest: Vec<Value> = list.into_iter().filter(|p| p != principal).collect();
                match rest.len() {
                    0 => None,
                    1 => {
                        s["Principal"]["AWS"] = rest[0].clone();
                        Some(s)
                    }
                    _ => {
                        s["Principal"]["AWS"] = Value::Array(rest);
                        Some(s)
                    }
                }
            }
            _ => Some(s),
        })
        .collect();
    serde_json::json!({"Version": "2012-10-17", "Statement": kept}).to_string()
}

/// The broker's statements of a policy (none when there is no policy).
pub fn broker_statements(policy: Option<String>) -> Vec<Value> {
    policy
        .map(|p| statements(&p))
        .unwrap_or_default()
        .into_iter()
        .filter(|s| {
            s["Sid"]
                .as_str()
                .is_some_and(|x| x.starts_with("SecretBroker"))
        })
        .collect()
}

/// The broker Sids of a policy.
pub fn broker_sids(policy: &str) -> Vec<String> {
    broker_statements(Some(policy.to_owned()))
        .iter()
        .map(|s| s["Sid"].as_str().unwrap().to_owned())
        .collect()
}

/// The grants of a policy's broker statements: (Sid, principal) for every principal each lists (a list
/// statement stands for several one-principal grants, issue 18 part 3).
pub fn broker_entries(policy: &str) -> Vec<(String, String)> {
    broker_statements(Some(policy.to_owned()))
        .iter()
        .flat_map(|s| {
            let sid = s["Sid"].as_str().unwrap().to_owned();
            let ps: Vec<String> = match &s["Principal"]["AWS"] {
                Value::Array(a) => a.iter().map(|p| p.as_str().unwrap().to_owned()).collect(),
                Value::String(p) => vec![p.clone()],
                other => vec![other.to_string()],
            };
            ps.into_iter().map(move |p| (sid.clone(), p))
        })
        .collect()
}
