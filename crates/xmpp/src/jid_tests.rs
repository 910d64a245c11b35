//! Property tests for JIDs (RFC 7622) as Starling uses them, through the `jid` crate.

use crate::{parse_jid, BareJid, FullJid, Jid};
use proptest::prelude::*;

proptest! {
    /// Any string either fails to parse or round-trips through its printed form.
    #[test]
    fn parse_print_parse_is_stable(s in "\\PC{0,40}") {
        if let Ok(j) = parse_jid(&s) {
            let again = parse_jid(&j.to_string()).unwrap();
            prop_assert_eq!(j, again);
        }
    }

    /// Well-formed parts always make a full JID whose parts come back (case-folded local/domain).
    #[test]
    fn well_formed_parts_round_trip(local in "[a-z][a-z0-9._-]{0,15}", domain in "[a-z]{1,10}(\\.[a-z]{2,5})?", res in "[A-Za-z0-9 ]{1,12}") {
        let full = FullJid::new(&format!("{local}@{domain}/{res}")).unwrap();
        prop_assert_eq!(full.node().map(|n| n.to_string()), Some(local.clone()));
        prop_assert_eq!(full.domain().to_string(), domain.clone());
        prop_assert_eq!(full.resource().to_string(), res);
        prop_assert_eq!(full.to_bare(), BareJid::new(&format!("{local}@{domain}")).unwrap());
    }
}

#[test]
fn normalization_and_refusals() {
    assert_eq!(BareJid::new("Juliet@EXAMPLE.com").unwrap().to_string(), "juliet@example.com");
    for bad in ["", "@example.com", "a@", "a@b/", "a@@b", "a b@c"] {
        assert!(Jid::new(bad).is_err(), "{bad:?} should be refused");
    }
    assert!(Jid::new(&format!("{}@example.com", "x".repeat(1024))).is_err(), "localpart over 1023 bytes");
}

#[test]
fn a_jid_that_would_change_at_its_next_parse_is_refused() {
    // Code points Unicode 3.2 had not assigned, which normalization turns into capitals that
    // stringprep's case folding then misses (found by the property test above: U+1CCD6).
    for s in ["\u{1CCD6}", "\u{1F130}lice@example.com", "alice@\u{1F130}.example"] {
        let first = Jid::new(s).expect("the jid crate accepts it");
        assert_ne!(Jid::new(first.as_str()).ok(), Some(first.clone()), "{s:?} changes when parsed again");
        assert!(parse_jid(s).is_err(), "{s:?} should be refused");
    }
    // What parses the same twice is kept as it was.
    for s in
        ["juliet@example.com", "Juliet@EXAMPLE.com/Balcony", "example.com", "\u{00E9}lise@caf\u{00E9}.fr"]
    {
        assert_eq!(parse_jid(s).unwrap(), Jid::new(s).unwrap(), "{s:?}");
    }
}
