//! Who is who (issue 14): each finding of the adversarial run, reproduced and shown refused or fixed.
//!
//! 1. an admin meeting the quorum on their own request with tokens they minted under others' names;
//! 2. names compared with their letter case (self-approval, one vote per person, reserved names);
//! 3. requester markup in the webhook's `text`;
//! 4. refused token and principal operations leaving no audit row;
//! 5. refusal rows keeping the share id as typed;
//! 6. refusals of a signed-in caller never coalesced;
//! 7. a raw `X-Request-Id` in the log span, and log and audit disagreeing;
//! 8. the last admin token revoking itself;
//! 9. `/metrics` open to anyone.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request};
use secret_broker::config::{OptText, SecretText};
use secret_broker::domain::Role::*;
use serde_json::{Value, json};

use crate::harness::TestApp;
use crate::jwt;

fn token_id(token: &str) -> String {
    token.split('_').nth(1).unwrap().to_owned()
}

/// Audit rows of one action: (actor, share_id, details), in order.
fn rows_of(t: &TestApp, action: &str) -> Vec<(String, Option<String>, Value)> {
    let db = t.db();
    let mut s = db
        .prepare("SELECT actor, share_id, details FROM audit WHERE action = ?1 ORDER BY seq")
        .unwrap();
    s.query_map([action], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, Option<String>>(1)?,
            r.get::<_, String>(2)?,
        ))
    })
    .unwrap()
    .map(|r| {
        let (a, s, d) = r.unwrap();
        (a, s, serde_json::from_str(&d).unwrap())
    })
    .collect()
}

fn detail(r: &crate::harness::Resp) -> String {
    r.body["detail"].as_str().unwrap().to_owned()
}

/// Finding 1: with quorum 3, an admin requests a share and mints approver tokens named after real
/// users (bob, dave, erin). Minting under names others hold needs `same_person`, and the audit row
/// says so; and no token the requester minted can approve the request, whatever its name.
#[tokio::test]
async fn an_admin_cannot_meet_the_quorum_on_their_own_request() {
    let t = TestApp::with(|c| c.approval_quorum.0 = 3);
    let root = t.token("root", Admin).await;
    // The real bob, dave and erin, issued through the command line.
    let bob = t.token("bob", Approver).await;
    let dave = t.token("dave", Approver).await;
    t.token("erin", Approver).await;
    let id = t.request_share(&root).await;

    // Without same_person, a name someone else holds is refused, saying what to do; audited.
    let r = t
        .post(
            "/v1/tokens",
            &root,
            json!({"name": "bob", "role": "approver"}),
        )
        .await
        .expect(409);
    assert!(detail(&r).contains("same_person"), "{}", r.text);
    assert!(detail(&r).contains(&token_id(&bob)), "{}", r.text);
    let refused = rows_of(&t, "token.refused");
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].0, "root");
    assert_eq!(refused[0].2["attempted"], "create");
    assert_eq!(refused[0].2["status"], 409);
    // Case does not make it another name.
    t.post(
        "/v1/tokens",
        &root,
        json!({"name": "Dave", "role": "approver"}),
    )
    .await
    .expect(409);

    // With same_person the admin can mint them (the audit row records the claim)...
    let mut minted = Vec::new();
    for name in ["bob", "DAVE", "erin"] {
        let r = t
            .post(
                "/v1/tokens",
                &root,
                json!({"name": name, "role": "approver", "same_person": true}),
            )
            .await
            .expect(201);
        assert_eq!(r.body["name"], name.to_lowercase());
        assert_eq!(r.body["created_by"], "root");
        minted.push(r.body["token"].as_str().unwrap().to_owned());
    }
    let created = rows_of(&t, "token.created");
    let by_root: Vec<_> = created.iter().filter(|(a, _, _)| a == "root").collect();
    assert_eq!(by_root.len(), 3);
    for (_, _, d) in &by_root {
        assert_eq!(d["same_person"], true);
        assert_eq!(d["name_already_held_by"].as_array().unwrap().len(), 1);
    }
    // ...but none of them can approve root's request, and each refusal says why.
    for tok in &minted {
        let r = t
            .post_empty(&format!("/v1/shares/{id}/approve"), tok)
            .await
            .expect(403);
        let d = detail(&r);
        assert!(
            d.contains("issued by root") && d.contains("requested"),
            "{d}"
        );
    }
    // Fresh names do not help either, nor a second admin name in between.
    let r = t
        .post(
            "/v1/tokens",
            &root,
            json!({"name": "root2", "role": "admin"}),
        )
        .await
        .expect(201);
    let root2 = r.body["token"].as_str().unwrap().to_owned();
    let r = t
        .post(
            "/v1/tokens",
            &root2,
            json!({"name": "x-1", "role": "approver"}),
        )
        .await
        .expect(201);
    let laundered = r.body["token"].as_str().unwrap().to_owned();
    let r = t
        .post_empty(&format!("/v1/shares/{id}/approve"), &laundered)
        .await
        .expect(403);
    assert!(
        detail(&r).contains("through tokens they issued"),
        "{}",
        r.text
    );
    t.post_empty(&format!("/v1/shares/{id}/approve"), &root2)
        .await
        .expect(403);

    let share = t.get(&format!("/v1/shares/{id}"), &root).await.expect(200);
    assert_eq!(share.body["status"], "pending");
    assert!(share.body["approvals"].as_array().unwrap().is_empty());

    // The real bob and dave can; each vote records the credential that cast it and its issuer.
    t.post_empty(&format!("/v1/shares/{id}/approve"), &bob)
        .await
        .expect(200);
    let share = t
        .post_empty(&format!("/v1/shares/{id}/approve"), &dave)
        .await
        .expect(200)
        .body;
    let votes = share["approvals"].as_array().unwrap();
    assert_eq!(votes[0]["approver"], "bob");
    assert_eq!(votes[0]["credential"], token_id(&bob));
    assert_eq!(votes[0]["issued_by"], "cli");
    assert_eq!(votes[1]["credential"], token_id(&dave));
    let recorded = rows_of(&t, "share.approval_recorded");
    assert_eq!(recorded[0].2["credential"], token_id(&bob));
    assert_eq!(recorded[0].2["issued_by"], "cli");
    // Every refused vote is in the log, under the canonical share id.
    let refusals = rows_of(&t, "share.refused");
    assert_eq!(refusals.len(), 5);
    assert!(refusals.iter().all(|(_, s, _)| s.as_deref() == Some(&*id)));
}

/// Finding 1, OIDC side: a JWT's vote records `oidc:<sub>` and no issuer; the admin cannot mint one.
#[tokio::test]
async fn an_oidc_vote_records_its_subject() {
    let dir = tempfile::tempdir().unwrap();
    let t = TestApp::with(|c| jwt::configure_file(c, dir.path()));
    let root = t.token("root", Admin).await;
    let id = t.request_share(&root).await;
    let now = t.app.clock.now().unix_timestamp();
    let jwt = jwt::token(now, "Frank@Corp.example", &["approver"]);
    let share = t
        .post_empty(&format!("/v1/shares/{id}/approve"), &jwt)
        .await
        .expect(200)
        .body;
    let vote = &share["approvals"][0];
    assert_eq!(vote["approver"], "oidc:frank@corp.example");
    assert_eq!(vote["credential"], "oidc:Frank@Corp.example");
    assert_eq!(vote["issued_by"], Value::Null);
}

/// Finding 2: `Alice` is `alice` for self-approval, one vote per person and the quorum; reserved
/// names are refused in any case or width; OIDC names too.
#[tokio::test]
async fn names_are_compared_without_regard_to_case_or_width() {
    let dir = tempfile::tempdir().unwrap();
    let t = TestApp::with(|c| {
        c.approval_quorum.0 = 2;
        jwt::configure_file(c, dir.path());
    });
    let root = t.token("root", Admin).await;
    let alice = t.token("alice", Requester).await;
    let id = t.request_share(&alice).await;
    // An approver token named Alice is alice.
    let big_alice = t.token("Alice", Approver).await;
    let r = t
        .post_empty(&format!("/v1/shares/{id}/approve"), &big_alice)
        .await
        .expect(403);
    assert!(
        detail(&r).contains("alice requested this share"),
        "{}",
        r.text
    );
    // Carol and CAROL are one approver: the second vote is refused, the quorum not met.
    let carol = t.token("Carol", Approver).await;
    let carol2 = t.token("CAROL", Approver).await;
    t.post_empty(&format!("/v1/shares/{id}/approve"), &carol)
        .await
        .expect(200);
    let r = t
        .post_empty(&format!("/v1/shares/{id}/approve"), &carol2)
        .await
        .expect(409);
    assert!(detail(&r).contains("already voted"), "{}", r.text);
    let share = t.get(&format!("/v1/shares/{id}"), &root).await.expect(200);
    assert_eq!(share.body["status"], "pending");
    assert_eq!(share.body["approvals"].as_array().unwrap().len(), 1);
    assert_eq!(share.body["approvals"][0]["approver"], "carol");

    // OIDC names fold too (NFKC and case): ＣＡＲＯＬ (fullwidth) is oidc:carol, and so is Carol.
    let now = t.app.clock.now().unix_timestamp();
    let a = jwt::token(now, "Carol", &["approver"]);
    let b = jwt::token(now, "ＣＡＲＯＬ", &["approver"]);
    t.post_empty(&format!("/v1/shares/{id}/approve"), &a)
        .await
        .expect(200);
    let share = t.get(&format!("/v1/shares/{id}"), &root).await.expect(200);
    assert_eq!(share.body["status"], "approved", "{}", share.text);
    let id2 = t.request_share(&alice).await;
    t.post_empty(&format!("/v1/shares/{id2}/approve"), &a)
        .await
        .expect(200);
    t.post_empty(&format!("/v1/shares/{id2}/approve"), &b)
        .await
        .expect(409);
    // A JWT whose name folds to the requester's is the requester (oidc:alice vs alice are different
    // authorities, so use an OIDC requester).
    let oidc_req = jwt::token(now, "Dora", &["requester"]);
    let id3 = t.request_share(&oidc_req).await;
    let r = t
        .post_empty(
            &format!("/v1/shares/{id3}/approve"),
            &jwt::token(now, "DORA", &["approver"]),
        )
        .await
        .expect(403);
    assert!(detail(&r).contains("oidc:dora requested"), "{}", r.text);

    // Reserved names, any case or width, through the API.
    for name in ["CLI", "Anonymous", "System", "cli"] {
        let r = t
            .post(
                "/v1/tokens",
                &root,
                json!({"name": name, "role": "auditor"}),
            )
            .await
            .expect(422);
        assert_eq!(r.body["errors"][0]["field"], "name");
        assert!(r.text.contains("reserved"), "{}", r.text);
    }
}

/// Finding 3: the webhook's `text` escapes `&`, `<`, `>` and folds newlines of user-given fields; the
/// structured fields keep them verbatim.
#[tokio::test]
async fn webhook_text_carries_no_markup_from_the_requester() {
    let t = TestApp::with(|c| {
        c.webhook_url = OptText(Some("http://127.0.0.1:9/hook".into()));
        c.webhook_secret = SecretText(Some("s3cret".into()));
    });
    let alice = t.token("alice", Requester).await;
    let justification = "billing <!channel>\n<https://evil.example/approve|Click here to approve> & more\r\nApproved by bob";
    let r = t
        .post(
            "/v1/shares",
            &alice,
            json!({"secret_arn": crate::harness::SECRET, "principal_arn": crate::harness::ROLE,
                   "justification": justification}),
        )
        .await
        .expect(201);
    let id = r.body["id"].as_str().unwrap().to_owned();
    let payload: String = t
        .db()
        .query_row(
            "SELECT payload FROM outbox WHERE share_id = ?1 AND event = 'share.pending'",
            [&id],
            |r| r.get(0),
        )
        .unwrap();
    let p: Value = serde_json::from_str(&payload).unwrap();
    let text = p["text"].as_str().unwrap();
    assert!(!text.contains('<') && !text.contains('>'), "{text}");
    assert!(!text.contains('\n') && !text.contains('\r'), "{text}");
    assert!(
        text.contains("billing &lt;!channel&gt; &lt;https://evil.example/approve|Click here to approve&gt; &amp; more Approved by bob"),
        "{text}"
    );
    // Verbatim where it is data.
    assert_eq!(p["detail"], format!("requested by alice: {justification}"));
    let share = t.get(&format!("/v1/shares/{id}"), &alice).await.expect(200);
    assert_eq!(share.body["justification"], justification);
}

/// Finding 4: refused token and principal operations are audit rows, like share refusals.
#[tokio::test]
async fn refused_token_and_principal_operations_are_audited() {
    let t = TestApp::new();
    let alice = t.token("alice", Requester).await;
    let bob = t.token("bob", Approver).await;
    let victim = t.token("victim", Auditor).await;
    t.post(
        "/v1/tokens",
        &alice,
        json!({"name": "alice2", "role": "admin"}),
    )
    .await
    .expect(403);
    t.get("/v1/tokens", &alice).await.expect(403);
    t.post_empty(&format!("/v1/tokens/{}/revoke", token_id(&victim)), &alice)
        .await
        .expect(403);
    t.post(
        "/v1/principals",
        &bob,
        json!({"arn": "arn:aws:iam::444455556666:role/sneaky"}),
    )
    .await
    .expect(403);
    let tokens = rows_of(&t, "token.refused");
    let attempts: Vec<(&str, &str, Value)> = tokens
        .iter()
        .map(|(a, _, d)| {
            (
                a.as_str(),
                d["attempted"].as_str().unwrap(),
                d["target"].clone(),
            )
        })
        .collect();
    assert_eq!(
        attempts,
        vec![
            ("alice", "create", json!("alice2 (admin)")),
            ("alice", "list", Value::Null),
            ("alice", "revoke", json!(token_id(&victim))),
        ]
    );
    assert!(tokens.iter().all(
        |(_, _, d)| d["status"] == 403 && d["reason"].as_str().unwrap().contains("admin role")
    ));
    let principals = rows_of(&t, "principal.refused");
    assert_eq!(principals.len(), 1);
    assert_eq!(principals[0].0, "bob");
    assert_eq!(principals[0].2["attempted"], "register");
    assert_eq!(
        principals[0].2["target"],
        "arn:aws:iam::444455556666:role/sneaky"
    );
    // The victim token still works: nothing was done.
    t.get("/v1/shares", &victim).await.expect(200);
}

/// Finding 5: a share id typed upper case, without dashes, in braces or as a URN is stored canonical
/// in the refusal row, so a search by the canonical id finds every refusal.
#[tokio::test]
async fn refusal_rows_store_the_canonical_share_id() {
    let t = TestApp::new();
    let alice = t.token("alice", Requester).await;
    let auditor = t.token("audrey", Auditor).await;
    let id = t.request_share(&alice).await;
    let forms = [
        id.clone(),
        id.to_uppercase(),
        id.replace('-', ""),
        format!("%7B{id}%7D"),
        format!("urn:uuid:{id}"),
    ];
    for form in &forms {
        // The requester may not approve: 403, whatever the form. (A minute apart, so that none is
        // coalesced with the one before.)
        t.post_empty(&format!("/v1/shares/{form}/approve"), &alice)
            .await
            .expect(403);
        t.clock.advance(Duration::from_secs(60));
    }
    let r = t
        .get(&format!("/v1/audit?share_id={id}"), &auditor)
        .await
        .expect(200);
    let refused: Vec<&Value> = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "share.refused")
        .collect();
    assert_eq!(refused.len(), forms.len(), "{}", r.text);
    // And the share answers under any of those forms.
    t.get(&format!("/v1/shares/{}", id.to_uppercase()), &alice)
        .await
        .expect(200);
}

/// Finding 6: 100 refused approvals by one caller write one row; the next row written for that
/// caller (after the window) carries the count; 1,000 refusals on distinct targets write at most
/// AUDITED_PER_WINDOW rows.
#[tokio::test]
async fn refusals_of_a_signed_in_caller_are_coalesced() {
    let t = TestApp::new();
    let alice = t.token("alice", Requester).await;
    let id = t.request_share(&alice).await;
    let counted_before = unaudited(&t).await;
    let before = t.count("audit");
    for _ in 0..100 {
        t.post_empty(&format!("/v1/shares/{id}/approve"), &alice)
            .await
            .expect(403);
    }
    assert_eq!(t.count("audit") - before, 1);
    // The counter is process-wide (other tests add to it): at least these 99.
    let counted = unaudited(&t).await - counted_before;
    assert!(counted >= 99.0, "{counted}");
    t.clock.advance(Duration::from_secs(
        secret_broker::refusals::WINDOW_SECS as u64,
    ));
    t.post_empty(&format!("/v1/shares/{id}/approve"), &alice)
        .await
        .expect(403);
    let (actor, action, d) = t.last_audit();
    assert_eq!(
        (actor.as_str(), action.as_str()),
        ("alice", "share.refused")
    );
    assert_eq!(d["unaudited_before"], 99);

    // Distinct targets (made-up share ids are refused by role before any lookup).
    t.clock.advance(Duration::from_secs(
        secret_broker::refusals::WINDOW_SECS as u64,
    ));
    let before = t.count("audit");
    for _ in 0..1000 {
        let made_up = uuid::Uuid::new_v4();
        t.post_empty(&format!("/v1/shares/{made_up}/approve"), &alice)
            .await
            .expect(403);
    }
    assert_eq!(
        (t.count("audit") - before) as u32,
        secret_broker::refusals::AUDITED_PER_WINDOW
    );
    // Other callers are not affected by alice's allowance.
    let bob = t.token("bob", Requester).await;
    t.post_empty(&format!("/v1/shares/{id}/approve"), &bob)
        .await
        .expect(403);
    assert_eq!(t.last_audit().0, "bob");
}

async fn unaudited(t: &TestApp) -> f64 {
    let m = t.scrape_metrics().await.text;
    m.lines()
        .find_map(|l| l.strip_prefix("secret_broker_refusals_unaudited_total "))
        .unwrap()
        .parse()
        .unwrap()
}

/// A writer that keeps what the log subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    /// The lines that mention `needle`.
    fn lines_with(&self, needle: &str) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect()
    }
}

/// The log of this test binary: a process-wide subscriber (a thread's own default is not enough: a
/// callsite first hit by a test on another thread would be cached as "not interested"), the service's
/// own (its text format: the span's fields, then the event's; at `info`) writing to memory.
fn captured_logs() -> &'static Captured {
    static LOGS: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Captured::default();
        let w = logs.clone();
        let subscriber = secret_broker::logging::subscriber(
            &secret_broker::config::Config::default(),
            None,
            move || w.clone(),
        );
        tracing::subscriber::set_global_default(subscriber)
            .expect("no other test installs a global subscriber");
        logs
    })
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Finding 7: an `X-Request-Id` that is not short and plain is replaced by a generated one, and the
/// same value is in the response, the log span and the audit row; a plain one is kept.
#[tokio::test]
async fn request_ids_are_plain_and_the_same_in_log_and_audit() {
    let t = TestApp::new();
    let alice = t.token("alice", Requester).await;
    let id = t.request_share(&alice).await;
    let logs = captured_logs();
    let send = async |rid: &str| {
        let req = Request::post(format!("/v1/shares/{id}/approve"))
            .header("authorization", format!("Bearer {alice}"))
            .header("x-request-id", rid)
            .body(Body::empty())
            .unwrap();
        let r = t.raw(req).await.expect(403);
        r.headers["x-request-id"].to_str().unwrap().to_owned()
    };
    for (i, hostile) in [
        "42 caller=\"root\"}: access status=200",
        "a\tb",
        &"x".repeat(65),
        "",
        "id/with/slashes",
    ]
    .iter()
    .enumerate()
    {
        let got = send(hostile).await;
        assert_ne!(got, *hostile);
        assert!(uuid::Uuid::parse_str(&got).is_ok(), "{got}");
        let stored: Option<String> = t
            .db()
            .query_row(
                "SELECT request_id FROM audit WHERE action = 'share.refused' ORDER BY seq DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(stored.as_deref(), Some(got.as_str()), "case {i}");
        let lines = logs.lines_with(&format!("request_id={got}"));
        assert!(!lines.is_empty(), "no log line carries request_id={got}");
        for l in &lines {
            assert!(l.contains("caller=\"alice\"") && !l.contains("root"), "{l}");
        }
        assert!(logs.lines_with("request_id=42 caller").is_empty());
        t.clock.advance(Duration::from_secs(60));
    }
    // A plain id is kept, and is the one the audit row stores.
    let plain = "req-2026.12_01-abc";
    assert_eq!(send(plain).await, plain);
    let stored: String = t
        .db()
        .query_row(
            "SELECT request_id FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(stored, plain);
    assert!(!logs.lines_with(&format!("request_id={plain} ")).is_empty());
}

/// Finding 8: the last admin credential cannot be revoked, nor traded for one that expires, unless
/// OIDC maps someone to admin.
#[tokio::test]
async fn the_last_admin_credential_cannot_be_revoked() {
    let t = TestApp::new();
    let root = t.token("root", Admin).await;
    let revoke =
        async |who: &str, id: &str| t.post_empty(&format!("/v1/tokens/{id}/revoke"), who).await;
    let r = revoke(&root, &token_id(&root)).await.expect(409);
    assert!(
        detail(&r).contains("last admin") && detail(&r).contains("POST /v1/tokens"),
        "{}",
        r.text
    );
    let (_, action, d) = t.last_audit();
    assert_eq!(action, "token.refused");
    assert_eq!(d["attempted"], "revoke");
    assert_eq!(d["status"], 409);
    t.get("/v1/tokens", &root).await.expect(200);

    // An admin token that expires does not stand in for one that does not.
    let r = t
        .post(
            "/v1/tokens",
            &root,
            json!({"name": "root", "role": "admin", "expires_in": "1h"}),
        )
        .await
        .expect(201);
    let brief = r.body["token"].as_str().unwrap().to_owned();
    revoke(&brief, &token_id(&root)).await.expect(409);
    // Two that never expire: one may go, the other is then the last.
    let r = t
        .post("/v1/tokens", &root, json!({"name": "ops", "role": "admin"}))
        .await
        .expect(201);
    let ops = r.body["token"].as_str().unwrap().to_owned();
    assert_eq!(revoke(&ops, &token_id(&root)).await.status, 204);
    revoke(&ops, &token_id(&ops)).await.expect(409);
    // The expiring one may be revoked: the lasting one remains. Once revoked, revoking again is 404.
    assert_eq!(revoke(&ops, &token_id(&brief)).await.status, 204);
    revoke(&ops, &token_id(&brief)).await.expect(404);
    t.get("/v1/tokens", &ops).await.expect(200);

    // With an OIDC issuer that maps someone to admin, the last token may go.
    let dir = tempfile::tempdir().unwrap();
    let t = TestApp::with(|c| jwt::configure_file(c, dir.path()));
    let root = t.token("root", Admin).await;
    let r = t
        .post_empty(&format!("/v1/tokens/{}/revoke", token_id(&root)), &root)
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
}

/// Finding 9: `/metrics` needs an auditor or admin token.
#[tokio::test]
async fn metrics_need_an_auditor_or_admin_token() {
    let t = TestApp::new();
    let r = t
        .call(Method::GET, "/metrics", None, None)
        .await
        .expect(401);
    assert!(!r.text.contains("secret_broker_"));
    for role in [Requester, Approver] {
        let tok = t.token(&format!("m-{role}"), role).await;
        let r = t.get("/metrics", &tok).await.expect(403);
        assert!(detail(&r).contains("auditor or admin"), "{}", r.text);
    }
    for role in [Auditor, Admin] {
        let tok = t.token(&format!("m-{role}"), role).await;
        let r = t.get("/metrics", &tok).await;
        assert_eq!(r.status, 200);
        assert!(r.text.contains("secret_broker_shares"));
    }
}

/// Mints a token over the API (`by` an admin token) and returns it.
async fn mint(t: &TestApp, by: &str, name: &str, role: &str) -> String {
    t.post("/v1/tokens", by, json!({"name": name, "role": role}))
        .await
        .expect(201)
        .body["token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Issue 14 follow-up, finding 1: with quorum 3, admin1 (issued by the command line) mints mallory
/// (requester), p1 and p2 (approvers); mallory requests; admin1, p1 and p2 approve. Whoever minted a
/// token can act as its holder, so every one of those votes is mallory's issuer's: all refused, each
/// saying why and audited; the share stays pending with no approval.
#[tokio::test]
async fn an_admin_cannot_meet_the_quorum_through_a_requester_they_minted() {
    let t = TestApp::with(|c| c.approval_quorum.0 = 3);
    let admin1 = t.token("admin1", Admin).await;
    let mallory = mint(&t, &admin1, "mallory", "requester").await;
    let p1 = mint(&t, &admin1, "p1", "approver").await;
    let p2 = mint(&t, &admin1, "p2", "approver").await;
    let id = t.request_share(&mallory).await;
    for (who, tok) in [("admin1", &admin1), ("p1", &p1), ("p2", &p2)] {
        let r = t
            .post_empty(&format!("/v1/shares/{id}/approve"), tok)
            .await
            .expect(403);
        let d = detail(&r);
        assert!(
            d.contains("admin1 issued the tokens of mallory")
                && d.contains(&format!("named {who}")),
            "{d}"
        );
    }
    let share = t
        .get(&format!("/v1/shares/{id}"), &admin1)
        .await
        .expect(200);
    assert_eq!(share.body["status"], "pending");
    assert!(share.body["approvals"].as_array().unwrap().is_empty());
    let refusals = rows_of(&t, "share.refused");
    let actors: Vec<&str> = refusals.iter().map(|(a, _, _)| a.as_str()).collect();
    assert_eq!(actors, ["admin1", "p1", "p2"]);
    assert!(refusals.iter().all(|(_, s, d)| {
        s.as_deref() == Some(&*id)
            && d["status"] == 403
            && d["reason"]
                .as_str()
                .unwrap()
                .contains("issued the tokens of mallory")
    }));
    // Someone outside mallory's chain can approve: the command line's tokens, an OIDC identity.
    let bob = t.token("bob", Approver).await;
    t.post_empty(&format!("/v1/shares/{id}/approve"), &bob)
        .await
        .expect(200);
}

/// Finding 1, the quorum: two approvers minted by one admin are one controller (the admin could
/// cast both votes): the second is refused with 409 and not recorded, and so is the admin's own.
/// Approvers issued by the command line, and OIDC identities, count separately.
#[tokio::test]
async fn the_quorum_counts_independent_controllers() {
    let dir = tempfile::tempdir().unwrap();
    let t = TestApp::with(|c| {
        c.approval_quorum.0 = 4;
        jwt::configure_file(c, dir.path());
    });
    let admin1 = t.token("admin1", Admin).await;
    let alice = t.token("alice", Requester).await;
    let p1 = mint(&t, &admin1, "p1", "approver").await;
    let p2 = mint(&t, &admin1, "p2", "approver").await;
    let id = t.request_share(&alice).await;
    t.post_empty(&format!("/v1/shares/{id}/approve"), &p1)
        .await
        .expect(200);
    for (who, tok) in [("p2", &p2), ("admin1", &admin1)] {
        let r = t
            .post_empty(&format!("/v1/shares/{id}/approve"), tok)
            .await
            .expect(409);
        let d = detail(&r);
        assert!(
            d.contains("admin1 could have cast both")
                && d.contains(&format!("named {who}"))
                && d.contains("approval of p1"),
            "{d}"
        );
    }
    let share = t.get(&format!("/v1/shares/{id}"), &alice).await.expect(200);
    assert_eq!(share.body["status"], "pending");
    assert_eq!(share.body["approvals"].as_array().unwrap().len(), 1);
    let refused = rows_of(&t, "share.refused");
    assert_eq!(refused.len(), 2);
    assert!(refused.iter().all(|(_, _, d)| d["status"] == 409));
    // Two approvers issued by the command line, and two OIDC identities, are four controllers more;
    // with p1 the quorum of 4 is met at the third of them.
    let bob = t.token("bob", Approver).await;
    let carol = t.token("carol", Approver).await;
    let now = t.app.clock.now().unix_timestamp();
    for tok in [bob, carol] {
        t.post_empty(&format!("/v1/shares/{id}/approve"), &tok)
            .await
            .expect(200);
    }
    let share = t
        .post_empty(
            &format!("/v1/shares/{id}/approve"),
            &jwt::token(now, "erin", &["approver"]),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(share["status"], "approved", "{share}");
    let approvers: Vec<&str> = share["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["approver"].as_str().unwrap())
        .collect();
    assert_eq!(approvers, ["p1", "bob", "carol", "oidc:erin"]);
    // Two OIDC identities on a new share count as two.
    let id2 = t.request_share(&alice).await;
    t.post_empty(
        &format!("/v1/shares/{id2}/approve"),
        &jwt::token(now, "frank", &["approver"]),
    )
    .await
    .expect(200);
    t.post_empty(
        &format!("/v1/shares/{id2}/approve"),
        &jwt::token(now, "gina", &["approver"]),
    )
    .await
    .expect(200);
    let share = t
        .get(&format!("/v1/shares/{id2}"), &alice)
        .await
        .expect(200);
    assert_eq!(share.body["approvals"].as_array().unwrap().len(), 2);
}

/// Finding 2: a requester may have at most `max_pending_per_requester` pending shares (counted by
/// canonical name); more are 429 problem+json naming the limit, audited as a coalesced refusal; a
/// cancelled one makes room; others are not affected.
#[tokio::test]
async fn pending_shares_per_requester_are_bounded() {
    let t = TestApp::with(|c| c.max_pending_per_requester.0 = Some(3));
    let alice = t.token("alice", Requester).await;
    let big_alice = t.token("ALICE", Requester).await;
    let bob = t.token("bob", Requester).await;
    let mut ids = Vec::new();
    for tok in [&alice, &big_alice, &alice] {
        ids.push(t.request_share(tok).await);
    }
    let before = t.count("audit");
    for tok in [&alice, &big_alice, &alice] {
        let r = t
            .post(
                "/v1/shares",
                tok,
                json!({"secret_arn": crate::harness::SECRET, "principal_arn": crate::harness::ROLE,
                       "justification": "one more"}),
            )
            .await
            .expect(429);
        assert_eq!(r.headers["content-type"], "application/problem+json");
        let d = detail(&r);
        assert!(
            d.contains("max_pending_per_requester = 3") && d.contains("cancel"),
            "{d}"
        );
    }
    // One row for the three refusals (the same refusal is written once a window).
    assert_eq!(t.count("audit") - before, 1);
    let (actor, action, d) = t.last_audit();
    assert_eq!(
        (actor.as_str(), action.as_str()),
        ("alice", "share.refused")
    );
    assert_eq!(d["attempted"], "request");
    assert_eq!(d["status"], 429);
    assert_eq!(t.count("shares"), 3);
    // Bob has his own allowance; alice gets room by cancelling one.
    t.request_share(&bob).await;
    t.post_empty(&format!("/v1/shares/{}/cancel", ids[0]), &alice)
        .await
        .expect(200);
    t.request_share(&big_alice).await;
}

/// Finding 3: invisible (Cf) characters in a justification are folded to a space in the webhook's
/// `text`, and its mrkdwn emphasis cannot format: the user-given part is one code span, with no
/// backtick of the user's inside it.
#[tokio::test]
async fn webhook_text_folds_invisible_characters_and_neutralises_emphasis() {
    let t = TestApp::with(|c| {
        c.webhook_url = OptText(Some("http://127.0.0.1:9/hook".into()));
        c.webhook_secret = SecretText(Some("s3cret".into()));
    });
    let alice = t.token("alice", Requester).await;
    let justification = "*APPROVED* by _security_\u{200B}\u{2060}\u{FEFF}\u{061C}\u{E0041} ~not~ `rm -rf` x\u{AD}y ` *tail*";
    let r = t
        .post(
            "/v1/shares",
            &alice,
            json!({"secret_arn": crate::harness::SECRET, "principal_arn": crate::harness::ROLE,
                   "justification": justification}),
        )
        .await
        .expect(201);
    let id = r.body["id"].as_str().unwrap().to_owned();
    let payload: String = t
        .db()
        .query_row(
            "SELECT payload FROM outbox WHERE share_id = ?1 AND event = 'share.pending'",
            [&id],
            |r| r.get(0),
        )
        .unwrap();
    let p: Value = serde_json::from_str(&payload).unwrap();
    let text = p["text"].as_str().unwrap();
    for c in [
        '\u{200B}',
        '\u{2060}',
        '\u{FEFF}',
        '\u{061C}',
        '\u{E0041}',
        '\u{AD}',
    ] {
        assert!(!text.contains(c), "U+{:04X} in {text:?}", c as u32);
    }
    // The user-given part is the last code span and holds no backtick of its own.
    let (head, span) = text.split_once(": `").unwrap();
    assert!(head.ends_with("is *pending*"), "{text}");
    let inner = span.strip_suffix('`').unwrap();
    assert!(!inner.contains('`'), "{text}");
    assert_eq!(
        inner,
        "requested by alice: *APPROVED* by _security_  ~not~ \u{2CB}rm -rf\u{2CB} x y \u{2CB} *tail*"
    );
    assert_eq!(p["detail"], format!("requested by alice: {justification}"));
}
