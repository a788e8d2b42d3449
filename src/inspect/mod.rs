//! Reading the live policies without writing them: drift detection ([`drift`]), the live plan of a
//! share ([`plan`]), and the access check and review ([`access`]). Each reads and parses a policy once,
//! through [`LivePolicies`] (defined beside the
//! applier, whose repair reads the same way); the writes are [`crate::apply`]'s.

pub(crate) mod access;
pub(crate) mod drift;
pub(crate) mod plan;

pub(crate) use crate::apply::live::{Live, LivePolicies};

pub(crate) use access::Review;
pub(crate) use plan::{LivePlan, PolicyDiff};
