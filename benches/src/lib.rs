//! Pure helpers of the benchmark instruments, unit-tested without sockets.
//!
//! - [`presence`]: the `presence` scenario's ring of contacts, its round tags, and the cheap
//!   receive path (a byte framer for an open stream and a presence scanner) that lets one
//!   generator core count hundreds of thousands of deliveries per second.
//!
//! The load generator itself is `src/bin/loadgen.rs`.

#![deny(missing_docs)]

pub mod presence;
