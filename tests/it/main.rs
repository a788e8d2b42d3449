//! The one integration-test binary: drives the real router over a real SQLite file, and the real
//! binary where the README's commands are concerned.
#![allow(clippy::unwrap_used, missing_docs)]

mod harness;
mod http;
mod jwt;
mod moto;
mod pg;

mod apply;
mod audit_log;
mod aws_errors;
mod break_glass;
mod cli;
mod compaction;
mod concurrency;
mod console;
mod contract;
mod doctor;
mod eval_edges;
mod eval_props;
mod eval_table;
mod idempotency;
mod identity;
mod layers;
mod lifecycle;
mod openapi;
mod ops;
mod org_shares;
mod policy_props;
mod recovery;
mod replicas;
mod replicas_regions;
mod roles;
mod saga_edges;
mod security;
mod slack;
mod tokens_api;
mod validation;
mod workflow;
