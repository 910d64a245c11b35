//! Unpredictable bytes: SCRAM nonces and salts, stream ids, generated resources, secrets.
//!
//! Each thread keeps a ChaCha12 generator seeded from the operating system and reseeded from it
//! after every 64 KiB it produces (rand's `ReseedingRng`, the construction of its `ThreadRng`).
//! Asking the kernel for every nonce cost a system call per stream id and SCRAM exchange, three
//! per login; this costs one per ~2,700 logins.

use rand::rngs::{OsRng, ReseedingRng};
use rand::RngCore;
use rand_chacha::ChaCha12Core;
use std::cell::RefCell;

/// Bytes produced between reseeds from the operating system.
const RESEED_AFTER: u64 = 64 * 1024;

thread_local! {
    static GENERATOR: RefCell<Option<ReseedingRng<ChaCha12Core, OsRng>>> = const { RefCell::new(None) };
}

/// The operating system's random source could not seed the generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the system's random source is unavailable")]
pub struct Unavailable;

/// Fill `buf` with unpredictable bytes.
pub fn fill(buf: &mut [u8]) -> Result<(), Unavailable> {
    GENERATOR
        .try_with(|cell| {
            let mut generator = cell.try_borrow_mut().map_err(|_| Unavailable)?;
            if generator.is_none() {
                *generator = Some(ReseedingRng::new(RESEED_AFTER, OsRng).map_err(|_| Unavailable)?);
            }
            let generator = generator.as_mut().ok_or(Unavailable)?;
            generator.fill_bytes(buf);
            Ok(())
        })
        .map_err(|_| Unavailable)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_differ_and_are_not_constant() {
        let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
        fill(&mut a).unwrap();
        fill(&mut b).unwrap();
        assert_ne!(a, b);
        assert_ne!(a, [0u8; 32]);
    }

    #[test]
    fn threads_do_not_share_a_stream() {
        let other = std::thread::spawn(|| {
            let mut b = [0u8; 32];
            fill(&mut b).map(|_| b)
        });
        let mut a = [0u8; 32];
        fill(&mut a).unwrap();
        assert_ne!(Ok(a), other.join().unwrap());
    }

    #[test]
    fn reseeding_keeps_producing() {
        // Past several reseed thresholds, output keeps changing (no stuck or repeating state).
        let mut seen = std::collections::HashSet::new();
        let mut chunk = [0u8; 4096];
        for _ in 0..64 {
            fill(&mut chunk).unwrap();
            assert!(seen.insert(chunk[..16].to_vec()));
        }
    }
}
