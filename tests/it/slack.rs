//! Approving from Slack (issue 21). Slack is not reachable from here: the tests sign their callbacks
//! themselves (HMAC-SHA256 of `v0:{timestamp}:{body}`, computed here, not with the broker's code) and
//! run a loopback receiver standing in for the callbacks' `response_url`.

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::Request;
use hmac::{Hmac, Mac};
use secret_broker::config::{Flag, OptText, SecretText};
use secret_broker::domain::Role;
use serde_json::{Value, json};

use crate::harness::{Resp, TestApp, actors, request, share};

const SIGNING: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const SECRET: &str = "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-password-AbCdEf";
const ROLE: &str = "arn:aws:iam::444455556666:role/app-reader";

/// What the loopback `response_url` received, and a count of it to wait on.
#[derive(Clone)]
struct Replies(Arc<Mutex<Vec<Value>>>, tokio::sync::watch::Sender<usize>);

impl Default for Replies {
    fn default() -> Self {
        Self(Arc::default(), tokio::sync::watch::Sender::new(0))
    }
}

impl Replies {
    fn all(&self) -> Vec<Value> {
        self.0.lock().unwrap().clone()
    }

    fn push(&self, v: Value) {
        self.0.lock().unwrap().push(v);
        self.1.send_modify(|n| *n += 1);
    }

    /// Every reply once at least `n` have arrived: the broker posts them in the background after
    /// answering Slack, so a test waits for them (at most 10 s) instead of reading at once.
    async fn wait(&self, n: usize) -> Vec<Value> {
        let mut rx = self.1.subscribe();
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            rx.wait_for(|got| *got >= n),
        )
        .await
        .unwrap_or_else(|_| panic!("fewer than {n} replies within 10 s: {:?}", self.all()))
        .unwrap();
        self.all()
    }
}

async fn receiver() -> (String, Replies) {
    receiver_holding(None).await
}

/// A loopback `response_url`; with `hold`, each request is recorded and then answered only once
/// `hold` is notified (a slow Slack).
async fn receiver_holding(hold: Option<Arc<tokio::sync::Notify>>) -> (String, Replies) {
    let r = Replies::default();
    let state = r.clone();
    let app = axum::Router::new().route(
        "/respond",
        axum::routing::post(move |body: String| {
            let state = state.clone();
            let hold = hold.clone();
            async move {
                state.push(serde_json::from_str(&body).unwrap());
                if let Some(h) = hold {
                    h.notified().await;
                }
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/respond"), r)
}

fn slack_app() -> TestApp {
    TestApp::with(|c| {
        c.slack_signing_secret = SecretText(Some(SIGNING.into()));
        c.slack_allow_loopback_response_url = Flag(true);
        c.webhook_url = OptText(Some("http://127.0.0.1:9/hook".into()));
        c.webhook_secret = SecretText(Some("s3cret".into()));
    })
}

/// The form body Slack posts for a click on `action` of share `id` by `user` of team `T1`.
fn click_body(action: &str, id: &str, user: &str, response_url: &str) -> String {
    let payload = json!({
        "type": "block_actions",
        "user": {"id": user, "username": "display-name-is-not-used", "team_id": "T1"},
        "team": {"id": "T1", "domain": "example"},
        "actions": [{"action_id": action, "block_id": "secret_broker_decision", "value": id, "type": "button"}],
        "response_url": response_url,
    });
    serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap()
}

fn signed(body: &str, ts: i64, secret: &str) -> Request<Body> {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("v0:{ts}:{body}").as_bytes());
    let sig = format!("v0={}", hex::encode(mac.finalize().into_bytes()));
    Request::post("/v1/slack/interactions")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", ts.to_string())
        .header("x-slack-signature", sig)
        .body(Body::from(body.to_owned()))
        .unwrap()
}

fn now(t: &TestApp) -> i64 {
    use secret_broker::domain::Clock;
    t.clock.now().unix_timestamp()
}

async fn link(t: &TestApp, root: &str, user: &str, name: &str) {
    t.post(
        "/v1/slack/links",
        root,
        json!({"team_id": "T1", "user_id": user, "name": name}),
    )
    .await
    .expect(201);
}

async fn click(t: &TestApp, action: &str, id: &str, user: &str, url: &str) -> Resp {
    let body = click_body(action, id, user, url);
    t.raw(signed(&body, now(t), SIGNING)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pending_notification_carries_approve_and_reject_buttons() {
    let t = slack_app();
    let a = actors(&t).await;
    let id = request(&t, &a, SECRET, ROLE, json!({})).await;
    let payload: String = t
        .db()
        .query_row(
            "SELECT payload FROM outbox WHERE share_id = ?1 AND event = 'share.pending'",
            [&id],
            |r| r.get(0),
        )
        .unwrap();
    let p: Value = serde_json::from_str(&payload).unwrap();
    let buttons = &p["blocks"][1]["elements"];
    assert_eq!(buttons[0]["action_id"], "secret_broker_approve");
    assert_eq!(buttons[0]["value"], id.as_str());
    assert_eq!(buttons[1]["action_id"], "secret_broker_reject");
    // Without a signing secret, no buttons.
    let plain = TestApp::with(|c| {
        c.webhook_url = OptText(Some("http://127.0.0.1:9/hook".into()));
        c.webhook_secret = SecretText(Some("s3cret".into()));
    });
    let b = actors(&plain).await;
    request(&plain, &b, SECRET, ROLE, json!({})).await;
    let payload: String = plain
        .db()
        .query_row("SELECT payload FROM outbox", [], |r| r.get(0))
        .unwrap();
    assert!(!payload.contains("blocks"), "{payload}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_click_by_a_linked_approver_approves_and_updates_the_message() {
    let (url, replies) = receiver().await;
    let t = slack_app();
    let a = actors(&t).await;
    link(&t, &a.root, "UBOB", "Bob").await;
    let id = request(&t, &a, SECRET, ROLE, json!({})).await;
    let r = click(&t, "secret_broker_approve", &id, "UBOB", &url).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let s = share(&t, &a, &id).await;
    assert_eq!(s["status"], "approved");
    assert_eq!(s["approvals"][0]["approver"], "bob");
    assert_eq!(s["approvals"][0]["credential"], "slack:T1/UBOB");
    let got = replies.wait(1).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["replace_original"], true);
    assert!(
        got[0]["text"].as_str().unwrap().contains("approved"),
        "{got:?}"
    );
    // One vote per person: Bob's API token cannot vote again after his Slack vote.
    let id2 = request(&t, &a, SECRET, ROLE, json!({})).await;
    let r = click(&t, "secret_broker_reject", &id2, "UBOB", &url).await;
    assert_eq!(r.status, 200);
    assert_eq!(share(&t, &a, &id2).await["status"], "rejected");
    t.post(&format!("/v1/shares/{id2}/approve"), &a.bob, json!({}))
        .await
        .expect(409);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quorum_counts_a_slack_vote_once_per_person() {
    let (url, replies) = receiver().await;
    let t = TestApp::with(|c| {
        c.slack_signing_secret = SecretText(Some(SIGNING.into()));
        c.slack_allow_loopback_response_url = Flag(true);
        c.approval_quorum.0 = 2;
    });
    let a = actors(&t).await;
    link(&t, &a.root, "UBOB", "bob").await;
    let id = request(&t, &a, SECRET, ROLE, json!({})).await;
    assert_eq!(
        click(&t, "secret_broker_approve", &id, "UBOB", &url)
            .await
            .status,
        200
    );
    assert_eq!(share(&t, &a, &id).await["status"], "pending");
    // Bob again, through the API: refused, the share stays pending.
    t.post(&format!("/v1/shares/{id}/approve"), &a.bob, json!({}))
        .await
        .expect(409);
    let carol = t.token("carol", Role::Approver).await;
    t.post(&format!("/v1/shares/{id}/approve"), &carol, json!({}))
        .await
        .expect(200);
    assert_eq!(share(&t, &a, &id).await["status"], "approved");
    assert!(
        replies.wait(1).await[0]["text"]
            .as_str()
            .unwrap()
            .contains("1 of 2")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_old_or_replayed_signature_is_401_and_audited() {
    let (url, replies) = receiver().await;
    let t = slack_app();
    let a = actors(&t).await;
    link(&t, &a.root, "UBOB", "bob").await;
    let id = request(&t, &a, SECRET, ROLE, json!({})).await;
    let body = click_body("secret_broker_approve", &id, "UBOB", &url);
    let refused = |t: &TestApp| {
        t.db()
            .query_row(
                "SELECT count(*) FROM audit WHERE action = 'slack.refused'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .unwrap()
    };
    // Signed with another secret.
    t.raw(signed(&body, now(&t), "not-the-secret"))
        .await
        .expect(401);
    assert_eq!(refused(&t), 1);
    assert_eq!(t.last_audit().2["why"], "bad-signature");
    // The body changed after signing.
    let mut req = signed(&body, now(&t), SIGNING);
    *req.body_mut() = Body::from(body.replace("approve", "reject"));
    t.raw(req).await.expect(401);
    // No signature at all.
    let req = Request::post("/v1/slack/interactions")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(body.clone()))
        .unwrap();
    t.raw(req).await.expect(401);
    // Signed correctly, but more than five minutes old.
    t.raw(signed(&body, now(&t) - 301, SIGNING))
        .await
        .expect(401);
    assert_eq!(t.last_audit().2["why"], "stale-timestamp");
    assert_eq!(share(&t, &a, &id).await["status"], "pending");
    // Signed correctly and fresh: accepted once; the same callback again is a replay.
    let ts = now(&t);
    assert_eq!(t.raw(signed(&body, ts, SIGNING)).await.status, 200);
    assert_eq!(share(&t, &a, &id).await["status"], "approved");
    let r = t.raw(signed(&body, ts, SIGNING)).await.expect(401);
    assert!(r.text.contains("replay"), "{}", r.text);
    assert_eq!(t.last_audit().2["why"], "replayed");
    assert_eq!(
        replies.wait(1).await.len(),
        1,
        "only the accepted callback was answered"
    );
    // Slack approvals off: the endpoint is not there.
    let off = TestApp::new();
    off.raw(signed(&body, now(&off), SIGNING)).await.expect(404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unlinked_slack_user_is_refused_and_only_the_clicker_is_told() {
    let (url, replies) = receiver().await;
    let t = slack_app();
    let a = actors(&t).await;
    let id = request(&t, &a, SECRET, ROLE, json!({})).await;
    // The display name says "bob"; only a link an admin set counts.
    let r = click(&t, "secret_broker_approve", &id, "UNOBODY", &url).await;
    assert_eq!(r.status, 200);
    assert_eq!(share(&t, &a, &id).await["status"], "pending");
    let got = replies.wait(1).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["response_type"], "ephemeral");
    assert_eq!(got[0]["replace_original"], false);
    assert!(
        got[0]["text"].as_str().unwrap().contains("not linked"),
        "{got:?}"
    );
    let (actor, action, details) = t.last_audit();
    assert_eq!(
        (actor.as_str(), action.as_str()),
        ("slack:T1/UNOBODY", "share.refused")
    );
    assert_eq!(details["status"], 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_requesters_own_linked_user_cannot_approve() {
    let (url, replies) = receiver().await;
    let t = slack_app();
    let a = actors(&t).await;
    // Alice also holds an approver token: the role lets the click reach the self-approval ban.
    t.token("alice", Role::Approver).await;
    link(&t, &a.root, "UALICE", "ALICE").await;
    let id = request(&t, &a, SECRET, ROLE, json!({})).await;
    let r = click(&t, "secret_broker_approve", &id, "UALICE", &url).await;
    assert_eq!(r.status, 200);
    assert_eq!(share(&t, &a, &id).await["status"], "pending");
    let got = replies.wait(1).await;
    assert_eq!(got[0]["response_type"], "ephemeral");
    assert!(
        got[0]["text"]
            .as_str()
            .unwrap()
            .contains("requested this share"),
        "{got:?}"
    );
    let (_, action, details) = t.last_audit();
    assert_eq!(action, "share.refused");
    assert_eq!(details["attempted"], "approve (slack)");
    // Nor reject it (the requester cancels instead).
    click(&t, "secret_broker_reject", &id, "UALICE", &url).await;
    assert_eq!(share(&t, &a, &id).await["status"], "pending");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_url_off_slacks_host_is_never_called() {
    let (url, replies) = receiver().await;
    // Without the test setting, the loopback receiver is not Slack's host: the decision is recorded,
    // nothing is posted there.
    let t = TestApp::with(|c| c.slack_signing_secret = SecretText(Some(SIGNING.into())));
    let a = actors(&t).await;
    link(&t, &a.root, "UBOB", "bob").await;
    let id = request(&t, &a, SECRET, ROLE, json!({})).await;
    assert_eq!(
        click(&t, "secret_broker_approve", &id, "UBOB", &url)
            .await
            .status,
        200
    );
    assert_eq!(share(&t, &a, &id).await["status"], "approved");
    assert!(replies.all().is_empty());
}

#[tokio::test]
async fn links_are_set_by_an_admin_only() {
    let t = slack_app();
    let a = actors(&t).await;
    let body = json!({"team_id": "T1", "user_id": "UBOB", "name": "bob"});
    t.post("/v1/slack/links", &a.bob, body.clone())
        .await
        .expect(403);
    t.post("/v1/slack/links", &a.alice, body.clone())
        .await
        .expect(403);
    for bad in [
        json!({"team_id": "t1", "user_id": "UBOB", "name": "bob"}),
        json!({"team_id": "T1", "user_id": "U-BOB", "name": "bob"}),
        json!({"team_id": "T1", "user_id": "UBOB", "name": "bob smith"}),
        json!({"team_id": "T1", "user_id": "UBOB", "name": "system"}),
        json!({"team_id": "T1", "user_id": "UBOB"}),
    ] {
        t.post("/v1/slack/links", &a.root, bad.clone())
            .await
            .expect(422);
    }
    assert_eq!(t.count("slack_links"), 0);
    let r = t.post("/v1/slack/links", &a.root, body).await.expect(201);
    assert_eq!(r.body["name"], "bob");
    assert_eq!(t.last_audit().1, "slack.link_set");
    let l = t.get("/v1/slack/links", &a.root).await.expect(200);
    assert_eq!(l.body["items"][0]["user_id"], "UBOB");
    t.get("/v1/slack/links", &a.bob).await.expect(403);
    t.call(
        axum::http::Method::DELETE,
        "/v1/slack/links/T1/UBOB",
        Some(&a.root),
        None,
    )
    .await
    .expect(204);
    assert_eq!(t.last_audit().1, "slack.link_removed");
    t.call(
        axum::http::Method::DELETE,
        "/v1/slack/links/T1/UBOB",
        Some(&a.root),
        None,
    )
    .await
    .expect(404);
}

#[test]
fn the_signing_secret_is_never_shown() {
    let c = secret_broker::config::Config {
        slack_signing_secret: SecretText(Some(SIGNING.into())),
        ..Default::default()
    };
    assert!(!format!("{c:?}").contains(SIGNING));
    assert_eq!(c.slack_signing_secret.to_string(), "<set>");
}

/// `secret-broker slack link | links | unlink`, the command line's way to set the links.
#[test]
fn the_command_line_sets_and_removes_links() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_secret-broker"));
        c.current_dir(dir.path()).env_remove("RUST_LOG");
        for (k, _) in std::env::vars() {
            if k.starts_with("BROKER_") {
                c.env_remove(k);
            }
        }
        c.args(args).output().unwrap()
    };
    let out = run(&[
        "slack", "link", "--team", "T1", "--user", "UBOB", "--name", "Bob",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Review finding (issue 21): it said "their clicks decide as bob (approver)" of a name with no
    // approver role. It says what the name can do now.
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        said.contains("bob holds no live approver or admin token now"),
        "{said}"
    );
    assert!(!said.contains("(approver)"), "{said}");
    for role in ["requester", "approver"] {
        let out = run(&["tokens", "create", "--name", "bob", "--role", role]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = run(&[
            "slack", "link", "--team", "T1", "--user", "UBOB", "--name", "bob",
        ]);
        let said = String::from_utf8_lossy(&out.stderr).into_owned();
        if role == "requester" {
            assert!(said.contains("bob holds no live approver"), "{said}");
        } else {
            assert!(said.contains("which holds the approver role now"), "{said}");
        }
    }
    let out = run(&[
        "slack",
        "link",
        "--team",
        "T1",
        "--user",
        "UX",
        "--name",
        "oidc:bob\u{200b}",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--name"));
    let out = run(&["slack", "links"]);
    let line: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line["name"], "bob", "stored in its canonical form");
    assert_eq!(
        (line["team_id"].as_str(), line["user_id"].as_str()),
        (Some("T1"), Some("UBOB"))
    );
    assert_eq!(line["created_by"], "cli");
    // A display-name-like id, a reserved name: refused, nothing stored.
    for bad in [
        vec![
            "slack",
            "link",
            "--team",
            "T1",
            "--user",
            "bob smith",
            "--name",
            "bob",
        ],
        vec![
            "slack", "link", "--team", "T1", "--user", "UX", "--name", "system",
        ],
    ] {
        let out = run(&bad);
        assert!(!out.status.success(), "{bad:?}");
    }
    assert_eq!(
        String::from_utf8(run(&["slack", "links"]).stdout)
            .unwrap()
            .lines()
            .count(),
        1
    );
    let out = run(&["slack", "unlink", "--team", "T1", "--user", "UBOB"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(run(&["slack", "links"]).stdout.is_empty());
    assert!(
        !run(&["slack", "unlink", "--team", "T1", "--user", "UBOB"])
            .status
            .success()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_slack_user_relinked_to_a_second_name_still_counts_once() {
    // Review finding: an admin could link one Slack user to "bob", click, relink it to "dave" and click
    // again, meeting a quorum of two alone. The Slack user and the admin who linked it control the vote.
    let (url, replies) = receiver().await;
    let t = TestApp::with(|c| {
        c.slack_signing_secret = SecretText(Some(SIGNING.into()));
        c.slack_allow_loopback_response_url = Flag(true);
        c.approval_quorum.0 = 2;
    });
    let a = actors(&t).await;
    // Both names hold the approver role (a link to a name without it decides nothing).
    t.token("dave", Role::Approver).await;
    link(&t, &a.root, "UONE", "bob").await;
    let id = request(&t, &a, SECRET, ROLE, json!({})).await;
    click(&t, "secret_broker_approve", &id, "UONE", &url)
        .await
        .expect(200);
    replies.wait(1).await;
    link(&t, &a.root, "UONE", "dave").await;
    // A later click (another timestamp, so not a replay).
    t.clock.advance(std::time::Duration::from_secs(1));
    click(&t, "secret_broker_approve", &id, "UONE", &url)
        .await
        .expect(200);
    let s = share(&t, &a, &id).await;
    assert_eq!(s["status"], "pending", "{s}");
    assert_eq!(s["approvals"].as_array().unwrap().len(), 1, "{s}");
    let got = replies.wait(2).await;
    assert_eq!(got[1]["response_type"], "ephemeral", "{got:?}");
    assert!(
        got[1]["text"]
            .as_str()
            .unwrap()
            .contains("could have cast both"),
        "{got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slack_user_linked_by_the_requester_cannot_approve() {
    // The admin who sets a link chooses whom the Slack user votes as: an admin requester cannot approve
    // their own share through a Slack user they linked to another name.
    let (url, _replies) = receiver().await;
    let t = slack_app();
    let a = actors(&t).await;
    link(&t, &a.root, "UBOB", "bob").await;
    let id = t
        .post(
            "/v1/shares",
            &a.root,
            json!({"secret_arn": SECRET, "principal_arn": ROLE, "justification": "test"}),
        )
        .await
        .expect(201)
        .body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    click(&t, "secret_broker_approve", &id, "UBOB", &url)
        .await
        .expect(200);
    let s = share(&t, &a, &id).await;
    assert_eq!(s["status"], "pending", "{s}");
    assert!(s["approvals"].as_array().unwrap().is_empty(), "{s}");
    assert_eq!(t.last_audit().1, "share.refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_with_the_signature_in_upper_case_is_still_a_replay() {
    let (url, _replies) = receiver().await;
    let t = slack_app();
    let a = actors(&t).await;
    link(&t, &a.root, "UBOB", "bob").await;
    let id = request(&t, &a, SECRET, ROLE, json!({})).await;
    let body = click_body("secret_broker_reject", &id, "UBOB", &url);
    let ts = now(&t);
    t.raw(signed(&body, ts, SIGNING)).await.expect(200);
    let mut again = signed(&body, ts, SIGNING);
    let sig = again.headers()["x-slack-signature"]
        .to_str()
        .unwrap()
        .to_owned();
    let upper = format!("v0={}", sig.trim_start_matches("v0=").to_ascii_uppercase());
    again
        .headers_mut()
        .insert("x-slack-signature", upper.parse().unwrap());
    t.raw(again).await.expect(401);
}

/// The last `share.refused` row: (actor, attempted, status).
fn last_refusal(t: &TestApp) -> (String, String, i64) {
    let (actor, action, details) = t.last_audit();
    assert_eq!(action, "share.refused", "{details}");
    (
        actor,
        details["attempted"].as_str().unwrap().to_owned(),
        details["status"].as_i64().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linked_name_without_a_live_approver_credential_cannot_decide() {
    // Review finding: a link made the Slack user an approver whatever the linked name held. A click
    // counts only while the name holds the approver or admin role through a live credential.
    let (url, replies) = receiver().await;
    let t = slack_app();
    let a = actors(&t).await;
    t.token("carol", Role::Requester).await;
    let erin = t
        .post(
            "/v1/tokens",
            &a.root,
            json!({"name": "erin", "role": "approver", "expires_in": "1h"}),
        )
        .await
        .expect(201);
    assert!(erin.body["token"].is_string());
    // carol: the requester role only; dave: no token at all; oidc:nobody: no signed-in OIDC identity
    // with the role; erin: an approver token that expires in an hour.
    for (user, name) in [
        ("UCAROL", "carol"),
        ("UDAVE", "dave"),
        ("UOIDC", "oidc:nobody"),
        ("UERIN", "erin"),
        ("UBOB", "bob"),
    ] {
        link(&t, &a.root, user, name).await;
    }
    let id = request(&t, &a, SECRET, ROLE, json!({})).await;
    t.clock.advance(std::time::Duration::from_secs(2 * 3600));
    let mut n = 0;
    for (user, name) in [
        ("UCAROL", "carol"),
        ("UDAVE", "dave"),
        ("UOIDC", "oidc:nobody"),
        ("UERIN", "erin"),
    ] {
        for action in ["secret_broker_approve", "secret_broker_reject"] {
            click(&t, action, &id, user, &url).await.expect(200);
            n += 1;
            let got = replies.wait(n).await;
            let last = &got[n - 1];
            assert_eq!(last["response_type"], "ephemeral", "{user}: {got:?}");
            assert_eq!(last["replace_original"], false, "{user}: {got:?}");
            assert!(
                last["text"].as_str().unwrap().contains("approver or admin"),
                "{user}: {got:?}"
            );
            let (actor, attempted, status) = last_refusal(&t);
            assert_eq!(actor, name);
            assert!(attempted.ends_with("(slack)"), "{attempted}");
            assert_eq!(status, 403);
        }
    }
    let s = share(&t, &a, &id).await;
    assert_eq!(s["status"], "pending", "{s}");
    assert!(s["approvals"].as_array().unwrap().is_empty(), "{s}");

    // Bob's approver token is live: his click counts; once it is revoked, his next click does not.
    click(&t, "secret_broker_approve", &id, "UBOB", &url)
        .await
        .expect(200);
    n += 1;
    assert_eq!(replies.wait(n).await[n - 1]["replace_original"], true);
    assert_eq!(share(&t, &a, &id).await["status"], "approved");
    let second = request(&t, &a, SECRET, ROLE, json!({})).await;
    let bob_id = a.bob.split('_').nth(1).unwrap();
    t.post_empty(&format!("/v1/tokens/{bob_id}/revoke"), &a.root)
        .await
        .expect(204);
    click(&t, "secret_broker_approve", &second, "UBOB", &url)
        .await
        .expect(200);
    n += 1;
    let got = replies.wait(n).await;
    assert_eq!(got[n - 1]["response_type"], "ephemeral", "{got:?}");
    assert_eq!(last_refusal(&t).0, "bob");
    assert_eq!(share(&t, &a, &second).await["status"], "pending");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_click_racing_an_unlink_does_not_vote_as_the_unlinked_name() {
    // Review finding: the link was read before the vote's transaction, so a click whose link an admin
    // removed in between still voted as the unlinked name. The click is held just before its vote is
    // written (a test gate), the link removed meanwhile, then the click goes on.
    let (url, replies) = receiver().await;
    let t = slack_app();
    let a = actors(&t).await;
    link(&t, &a.root, "URACE", "bob").await;
    let id = request(&t, &a, SECRET, ROLE, json!({})).await;
    let (reached_tx, reached) = tokio::sync::oneshot::channel();
    let (release, release_rx) = tokio::sync::oneshot::channel();
    secret_broker::api::slack::testing::hold_before_vote("URACE", reached_tx, release_rx);
    let body = click_body("secret_broker_approve", &id, "URACE", &url);
    let pending = tokio::spawn(t.send(signed(&body, now(&t), SIGNING), crate::harness::LOOPBACK));
    tokio::time::timeout(std::time::Duration::from_secs(10), reached)
        .await
        .expect("the click reached the gate within 10 s")
        .unwrap();
    t.call(
        axum::http::Method::DELETE,
        "/v1/slack/links/T1/URACE",
        Some(&a.root),
        None,
    )
    .await
    .expect(204);
    release.send(()).unwrap();
    let resp = tokio::time::timeout(std::time::Duration::from_secs(10), pending)
        .await
        .expect("the click was answered within 10 s")
        .unwrap();
    assert_eq!(resp.status(), 200);
    let s = share(&t, &a, &id).await;
    assert_eq!(s["status"], "pending", "{s}");
    assert!(s["approvals"].as_array().unwrap().is_empty(), "{s}");
    let got = replies.wait(1).await;
    assert_eq!(got[0]["response_type"], "ephemeral", "{got:?}");
    assert!(
        got[0]["text"].as_str().unwrap().contains("not linked"),
        "{got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_gets_its_answer_before_the_message_is_updated() {
    // Slack wants the 200 within 3 s: a slow response_url must not hold it. This receiver answers only
    // when released; the click is answered first, and the update still arrives.
    let hold = Arc::new(tokio::sync::Notify::new());
    let (url, replies) = receiver_holding(Some(hold.clone())).await;
    let t = slack_app();
    let a = actors(&t).await;
    link(&t, &a.root, "UBOB", "bob").await;
    let id = request(&t, &a, SECRET, ROLE, json!({})).await;
    let r = tokio::time::timeout(
        std::time::Duration::from_secs(3),
        click(&t, "secret_broker_approve", &id, "UBOB", &url),
    )
    .await
    .expect("Slack's callback answered within 3 s while its response_url hangs");
    assert_eq!(r.status, 200);
    assert_eq!(share(&t, &a, &id).await["status"], "approved");
    let got = replies.wait(1).await;
    assert_eq!(got[0]["replace_original"], true, "{got:?}");
    hold.notify_waiters();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oidc_name_decides_only_while_signed_in_with_an_approver_role() {
    // The broker keeps no role of an OIDC identity but in its console sessions: an `oidc:` link decides
    // while a session signed in through OIDC as that name has not ended and its roles claim maps, under
    // the role map in force, to approver or admin.
    let (url, replies) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let t = TestApp::with(|c| {
        c.slack_signing_secret = SecretText(Some(SIGNING.into()));
        c.slack_allow_loopback_response_url = Flag(true);
        crate::jwt::configure_file(c, dir.path());
        c.oidc_role_map = "idp-approvers=approver,idp-requesters=requester"
            .parse()
            .unwrap();
        c.oidc_client_id = OptText(Some("broker-console".into()));
        c.oidc_client_secret = SecretText(Some("console-secret".into()));
        c.oidc_redirect_url = OptText(Some("http://127.0.0.1:1/console/oidc/callback".into()));
        c.oidc_authorization_endpoint = OptText(Some("http://127.0.0.1:1/authorize".into()));
        c.oidc_token_endpoint = OptText(Some("http://127.0.0.1:1/token".into()));
    });
    let a = actors(&t).await;
    link(&t, &a.root, "UDANA", "oidc:dana").await;
    let id = request(&t, &a, SECRET, ROLE, json!({})).await;
    // A session as the console's OIDC sign-in stores it (sessions.rs, oidc_logins.rs).
    let session = |hash: &str, values: &str, expires_at: &str| {
        t.db()
            .execute(
                "INSERT INTO console_sessions (id_hash, token_id, csrf, created_at, expires_at, \
                 oidc_name, oidc_role, oidc_credential, oidc_role_values) \
                 VALUES (?1, 'oidc', 'csrf', '2026-11-29T12:00:00Z', ?2, 'oidc:dana', 'approver', \
                 'oidc:dana', ?3)",
                [hash, expires_at, values],
            )
            .unwrap();
    };
    // No session; then one whose claim maps to requester; then an approver's that has ended.
    let mut n = 0;
    for step in 0..3 {
        match step {
            1 => session("h1", r#"["idp-requesters"]"#, "2026-11-29T20:00:00Z"),
            2 => session("h2", r#"["idp-approvers"]"#, "2026-11-29T11:59:59Z"),
            _ => {}
        }
        t.clock.advance(std::time::Duration::from_secs(1));
        click(&t, "secret_broker_approve", &id, "UDANA", &url)
            .await
            .expect(200);
        n += 1;
        let got = replies.wait(n).await;
        assert_eq!(got[n - 1]["response_type"], "ephemeral", "{step}: {got:?}");
        assert!(
            got[n - 1]["text"]
                .as_str()
                .unwrap()
                .contains("approver or admin"),
            "{step}: {got:?}"
        );
        assert_eq!(share(&t, &a, &id).await["status"], "pending");
    }
    // Signed in with an approver's claim: the click counts, as oidc:dana.
    session("h3", r#"["idp-approvers"]"#, "2026-11-29T20:00:00Z");
    t.clock.advance(std::time::Duration::from_secs(1));
    click(&t, "secret_broker_approve", &id, "UDANA", &url)
        .await
        .expect(200);
    let s = share(&t, &a, &id).await;
    assert_eq!(s["status"], "approved", "{s}");
    assert_eq!(s["approvals"][0]["approver"], "oidc:dana");
    assert_eq!(s["approvals"][0]["credential"], "slack:T1/UDANA");
    assert_eq!(replies.wait(n + 1).await[n]["replace_original"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approver_token_issued_by_the_requester_does_not_qualify_a_slack_vote() {
    // Review finding (issue 21): hank holds the requester role only; dave (admin) issues hank an
    // approver token and requests a share. Through the API that token cannot approve dave's share;
    // hank's Slack click could, because any live approver token of the name qualified it.
    let (url, replies) = receiver().await;
    let t = TestApp::with(|c| {
        c.slack_signing_secret = SecretText(Some(SIGNING.into()));
        c.slack_allow_loopback_response_url = Flag(true);
        c.approval_quorum.0 = 2;
    });
    let a = actors(&t).await;
    t.token("hank", Role::Requester).await;
    let dave = t.token("dave", Role::Admin).await;
    let carol = t.token("carol", Role::Admin).await;
    link(&t, &a.root, "UHANK", "hank").await;
    let hank = t
        .post(
            "/v1/tokens",
            &dave,
            json!({"name": "hank", "role": "approver", "same_person": true}),
        )
        .await
        .expect(201);
    let hank = hank.body["token"].as_str().unwrap().to_owned();
    let id = t
        .post(
            "/v1/shares",
            &dave,
            json!({"secret_arn": SECRET, "principal_arn": ROLE, "justification": "test"}),
        )
        .await
        .expect(201)
        .body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    t.post(&format!("/v1/shares/{id}/approve"), &hank, json!({}))
        .await
        .expect(403);
    click(&t, "secret_broker_approve", &id, "UHANK", &url)
        .await
        .expect(200);
    let got = replies.wait(1).await;
    assert_eq!(got[0]["response_type"], "ephemeral", "{got:?}");
    assert!(got[0]["text"].as_str().unwrap().contains("dave"), "{got:?}");
    let s = share(&t, &a, &id).await;
    assert!(s["approvals"].as_array().unwrap().is_empty(), "{s}");
    let (actor, _, status) = last_refusal(&t);
    assert_eq!((actor.as_str(), status), ("hank", 403));

    // An approver token carol issued qualifies hank's click; carol controls that vote, so it and
    // carol's own approval count once: hers is refused, the share stays pending.
    t.post(
        "/v1/tokens",
        &carol,
        json!({"name": "hank", "role": "approver", "same_person": true}),
    )
    .await
    .expect(201);
    t.clock.advance(std::time::Duration::from_secs(1));
    click(&t, "secret_broker_approve", &id, "UHANK", &url)
        .await
        .expect(200);
    assert_eq!(replies.wait(2).await[1]["replace_original"], true);
    t.post(&format!("/v1/shares/{id}/approve"), &carol, json!({}))
        .await
        .expect(409);
    assert_eq!(share(&t, &a, &id).await["status"], "pending");
    t.post(&format!("/v1/shares/{id}/approve"), &a.bob, json!({}))
        .await
        .expect(200);
    assert_eq!(share(&t, &a, &id).await["status"], "approved");
}

#[tokio::test]
async fn with_slack_approvals_off_a_callback_gets_what_the_openapi_document_says() {
    // Review finding (issue 21): with Slack approvals off, a callback without signature headers got a
    // 401 the OpenAPI document did not mention (it said 404). The headers are required: without them
    // it is 401 whether or not approvals are on; with them, 404 while they are off.
    let t = TestApp::new();
    let spec: Value = serde_json::from_str(&secret_broker::api::openapi_json()).unwrap();
    let responses = &spec["paths"]["/v1/slack/interactions"]["post"]["responses"];
    let unsigned = Request::post("/v1/slack/interactions")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from("payload=%7B%7D"))
        .unwrap();
    t.raw(unsigned).await.expect(401);
    let said = responses["401"]["description"].as_str().unwrap();
    assert!(
        said.contains("whether or not Slack approvals are on"),
        "{said}"
    );
    let r = t
        .raw(signed("payload=%7B%7D", now(&t), SIGNING))
        .await
        .expect(404);
    assert!(r.text.contains("slack_signing_secret"), "{}", r.text);
    let said = responses["404"]["description"].as_str().unwrap();
    assert!(said.contains("both signature headers"), "{said}");
}

#[tokio::test]
async fn a_link_name_with_a_blank_subject_or_an_invisible_character_is_refused() {
    let t = slack_app();
    let a = actors(&t).await;
    for name in [
        "oidc:",
        "oidc:  ",
        "oidc:\u{200b}",
        "oidc:bob\u{200b}",
        "oidc: bob",
        "oidc:bob\u{2060}",
        "oidc:bob\u{0}",
        "bob\u{200b}",
    ] {
        let r = t
            .post(
                "/v1/slack/links",
                &a.root,
                json!({"team_id": "T1", "user_id": "UBOB", "name": name}),
            )
            .await
            .expect(422);
        assert_eq!(r.body["errors"][0]["field"], "name", "{name:?}: {}", r.text);
    }
    assert_eq!(t.count("slack_links"), 0);
    link(&t, &a.root, "UBOB", "oidc:bob smith|1").await;
}

#[tokio::test]
async fn a_slack_user_linked_by_the_requesters_stand_in_admin_cannot_approve() {
    // Review finding (issue 21, second round): rita (admin) issues an admin token to a stand-in name,
    // lena; as lena she links her own Slack user to bob, an approver, and approves her own share from
    // Slack. The admin who set a link controls the vote, and so does whoever issued that admin's token.
    let (url, replies) = receiver().await;
    let t = TestApp::with(|c| {
        c.slack_signing_secret = SecretText(Some(SIGNING.into()));
        c.slack_allow_loopback_response_url = Flag(true);
    });
    let a = actors(&t).await;
    let rita = t.token("rita", Role::Admin).await;
    let lena = t
        .post(
            "/v1/tokens",
            &rita,
            json!({"name": "lena", "role": "admin", "same_person": true}),
        )
        .await
        .expect(201);
    let lena = lena.body["token"].as_str().unwrap().to_owned();
    link(&t, &lena, "URITA", "bob").await;
    let id = t
        .post(
            "/v1/shares",
            &rita,
            json!({"secret_arn": SECRET, "principal_arn": ROLE, "justification": "test"}),
        )
        .await
        .expect(201)
        .body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    click(&t, "secret_broker_approve", &id, "URITA", &url)
        .await
        .expect(200);
    let got = replies.wait(1).await;
    assert_eq!(got[0]["response_type"], "ephemeral", "{got:?}");
    let s = share(&t, &a, &id).await;
    assert!(s["approvals"].as_array().unwrap().is_empty(), "{s}");
    assert_eq!(s["status"], "pending");
}

#[tokio::test]
async fn a_slack_vote_stays_controlled_by_its_token_issuer_after_that_token_is_revoked() {
    // Review finding (issue 21, second round): carol's approver token qualifies hank's Slack vote, so
    // carol controls it; once that token is revoked, carol's own vote must still count as the same
    // controller's (the vote recorded does not change with the token's later state).
    let (url, replies) = receiver().await;
    let t = TestApp::with(|c| {
        c.slack_signing_secret = SecretText(Some(SIGNING.into()));
        c.slack_allow_loopback_response_url = Flag(true);
        c.approval_quorum.0 = 2;
    });
    let a = actors(&t).await;
    t.token("hank", Role::Requester).await;
    let carol = t.token("carol", Role::Admin).await;
    link(&t, &a.root, "UHANK", "hank").await;
    let issued = t
        .post(
            "/v1/tokens",
            &carol,
            json!({"name": "hank", "role": "approver", "same_person": true}),
        )
        .await
        .expect(201);
    let issued_id = issued.body["id"].as_str().unwrap().to_owned();
    let id = request(&t, &a, SECRET, ROLE, json!({})).await;
    click(&t, "secret_broker_approve", &id, "UHANK", &url)
        .await
        .expect(200);
    assert_eq!(replies.wait(1).await[0]["replace_original"], true);
    assert_eq!(
        share(&t, &a, &id).await["approvals"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    t.post(&format!("/v1/tokens/{issued_id}/revoke"), &carol, json!({}))
        .await
        .expect(204);
    t.post(&format!("/v1/shares/{id}/approve"), &carol, json!({}))
        .await
        .expect(409);
    assert_eq!(share(&t, &a, &id).await["status"], "pending");
    t.post(&format!("/v1/shares/{id}/approve"), &a.bob, json!({}))
        .await
        .expect(200);
    assert_eq!(share(&t, &a, &id).await["status"], "approved");
}
