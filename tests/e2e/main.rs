//! End-to-end tests: the real `starling` binary on loopback, with real TLS (rustls against the
//! certificate the server generated), real SCRAM, and raw bytes for every protocol edge case.
//!
//! - `streams`: stream errors and limits (RFC 6120 §4.9), each followed by a healthy login.
//! - `cluster`: three routers, two edges and Redis as processes; kills, restarts, a join.
//! - `flows`: login variants, messaging, offline delivery across a restart, components,
//!   registration, shutdown, and the `user` CLI.
//! - `persistence`: rosters, vCards and private XML across a restart; the `user` CLI against a
//!   running server.
//! - `resources`: write and idle timeouts for clients, idle behaviour of components.

// Test code: an unwrap is an assertion.
#![allow(clippy::unwrap_used)]

mod cluster;
mod flows;
mod persistence;
mod resources;
mod streams;
mod support;
