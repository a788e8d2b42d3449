//! Pure policy code: no I/O, no clock.
//!
//! For now this holds the strict ARN newtypes that every layer parses at the edge; composition, merge,
//! lint and evaluation of the three policy documents build on them.

pub mod arn;
