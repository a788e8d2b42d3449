//! Reading the live policies without writing them: drift detection ([`drift`]), the live plan of a
//! share ([`plan`]), and the access check and review ([`access`]). Each reads and parses a policy once,
//! through [`LivePolicies`] (defined beside the
//! applier, whose repair reads the same way); the writes are [`crate::apply`]'s.

pub mod access;
pub mod drift;
pub mod plan;

pub(crate) use crate::apply::live::{Live, LivePolicies};

pub use access::{Review, ReviewAction, ReviewFailure, ReviewItem};
pub use drift::Drift;
pub use plan::{LivePlan, PolicyDiff};
