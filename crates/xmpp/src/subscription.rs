//! The RFC 6121 subscription state machine (§3 and Appendix A) as pure functions.
//!
//! A state is the `subscription` attribute plus the two pending flags of Appendix A ("Pending
//! Out" = `ask='subscribe'`, "Pending In" = an unanswered request from the contact) and the
//! pre-approval flag of §3.4. [`outbound`] is what the user's server does when the user sends a
//! subscription stanza; [`inbound`] is what it does when one arrives from the contact.

/// The `subscription` attribute (RFC 6121 §2.1.2.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
pub enum Subscription {
    /// Neither direction.
    #[default]
    None,
    /// The user receives the contact's presence.
    To,
    /// The contact receives the user's presence.
    From,
    /// Both directions.
    Both,
    /// Only in roster sets and pushes: remove the item.
    Remove,
}

impl Subscription {
    /// Attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            Subscription::None => "none",
            Subscription::To => "to",
            Subscription::From => "from",
            Subscription::Both => "both",
            Subscription::Remove => "remove",
        }
    }

    /// Parse an attribute value.
    pub fn parse(s: &str) -> Option<Subscription> {
        match s {
            "none" => Some(Subscription::None),
            "to" => Some(Subscription::To),
            "from" => Some(Subscription::From),
            "both" => Some(Subscription::Both),
            "remove" => Some(Subscription::Remove),
            _ => None,
        }
    }

    /// The user is subscribed to the contact's presence.
    pub fn has_to(self) -> bool {
        matches!(self, Subscription::To | Subscription::Both)
    }

    /// The contact is subscribed to the user's presence.
    pub fn has_from(self) -> bool {
        matches!(self, Subscription::From | Subscription::Both)
    }

    fn from_flags(to: bool, from: bool) -> Subscription {
        match (to, from) {
            (false, false) => Subscription::None,
            (true, false) => Subscription::To,
            (false, true) => Subscription::From,
            (true, true) => Subscription::Both,
        }
    }
}

/// A contact's full subscription state (Appendix A's nine states plus pre-approval).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct SubState {
    /// The subscription attribute.
    pub subscription: Subscription,
    /// The user asked the contact and has no answer yet (`ask='subscribe'`); only without 'to'.
    pub pending_out: bool,
    /// The contact asked the user and has no answer yet; only without 'from'.
    pub pending_in: bool,
    /// The user pre-approved a future request from the contact (§3.4); only without 'from'.
    pub preapproved: bool,
}

/// The four subscription presence types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubKind {
    /// Request a subscription.
    Subscribe,
    /// Approve a subscription.
    Subscribed,
    /// Cancel one's own subscription.
    Unsubscribe,
    /// Deny or cancel the other's subscription.
    Unsubscribed,
}

impl SubKind {
    /// Parse a presence 'type'.
    pub fn parse(presence_type: &str) -> Option<SubKind> {
        match presence_type {
            "subscribe" => Some(SubKind::Subscribe),
            "subscribed" => Some(SubKind::Subscribed),
            "unsubscribe" => Some(SubKind::Unsubscribe),
            "unsubscribed" => Some(SubKind::Unsubscribed),
            _ => None,
        }
    }

    /// The presence 'type'.
    pub fn as_str(self) -> &'static str {
        match self {
            SubKind::Subscribe => "subscribe",
            SubKind::Subscribed => "subscribed",
            SubKind::Unsubscribe => "unsubscribe",
            SubKind::Unsubscribed => "unsubscribed",
        }
    }
}

/// What to do after processing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The new state (the old one if unchanged).
    pub state: SubState,
    /// The state changed: store it and push the item.
    pub changed: bool,
    /// Outbound: route the stanza to the contact. Inbound: deliver it to the user's available
    /// resources (an inbound subscribe for an offline user stays recorded as pending-in).
    pub forward: bool,
    /// Inbound subscribe only: answer `subscribed` on the user's behalf (already approved, or
    /// pre-approved — §3.1.3).
    pub auto_reply_subscribed: bool,
}

/// Working form: the four flags.
#[derive(Clone, Copy)]
struct Flags {
    to: bool,
    from: bool,
    out: bool,
    inn: bool,
    pre: bool,
}

impl Flags {
    fn of(s: SubState) -> Flags {
        Flags {
            to: s.subscription.has_to(),
            from: s.subscription.has_from(),
            out: s.pending_out,
            inn: s.pending_in,
            pre: s.preapproved,
        }
    }

    fn state(self) -> SubState {
        SubState {
            subscription: Subscription::from_flags(self.to, self.from),
            // Invariants of Appendix A: no pending-out with 'to', no pending-in or pre-approval with 'from'.
            pending_out: self.out && !self.to,
            pending_in: self.inn && !self.from,
            preapproved: self.pre && !self.from,
        }
    }
}

fn outcome(old: SubState, new: Flags, forward: bool, auto: bool) -> Outcome {
    let state = new.state();
    Outcome { state, changed: state != old, forward, auto_reply_subscribed: auto }
}

/// The user sends `kind` to the contact (Appendix A.2; §3.1.2, §3.2.2, §3.3.2, §3.4).
pub fn outbound(state: SubState, kind: SubKind) -> Outcome {
    let mut f = Flags::of(state);
    match kind {
        // A.2.1: ask, unless already subscribed. Re-sent requests are routed again (the
        // contact may have lost the first).
        SubKind::Subscribe => {
            if !f.to {
                f.out = true;
            }
            outcome(state, f, !f.to, false)
        }
        // A.2.2: cancel 'to' or the pending request.
        SubKind::Unsubscribe => {
            let forward = f.to || f.out;
            f.to = false;
            f.out = false;
            outcome(state, f, forward, false)
        }
        // A.2.3 / §3.4: approve a pending request, or pre-approve one not yet received.
        SubKind::Subscribed => {
            if f.from {
                outcome(state, f, false, false)
            } else if f.inn {
                f.from = true;
                f.inn = false;
                f.pre = false;
                outcome(state, f, true, false)
            } else {
                f.pre = true;
                outcome(state, f, false, false)
            }
        }
        // A.2.4: deny a pending request, cancel 'from', or withdraw a pre-approval.
        SubKind::Unsubscribed => {
            let forward = f.from || f.inn;
            f.from = false;
            f.inn = false;
            f.pre = false;
            outcome(state, f, forward, false)
        }
    }
}

/// `kind` arrives from the contact (Appendix A.3; §3.1.3, §3.1.6, §3.2.3, §3.3.3).
pub fn inbound(state: SubState, kind: SubKind) -> Outcome {
    let mut f = Flags::of(state);
    match kind {
        // A.3.1
        SubKind::Subscribe => {
            if f.from {
                // Already approved: answer for the user, do not bother them.
                outcome(state, f, false, true)
            } else if f.pre {
                // §3.4: pre-approved: becomes 'from' at once.
                f.from = true;
                f.pre = false;
                f.inn = false;
                outcome(state, f, false, true)
            } else if f.inn {
                outcome(state, f, false, false)
            } else {
                f.inn = true;
                outcome(state, f, true, false)
            }
        }
        // A.3.2: the contact no longer wants the user's presence.
        SubKind::Unsubscribe => {
            let deliver = f.from || f.inn;
            f.from = false;
            f.inn = false;
            outcome(state, f, deliver, false)
        }
        // A.3.3: only an approval the user asked for counts.
        SubKind::Subscribed => {
            if f.out && !f.to {
                f.to = true;
                f.out = false;
                outcome(state, f, true, false)
            } else {
                outcome(state, f, false, false)
            }
        }
        // A.3.4: the contact denied or cancelled.
        SubKind::Unsubscribed => {
            let deliver = f.to || f.out;
            f.to = false;
            f.out = false;
            outcome(state, f, deliver, false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Subscription::{Both, From, To};

    /// Appendix A's nine states by their RFC names.
    fn st(name: &str) -> SubState {
        let (subscription, pending_out, pending_in) = match name {
            "None" => (Subscription::None, false, false),
            "None+PendingOut" => (Subscription::None, true, false),
            "None+PendingIn" => (Subscription::None, false, true),
            "None+PendingOut+In" => (Subscription::None, true, true),
            "To" => (To, false, false),
            "To+PendingIn" => (To, false, true),
            "From" => (From, false, false),
            "From+PendingOut" => (From, true, false),
            "Both" => (Both, false, false),
            other => panic!("unknown state {other}"),
        };
        SubState { subscription, pending_out, pending_in, preapproved: false }
    }

    /// (from, to-or-"=" for no change, forward/deliver)
    fn check(f: fn(SubState, SubKind) -> Outcome, kind: SubKind, rows: &[(&str, &str, bool)]) {
        for (from, to, fwd) in rows {
            let o = f(st(from), kind);
            let expected = if *to == "=" { st(from) } else { st(to) };
            assert_eq!(o.state, expected, "{kind:?} from {from}");
            assert_eq!(o.changed, *to != "=", "{kind:?} from {from}: changed");
            assert_eq!(o.forward, *fwd, "{kind:?} from {from}: forward");
        }
    }

    #[test]
    fn a2_1_outbound_subscribe() {
        check(
            outbound,
            SubKind::Subscribe,
            &[
                ("None", "None+PendingOut", true),
                ("None+PendingOut", "=", true),
                ("None+PendingIn", "None+PendingOut+In", true),
                ("None+PendingOut+In", "=", true),
                ("To", "=", false),
                ("To+PendingIn", "=", false),
                ("From", "From+PendingOut", true),
                ("From+PendingOut", "=", true),
                ("Both", "=", false),
            ],
        );
    }

    #[test]
    fn a2_2_outbound_unsubscribe() {
        check(
            outbound,
            SubKind::Unsubscribe,
            &[
                ("None", "=", false),
                ("None+PendingOut", "None", true),
                ("None+PendingIn", "=", false),
                ("None+PendingOut+In", "None+PendingIn", true),
                ("To", "None", true),
                ("To+PendingIn", "None+PendingIn", true),
                ("From", "=", false),
                ("From+PendingOut", "From", true),
                ("Both", "From", true),
            ],
        );
    }

    #[test]
    fn a2_3_outbound_subscribed() {
        // Rows where RFC 6121 says "no state change" but §3.4 pre-approval applies are checked below.
        check(
            outbound,
            SubKind::Subscribed,
            &[
                ("None+PendingIn", "From", true),
                ("None+PendingOut+In", "From+PendingOut", true),
                ("To+PendingIn", "Both", true),
                ("From", "=", false),
                ("From+PendingOut", "=", false),
                ("Both", "=", false),
            ],
        );
        for s in ["None", "None+PendingOut", "To"] {
            let o = outbound(st(s), SubKind::Subscribed);
            assert!(o.state.preapproved && o.changed && !o.forward, "pre-approval from {s}");
        }
    }

    #[test]
    fn a2_4_outbound_unsubscribed() {
        check(
            outbound,
            SubKind::Unsubscribed,
            &[
                ("None", "=", false),
                ("None+PendingOut", "=", false),
                ("None+PendingIn", "None", true),
                ("None+PendingOut+In", "None+PendingOut", true),
                ("To", "=", false),
                ("To+PendingIn", "To", true),
                ("From", "None", true),
                ("From+PendingOut", "None+PendingOut", true),
                ("Both", "To", true),
            ],
        );
        let pre = outbound(st("None"), SubKind::Subscribed).state;
        let o = outbound(pre, SubKind::Unsubscribed);
        assert!(!o.state.preapproved && o.changed && !o.forward, "withdrawing a pre-approval");
    }

    #[test]
    fn a3_1_inbound_subscribe() {
        check(
            inbound,
            SubKind::Subscribe,
            &[
                ("None", "None+PendingIn", true),
                ("None+PendingOut", "None+PendingOut+In", true),
                ("None+PendingIn", "=", false),
                ("None+PendingOut+In", "=", false),
                ("To", "To+PendingIn", true),
                ("To+PendingIn", "=", false),
                ("From", "=", false),
                ("From+PendingOut", "=", false),
                ("Both", "=", false),
            ],
        );
        for s in ["From", "From+PendingOut", "Both"] {
            assert!(inbound(st(s), SubKind::Subscribe).auto_reply_subscribed, "{s}");
        }
        assert!(!inbound(st("None"), SubKind::Subscribe).auto_reply_subscribed);
    }

    #[test]
    fn a3_1_with_pre_approval() {
        let pre = outbound(st("To"), SubKind::Subscribed).state;
        let o = inbound(pre, SubKind::Subscribe);
        assert_eq!(o.state, st("Both"));
        assert!(o.auto_reply_subscribed && !o.forward && o.changed);
    }

    #[test]
    fn a3_2_inbound_unsubscribe() {
        check(
            inbound,
            SubKind::Unsubscribe,
            &[
                ("None", "=", false),
                ("None+PendingOut", "=", false),
                ("None+PendingIn", "None", true),
                ("None+PendingOut+In", "None+PendingOut", true),
                ("To", "=", false),
                ("To+PendingIn", "To", true),
                ("From", "None", true),
                ("From+PendingOut", "None+PendingOut", true),
                ("Both", "To", true),
            ],
        );
    }

    #[test]
    fn a3_3_inbound_subscribed() {
        check(
            inbound,
            SubKind::Subscribed,
            &[
                ("None", "=", false),
                ("None+PendingOut", "To", true),
                ("None+PendingIn", "=", false),
                ("None+PendingOut+In", "To+PendingIn", true),
                ("To", "=", false),
                ("To+PendingIn", "=", false),
                ("From", "=", false),
                ("From+PendingOut", "Both", true),
                ("Both", "=", false),
            ],
        );
    }

    #[test]
    fn a3_4_inbound_unsubscribed() {
        check(
            inbound,
            SubKind::Unsubscribed,
            &[
                ("None", "=", false),
                ("None+PendingOut", "None", true),
                ("None+PendingIn", "=", false),
                ("None+PendingOut+In", "None+PendingIn", true),
                ("To", "None", true),
                ("To+PendingIn", "None+PendingIn", true),
                ("From", "=", false),
                ("From+PendingOut", "From", true),
                ("Both", "From", true),
            ],
        );
    }

    #[test]
    fn parsing() {
        assert_eq!(SubKind::parse("subscribed"), Some(SubKind::Subscribed));
        assert_eq!(SubKind::parse("probe"), None);
        assert_eq!(Subscription::parse("both"), Some(Both));
        assert!(Both.has_to() && Both.has_from() && !To.has_from());
    }
}
