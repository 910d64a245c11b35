//! JID parsing must never panic, and a parsed JID must print to a string that parses back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use starling_xmpp::Jid;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(j) = Jid::new(s) {
        let again = Jid::new(&j.to_string()).expect("a printed JID parses");
        assert_eq!(j, again);
    }
});
