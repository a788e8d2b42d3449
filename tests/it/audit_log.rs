//! The audit log: one row per change, chained; edits behind the service's back are found.

use secret_broker::domain::Role::*;
use secret_broker::store::audit::{GENESIS, row_hash};
use serde_json::json;

use crate::harness::TestApp;

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
    // Every row links to the previous and hashes to its stored hash (recomputed here independently).
    let mut prev = GENESIS.to_owned();
    for e in items {
        assert_eq!(e["prev_hash"], prev.as_str());
        let details = serde_json::to_string(&e["details"]).unwrap();
        let h = row_hash(
            &prev,
            e["seq"].as_i64().unwrap(),
            e["at"].as_str().unwrap(),
            e["actor"].as_str().unwrap(),
            e["action"].as_str().unwrap(),
            e["share_id"].as_str(),
            e["request_id"].as_str(),
            &details,
        );
        assert_eq!(e["hash"], h.as_str());
        prev = h;
    }
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
    db.execute_batch(
        "DROP TRIGGER audit_no_update;
         UPDATE audit SET details = replace(details, 'fine', 'FINE') WHERE seq = 6;",
    )
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
        .execute_batch("DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE seq = 3;")
        .unwrap();
    let v = t.get("/v1/audit/verify", &auditor).await.expect(200);
    assert_eq!(v.body["ok"], false);
    assert_eq!(v.body["first_broken_seq"], 3);
    assert!(v.body["reason"].as_str().unwrap().contains("missing"));
}
