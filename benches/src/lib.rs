//! Pure helpers of the benchmark instruments, unit-tested without sockets.
//!
//! - [`presence`]: the `presence` scenario's ring of contacts, its round tags, and the cheap
//!   receive path (a byte framer for an open stream and a presence scanner) that lets one
//!   generator core count hundreds of thousands of deliveries per second.
//!
//! - [`login`]: what the login storm reads off the server's raw replies (element, text,
//!   attribute, whether the legacy session is required), so a storm's logins cost the generator
//!   less than they cost the server; and [`login::RawConn`], a TCP stream read through the raw
//!   framer, which both ends of a measured login use.
//!
//! The load generator itself is `src/bin/loadgen.rs`; `src/bin/login_floor.rs` is the least a
//! server can do for its login storm (the floor under every server's CPU per login).

#![deny(missing_docs)]

pub mod login;
pub mod presence;
