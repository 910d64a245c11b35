//! Presence fan-out between routers: the [`PresenceBus`] boundary.
//!
//! A presence change of a local user is delivered by the router itself to its *local*
//! subscribers (the code `serve` runs) and published **once** on the bus; every other router
//! that has a local user interested in that account (a roster item with subscription 'to' or
//! 'both') receives it and delivers it to those users ([`crate::Router::on_bus_presence`]). The
//! bus also keeps the last presence of every available resource, so that a user logging in
//! learns the presence of contacts homed elsewhere with one read ([`PresenceBus::current`]).
//!
//! Interest is reference-counted by the router: [`PresenceBus::watch`] when the first local
//! user becomes interested in a contact, [`PresenceBus::unwatch`] when the last one stops.
//!
//! `serve` (one router) uses [`LocalBus`]: every subscriber is local, nothing travels. A cluster
//! uses the Redis bus of `starling-presence` (sharded pub/sub). Bus methods never block and
//! never fail the caller: a bus in trouble degrades presence, not messages.

use crate::BoxFuture;
use starling_xml::Element;
use starling_xmpp::FullJid;

/// Presence transport between routers.
pub trait PresenceBus: Send + Sync + 'static {
    /// Whether presences travel to other routers at all. When false (`serve`), the router keeps
    /// no interest index and routes every presence itself.
    fn distributes(&self) -> bool;
    /// Publish a presence of `from` ('from' stamped, no 'to'; type absent or `unavailable`) to
    /// the routers interested in `from`'s account, and record (or, for unavailable, clear) it
    /// as that resource's last presence.
    fn publish(&self, from: &FullJid, presence: &Element);
    /// The first local user became interested in `contact`'s presence (a bare JID).
    fn watch(&self, contact: &str);
    /// The last local user stopped being interested in `contact`'s presence.
    fn unwatch(&self, contact: &str);
    /// The account `bare` left this router (its slot moved): stop keeping its last presences
    /// alive; its new owner publishes them again.
    fn forget(&self, bare: &str);
    /// The last presences of the available resources of `contacts` (bare JIDs), each with its
    /// 'from'. Empty when the bus cannot answer (it is degraded).
    fn current(&self, contacts: Vec<String>) -> BoxFuture<'_, Vec<Element>>;
}

/// The bus of a single router: everything is local, nothing is published.
#[derive(Debug, Default)]
pub struct LocalBus;

impl PresenceBus for LocalBus {
    fn distributes(&self) -> bool {
        false
    }

    fn publish(&self, _from: &FullJid, _presence: &Element) {}

    fn watch(&self, _contact: &str) {}

    fn unwatch(&self, _contact: &str) {}

    fn forget(&self, _bare: &str) {}

    fn current(&self, _contacts: Vec<String>) -> BoxFuture<'_, Vec<Element>> {
        Box::pin(async { Vec::new() })
    }
}
