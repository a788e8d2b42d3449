//! `/v1/audit`: read and verify the audit log (auditor, admin).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::Query;
use super::problem::Problem;
use super::{decode_cursor, encode_cursor, page_limit};
use crate::app::App;
use crate::domain::{Caller, MAX_SHARE_ID_LEN, Role, ShareId};
use crate::error::{Error, Result};
use crate::store::audit::{self, Anchor, AuditEvent, Verification};

/// A page of audit events in chain order (oldest first).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AuditPage {
    /// This page.
    pub(crate) items: Vec<AuditEvent>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub(crate) next_cursor: Option<String>,
}

/// Query of `GET /v1/audit`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditQuery {
    /// Only events of this share.
    #[param(max_length = 64)]
    pub(crate) share_id: Option<String>,
    /// Page size, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub(crate) limit: Option<usize>,
    /// `next_cursor` of the previous page.
    #[param(max_length = 64)]
    pub(crate) cursor: Option<String>,
}

/// Read the audit log, oldest first.
#[utoipa::path(
    get, path = "/v1/audit", tag = "audit",
    params(AuditQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of events", body = AuditPage),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs auditor or admin", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad limit, cursor or share_id", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn list(
    State(app): State<Arc<App>>,
    caller: Caller,
    Query(q): Query<AuditQuery>,
) -> Result<Json<AuditPage>> {
    caller.require(&[Role::Auditor, Role::Admin])?;
    let limit = page_limit(q.limit)?;
    let after = decode_cursor(q.cursor.as_deref())?.unwrap_or(0);
    super::check_len("share_id", q.share_id.as_deref(), MAX_SHARE_ID_LEN)?;
    let share_id = q
        .share_id
        .filter(|s| !s.is_empty())
        .map(|s| {
            ShareId::parse(&s).map_err(|_| {
                Error::field(
                    "share_id",
                    "is not a share id: give the id of a share as a UUID, e.g. 01938a5e-7c1f-7b3a-9d2e-4f5a6b7c8d9e",
                )
            })
        })
        .transpose()?;
    let mut items = app
        .store
        .read(move |c| audit::list(c, share_id, after, limit + 1))
        .await?;
    let more = items.len() > limit;
    items.truncate(limit);
    let next_cursor = if more {
        items.last().map(|e| encode_cursor(e.seq))
    } else {
        None
    };
    Ok(Json(AuditPage { items, next_cursor }))
}

/// Query of `GET /v1/audit/verify`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct VerifyQuery {
    /// A head kept earlier (`head_seq` of a verification, or `seq` of an `audit.anchor` event): the
    /// chain must still reach this row. Give with `head_hash`.
    #[param(minimum = 1)]
    pub(crate) head_seq: Option<i64>,
    /// That row's hash (64 hex digits).
    #[param(min_length = 64, max_length = 64, pattern = "^[0-9a-fA-F]{64}$")]
    pub(crate) head_hash: Option<String>,
}

impl VerifyQuery {
    /// The anchor to check against, or a 422 naming the field.
    pub(crate) fn anchor(&self) -> Result<Option<Anchor>> {
        match (self.head_seq, self.head_hash.as_deref()) {
            (None, None) => Ok(None),
            (Some(seq), Some(hash)) => {
                if seq < 1 {
                    return Err(Error::field("head_seq", "must be 1 or more".to_owned()));
                }
                if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(Error::field(
                        "head_hash",
                        "must be 64 hex digits (the hash of the anchored row)".to_owned(),
                    ));
                }
                Ok(Some(Anchor {
                    seq,
                    hash: hash.to_ascii_lowercase(),
                }))
            }
            (Some(_), None) => Err(Error::field(
                "head_hash",
                "is required with head_seq (give both, from a kept anchor)".to_owned(),
            )),
            (None, Some(_)) => Err(Error::field(
                "head_seq",
                "is required with head_hash (give both, from a kept anchor)".to_owned(),
            )),
        }
    }
}

/// Walk the whole hash chain and report the first broken row; with a kept head, also rows removed from
/// the end.
#[utoipa::path(
    get, path = "/v1/audit/verify", tag = "audit",
    params(VerifyQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The verification (ok is false when broken)", body = Verification),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs auditor or admin", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad head_seq or head_hash", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn verify(
    State(app): State<Arc<App>>,
    caller: Caller,
    Query(q): Query<VerifyQuery>,
) -> Result<Json<Verification>> {
    caller.require(&[Role::Auditor, Role::Admin])?;
    let anchor = q.anchor()?;
    let v = app
        .store
        .read(move |c| audit::verify_against(c, anchor.as_ref()))
        .await?;
    if !v.ok {
        tracing::error!(first_broken_seq = ?v.first_broken_seq, reason = ?v.reason, "audit chain is broken");
    }
    Ok(Json(v))
}
