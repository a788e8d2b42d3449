//! Break-glass shares (issue 21): approved without the quorum by their requester, with a reason, a
//! shorter expiry, a louder trail (flag, audit row, webhook event at once, daily re-announcements,
//! /metrics) and a review by someone else; "unjustified" revokes the share.

use std::time::Duration;

use secret_broker::config::{OptText, RoleList, SecretText};
use secret_broker::domain::Role;
use secret_broker::worker::tick;
use serde_json::{Value, json};

use crate::harness::{TestApp, actors, request, share};
use crate::moto::moto;

const SECRET: &str = "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-password-AbCdEf";
const ROLE: &str = "arn:aws:iam::444455556666:role/app-reader";

/// Break-glass on for `roles`, webhooks to a closed loopback port (the outbox is read directly).
fn glass(roles: &[Role]) -> TestApp {
    let roles = roles.to_vec();
    TestApp::with(move |c| {
        c.break_glass_roles = RoleList(roles);
        c.webhook_url = OptText(Some("http://127.0.0.1:9/hook".into()));
        c.webhook_secret = SecretText(Some("s3cret".into()));
    })
}

fn outbox(t: &TestApp, event: &str) -> Vec<Value> {
    let db = t.db();
    let mut st = db
        .prepare("SELECT payload FROM outbox WHERE event = ?1 ORDER BY seq")
        .unwrap();
    st.query_map([event], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|p| serde_json::from_str(&p.unwrap()).unwrap())
        .collect()
}

fn audit_rows(t: &TestApp, action: &str) -> Vec<Value> {
    let db = t.db();
    let mut st = db
        .prepare("SELECT details FROM audit WHERE action = ?1 ORDER BY seq")
        .unwrap();
    st.query_map([action], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|p| serde_json::from_str(&p.unwrap()).unwrap())
        .collect()
}

async fn break_glass(t: &TestApp, token: &str, id: &str, reason: &str) -> crate::harness::Resp {
    t.post(
        &format!("/v1/shares/{id}/break-glass"),
        token,
        json!({"reason": reason}),
    )
    .await
}

#[tokio::test]
async fn break_glass_is_off_by_default() {
    let t = TestApp::new();
    let a = actors(&t).await;
    let id = request(&t, &a, SECRET, ROLE, json!({})).await;
    let r = break_glass(&t, &a.alice, &id, "outage").await.expect(403);
    assert!(r.text.contains("break_glass_roles"), "{}", r.text);
    assert_eq!(share(&t, &a, &id).await["status"], "pending");
    assert_eq!(t.count("break_glass"), 0);
}

#[tokio::test]
async fn a_role_not_allowed_is_refused_and_an_allowed_one_approves_without_quorum() {
    // Only admins may break the glass: the requester is refused, nothing changes.
    let t = glass(&[Role::Admin]);
    let a = actors(&t).await;
    let id = request(&t, &a, SECRET, ROLE, json!({})).await;
    let r = break_glass(&t, &a.alice, &id, "outage").await.expect(403);
    assert!(r.text.contains("admin"), "{}", r.text);
    assert_eq!(share(&t, &a, &id).await["status"], "pending");
    let (_, action, details) = t.last_audit();
    assert_eq!(action, "share.refused");
    assert_eq!(details["attempted"], "break-glass");

    // With the requester role allowed, and a quorum of two that nobody met.
    let t = TestApp::with(|c| {
        c.break_glass_roles = RoleList(vec![Role::Requester]);
        c.approval_quorum.0 = 2;
        c.webhook_url = OptText(Some("http://127.0.0.1:9/hook".into()));
        c.webhook_secret = SecretText(Some("s3cret".into()));
    });
    let a = actors(&t).await;
    let id = request(&t, &a, SECRET, ROLE, json!({})).await;
    // Bob is no requester of it: only its requester may break the glass.
    let bob_requester = t.token("bob", Role::Requester).await;
    break_glass(&t, &bob_requester, &id, "not mine")
        .await
        .expect(403);
    let r = break_glass(&t, &a.alice, &id, "prod outage INC-1: approvers asleep")
        .await
        .expect(200);
    assert_eq!(r.body["status"], "approved");
    assert_eq!(r.body["break_glass"], true);
    assert_eq!(r.body["approvals"], json!([]));
    // The expiry is cut from the default 30 days to break_glass_max_ttl (4 h).
    assert_eq!(r.body["expires_at"], "2026-11-29T16:00:00Z");
    // Everywhere it is shown: the share, the list, the audit row, the webhook payload.
    assert_eq!(share(&t, &a, &id).await["break_glass"], true);
    let list = t.get("/v1/shares", &a.root).await.expect(200);
    assert_eq!(list.body["items"][0]["break_glass"], true);
    let (actor, action, details) = t.last_audit();
    assert_eq!(
        (actor.as_str(), action.as_str()),
        ("alice", "share.break_glass")
    );
    assert_eq!(details["break_glass"], true);
    assert_eq!(details["reason"], "prod outage INC-1: approvers asleep");
    let events = outbox(&t, "share.break_glass");
    assert_eq!(events.len(), 1, "announced at once");
    assert_eq!(events[0]["share"]["break_glass"], true);
    assert_eq!(events[0]["share"]["requested_by"], "alice");
    assert!(
        events[0]["detail"]
            .as_str()
            .unwrap()
            .contains("prod outage INC-1"),
        "{}",
        events[0]
    );
    assert!(events[0]["text"].as_str().unwrap().contains("BREAK-GLASS"));
    // An ordinary share is shown with break_glass false.
    let other = request(&t, &a, SECRET, ROLE, json!({})).await;
    assert_eq!(share(&t, &a, &other).await["break_glass"], false);
    // A share no longer pending cannot break the glass again.
    let r = break_glass(&t, &a.alice, &id, "again").await.expect(409);
    assert!(
        r.text
            .contains("only a share that is pending can be approved through break-glass"),
        "{}",
        r.text
    );
}

#[tokio::test]
async fn the_reason_is_required() {
    let t = glass(&[Role::Requester]);
    let a = actors(&t).await;
    let id = request(&t, &a, SECRET, ROLE, json!({})).await;
    for body in [json!({}), json!({"reason": "  "}), json!({"reason": null})] {
        let r = t
            .post(
                &format!("/v1/shares/{id}/break-glass"),
                &a.alice,
                body.clone(),
            )
            .await
            .expect(422);
        assert!(r.text.contains("reason"), "{body}: {}", r.text);
    }
    let shares = t.count("shares");
    for glass in [json!({}), json!({"reason": ""})] {
        let r = t
            .post(
                "/v1/shares",
                &a.alice,
                json!({"secret_arn": SECRET, "principal_arn": ROLE, "justification": "j", "break_glass": glass}),
            )
            .await
            .expect(422);
        assert!(r.text.contains("reason"), "{}", r.text);
    }
    assert_eq!(t.count("shares"), shares, "nothing half-written");
    assert_eq!(share(&t, &a, &id).await["status"], "pending");
    assert_eq!(t.count("break_glass"), 0);
}

#[tokio::test]
async fn a_share_can_be_requested_with_break_glass_at_once() {
    let t = glass(&[Role::Requester]);
    let a = actors(&t).await;
    let r = t
        .post(
            "/v1/shares",
            &a.alice,
            json!({"secret_arn": SECRET, "principal_arn": ROLE, "justification": "j",
                   "expires_at": "2026-11-29T13:00:00Z", "break_glass": {"reason": "outage"}}),
        )
        .await
        .expect(201);
    assert_eq!(r.body["status"], "approved");
    assert_eq!(r.body["break_glass"], true);
    // An expiry already shorter than the maximum is kept.
    assert_eq!(r.body["expires_at"], "2026-11-29T13:00:00Z");
    // No "pending" announcement for a share that never waited; the break-glass one at once.
    assert!(outbox(&t, "share.pending").is_empty());
    assert_eq!(outbox(&t, "share.break_glass").len(), 1);
    let actions = t.audit_actions();
    assert!(
        actions.ends_with(&["share.requested".into(), "share.break_glass".into()]),
        "{actions:?}"
    );
}

#[tokio::test]
async fn over_the_daily_limit_is_429_and_audited() {
    let t = TestApp::with(|c| {
        c.break_glass_roles = RoleList(vec![Role::Requester]);
        c.break_glass_daily_limit.0 = 1;
    });
    let a = actors(&t).await;
    let first = request(&t, &a, SECRET, ROLE, json!({})).await;
    break_glass(&t, &a.alice, &first, "one").await.expect(200);
    let second = request(&t, &a, SECRET, ROLE, json!({})).await;
    let r = break_glass(&t, &a.alice, &second, "two").await.expect(429);
    assert!(r.text.contains("break_glass_daily_limit"), "{}", r.text);
    assert_eq!(share(&t, &a, &second).await["status"], "pending");
    let (actor, action, details) = t.last_audit();
    assert_eq!(
        (actor.as_str(), action.as_str()),
        ("alice", "share.refused")
    );
    assert_eq!(details["status"], 429);
    assert_eq!(details["attempted"], "break-glass");
    assert_eq!(audit_rows(&t, "share.break_glass").len(), 1);
    // The same person under another case of the name is the same person.
    let alice2 = t.token("ALICE", Role::Requester).await;
    let r = t
        .post(
            "/v1/shares",
            &alice2,
            json!({"secret_arn": SECRET, "principal_arn": ROLE, "justification": "j", "break_glass": {"reason": "three"}}),
        )
        .await
        .expect(429);
    assert!(r.text.contains("break_glass_daily_limit"), "{}", r.text);
    // A day later the limit allows one again.
    t.clock.advance(Duration::from_secs(24 * 3600 + 1));
    break_glass(&t, &a.alice, &second, "two, a day later")
        .await
        .expect(200);
}

#[tokio::test]
async fn the_review_is_by_an_approver_who_is_not_the_requester() {
    let t = glass(&[Role::Admin]);
    let a = actors(&t).await;
    // Root (admin) requests and breaks the glass.
    let r = t
        .post(
            "/v1/shares",
            &a.root,
            json!({"secret_arn": SECRET, "principal_arn": ROLE, "justification": "j", "break_glass": {"reason": "outage"}}),
        )
        .await
        .expect(201);
    let id = r.body["id"].as_str().unwrap().to_owned();
    let review = |token: &str, body: Value| {
        let path = format!("/v1/shares/{id}/review");
        let token = token.to_owned();
        let t = &t;
        async move { t.post(&path, &token, body).await }
    };
    // The requester cannot review it, under any token of the name, nor with a token they issued.
    let r = review(&a.root, json!({"outcome": "justified"}))
        .await
        .expect(403);
    assert!(r.text.contains("cannot review"), "{}", r.text);
    let root_approver = t.token("Root", Role::Approver).await;
    review(&root_approver, json!({"outcome": "justified"}))
        .await
        .expect(403);
    let minted = t
        .post(
            "/v1/tokens",
            &a.root,
            json!({"name": "rootbot", "role": "approver"}),
        )
        .await
        .expect(201);
    let minted = minted.body["token"].as_str().unwrap().to_owned();
    review(&minted, json!({"outcome": "justified"}))
        .await
        .expect(403);
    // A requester-role token cannot review at all; a bad outcome is a 422.
    review(&a.alice, json!({"outcome": "justified"}))
        .await
        .expect(403);
    review(&a.bob, json!({"outcome": "fine"})).await.expect(422);
    review(&a.bob, json!({})).await.expect(422);
    // Bob reviews it; once.
    let r = review(
        &a.bob,
        json!({"outcome": "justified", "comment": "real outage"}),
    )
    .await
    .expect(200);
    assert_eq!(r.body["status"], "approved");
    let (actor, action, details) = t.last_audit();
    assert_eq!(
        (actor.as_str(), action.as_str()),
        ("bob", "share.break_glass_reviewed")
    );
    assert_eq!(details["outcome"], "justified");
    review(&a.bob, json!({"outcome": "unjustified"}))
        .await
        .expect(409);
    // An ordinary share has nothing to review.
    let plain = request(&t, &a, SECRET, ROLE, json!({})).await;
    t.post(
        &format!("/v1/shares/{plain}/review"),
        &a.bob,
        json!({"outcome": "justified"}),
    )
    .await
    .expect(409);
}

fn gauge(text: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with("secret_broker_break_glass_unreviewed "))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no break-glass gauge in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreviewed_share_is_announced_every_day_until_reviewed() {
    let t = glass(&[Role::Requester]);
    let a = actors(&t).await;
    let id = request(&t, &a, SECRET, ROLE, json!({})).await;
    break_glass(&t, &a.alice, &id, "outage").await.expect(200);
    let again = |t: &TestApp| outbox(t, "share.break_glass_unreviewed").len();
    assert_eq!(gauge(&t.scrape_metrics().await.text), 1.0);
    tick(&t.app).await.unwrap();
    assert_eq!(again(&t), 0, "just announced");
    t.clock.advance(Duration::from_secs(23 * 3600));
    tick(&t.app).await.unwrap();
    assert_eq!(again(&t), 0, "not yet a day");
    t.clock.advance(Duration::from_secs(3600));
    let r = tick(&t.app).await.unwrap();
    assert_eq!(r.break_glass_reannounced, 1);
    assert_eq!(again(&t), 1, "a day later");
    let e = &outbox(&t, "share.break_glass_unreviewed")[0];
    assert_eq!(e["share"]["id"], id.as_str());
    assert_eq!(e["share"]["break_glass"], true);
    assert!(e["detail"].as_str().unwrap().contains("outage"), "{e}");
    t.clock.advance(Duration::from_secs(3600));
    tick(&t.app).await.unwrap();
    assert_eq!(again(&t), 1, "once a day, not every pass");
    t.clock.advance(Duration::from_secs(23 * 3600));
    tick(&t.app).await.unwrap();
    assert_eq!(again(&t), 2, "the next day again");
    t.post(
        &format!("/v1/shares/{id}/review"),
        &a.bob,
        json!({"outcome": "justified"}),
    )
    .await
    .expect(200);
    assert_eq!(gauge(&t.scrape_metrics().await.text), 0.0);
    t.clock.advance(Duration::from_secs(3 * 24 * 3600));
    tick(&t.app).await.unwrap();
    assert_eq!(again(&t), 2, "reviewed: no more announcements");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unjustified_revokes_an_active_share_at_once() {
    let t = TestApp::with_aws(|c| c.break_glass_roles = RoleList(vec![Role::Requester]));
    let a = actors(&t).await;
    let m = moto();
    let key = m.create_key().await;
    let secret = m.create_secret(Some(&key)).await;
    let r = t
        .post(
            "/v1/shares",
            &a.alice,
            json!({"secret_arn": secret, "principal_arn": ROLE, "justification": "j", "break_glass": {"reason": "outage"}}),
        )
        .await
        .expect(201);
    let id = r.body["id"].as_str().unwrap().to_owned();
    t.settle().await;
    assert_eq!(share(&t, &a, &id).await["status"], "active");
    assert!(m.resource_policy(&secret).await.unwrap().contains(ROLE));
    assert!(m.key_policy(&key).await.contains(ROLE));
    let r = t
        .post(
            &format!("/v1/shares/{id}/review"),
            &a.bob,
            json!({"outcome": "unjustified", "comment": "no outage that night"}),
        )
        .await
        .expect(200);
    assert_eq!(r.body["status"], "revoking");
    assert_eq!(r.body["break_glass"], true);
    t.settle().await;
    let s = share(&t, &a, &id).await;
    assert_eq!(s["status"], "revoked");
    assert!(
        s["status_reason"].as_str().unwrap().contains("unjustified"),
        "{s}"
    );
    assert!(
        m.resource_policy(&secret)
            .await
            .is_none_or(|p| !p.contains(ROLE))
    );
    assert!(!m.key_policy(&key).await.contains(ROLE));
    m.assert_no_get_secret_value();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unjustified_during_the_apply_is_revoked_once_live() {
    let t = TestApp::with_aws(|c| c.break_glass_roles = RoleList(vec![Role::Requester]));
    let a = actors(&t).await;
    let m = moto();
    let key = m.create_key().await;
    let secret = m.create_secret(Some(&key)).await;
    let r = t
        .post(
            "/v1/shares",
            &a.alice,
            json!({"secret_arn": secret, "principal_arn": ROLE, "justification": "j", "break_glass": {"reason": "outage"}}),
        )
        .await
        .expect(201);
    let id = r.body["id"].as_str().unwrap().to_owned();
    t.settle().await;
    // As if the review came while the apply was running (the review cannot move an applying share).
    let set = |status: &str| {
        t.db()
            .execute("UPDATE shares SET status = ?1 WHERE id = ?2", [status, &id])
            .unwrap();
    };
    set("applying");
    let r = t
        .post(
            &format!("/v1/shares/{id}/review"),
            &a.bob,
            json!({"outcome": "unjustified"}),
        )
        .await
        .expect(200);
    assert_eq!(r.body["status"], "applying");
    set("active");
    let report = tick(&t.app).await.unwrap();
    assert_eq!(report.unjustified_revoked, 1);
    t.settle().await;
    assert_eq!(share(&t, &a, &id).await["status"], "revoked");
    assert!(
        m.resource_policy(&secret)
            .await
            .is_none_or(|p| !p.contains(ROLE))
    );
    let again = tick(&t.app).await.unwrap();
    assert_eq!(again.unjustified_revoked, 0);
}

#[tokio::test]
async fn an_unjustified_review_of_a_failed_share_is_final() {
    // Review finding: a break-glass share whose apply failed could be reviewed "unjustified" and then
    // retried, granting the access the review refused. The retry is refused, naming the review.
    let t = TestApp::with(|c| {
        c.break_glass_roles = RoleList(vec![Role::Requester]);
        c.break_glass_daily_limit.0 = 2;
    });
    let a = actors(&t).await;
    let mut ids = Vec::new();
    for reason in ["outage one", "outage two"] {
        let id = request(&t, &a, SECRET, ROLE, json!({})).await;
        break_glass(&t, &a.alice, &id, reason).await.expect(200);
        // As if its apply had failed (this broker has no AWS to apply with).
        t.db()
            .execute(
                "UPDATE shares SET status = 'failed', last_error = 'AccessDenied' WHERE id = ?1",
                [&id],
            )
            .unwrap();
        ids.push(id);
    }
    let review = |id: &str, outcome: &str| {
        let path = format!("/v1/shares/{id}/review");
        let body = json!({"outcome": outcome, "comment": "checked"});
        let t = &t;
        let bob = a.bob.clone();
        async move { t.post(&path, &bob, body).await }
    };
    let r = review(&ids[0], "unjustified").await.expect(200);
    assert_eq!(r.body["status"], "failed");
    let r = t
        .post_empty(&format!("/v1/shares/{}/retry", ids[0]), &a.root)
        .await
        .expect(409);
    assert!(r.text.contains("unjustified"), "{}", r.text);
    assert!(r.text.contains("bob"), "{}", r.text);
    assert_eq!(share(&t, &a, &ids[0]).await["status"], "failed");
    let (actor, action, details) = t.last_audit();
    assert_eq!((actor.as_str(), action.as_str()), ("root", "share.refused"));
    assert_eq!(details["attempted"], "retry");
    // A failed share reviewed justified is retried as any failed share.
    review(&ids[1], "justified").await.expect(200);
    let r = t
        .post_empty(&format!("/v1/shares/{}/retry", ids[1]), &a.root)
        .await
        .expect(200);
    assert_eq!(r.body["status"], "approved");
}

#[tokio::test]
async fn an_organization_or_ou_share_is_refused_break_glass_unless_allowed() {
    // Review finding (issue 21): break-glass skipped the extra approvals of an organization or OU
    // share, so one requester alone could share a secret with a whole organization.
    for (field, consumer) in [
        ("org_id", "o-a1b2c3d4e5"),
        ("org_path", "o-a1b2c3d4e5/r-ab12/ou-ab12-11111111/"),
    ] {
        let t = glass(&[Role::Requester]);
        let a = actors(&t).await;
        let p = t
            .post("/v1/principals", &a.alice, json!({field: consumer}))
            .await
            .expect(201)
            .body;
        let pid = p["id"].as_str().unwrap().to_owned();
        // At once, in POST /v1/shares: refused, and no share is created.
        let r = t
            .post(
                "/v1/shares",
                &a.alice,
                json!({"secret_arn": SECRET, "principal_id": pid, "justification": "test",
                       "break_glass": {"reason": "outage"}}),
            )
            .await
            .expect(409);
        assert!(r.text.contains("break_glass_org_shares"), "{}", r.text);
        assert_eq!(t.count("break_glass"), 0);
        // On a pending share: refused, it stays pending.
        let id = t
            .post(
                "/v1/shares",
                &a.alice,
                json!({"secret_arn": SECRET, "principal_id": pid, "justification": "test"}),
            )
            .await
            .expect(201)
            .body["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let r = break_glass(&t, &a.alice, &id, "outage").await.expect(409);
        assert!(r.text.contains("organization or OU"), "{}", r.text);
        assert_eq!(share(&t, &a, &id).await["status"], "pending");
        assert_eq!(t.count("break_glass"), 0);
    }
    // Allowed by the setting: the glass breaks.
    let t = TestApp::with(|c| {
        c.break_glass_roles = RoleList(vec![Role::Requester]);
        c.break_glass_org_shares = secret_broker::config::Flag(true);
    });
    let a = actors(&t).await;
    let p = t
        .post(
            "/v1/principals",
            &a.alice,
            json!({"org_id": "o-a1b2c3d4e5"}),
        )
        .await
        .expect(201)
        .body;
    let id = t
        .post(
            "/v1/shares",
            &a.alice,
            json!({"secret_arn": SECRET, "principal_id": p["id"], "justification": "test"}),
        )
        .await
        .expect(201)
        .body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    break_glass(&t, &a.alice, &id, "outage").await.expect(200);
    assert_eq!(share(&t, &a, &id).await["status"], "approved");
}
