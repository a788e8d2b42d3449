//! Crash recovery and the worker's recovery pass against the emulator, with AWS calls held at a proxy
//! so that the order of two actors is chosen by the test, not by chance.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{TestApp, actors, approve, broker_entries, request, share};
use crate::moto::{Fault, HoldingProxy, moto};

const ROLE: &str = "arn:aws:iam::444455556666:role/app-reader";

/// The part of an ARN that is unique to one test's secret or key (it is in every request about it).
pub fn unique(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap()
}

/// (state, error) of the job that carried `share`, newest first.
fn jobs_of(t: &TestApp, share: &str) -> Vec<(String, String, Option<String>)> {
    let db = t.db();
    let mut st = db
        .prepare("SELECT kind, state, error FROM jobs WHERE share_ids LIKE ?1 ORDER BY rowid")
        .unwrap();
    st.query_map([format!("%{share}%")], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// Polls (bounded) until the share has `want`.
async fn wait_status(t: &TestApp, root: &str, id: &str, want: &str) -> Value {
    let mut last = Value::Null;
    for _ in 0..600 {
        last = t
            .get(&format!("/v1/shares/{id}"), root)
            .await
            .expect(200)
            .body;
        if last["status"] == want {
            return last;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("share {id} never became {want}: {last}");
}

/// The worker's recovery pass lists running jobs, then takes each one's secret lock. A job that finishes
/// while the pass waits for that lock is not an orphan: its journal must stay as it finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovery_pass_leaves_a_job_that_finished_while_it_waited_alone() {
    let m = moto();
    let proxy = HoldingProxy::start().await;
    let t = TestApp::with_aws_via(&proxy.url, |_| {});
    let a = actors(&t).await;

    // An orphan, listed first: its task died after the key-policy write (the journal says `running`).
    let key0 = m.create_key().await;
    let secret0 = m.create_secret(Some(&key0)).await;
    t.faults.arm(Fault::Crash {
        op: "PutResourcePolicy",
    });
    let orphan = request(&t, &a, &secret0, ROLE, json!({})).await;
    approve(&t, &a, &orphan).await;
    t.settle().await;
    assert_eq!(share(&t, &a, &orphan).await["status"], "applying");
    t.clock.advance(Duration::from_secs(1));

    // A job running when the pass starts: held at its resource-policy write.
    let key = m.create_key().await;
    let secret = m.create_secret(Some(&key)).await;
    let write = proxy.hold("PutResourcePolicy", unique(&secret));
    let id = request(&t, &a, &secret, ROLE, json!({})).await;
    approve(&t, &a, &id).await;
    write.reached().await;

    // The pass: it has listed both jobs once it is inside the orphan's compensation (held there).
    let compensation = proxy.hold("GetResourcePolicy", unique(&secret0));
    let app = t.app.clone();
    let pass = tokio::spawn(async move { secret_broker::worker::tick(&app).await });
    compensation.reached().await;

    // The running job finishes while the pass waits; then the pass goes on.
    write.release();
    wait_status(&t, &a.root, &id, "active").await;
    assert_eq!(jobs_of(&t, &id), [("apply".into(), "done".into(), None)]);
    compensation.release();
    tokio::time::timeout(Duration::from_secs(60), pass)
        .await
        .expect("the pass did not end within 60 s")
        .unwrap()
        .unwrap();
    t.settle().await;

    // The finished job's journal is as it finished, its statements are in place; the orphan was
    // compensated and its share applied again.
    assert_eq!(jobs_of(&t, &id), [("apply".into(), "done".into(), None)]);
    assert_eq!(share(&t, &a, &id).await["status"], "active");
    assert_eq!(broker_entries(&m.key_policy(&key).await).len(), 1);
    assert_eq!(
        broker_entries(&m.resource_policy(&secret).await.unwrap()).len(),
        1
    );
    let orphan_jobs = jobs_of(&t, &orphan);
    assert_eq!(orphan_jobs.len(), 2, "{orphan_jobs:?}");
    assert_eq!(orphan_jobs[0].1, "compensated");
    assert_eq!(orphan_jobs[1].1, "done");
    assert_eq!(share(&t, &a, &orphan).await["status"], "active");
}

/// A worker pass takes over orphaned jobs before its drift checks: when the pass reaches the drift
/// check of another secret (held at the proxy), the orphan is already compensated. Recovery used to
/// run last in the pass, after every drift check, so a dead replica's jobs waited for all of them
/// (3 to 16 s with a 1 s interval in the two-replica test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_takes_over_orphaned_jobs_before_its_drift_checks() {
    let m = moto();
    let proxy = HoldingProxy::start().await;
    let t = TestApp::with_aws_via(&proxy.url, |_| {});
    let a = actors(&t).await;

    // An active share: the pass checks its secret's policies for drift.
    let key = m.create_key().await;
    let secret = m.create_secret(Some(&key)).await;
    let live = request(&t, &a, &secret, ROLE, json!({})).await;
    approve(&t, &a, &live).await;
    wait_status(&t, &a.root, &live, "active").await;

    // An orphan: its task died after the key-policy write (the journal says `running`).
    let key0 = m.create_key().await;
    let secret0 = m.create_secret(Some(&key0)).await;
    t.faults.arm(Fault::Crash {
        op: "PutResourcePolicy",
    });
    let orphan = request(&t, &a, &secret0, ROLE, json!({})).await;
    approve(&t, &a, &orphan).await;
    t.settle().await;
    assert_eq!(share(&t, &a, &orphan).await["status"], "applying");
    assert_eq!(jobs_of(&t, &orphan)[0].1, "running");
    t.clock.advance(Duration::from_secs(1));

    // The pass, held at the drift check's read of the live share's resource policy.
    let drift = proxy.hold("GetResourcePolicy", unique(&secret));
    let app = t.app.clone();
    let pass = tokio::spawn(async move { secret_broker::worker::tick(&app).await });
    drift.reached().await;
    let jobs = jobs_of(&t, &orphan);
    assert_eq!(
        jobs[0].1, "compensated",
        "the orphan waited for the drift checks: {jobs:?}"
    );
    drift.release();
    tokio::time::timeout(Duration::from_secs(60), pass)
        .await
        .expect("the pass did not end within 60 s")
        .unwrap()
        .unwrap();
    t.settle().await;
    assert_eq!(share(&t, &a, &orphan).await["status"], "active");
    assert_eq!(share(&t, &a, &live).await["status"], "active");
}
