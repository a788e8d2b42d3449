//! The share state machine over REST: quorum, refusals, cancellation, and their audit rows.

use axum::http::Method;
use secret_broker::domain::Role::*;
use serde_json::json;

use crate::harness::{ROLE, SECRET, TestApp};

#[tokio::test]
async fn request_defaults_and_single_approval() {
    let t = TestApp::new();
    let alice = t.token("alice", Requester).await;
    let bob = t.token("bob", Approver).await;
    let r = t
        .post(
            "/v1/shares",
            &alice,
            json!({"secret_arn": SECRET, "principal_arn": ROLE, "justification": "billing"}),
        )
        .await
        .expect(201);
    let id = r.body["id"].as_str().unwrap().to_owned();
    assert_eq!(r.headers["location"], format!("/v1/shares/{id}"));
    assert_eq!(r.body["status"], "pending");
    assert_eq!(r.body["version_stage"], "AWSCURRENT");
    assert_eq!(r.body["actions"], json!(["secretsmanager:GetSecretValue"]));
    assert_eq!(
        r.body["expires_at"], "2026-12-29T12:00:00Z",
        "default ttl is 30 days from the clock"
    );
    assert_eq!(r.body["requested_by"], "alice");
    assert_eq!(r.body["approvals_required"], 1);
    // The principal was registered on the fly.
    let principals = t.get("/v1/principals", &alice).await.expect(200);
    assert_eq!(principals.body["items"][0]["arn"], ROLE);
    assert_eq!(principals.body["items"][0]["kind"], "role");

    let r = t
        .post(
            &format!("/v1/shares/{id}/approve"),
            &bob,
            json!({"comment": "ok"}),
        )
        .await
        .expect(200);
    assert_eq!(r.body["status"], "approved");
    assert_eq!(r.body["approvals"][0]["approver"], "bob");
    assert_eq!(r.body["approvals"][0]["comment"], "ok");
    assert_eq!(
        t.audit_actions(),
        [
            "token.created",
            "token.created",
            "principal.registered",
            "share.requested",
            "share.approved"
        ]
    );
}

#[tokio::test]
async fn quorum_of_distinct_approvers() {
    let t = TestApp::with(|c| c.approval_quorum.0 = 2);
    let alice = t.token("alice", Requester).await;
    let bob = t.token("bob", Approver).await;
    let bob2 = t.token("bob", Approver).await; // a second token of the same actor
    let carol = t.token("carol", Admin).await;
    let id = t.request_share(&alice).await;
    let approve = format!("/v1/shares/{id}/approve");

    let r = t.post_empty(&approve, &bob).await.expect(200);
    assert_eq!(r.body["status"], "pending", "one of two approvals");
    // The same approver, even with another token, has one vote.
    let r = t.post_empty(&approve, &bob2).await.expect(409);
    assert!(
        r.body["detail"].as_str().unwrap().contains("already voted"),
        "{}",
        r.text
    );
    assert_eq!(r.body["current_status"], "pending");
    let r = t.post_empty(&approve, &carol).await.expect(200);
    assert_eq!(r.body["status"], "approved");
    assert_eq!(r.body["approvals"].as_array().unwrap().len(), 2);
    let actions = t.audit_actions();
    assert_eq!(
        actions[actions.len() - 4..],
        [
            "share.requested",
            "share.approval_recorded",
            "share.refused",
            "share.approved"
        ]
    );
}

#[tokio::test]
async fn the_requester_can_never_approve_their_own_share() {
    let t = TestApp::new();
    // An admin may approve others' shares but not their own.
    let root = t.token("root", Admin).await;
    let id = t.request_share(&root).await;
    let r = t
        .post_empty(&format!("/v1/shares/{id}/approve"), &root)
        .await
        .expect(403);
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap()
            .contains("requested this share"),
        "{}",
        r.text
    );
    // An approver token carrying the requester's name is the same actor. (A minute later: the same
    // refusal by the same caller within a minute is coalesced, see security::refusals_are_coalesced.)
    t.clock.advance(std::time::Duration::from_secs(60));
    let same = t.token("root", Approver).await;
    t.post_empty(&format!("/v1/shares/{id}/approve"), &same)
        .await
        .expect(403);
    let share = t.get(&format!("/v1/shares/{id}"), &root).await.expect(200);
    assert_eq!(share.body["status"], "pending");
    assert!(share.body["approvals"].as_array().unwrap().is_empty());
    // Each refusal is one audit row naming the attempt.
    let db = t.db();
    let mut s = db
        .prepare("SELECT actor, share_id, details FROM audit WHERE action = 'share.refused' ORDER BY seq")
        .unwrap();
    let rows: Vec<(String, String, String)> = s
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows.len(), 2);
    for (actor, share, details) in rows {
        assert_eq!(actor, "root");
        assert_eq!(share, id);
        let d: serde_json::Value = serde_json::from_str(&details).unwrap();
        assert_eq!(d["attempted"], "approve");
        assert_eq!(d["status"], 403);
    }
}

#[tokio::test]
async fn reject_cancel_and_refused_transitions() {
    let t = TestApp::new();
    let alice = t.token("alice", Requester).await;
    let mallory = t.token("mallory", Requester).await;
    let bob = t.token("bob", Approver).await;
    let root = t.token("root", Admin).await;

    // Reject needs a comment, which becomes the status reason.
    let id = t.request_share(&alice).await;
    let r = t
        .post(
            &format!("/v1/shares/{id}/reject"),
            &bob,
            json!({"comment": " "}),
        )
        .await
        .expect(422);
    assert_eq!(r.body["errors"][0]["field"], "comment");
    let r = t
        .post(
            &format!("/v1/shares/{id}/reject"),
            &bob,
            json!({"comment": "not needed"}),
        )
        .await
        .expect(200);
    assert_eq!(r.body["status"], "rejected");
    assert_eq!(r.body["status_reason"], "not needed");
    // Nothing moves a rejected share; the 409 names the status.
    for (verb, token) in [("approve", &root), ("reject", &root), ("cancel", &alice)] {
        let r = t
            .post(
                &format!("/v1/shares/{id}/{verb}"),
                token,
                json!({"comment": "x"}),
            )
            .await
            .expect(409);
        assert_eq!(r.body["current_status"], "rejected", "{verb}");
        assert!(
            r.body["detail"].as_str().unwrap().contains("rejected"),
            "{}",
            r.text
        );
    }

    // Cancel: only the requester (or an admin), only while pending.
    let id = t.request_share(&alice).await;
    let r = t
        .post_empty(&format!("/v1/shares/{id}/cancel"), &mallory)
        .await
        .expect(403);
    assert!(r.body["detail"].as_str().unwrap().contains("alice"));
    let r = t
        .post_empty(&format!("/v1/shares/{id}/cancel"), &alice)
        .await
        .expect(200);
    assert_eq!(r.body["status"], "cancelled");
    t.post_empty(&format!("/v1/shares/{id}/cancel"), &alice)
        .await
        .expect(409);
    t.post_empty(&format!("/v1/shares/{id}/approve"), &bob)
        .await
        .expect(409);

    // An admin can cancel anyone's pending share; an approved share can no longer be cancelled.
    let id = t.request_share(&alice).await;
    t.post_empty(&format!("/v1/shares/{id}/cancel"), &root)
        .await
        .expect(200);
    let id = t.request_share(&alice).await;
    t.post_empty(&format!("/v1/shares/{id}/approve"), &bob)
        .await
        .expect(200);
    let r = t
        .post_empty(&format!("/v1/shares/{id}/cancel"), &alice)
        .await
        .expect(409);
    assert_eq!(r.body["current_status"], "approved");

    // Unknown share: 404, not a refusal.
    let before = t.count("audit");
    t.post_empty(
        "/v1/shares/01234567-89ab-7def-8123-456789abcdef/approve",
        &bob,
    )
    .await
    .expect(404);
    assert_eq!(t.count("audit"), before);
}

#[tokio::test]
async fn a_share_past_its_expiry_cannot_be_approved() {
    let t = TestApp::new();
    let alice = t.token("alice", Requester).await;
    let bob = t.token("bob", Approver).await;
    let r = t
        .post(
            "/v1/shares",
            &alice,
            json!({"secret_arn": SECRET, "principal_arn": ROLE, "justification": "x", "expires_at": "2026-11-30T12:00:00Z"}),
        )
        .await
        .expect(201);
    let id = r.body["id"].as_str().unwrap();
    t.clock.advance(std::time::Duration::from_secs(2 * 86_400));
    let r = t
        .post_empty(&format!("/v1/shares/{id}/approve"), &bob)
        .await
        .expect(409);
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap()
            .contains("2026-11-30T12:00:00Z"),
        "{}",
        r.text
    );
}

#[tokio::test]
async fn options_stage_actions_and_expiry() {
    let t = TestApp::new();
    let alice = t.token("alice", Requester).await;
    let r = t
        .post(
            "/v1/shares",
            &alice,
            json!({
                "secret_arn": SECRET,
                "principal_arn": "444455556666",
                "justification": "x",
                "version_stage": null,
                "actions": ["secretsmanager:describesecret", "secretsmanager:GetSecretValue", "secretsmanager:GetSecretValue"],
                "expires_at": "2027-02-27T12:00:00+00:00"
            }),
        )
        .await
        .expect(201);
    assert_eq!(
        r.body["version_stage"],
        serde_json::Value::Null,
        "null means any stage"
    );
    assert_eq!(
        r.body["principal_arn"], "arn:aws:iam::444455556666:root",
        "bare account id is its root"
    );
    assert_eq!(
        r.body["actions"],
        json!([
            "secretsmanager:GetSecretValue",
            "secretsmanager:DescribeSecret"
        ])
    );
    assert_eq!(
        r.body["expires_at"], "2027-02-27T12:00:00Z",
        "exactly the 90-day maximum is allowed"
    );
}

#[tokio::test]
async fn listing_filters_and_pages() {
    let t = TestApp::new();
    let alice = t.token("alice", Requester).await;
    let bob = t.token("bob", Approver).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(t.request_share(&alice).await);
    }
    let other = "arn:aws:iam::777788889999:user/eve";
    let r = t
        .post(
            "/v1/shares",
            &alice,
            json!({"secret_arn": SECRET, "principal_arn": other, "justification": "x"}),
        )
        .await
        .expect(201);
    let other_id = r.body["id"].as_str().unwrap().to_owned();
    t.call(
        Method::POST,
        &format!("/v1/shares/{}/approve", ids[0]),
        Some(&bob),
        None,
    )
    .await
    .expect(200);

    // Pages of 2, newest first, cover all six exactly once.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let path = match &cursor {
            Some(c) => format!("/v1/shares?limit=2&cursor={c}"),
            None => "/v1/shares?limit=2".to_owned(),
        };
        let r = t.get(&path, &bob).await.expect(200);
        for s in r.body["items"].as_array().unwrap() {
            seen.push(s["id"].as_str().unwrap().to_owned());
        }
        match r.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let mut expected = ids.clone();
    expected.push(other_id.clone());
    expected.reverse();
    assert_eq!(seen, expected);

    let r = t.get("/v1/shares?status=approved", &bob).await.expect(200);
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(r.body["items"][0]["id"], ids[0].as_str());
    let r = t
        .get(&format!("/v1/shares?principal_arn={other}"), &bob)
        .await
        .expect(200);
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(r.body["items"][0]["id"], other_id.as_str());
    let r = t.get("/v1/shares?status=pending&secret_arn=arn:aws:secretsmanager:us-east-1:111122223333:secret:x-AbCdEf", &bob).await.expect(200);
    assert!(r.body["items"].as_array().unwrap().is_empty());
    assert!(r.body["next_cursor"].is_null());

    // Bad parameters are problems that name the parameter.
    let r = t.get("/v1/shares?status=bogus", &bob).await.expect(422);
    assert_eq!(r.body["errors"][0]["field"], "status");
    let r = t.get("/v1/shares?limit=0", &bob).await.expect(422);
    assert_eq!(r.body["errors"][0]["field"], "limit");
    let r = t.get("/v1/shares?cursor=zzz", &bob).await.expect(422);
    assert_eq!(r.body["errors"][0]["field"], "cursor");
    let r = t.get("/v1/shares?stauts=pending", &bob).await.expect(400);
    assert!(r.body["detail"].as_str().unwrap().contains("stauts"));
    t.get("/v1/shares/not-a-share", &bob).await.expect(404);
}
