//! secret-broker: brokers cross-account access to AWS Secrets Manager secrets.
//!
//! A share request names a secret and a consumer principal in another account; approvers decide; the
//! policy module composes the three documents (resource policy, key-policy statement, consumer identity
//! policy); every request and decision is recorded in an append-only, hash-chained audit log. The
//! broker never reads a secret's value.

#![forbid(unsafe_code)]

pub mod api;
pub mod app;
pub mod apply;
pub mod auth;
pub mod aws;
pub mod config;
pub mod console;
pub mod doctor;
pub mod domain;
pub mod error;
pub mod identity;
pub mod inspect;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod policy;
pub mod refusals;
pub mod server;
pub mod slack;
pub mod store;
pub mod tls;
pub mod worker;
pub mod workflow;
