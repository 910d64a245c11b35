//! SASL message parsing must never panic on any bytes, in any step.
#![no_main]

use libfuzzer_sys::fuzz_target;
use starling_xmpp::sasl::{parse_plain, ScramCredentials, ScramHash, ScramServer};

fuzz_target!(|data: &[u8]| {
    let _ = parse_plain(data);
    let mid = data.len() / 2;
    let mut s = ScramServer::with_nonce(ScramHash::Sha256, "fuzz");
    if s.client_first(&data[..mid]).is_ok() {
        s.server_first(&ScramCredentials::decoy(ScramHash::Sha256, "u", b"k"));
    }
    let _ = s.client_final(&data[mid..]);
});
