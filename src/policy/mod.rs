//! Pure policy code: no I/O, no clock.
//!
//! - [`arn`]: strictly parsed secret, key and principal ARNs;
//! - [`document`]: an IAM policy model that round-trips real policies byte for byte;
//! - [`compose`]: the three documents of a share;
//! - [`merge`]: upsert and remove broker statements without touching foreign ones;
//! - [`eval`]: IAM evaluation of the three layers, three-valued, with reasons and hints;
//! - [`lint`]: size limits, public principals, wildcard and write actions, missing conditions;
//! - [`plan`]: all of the above for one grant, as the `plan` command prints it.

pub mod arn;
pub mod compose;
pub mod document;
pub mod eval;
pub mod lint;
pub mod merge;
pub mod plan;
