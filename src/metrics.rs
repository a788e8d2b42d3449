//! Prometheus metrics (prometheus-client), served at `/metrics` in the OpenMetrics text format.
//!
//! Counters and histograms are updated where things happen; gauges that describe stored state (shares
//! by status, audit chain length, writer queue depth) are read from the store at scrape time.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of HTTP metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct HttpLabels {
    /// Method ([`crate::api::method_label`]: a fixed set of names).
    pub(crate) method: &'static str,
    /// Matched route template (`/v1/shares/{id}`), never the raw path.
    pub(crate) route: String,
    /// Status code.
    pub(crate) status: u16,
}

/// Labels of AWS call metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct AwsLabels {
    /// IAM action of the call, e.g. `kms:PutKeyPolicy`.
    pub(crate) operation: String,
    /// `ok` or the error kind.
    pub(crate) outcome: String,
}

/// A single label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Kind {
    /// Its value.
    pub(crate) kind: String,
}

/// A share status label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct StatusLabel {
    /// The status.
    pub(crate) status: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

/// Every metric the service exports.
pub(crate) struct Metrics {
    registry: Registry,
    /// Requests by route and status.
    pub(crate) http_requests: Family<HttpLabels, Counter>,
    /// Request latency by route and status.
    pub(crate) http_duration: Family<HttpLabels, Histogram, fn() -> Histogram>,
    /// Approver votes by decision.
    pub(crate) votes: Family<Kind, Counter>,
    /// AWS calls by operation and outcome.
    pub(crate) aws_calls: Family<AwsLabels, Counter>,
    /// AWS call latency by operation and outcome.
    pub(crate) aws_duration: Family<AwsLabels, Histogram, fn() -> Histogram>,
    /// Apply and revoke runs by kind (`apply`, `revoke`, `repair`) and outcome.
    pub(crate) saga_runs: Family<AwsLabels, Counter>,
    /// Apply and revoke durations by kind.
    pub(crate) saga_duration: Family<Kind, Histogram, fn() -> Histogram>,
    /// Shares found drifted.
    pub(crate) drift_found: Counter,
    /// Members of the broker's statements found held by no share (per policy, per drift check).
    pub(crate) drift_unheld_found: Counter,
    /// Webhook deliveries by outcome (`delivered`, `retry`, `failed`).
    pub(crate) webhook_deliveries: Family<Kind, Counter>,
    /// Writes per group commit.
    pub(crate) commit_batch: Histogram,
    /// How long writes were held back while the WAL was restarted (SQLite).
    pub(crate) wal_restart_hold: Histogram,
    /// Shares by status (set at scrape).
    pub(crate) shares: Family<StatusLabel, Gauge>,
    /// Audit rows (set at scrape).
    pub(crate) audit_chain_length: Gauge,
    /// Writes waiting for the writer (set at scrape).
    pub(crate) writer_queue_depth: Gauge,
    /// Break-glass shares not yet reviewed (set at scrape).
    pub(crate) break_glass_unreviewed: Gauge,
    /// Refused authentications by reason (`no-token`, `unknown-token`, `jwt-expired`, ...).
    pub(crate) auth_failures: Family<Kind, Counter>,
    /// Refused authentications not written to the audit log (coalesced per client address).
    pub(crate) auth_failures_unaudited: Counter,
    /// Refused mutations of signed-in callers not written to the audit log (coalesced per caller).
    pub(crate) refusals_unaudited: Counter,
    /// OIDC JWKS fetches by outcome (`ok`, `failed`).
    pub(crate) oidc_jwks_refreshes: Family<Kind, Counter>,
    /// Requests answered 429 by limit (`token`, `address`) or 503 because too many were in flight
    /// (`concurrency`).
    pub(crate) limited: Family<Kind, Counter>,
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// The process-wide metrics.
pub(crate) fn metrics() -> &'static Metrics {
    METRICS.get_or_init(|| {
        let mut r = Registry::with_prefix("secret_broker");
        let m = Metrics {
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(latency_histogram),
            votes: Family::default(),
            aws_calls: Family::default(),
            aws_duration: Family::new_with_constructor(latency_histogram),
            saga_runs: Family::default(),
            saga_duration: Family::new_with_constructor(latency_histogram),
            drift_found: Counter::default(),
            drift_unheld_found: Counter::default(),
            webhook_deliveries: Family::default(),
            commit_batch: Histogram::new(exponential_buckets(1.0, 2.0, 10)),
            wal_restart_hold: Histogram::new(exponential_buckets(0.000_1, 2.0, 16)),
            shares: Family::default(),
            audit_chain_length: Gauge::default(),
            writer_queue_depth: Gauge::default(),
            break_glass_unreviewed: Gauge::default(),
            auth_failures: Family::default(),
            auth_failures_unaudited: Counter::default(),
            refusals_unaudited: Counter::default(),
            oidc_jwks_refreshes: Family::default(),
            limited: Family::default(),
            registry: Registry::default(),
        };
        r.register(
            "http_requests",
            "HTTP requests by route and status",
            m.http_requests.clone(),
        );
        r.register(
            "http_request_duration_seconds",
            "HTTP request latency",
            m.http_duration.clone(),
        );
        r.register(
            "approval_votes",
            "Approver votes by decision",
            m.votes.clone(),
        );
        r.register(
            "aws_calls",
            "AWS calls by operation and outcome",
            m.aws_calls.clone(),
        );
        r.register(
            "aws_call_duration_seconds",
            "AWS call latency",
            m.aws_duration.clone(),
        );
        r.register(
            "saga_runs",
            "Apply, revoke and repair runs by kind and outcome",
            m.saga_runs.clone(),
        );
        r.register(
            "saga_duration_seconds",
            "Apply, revoke and repair durations",
            m.saga_duration.clone(),
        );
        r.register("drift_found", "Shares found drifted", m.drift_found.clone());
        r.register(
            "drift_unheld_found",
            "Members of the broker's statements (a principal, a secret pattern, a statement) found held by no share",
            m.drift_unheld_found.clone(),
        );
        r.register(
            "webhook_deliveries",
            "Webhook delivery attempts by outcome",
            m.webhook_deliveries.clone(),
        );
        r.register(
            "writer_commit_batch_size",
            "Writes per group commit",
            m.commit_batch.clone(),
        );
        r.register(
            "writer_wal_restart_hold_seconds",
            "How long writes were held back while the WAL was restarted (SQLite)",
            m.wal_restart_hold.clone(),
        );
        r.register("shares", "Shares by status", m.shares.clone());
        r.register(
            "audit_chain_length",
            "Rows in the audit log",
            m.audit_chain_length.clone(),
        );
        r.register(
            "writer_queue_depth",
            "Writes waiting for the database writer",
            m.writer_queue_depth.clone(),
        );
        r.register(
            "break_glass_unreviewed",
            "Break-glass shares (approved without their quorum) not yet reviewed",
            m.break_glass_unreviewed.clone(),
        );
        r.register(
            "auth_failures",
            "Refused authentications by reason",
            m.auth_failures.clone(),
        );
        r.register(
            "auth_failures_unaudited",
            "Refused authentications counted but not written to the audit log (coalesced per address)",
            m.auth_failures_unaudited.clone(),
        );
        r.register(
            "refusals_unaudited",
            "Refused mutations counted but not written to the audit log (coalesced per caller)",
            m.refusals_unaudited.clone(),
        );
        r.register(
            "oidc_jwks_refreshes",
            "OIDC JWKS fetches by outcome",
            m.oidc_jwks_refreshes.clone(),
        );
        r.register(
            "limited_requests",
            "Requests refused by a rate limit (429) or the concurrency limit (503)",
            m.limited.clone(),
        );
        Metrics { registry: r, ..m }
    })
}

impl Metrics {
    /// Records one AWS call.
    pub(crate) fn aws_call(&self, operation: &str, outcome: &str, took: Duration) {
        let l = AwsLabels {
            operation: operation.to_owned(),
            outcome: outcome.to_owned(),
        };
        self.aws_calls.get_or_create(&l).inc();
        self.aws_duration
            .get_or_create(&l)
            .observe(took.as_secs_f64());
    }

    /// Records one saga run.
    pub(crate) fn saga(&self, kind: &str, ok: bool, took: Duration) {
        self.saga_runs
            .get_or_create(&AwsLabels {
                operation: kind.to_owned(),
                outcome: if ok { "ok" } else { "failed" }.to_owned(),
            })
            .inc();
        self.saga_duration
            .get_or_create(&Kind {
                kind: kind.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// The OpenMetrics text.
    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
