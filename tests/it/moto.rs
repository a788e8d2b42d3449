//! The AWS emulator for the tests: moto server, started once per test binary on a free loopback port
//! (it exits with the test process), recording every request so a test can read what the broker called.
//! Also: SDK clients for setting up secrets and keys, and a fault injector in the SDK layer.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeDeserializationInterceptorContextMut, BeforeTransmitInterceptorContextRef,
};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::{ConfigBag, Storable, StoreReplace};

pub struct Moto {
    pub endpoint: String,
    pub recording: PathBuf,
    _child: Mutex<Child>,
    _stdin: Mutex<ChildStdin>,
}

static MOTO: OnceLock<Moto> = OnceLock::new();

const INSTALL: &str = "moto server is needed by the AWS tests: run ./scripts/test (it installs moto[server] into \
~/.cache/secret-broker/venv), or `pip install 'moto[server]'` and put moto_server on PATH (or set MOTO_SERVER)";

/// The shared emulator, started on first use.
pub fn moto() -> &'static Moto {
    MOTO.get_or_init(|| {
        let bin = std::env::var("MOTO_SERVER").unwrap_or_else(|_| "moto_server".into());
        let found = Command::new("sh")
            .args(["-c", "command -v \"$0\"", &bin])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(found, "{bin} not found. {INSTALL}");
        let recording = std::env::var("SECRET_BROKER_MOTO_RECORDING")
            .map(PathBuf::from)
            .unwrap_or_else(|_| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("moto-recording.jsonl"));
        let _ = std::fs::remove_file(&recording);
        // The wrapper kills moto when our end of its stdin closes, i.e. when the test process exits.
        let mut child = Command::new("sh")
            .args([
                "-c",
                "\"$0\" -H 127.0.0.1 -p 0 & pid=$!; trap 'kill $pid 2>/dev/null' EXIT; cat >/dev/null",
                &bin,
            ])
            .env("MOTO_ENABLE_RECORDING", "true")
            .env("MOTO_RECORDER_FILEPATH", &recording)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}. {INSTALL}"));
        let stderr = child.stderr.take().unwrap();
        let stdin = child.stdin.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Keep draining: moto logs every request, and a full pipe would stall it.
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(i) = line.find("Running on http://") {
                    let addr: String = line[i + "Running on ".len()..]
                        .chars()
                        .take_while(|c| !c.is_whitespace())
                        .collect();
                    let _ = tx.send(addr);
                }
            }
        });
        let endpoint = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("moto server did not report its address within 60 s. {INSTALL}"));
        assert!(endpoint.starts_with("http://127.0.0.1:"), "{endpoint}");
        Moto {
            endpoint,
            recording,
            _child: Mutex::new(child),
            _stdin: Mutex::new(stdin),
        }
    })
}

impl Moto {
    pub fn sdk_config(&self) -> SdkConfig {
        self.sdk_config_at(&self.endpoint)
    }

    /// SDK settings that send requests to `endpoint` (a proxy in front of the emulator).
    pub fn sdk_config_at(&self, endpoint: &str) -> SdkConfig {
        SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(endpoint)
            .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
                "test", "test", None, None, "test",
            )))
            .build()
    }

    pub fn kms(&self) -> aws_sdk_kms::Client {
        aws_sdk_kms::Client::new(&self.sdk_config())
    }

    pub fn secrets(&self) -> aws_sdk_secretsmanager::Client {
        aws_sdk_secretsmanager::Client::new(&self.sdk_config())
    }

    /// A new customer managed key; its ARN.
    pub async fn create_key(&self) -> String {
        let k = self.kms().create_key().send().await.unwrap();
        k.key_metadata().unwrap().arn().unwrap().to_owned()
    }

    /// A new secret (unique name) encrypted with `key` (None: the AWS managed key); its ARN.
    pub async fn create_secret(&self, key: Option<&str>) -> String {
        self.create_named_secret(&format!("test/{}", uuid::Uuid::new_v4().simple()), key)
            .await
    }

    /// A new secret with this name, encrypted with `key`; its ARN.
    pub async fn create_named_secret(&self, name: &str, key: Option<&str>) -> String {
        let mut req = self
            .secrets()
            .create_secret()
            .name(name)
            .secret_string("not-read-by-the-broker");
        if let Some(k) = key {
            req = req.kms_key_id(k);
        }
        req.send().await.unwrap().arn().unwrap().to_owned()
    }

    pub async fn key_policy(&self, key: &str) -> String {
        self.kms()
            .get_key_policy()
            .key_id(key)
            .policy_name("default")
            .send()
            .await
            .unwrap()
            .policy()
            .unwrap()
            .to_owned()
    }

    pub async fn set_key_policy(&self, key: &str, policy: &str) {
        self.kms()
            .put_key_policy()
            .key_id(key)
            .policy_name("default")
            .policy(policy)
            .send()
            .await
            .unwrap();
    }

    pub async fn resource_policy(&self, secret: &str) -> Option<String> {
        self.secrets()
            .get_resource_policy()
            .secret_id(secret)
            .send()
            .await
            .unwrap()
            .resource_policy()
            .map(str::to_owned)
    }

    pub async fn set_resource_policy(&self, secret: &str, policy: &str) {
        self.secrets()
            .put_resource_policy()
            .secret_id(secret)
            .resource_policy(policy)
            .send()
            .await
            .unwrap();
    }

    /// Recorded requests: (X-Amz-Target, decoded body).
    pub fn requests(&self) -> Vec<(String, String)> {
        use base64::Engine;
        let text = std::fs::read_to_string(&self.recording).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|v| {
                let headers = &v["headers"];
                let target = headers
                    .as_object()
                    .and_then(|h| {
                        h.iter()
                            .find(|(k, _)| k.eq_ignore_ascii_case("x-amz-target"))
                    })
                    .and_then(|(_, v)| v.as_str())
                    .unwrap_or("")
                    .to_owned();
                let body = v["body"].as_str().unwrap_or("");
                let body = if v["body_encoded"] == true {
                    String::from_utf8_lossy(
                        &base64::engine::general_purpose::STANDARD
                            .decode(body)
                            .unwrap_or_default(),
                    )
                    .into_owned()
                } else {
                    body.to_owned()
                };
                (target, body)
            })
            .collect()
    }

    /// How many recorded calls of `operation` mention `needle` in their body.
    pub fn calls(&self, operation: &str, needle: &str) -> usize {
        self.requests()
            .iter()
            .filter(|(t, b)| t.ends_with(&format!(".{operation}")) && b.contains(needle))
            .count()
    }

    /// No request so far read a secret's value.
    pub fn assert_no_get_secret_value(&self) {
        let n = self
            .requests()
            .iter()
            .filter(|(t, _)| t.ends_with(".GetSecretValue"))
            .count();
        assert_eq!(
            n, 0,
            "the emulator saw GetSecretValue: the broker must never read a secret's value"
        );
    }
}

/// A fault to inject into the SDK's request pipeline.
#[derive(Debug, Clone)]
pub enum Fault {
    /// The next `times` responses to `op` become ThrottlingException (the request did reach the emulator).
    Throttle { op: &'static str, times: u32 },
    /// Every call of `op` fails before it is sent.
    FailBeforeSend { op: &'static str },
    /// The next call of `op` panics before it is sent: the task running it dies where it stands.
    Crash { op: &'static str },
    /// Every response to `op` becomes this error (the request did reach the emulator).
    Respond {
        op: &'static str,
        status: u16,
        code: &'static str,
        message: &'static str,
    },
    /// After letting `skip` calls of `op` through, every later call fails before it is sent.
    FailBeforeSendAfter { op: &'static str, skip: u32 },
    /// Every call of `op` whose request body contains `needle` (a key ARN: one region's key) fails
    /// before it is sent.
    FailBeforeSendMatching { op: &'static str, needle: String },
    /// Not a fault: fills in what moto leaves out of DescribeSecret for a replicated secret. moto reports
    /// `alias/aws/secretsmanager` as every replica's `KmsKeyId` (DESIGN.md 5); each answer about
    /// `secret` gets the key given for each replica region instead, as AWS would report it.
    ReplicaKeys {
        secret: String,
        keys: Vec<(String, String)>,
    },
    /// After letting `skip` responses to `op` through, the next `times` have `find` replaced by
    /// `replace` in their body: what a concurrent edit of the policy looks like to a read.
    Rewrite {
        op: &'static str,
        skip: u32,
        times: u32,
        find: &'static str,
        replace: &'static str,
    },
}

/// Fault injector: an SDK interceptor, shared with the test that arms it.
#[derive(Debug, Default, Clone)]
pub struct Faults(Arc<Mutex<Vec<Fault>>>);

#[derive(Debug)]
struct RewriteBody {
    find: &'static str,
    replace: &'static str,
}

impl Storable for RewriteBody {
    type Storer = StoreReplace<Self>;
}

#[derive(Debug)]
struct ReplaceResponse {
    status: u16,
    code: &'static str,
    message: &'static str,
}

impl Storable for ReplaceResponse {
    type Storer = StoreReplace<Self>;
}

/// The replica keys to put into this call's DescribeSecret answer: (region, key).
#[derive(Debug)]
struct FillReplicaKeys(Vec<(String, String)>);

impl Storable for FillReplicaKeys {
    type Storer = StoreReplace<Self>;
}

impl Faults {
    pub fn arm(&self, f: Fault) {
        self.0.lock().unwrap().push(f);
    }
    pub fn clear(&self) {
        self.0.lock().unwrap().clear();
    }
}

impl Intercept for Faults {
    fn name(&self) -> &'static str {
        "test-fault-injector"
    }

    fn modify_before_completion(
        &self,
        ctx: &mut aws_smithy_runtime_api::client::interceptors::context::FinalizerInterceptorContextMut<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        use aws_sdk_kms::operation::get_key_policy::GetKeyPolicyOutput;
        use aws_sdk_secretsmanager::operation::describe_secret::DescribeSecretOutput;
        if let Some(FillReplicaKeys(keys)) = cfg.load::<FillReplicaKeys>() {
            let keys = keys.clone();
            cfg.interceptor_state().unset::<FillReplicaKeys>();
            if let Some(Ok(out)) = ctx.output_or_error_mut()
                && let Some(d) = out.downcast_mut::<DescribeSecretOutput>()
            {
                for r in d.replication_status.iter_mut().flatten() {
                    if let Some((_, key)) = keys
                        .iter()
                        .find(|(region, _)| r.region.as_deref() == Some(region))
                    {
                        r.kms_key_id = Some(key.clone());
                    }
                }
            }
        }
        let Some(r) = cfg.load::<RewriteBody>() else {
            return Ok(());
        };
        let (find, replace) = (r.find, r.replace);
        cfg.interceptor_state().unset::<RewriteBody>();
        use aws_sdk_secretsmanager::operation::get_resource_policy::GetResourcePolicyOutput;
        use aws_smithy_runtime_api::client::interceptors::context::Output;
        let Some(Ok(out)) = ctx.output_or_error_mut() else {
            return Ok(());
        };
        if let Some(policy) = out
            .downcast_ref::<GetKeyPolicyOutput>()
            .and_then(|o| o.policy().map(str::to_owned))
        {
            *out = Output::erase(
                GetKeyPolicyOutput::builder()
                    .policy(policy.replace(find, replace))
                    .policy_name("default")
                    .build(),
            );
        } else if let Some(o) = out.downcast_ref::<GetResourcePolicyOutput>()
            && let Some(policy) = o.resource_policy()
        {
            *out = Output::erase(
                GetResourcePolicyOutput::builder()
                    .set_arn(o.arn().map(str::to_owned))
                    .set_name(o.name().map(str::to_owned))
                    .resource_policy(policy.replace(find, replace))
                    .build(),
            );
        }
        Ok(())
    }

    fn read_before_transmit(
        &self,
        ctx: &BeforeTransmitInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let target = ctx
            .request()
            .headers()
            .get("x-amz-target")
            .unwrap_or("")
            .to_owned();
        let mut faults = self.0.lock().unwrap();
        let mut crash = false;
        for f in faults.iter_mut() {
            match f {
                Fault::Throttle { op, times }
                    if target.ends_with(&format!(".{op}")) && *times > 0 =>
                {
                    *times -= 1;
                    cfg.interceptor_state().store_put(ReplaceResponse {
                        status: 400,
                        code: "ThrottlingException",
                        message: "Rate exceeded (injected)",
                    });
                }
                Fault::Respond {
                    op,
                    status,
                    code,
                    message,
                } if target.ends_with(&format!(".{op}")) => {
                    cfg.interceptor_state().store_put(ReplaceResponse {
                        status: *status,
                        code,
                        message,
                    });
                }
                Fault::FailBeforeSendAfter { op, skip } if target.ends_with(&format!(".{op}")) => {
                    if *skip > 0 {
                        *skip -= 1;
                    } else {
                        return Err(format!("injected failure of {op}").into());
                    }
                }
                Fault::Rewrite {
                    op,
                    skip,
                    times,
                    find,
                    replace,
                } if target.ends_with(&format!(".{op}")) => {
                    if *skip > 0 {
                        *skip -= 1;
                    } else if *times > 0 {
                        *times -= 1;
                        cfg.interceptor_state()
                            .store_put(RewriteBody { find, replace });
                    }
                }
                Fault::FailBeforeSendMatching { op, needle }
                    if target.ends_with(&format!(".{op}")) =>
                {
                    let body = ctx.request().body().bytes().unwrap_or_default();
                    if String::from_utf8_lossy(body).contains(needle.as_str()) {
                        return Err(format!("injected failure of {op} on {needle}").into());
                    }
                }
                Fault::ReplicaKeys { secret, keys } if target.ends_with(".DescribeSecret") => {
                    let body = ctx.request().body().bytes().unwrap_or_default();
                    if String::from_utf8_lossy(body).contains(secret.as_str()) {
                        cfg.interceptor_state()
                            .store_put(FillReplicaKeys(keys.clone()));
                    }
                }
                Fault::FailBeforeSend { op } if target.ends_with(&format!(".{op}")) => {
                    return Err(format!("injected failure of {op}").into());
                }
                Fault::Crash { op } if target.ends_with(&format!(".{op}")) => crash = true,
                _ => {}
            }
        }
        if crash {
            faults.retain(|f| !matches!(f, Fault::Crash { .. }));
            drop(faults);
            panic!("injected crash before {target}");
        }
        Ok(())
    }

    fn modify_before_deserialization(
        &self,
        ctx: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(r) = cfg.load::<ReplaceResponse>() {
            let (status, code, message) = (r.status, r.code, r.message);
            cfg.interceptor_state().unset::<ReplaceResponse>();
            let resp = ctx.response_mut();
            *resp.status_mut() = StatusCode::try_from(status).unwrap();
            resp.headers_mut().insert("x-amzn-errortype", code);
            resp.headers_mut()
                .insert("content-type", "application/x-amz-json-1.1");
            *resp.body_mut() =
                SdkBody::from(serde_json::json!({"__type": code, "message": message}).to_string());
        }
        Ok(())
    }
}

/// One held operation of a [`HoldingProxy`]: requests for `op` whose body contains `needle` wait at the
/// proxy (the emulator has not seen them) until [`Hold::release`].
#[derive(Clone)]
pub struct Hold {
    op: &'static str,
    needle: String,
    reached: Arc<tokio::sync::Notify>,
    gate: Arc<tokio::sync::Semaphore>,
}

impl Hold {
    /// Waits (bounded) until a matching request is being held.
    pub async fn reached(&self) {
        tokio::time::timeout(Duration::from_secs(30), self.reached.notified())
            .await
            .unwrap_or_else(|_| panic!("no {} call reached the proxy within 30 s", self.op));
    }

    /// Lets held and later matching requests through.
    pub fn release(&self) {
        self.gate.add_permits(1);
    }
}

/// A loopback proxy in front of the emulator that forwards every request, holds the ones a test asks it
/// to hold, and counts requests per operation and needle. Faults for a real `serve` process (which the
/// interceptor cannot reach) and calls held for as long as a test needs.
#[derive(Clone)]
pub struct HoldingProxy {
    pub url: String,
    upstream: String,
    holds: Arc<Mutex<Vec<Hold>>>,
    seen: Arc<Mutex<Vec<(String, String)>>>,
}

impl HoldingProxy {
    /// Starts a proxy in front of the shared emulator.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let p = HoldingProxy {
            url: format!("http://{}", listener.local_addr().unwrap()),
            upstream: moto().endpoint.clone(),
            holds: Arc::new(Mutex::new(Vec::new())),
            seen: Arc::new(Mutex::new(Vec::new())),
        };
        let state = p.clone();
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let state = state.clone();
            async move { state.forward(req).await }
        });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        p
    }

    /// Holds requests for `op` (e.g. `PutResourcePolicy`) whose body contains `needle`.
    pub fn hold(&self, op: &'static str, needle: &str) -> Hold {
        let h = Hold {
            op,
            needle: needle.to_owned(),
            reached: Arc::new(tokio::sync::Notify::new()),
            gate: Arc::new(tokio::sync::Semaphore::new(0)),
        };
        self.holds.lock().unwrap().push(h.clone());
        h
    }

    /// Stops holding anything (requests already held stay held until released).
    pub fn clear(&self) {
        self.holds.lock().unwrap().clear();
    }

    /// How many requests for `op` whose body contains `needle` were forwarded to the emulator.
    pub fn forwarded(&self, op: &str, needle: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, b)| t.ends_with(&format!(".{op}")) && b.contains(needle))
            .count()
    }

    async fn forward(&self, req: axum::extract::Request) -> axum::response::Response {
        use http_body_util::BodyExt;
        let (parts, body) = req.into_parts();
        let target = parts
            .headers
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let bytes = body.collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let hold = self
            .holds
            .lock()
            .unwrap()
            .iter()
            .find(|h| target.ends_with(&format!(".{}", h.op)) && text.contains(&h.needle))
            .cloned();
        if let Some(h) = hold {
            h.reached.notify_one();
            // A permit is taken and given back: one release lets every held request through.
            drop(h.gate.acquire().await.unwrap());
        }
        self.seen.lock().unwrap().push((target, text));
        let uri = format!(
            "{}{}",
            self.upstream,
            parts
                .uri
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/")
        );
        let mut b = axum::http::Request::builder().method(parts.method).uri(uri);
        for (k, v) in &parts.headers {
            if k != "host" {
                b = b.header(k, v);
            }
        }
        let resp = crate::http::client()
            .request(b.body(http_body_util::Full::new(bytes)).unwrap())
            .await
            .unwrap();
        let (rp, rb) = resp.into_parts();
        let body = rb.collect().await.unwrap().to_bytes();
        axum::response::Response::from_parts(rp, axum::body::Body::from(body))
    }
}
