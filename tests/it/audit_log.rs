//! The audit log: one row per change, chained; edits behind the service's back are found.

use secret_broker::config::{OptText, SecretText};
use secret_broker::domain::Role::*;
use secret_broker::store::audit::{GENESIS, row_hash};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::harness::TestApp;

/// A row's hash from the encoding documented in `store/audit.rs`, written here without the production
/// code: the version line, then each field length-prefixed (u64 big endian), the two optional ones
/// behind a presence byte.
fn documented_hash(prev: &str, e: &serde_json::Value) -> String {
    fn put(h: &mut Sha256, s: &str) {
        h.update((s.len() as u64).to_be_bytes());
        h.update(s.as_bytes());
    }
    let mut h = Sha256::new();
    h.update(b"secret-broker audit v1\n");
    put(&mut h, prev);
    put(&mut h, &e["seq"].as_i64().unwrap().to_string());
    for f in ["at", "actor", "action"] {
        put(&mut h, e[f].as_str().unwrap());
    }
    for f in ["share_id", "request_id"] {
        match e[f].as_str() {
            None => h.update([0u8]),
            Some(v) => {
                h.update([1u8]);
                put(&mut h, v);
            }
        }
    }
    put(&mut h, &serde_json::to_string(&e["details"]).unwrap());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

async fn scripted(t: &TestApp) -> (String, String) {
    let alice = t.token("alice", Requester).await;
    let bob = t.token("bob", Approver).await;
    let id = t.request_share(&alice).await;
    t.post_empty(&format!("/v1/shares/{id}/approve"), &alice)
        .await
        .expect(403);
    t.post(
        &format!("/v1/shares/{id}/approve"),
        &bob,
        json!({"comment": "fine"}),
    )
    .await
    .expect(200);
    let id2 = t.request_share(&alice).await;
    t.post_empty(&format!("/v1/shares/{id2}/cancel"), &alice)
        .await
        .expect(200);
    (id, id2)
}

#[tokio::test]
async fn the_chain_after_a_workflow() {
    let t = TestApp::new();
    let (id, id2) = scripted(&t).await;
    let auditor = t.token("audrey", Auditor).await;
    let r = t.get("/v1/audit?limit=500", &auditor).await.expect(200);
    let items = r.body["items"].as_array().unwrap();
    let summary: Vec<(i64, &str, &str)> = items
        .iter()
        .map(|e| {
            (
                e["seq"].as_i64().unwrap(),
                e["actor"].as_str().unwrap(),
                e["action"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (1, "cli", "token.created"),
            (2, "cli", "token.created"),
            (3, "alice", "principal.registered"),
            (4, "alice", "share.requested"),
            (5, "alice", "share.refused"),
            (6, "bob", "share.approved"),
            (7, "alice", "share.requested"),
            (8, "alice", "share.cancelled"),
            (9, "cli", "token.created"),
        ]
    );
    // Every row links to the previous and hashes to its stored hash, recomputed here from the
    // documented encoding (not with the production function).
    let mut prev = "0".repeat(64);
    for e in items {
        assert_eq!(e["prev_hash"], prev.as_str());
        let h = documented_hash(&prev, e);
        assert_eq!(e["hash"], h.as_str(), "row {}", e["seq"]);
        prev = h;
    }
    assert_eq!(GENESIS, "0".repeat(64));
    assert_eq!(items[3]["share_id"], id.as_str());
    assert_eq!(items[5]["details"]["from"], "pending");
    assert_eq!(items[5]["details"]["to"], "approved");
    assert_eq!(items[5]["details"]["comment"], "fine");
    assert_eq!(items[7]["share_id"], id2.as_str());
    assert!(items[4]["request_id"].as_str().is_some());

    let v = t.get("/v1/audit/verify", &auditor).await.expect(200);
    assert_eq!(v.body["ok"], true);
    assert_eq!(v.body["rows"], 9);
    assert_eq!(v.body["head"], prev.as_str());

    // Filter by share, and page with the cursor.
    let r = t
        .get(&format!("/v1/audit?share_id={id}"), &auditor)
        .await
        .expect(200);
    let actions: Vec<&str> = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["share.requested", "share.refused", "share.approved"]
    );
    // The filter is a share id, read as the path's id is: any form a UUID parser accepts finds the
    // same rows (the stored form is the hyphenated lower case), and anything else is a 422 naming it.
    let upper = t
        .get(
            &format!("/v1/audit?share_id={}", id.to_uppercase().replace('-', "")),
            &auditor,
        )
        .await
        .expect(200);
    assert_eq!(upper.body["items"], r.body["items"]);
    let bad = t
        .get("/v1/audit?share_id=not-a-share", &auditor)
        .await
        .expect(422);
    assert_eq!(bad.body["errors"][0]["field"], "share_id", "{}", bad.body);
    let p1 = t.get("/v1/audit?limit=4", &auditor).await.expect(200);
    let c = p1.body["next_cursor"].as_str().unwrap();
    let p2 = t
        .get(&format!("/v1/audit?limit=4&cursor={c}"), &auditor)
        .await
        .expect(200);
    assert_eq!(p2.body["items"][0]["seq"], 5);
}

#[tokio::test]
async fn the_database_refuses_updates_and_deletes() {
    let t = TestApp::new();
    scripted(&t).await;
    let db = t.db();
    let e = db
        .execute("UPDATE audit SET actor = 'mallory' WHERE seq = 4", [])
        .unwrap_err();
    assert!(e.to_string().contains("append-only"), "{e}");
    let e = db
        .execute("DELETE FROM audit WHERE seq = 4", [])
        .unwrap_err();
    assert!(e.to_string().contains("append-only"), "{e}");
}

#[tokio::test]
async fn an_edited_row_is_found_with_its_sequence_number() {
    let t = TestApp::new();
    scripted(&t).await;
    let auditor = t.token("audrey", Auditor).await;
    let db = t.db();
    db.execute_batch(&format!(
        "{};
         UPDATE audit SET details = replace(details, 'fine', 'FINE') WHERE seq = 6;",
        t.drop_audit_trigger("audit_no_update")
    ))
    .unwrap();
    let v = t.get("/v1/audit/verify", &auditor).await.expect(200);
    assert_eq!(v.body["ok"], false);
    assert_eq!(v.body["first_broken_seq"], 6);
    assert!(v.body["reason"].as_str().unwrap().contains("edited"));

    // Re-hashing the edited row to hide the edit breaks the link of the next row instead.
    let (prev, seq, at, actor, action, share, rid, details): (String, i64, String, String, String, Option<String>, Option<String>, String) = db
        .query_row(
            "SELECT prev_hash, seq, at, actor, action, share_id, request_id, details FROM audit WHERE seq = 6",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?)),
        )
        .unwrap();
    let forged = row_hash(
        &prev,
        seq,
        &at,
        &actor,
        &action,
        share.as_deref(),
        rid.as_deref(),
        &details,
    );
    db.execute("UPDATE audit SET hash = ?1 WHERE seq = 6", [forged])
        .unwrap();
    let v = t.get("/v1/audit/verify", &auditor).await.expect(200);
    assert_eq!(v.body["first_broken_seq"], 7);
}

#[tokio::test]
async fn a_deleted_row_is_found() {
    let t = TestApp::new();
    scripted(&t).await;
    let auditor = t.token("audrey", Auditor).await;
    t.db()
        .execute_batch(&format!(
            "{}; DELETE FROM audit WHERE seq = 3;",
            t.drop_audit_trigger("audit_no_delete")
        ))
        .unwrap();
    let v = t.get("/v1/audit/verify", &auditor).await.expect(200);
    assert_eq!(v.body["ok"], false);
    assert_eq!(v.body["first_broken_seq"], 3);
    assert!(v.body["reason"].as_str().unwrap().contains("missing"));
}

/// Every column of a row, edited behind the service's back, breaks the chain at that row.
#[tokio::test]
async fn an_edit_of_any_column_is_found_at_its_row() {
    for (column, edit) in [
        ("at", "at = '2026-01-01T00:00:00Z'"),
        ("actor", "actor = 'mallory'"),
        ("action", "action = 'share.cancelled'"),
        ("share_id", "share_id = NULL"),
        ("request_id", "request_id = 'forged'"),
        ("details", "details = '{}'"),
        ("prev_hash", "prev_hash = hash"),
        ("hash", "hash = prev_hash"),
        ("seq", "seq = 600"),
    ] {
        let t = TestApp::new();
        scripted(&t).await;
        let auditor = t.token("audrey", Auditor).await;
        t.db()
            .execute_batch(&format!(
                "{}; UPDATE audit SET {edit} WHERE seq = 6;",
                t.drop_audit_trigger("audit_no_update")
            ))
            .unwrap();
        let v = t.get("/v1/audit/verify", &auditor).await.expect(200);
        assert_eq!(v.body["ok"], false, "{column}: {}", v.text);
        assert_eq!(v.body["first_broken_seq"], 6, "{column}: {}", v.text);
    }
}

/// Deleting the newest rows leaves a valid chain; the head kept outside (an anchor) finds it, and so
/// does a tail rewritten past the anchor.
#[tokio::test]
async fn rows_cut_from_the_end_are_found_given_the_anchored_head() {
    let t = TestApp::new();
    scripted(&t).await;
    let auditor = t.token("audrey", Auditor).await;
    let anchor = secret_broker::worker::anchor(&t.app, "interval")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(anchor.seq, 9);
    let verify = |q: String| {
        let t = &t;
        let auditor = auditor.clone();
        async move { t.get(&format!("/v1/audit/verify{q}"), &auditor).await }
    };
    let with_anchor = format!("?head_seq={}&head_hash={}", anchor.seq, anchor.hash);
    let v = verify(with_anchor.clone()).await.expect(200);
    assert_eq!(v.body["ok"], true, "{}", v.text);
    assert_eq!(v.body["head_seq"], 9);

    t.db()
        .execute_batch(&format!(
            "{}; DELETE FROM audit WHERE seq >= 7;",
            t.drop_audit_trigger("audit_no_delete")
        ))
        .unwrap();
    // Without the anchor the shorter chain is valid: that is the gap the anchor closes.
    let v = verify(String::new()).await.expect(200);
    assert_eq!(v.body["ok"], true);
    assert_eq!(v.body["head_seq"], 6);
    let v = verify(with_anchor.clone()).await.expect(200);
    assert_eq!(v.body["ok"], false);
    assert_eq!(v.body["first_broken_seq"], 7);
    assert!(
        v.body["reason"]
            .as_str()
            .unwrap()
            .contains("rows 7 to 9 were removed"),
        "{}",
        v.text
    );

    // Rows written again past the anchored seq do not hide it: row 9 has another hash now.
    for _ in 0..4 {
        t.token("filler", Requester).await;
    }
    let v = verify(with_anchor.clone()).await.expect(200);
    assert_eq!(v.body["ok"], false, "{}", v.text);
    assert_eq!(v.body["first_broken_seq"], 9);
    assert!(v.body["reason"].as_str().unwrap().contains("anchored hash"));

    // Bad anchors are refused with the field named.
    for (q, field) in [
        ("?head_seq=3".to_owned(), "head_hash"),
        ("?head_hash=ab".to_owned(), "head_seq"),
        (
            format!("?head_seq=0&head_hash={}", "a".repeat(64)),
            "head_seq",
        ),
        ("?head_seq=3&head_hash=xyz".to_owned(), "head_hash"),
    ] {
        let r = verify(q.clone()).await.expect(422);
        assert_eq!(r.body["errors"][0]["field"], field, "{q}: {}", r.text);
    }
}

/// With webhooks on, the anchor is also an `audit.anchor` event: a copy outside the database.
#[tokio::test]
async fn the_anchor_goes_to_the_webhook_outbox() {
    let t = TestApp::with(|c| {
        c.webhook_url = OptText(Some("http://127.0.0.1:9/hook".into()));
        c.webhook_secret = SecretText(Some("s3cret".into()));
    });
    scripted(&t).await;
    let a = secret_broker::worker::anchor(&t.app, "interval")
        .await
        .unwrap()
        .unwrap();
    let (event, share_id, payload): (String, Option<String>, String) = t
        .db()
        .query_row(
            "SELECT event, share_id, payload FROM outbox ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(event, "audit.anchor");
    assert_eq!(share_id, None);
    let p: serde_json::Value = serde_json::from_str(&payload).unwrap();
    assert_eq!(p["anchor"]["seq"], a.seq);
    assert_eq!(p["anchor"]["hash"], a.hash.as_str());
    assert_eq!(p["anchor"]["when"], "interval");
    // Anchoring writes no audit row: the head it names is still the head.
    assert_eq!(t.count("audit"), a.seq);
}
