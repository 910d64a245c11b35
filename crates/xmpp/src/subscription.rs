//! The RFC 6121 presence subscription state machine (§3 and Appendix A) as pure functions.
//!
//! A contact's state, from the user's point of view, is the `subscription` attribute plus the two
//! pending flags of Appendix A.1 ("Pending Out" = the user asked the contact, shown as
//! `ask='subscribe'`; "Pending In" = the contact asked the user and has no answer yet) and the
//! pre-approval flag of §3.4 (shown as `approved='true'`). Together they give Appendix A.1's
//! nine states, plus pre-approval on the three states that allow it ("None", "None + Pending
//! Out", "To").
//!
//! [`outbound`] is what the user's server does when the user sends a subscription stanza to the
//! contact (Appendix A.2); [`inbound`] is what it does when one arrives from the contact
//! (Appendix A.3). Starling supports pre-approval (§3.4), so an outbound "subscribed" without a
//! pending request is noted rather than dropped.

/// The `subscription` attribute of a roster item (RFC 6121 §2.1.2.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
pub enum Subscription {
    /// Neither side receives the other's presence.
    #[default]
    None,
    /// The user receives the contact's presence.
    To,
    /// The contact receives the user's presence.
    From,
    /// Both directions.
    Both,
    /// Only in roster sets and pushes: the item is (to be) removed (§2.5). Never a stored state;
    /// [`outbound`] and [`inbound`] read it as [`Subscription::None`].
    Remove,
}

impl Subscription {
    /// The attribute value: `"none"`, `"to"`, `"from"`, `"both"` or `"remove"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Subscription::None => "none",
            Subscription::To => "to",
            Subscription::From => "from",
            Subscription::Both => "both",
            Subscription::Remove => "remove",
        }
    }

    /// Parse an attribute value (exact, case-sensitive as in the schema, RFC 6121 Appendix D).
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

    /// The user is subscribed to the contact's presence ("to" or "both").
    pub fn has_to(self) -> bool {
        matches!(self, Subscription::To | Subscription::Both)
    }

    /// The contact is subscribed to the user's presence ("from" or "both").
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

/// A contact's full subscription state: RFC 6121 Appendix A.1's nine states, plus pre-approval
/// (§3.4).
///
/// The states the functions here produce keep Appendix A's invariants: `pending_out` only
/// without "to", `pending_in` and `preapproved` only without "from", never `Remove`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct SubState {
    /// The subscription attribute.
    pub subscription: Subscription,
    /// "Pending Out": the user asked the contact and has no answer yet (`ask='subscribe'`).
    pub pending_out: bool,
    /// "Pending In": the contact asked the user and the user has not answered yet.
    pub pending_in: bool,
    /// The user pre-approved a future request from the contact (§3.4, `approved='true'`).
    pub preapproved: bool,
}

/// The four subscription-related presence types (RFC 6121 §3, §4.7.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubKind {
    /// Request a subscription to the other's presence (§3.1).
    Subscribe,
    /// Approve the other's subscription request, or pre-approve one (§3.1.5, §3.4).
    Subscribed,
    /// Cancel one's own subscription to the other's presence (§3.3).
    Unsubscribe,
    /// Deny the other's request or cancel the other's subscription (§3.2).
    Unsubscribed,
}

impl SubKind {
    /// The kind for a presence 'type' attribute; `None` for any other type.
    pub fn parse(presence_type: &str) -> Option<SubKind> {
        match presence_type {
            "subscribe" => Some(SubKind::Subscribe),
            "subscribed" => Some(SubKind::Subscribed),
            "unsubscribe" => Some(SubKind::Unsubscribe),
            "unsubscribed" => Some(SubKind::Unsubscribed),
            _ => None,
        }
    }

    /// The presence 'type' attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            SubKind::Subscribe => "subscribe",
            SubKind::Subscribed => "subscribed",
            SubKind::Unsubscribe => "unsubscribe",
            SubKind::Unsubscribed => "unsubscribed",
        }
    }
}

/// The result of processing a subscription stanza: what the caller has to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The new state (equal to the old one if unchanged).
    pub state: SubState,
    /// The state changed: store it and send a roster push (for the user side, the item must be
    /// created if absent — except that a bare "None + Pending In" is not shown in the roster
    /// until the user approves, Appendix A.1 state 3).
    pub changed: bool,
    /// Outbound: route the stanza to the contact ("ROUTE?" of Appendix A.2). Inbound: deliver it
    /// to the user's available resources, or keep it for delivery at the next login for an
    /// inbound subscribe ("DELIVER?" of Appendix A.3; §3.1.3).
    pub forward: bool,
    /// Inbound "subscribe" only: answer "subscribed" on the user's behalf, because the contact
    /// already has "from"/"both" (Appendix A.3.1 note 2; §3.1.3) or was pre-approved (§3.4.2,
    /// Appendix A.3.1 note 1).
    pub auto_reply_subscribed: bool,
}

/// The state as independent flags.
#[derive(Clone, Copy)]
struct Flags {
    to: bool,
    from: bool,
    pending_out: bool,
    pending_in: bool,
    preapproved: bool,
}

impl Flags {
    fn of(s: SubState) -> Flags {
        Flags {
            to: s.subscription.has_to(),
            from: s.subscription.has_from(),
            pending_out: s.pending_out,
            pending_in: s.pending_in,
            preapproved: s.preapproved,
        }
    }

    /// Back to a state, enforcing Appendix A.1's invariants: a request is no longer pending once
    /// it is granted, and a pre-approval is used up by the subscription it approved.
    fn state(self) -> SubState {
        SubState {
            subscription: Subscription::from_flags(self.to, self.from),
            pending_out: self.pending_out && !self.to,
            pending_in: self.pending_in && !self.from,
            preapproved: self.preapproved && !self.from,
        }
    }
}

fn outcome(old: SubState, new: Flags, forward: bool, auto_reply_subscribed: bool) -> Outcome {
    let state = new.state();
    Outcome { state, changed: state != old, forward, auto_reply_subscribed }
}

/// The user sends a subscription stanza of `kind` to the contact; `state` is the user's current
/// state for the contact ([`SubState::default`] if there is no roster item). RFC 6121 Appendix
/// A.2, §3.1.2, §3.2.2, §3.3.2, §3.4.2:
///
/// - subscribe (Table 2, §3.1.2): always routed; sets Pending Out unless already "to"/"both".
/// - unsubscribe (Table 3, §3.3.2): always routed; clears "to" and Pending Out.
/// - subscribed (Table 4, §3.1.5, §3.4.2): with Pending In, grants "from" and is routed; with
///   "from" already, silently ignored; otherwise noted as a pre-approval and not routed.
/// - unsubscribed (Table 5, §3.2.2): with "from" or Pending In, clears both and is routed;
///   otherwise not routed (SHOULD NOT) but still cancels a pre-approval (§3.4 note).
pub fn outbound(state: SubState, kind: SubKind) -> Outcome {
    let mut f = Flags::of(state);
    match kind {
        SubKind::Subscribe => {
            // A.2.1: the stanza MUST be routed in every state (a resent request may be
            // needed if the contact's server lost the first; it auto-replies if subscribed).
            if !f.to {
                f.pending_out = true;
            }
            outcome(state, f, true, false)
        }
        SubKind::Unsubscribe => {
            // A.2.2: MUST route in every state.
            f.to = false;
            f.pending_out = false;
            outcome(state, f, true, false)
        }
        SubKind::Subscribed => {
            if f.from {
                // A.2.3 "From", "From + Pending Out", "Both": no state change, MUST NOT route
                // (§3.4.2 rule 1: silently ignore).
                outcome(state, f, false, false)
            } else if f.pending_in {
                // A.2.3 "None + Pending In" -> "From", "None + Pending Out+In" -> "From + Pending
                // Out", "To + Pending In" -> "Both": MUST route (§3.1.5, §3.4.2 rule 2).
                f.from = true;
                f.pending_in = false;
                f.preapproved = false;
                outcome(state, f, true, false)
            } else {
                // A.2.3 "None", "None + Pending Out", "To": pre-approval, MUST NOT route
                // (§3.4.2 rules 3 and 4).
                f.preapproved = true;
                outcome(state, f, false, false)
            }
        }
        SubKind::Unsubscribed => {
            // A.2.4: MUST route where "from" or Pending In is cleared; S.N. elsewhere, where only
            // a pre-approval can be cancelled (note 1, §3.4).
            let forward = f.from || f.pending_in;
            f.from = false;
            f.pending_in = false;
            f.preapproved = false;
            outcome(state, f, forward, false)
        }
    }
}

/// A subscription stanza of `kind` arrives from the contact for the user; `state` is the user's
/// current state for the contact ([`SubState::default`] if there is no roster item). RFC 6121
/// Appendix A.3, §3.1.3, §3.1.6, §3.2.3, §3.3.3:
///
/// - subscribe (Table 6, §3.1.3): with "from" already, not delivered and auto-answered; if
///   pre-approved, grants "from" at once and is auto-answered (§3.4.2); a repeated request while
///   Pending In is not delivered again; otherwise sets Pending In and is delivered.
/// - unsubscribe (Table 7, §3.3.3): clears "from" and Pending In; delivered only if that changed
///   anything. When `changed`, the caller SHOULD also auto-reply "unsubscribed" (Table 7 note 1)
///   and send unavailable presence from the user's resources to the contact (§3.3.3).
/// - subscribed (Table 8, §3.1.6): grants "to" only when Pending Out; otherwise ignored and not
///   delivered.
/// - unsubscribed (Table 9, §3.2.3): clears "to" and Pending Out; delivered only if that changed
///   anything.
pub fn inbound(state: SubState, kind: SubKind) -> Outcome {
    let mut f = Flags::of(state);
    match kind {
        SubKind::Subscribe => {
            if f.from {
                // A.3.1 "From", "From + Pending Out", "Both": no state change, S.N. deliver,
                // SHOULD auto-reply "subscribed" (note 2).
                outcome(state, f, false, true)
            } else if f.preapproved {
                // A.3.1 note 1 / §3.4.2: pre-approved: "from" at once, auto-reply, and the user
                // is not asked.
                f.from = true;
                outcome(state, f, false, true)
            } else if f.pending_in {
                // A.3.1 "None + Pending In", "None + Pending Out+In", "To + Pending In": no state
                // change, S.N. deliver.
                outcome(state, f, false, false)
            } else {
                // A.3.1 "None" -> "None + Pending In", "None + Pending Out" -> "None + Pending
                // Out+In", "To" -> "To + Pending In": MUST deliver.
                f.pending_in = true;
                outcome(state, f, true, false)
            }
        }
        SubKind::Unsubscribe => {
            // A.3.2: MUST deliver where "from" or Pending In is cleared, else S.N.
            let deliver = f.from || f.pending_in;
            f.from = false;
            f.pending_in = false;
            outcome(state, f, deliver, false)
        }
        SubKind::Subscribed => {
            // A.3.3: only an approval the user asked for counts (MUST deliver); else S.N.
            if f.pending_out && !f.to {
                f.to = true;
                f.pending_out = false;
                outcome(state, f, true, false)
            } else {
                outcome(state, f, false, false)
            }
        }
        SubKind::Unsubscribed => {
            // A.3.4: MUST deliver where "to" or Pending Out is cleared, else S.N.
            let deliver = f.to || f.pending_out;
            f.to = false;
            f.pending_out = false;
            outcome(state, f, deliver, false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use SubKind::{Subscribe, Subscribed, Unsubscribe, Unsubscribed};

    /// The nine states of RFC 6121 Appendix A.1, by their RFC names.
    const STATES: [&str; 9] = [
        "None",
        "None + Pending Out",
        "None + Pending In",
        "None + Pending Out+In",
        "To",
        "To + Pending In",
        "From",
        "From + Pending Out",
        "Both",
    ];

    /// The three states that can carry a pre-approval (§3.4.2 rule 3), marked "+ Pre".
    const PRE_STATES: [&str; 3] = ["None + Pre", "None + Pending Out + Pre", "To + Pre"];

    fn st(name: &str) -> SubState {
        let (base, preapproved) = match name.strip_suffix(" + Pre") {
            Some(base) => (base, true),
            None => (name, false),
        };
        let (subscription, pending_out, pending_in) = match base {
            "None" => (Subscription::None, false, false),
            "None + Pending Out" => (Subscription::None, true, false),
            "None + Pending In" => (Subscription::None, false, true),
            "None + Pending Out+In" => (Subscription::None, true, true),
            "To" => (Subscription::To, false, false),
            "To + Pending In" => (Subscription::To, false, true),
            "From" => (Subscription::From, false, false),
            "From + Pending Out" => (Subscription::From, true, false),
            "Both" => (Subscription::Both, false, false),
            other => panic!("unknown state {other}"),
        };
        SubState { subscription, pending_out, pending_in, preapproved }
    }

    /// The "ROUTE?" / "DELIVER?" column: MUST, MUST NOT, SHOULD NOT.
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Route {
        Must,
        MustNot,
        ShouldNot,
    }
    use Route::{Must, MustNot, ShouldNot};

    /// "no state change".
    const NSC: &str = "=";

    /// One table row: (existing state, route/deliver, new state or NSC, auto-reply subscribed).
    type Row = (&'static str, Route, &'static str, bool);

    fn check_table(table: &str, f: fn(SubState, SubKind) -> Outcome, kind: SubKind, rows: &[Row]) {
        for &(from, send, to, auto) in rows {
            let old = st(from);
            let o = f(old, kind);
            let expected = if to == NSC { old } else { st(to) };
            let ctx = format!("{table}: {} in \"{from}\"", kind.as_str());
            assert_eq!(o.state, expected, "{ctx}: new state");
            assert_eq!(o.changed, to != NSC, "{ctx}: changed");
            assert_eq!(o.forward, send == Must, "{ctx}: route/deliver ({send:?})");
            assert_eq!(o.auto_reply_subscribed, auto, "{ctx}: auto-reply");
        }
    }

    /// Each table lists every one of the nine states exactly once.
    fn check_complete(rows: &[Row]) {
        let mut names: Vec<&str> = rows.iter().map(|r| r.0).filter(|n| !n.ends_with("+ Pre")).collect();
        names.sort_unstable();
        let mut all = STATES.to_vec();
        all.sort_unstable();
        assert_eq!(names, all);
    }

    // RFC 6121 Appendix A.2.1, Table 2: processing of outbound "subscribe" stanzas.
    const A2_1_OUT_SUBSCRIBE: [Row; 9] = [
        ("None", Must, "None + Pending Out", false),
        ("None + Pending Out", Must, NSC, false),
        ("None + Pending In", Must, "None + Pending Out+In", false),
        ("None + Pending Out+In", Must, NSC, false),
        ("To", Must, NSC, false),
        ("To + Pending In", Must, NSC, false),
        ("From", Must, "From + Pending Out", false),
        ("From + Pending Out", Must, NSC, false),
        ("Both", Must, NSC, false),
    ];

    // RFC 6121 Appendix A.2.2, Table 3: processing of outbound "unsubscribe" stanzas.
    const A2_2_OUT_UNSUBSCRIBE: [Row; 9] = [
        ("None", Must, NSC, false),
        ("None + Pending Out", Must, "None", false),
        ("None + Pending In", Must, NSC, false),
        ("None + Pending Out+In", Must, "None + Pending In", false),
        ("To", Must, "None", false),
        ("To + Pending In", Must, "None + Pending In", false),
        ("From", Must, NSC, false),
        ("From + Pending Out", Must, "From", false),
        ("Both", Must, "From", false),
    ];

    // RFC 6121 Appendix A.2.3, Table 4: processing of outbound "subscribed" stanzas. "pre-approval
    // [1]" rows: the state gains the pre-approval flag (§3.4.2 rule 3), which is a change.
    const A2_3_OUT_SUBSCRIBED: [Row; 9] = [
        ("None", MustNot, "None + Pre", false),
        ("None + Pending Out", MustNot, "None + Pending Out + Pre", false),
        ("None + Pending In", Must, "From", false),
        ("None + Pending Out+In", Must, "From + Pending Out", false),
        ("To", MustNot, "To + Pre", false),
        ("To + Pending In", Must, "Both", false),
        ("From", MustNot, NSC, false),
        ("From + Pending Out", MustNot, NSC, false),
        ("Both", MustNot, NSC, false),
    ];

    // RFC 6121 Appendix A.2.4, Table 5: processing of outbound "unsubscribed" stanzas.
    const A2_4_OUT_UNSUBSCRIBED: [Row; 9] = [
        ("None", ShouldNot, NSC, false),
        ("None + Pending Out", ShouldNot, NSC, false),
        ("None + Pending In", Must, "None", false),
        ("None + Pending Out+In", Must, "None + Pending Out", false),
        ("To", ShouldNot, NSC, false),
        ("To + Pending In", Must, "To", false),
        ("From", Must, "None", false),
        ("From + Pending Out", Must, "None + Pending Out", false),
        ("Both", Must, "To", false),
    ];

    // RFC 6121 Appendix A.3.1, Table 6: processing of inbound "subscribe" stanzas. Note [2] on
    // the "from" rows: the server SHOULD auto-reply "subscribed".
    const A3_1_IN_SUBSCRIBE: [Row; 9] = [
        ("None", Must, "None + Pending In", false),
        ("None + Pending Out", Must, "None + Pending Out+In", false),
        ("None + Pending In", ShouldNot, NSC, false),
        ("None + Pending Out+In", ShouldNot, NSC, false),
        ("To", Must, "To + Pending In", false),
        ("To + Pending In", ShouldNot, NSC, false),
        ("From", ShouldNot, NSC, true),
        ("From + Pending Out", ShouldNot, NSC, true),
        ("Both", ShouldNot, NSC, true),
    ];

    // RFC 6121 Appendix A.3.2, Table 7: processing of inbound "unsubscribe" stanzas.
    const A3_2_IN_UNSUBSCRIBE: [Row; 9] = [
        ("None", ShouldNot, NSC, false),
        ("None + Pending Out", ShouldNot, NSC, false),
        ("None + Pending In", Must, "None", false),
        ("None + Pending Out+In", Must, "None + Pending Out", false),
        ("To", ShouldNot, NSC, false),
        ("To + Pending In", Must, "To", false),
        ("From", Must, "None", false),
        ("From + Pending Out", Must, "None + Pending Out", false),
        ("Both", Must, "To", false),
    ];

    // RFC 6121 Appendix A.3.3, Table 8: processing of inbound "subscribed" stanzas.
    const A3_3_IN_SUBSCRIBED: [Row; 9] = [
        ("None", ShouldNot, NSC, false),
        ("None + Pending Out", Must, "To", false),
        ("None + Pending In", ShouldNot, NSC, false),
        ("None + Pending Out+In", Must, "To + Pending In", false),
        ("To", ShouldNot, NSC, false),
        ("To + Pending In", ShouldNot, NSC, false),
        ("From", ShouldNot, NSC, false),
        ("From + Pending Out", Must, "Both", false),
        ("Both", ShouldNot, NSC, false),
    ];

    // RFC 6121 Appendix A.3.4, Table 9: processing of inbound "unsubscribed" stanzas.
    const A3_4_IN_UNSUBSCRIBED: [Row; 9] = [
        ("None", ShouldNot, NSC, false),
        ("None + Pending Out", Must, "None", false),
        ("None + Pending In", ShouldNot, NSC, false),
        ("None + Pending Out+In", Must, "None + Pending In", false),
        ("To", Must, "None", false),
        ("To + Pending In", Must, "None + Pending In", false),
        ("From", ShouldNot, NSC, false),
        ("From + Pending Out", Must, "From", false),
        ("Both", Must, "From", false),
    ];

    #[test]
    fn a2_1_outbound_subscribe() {
        check_complete(&A2_1_OUT_SUBSCRIBE);
        check_table("A.2.1", outbound, Subscribe, &A2_1_OUT_SUBSCRIBE);
    }

    #[test]
    fn a2_2_outbound_unsubscribe() {
        check_complete(&A2_2_OUT_UNSUBSCRIBE);
        check_table("A.2.2", outbound, Unsubscribe, &A2_2_OUT_UNSUBSCRIBE);
    }

    #[test]
    fn a2_3_outbound_subscribed() {
        check_complete(&A2_3_OUT_SUBSCRIBED);
        check_table("A.2.3", outbound, Subscribed, &A2_3_OUT_SUBSCRIBED);
    }

    #[test]
    fn a2_4_outbound_unsubscribed() {
        check_complete(&A2_4_OUT_UNSUBSCRIBED);
        check_table("A.2.4", outbound, Unsubscribed, &A2_4_OUT_UNSUBSCRIBED);
    }

    #[test]
    fn a3_1_inbound_subscribe() {
        check_complete(&A3_1_IN_SUBSCRIBE);
        check_table("A.3.1", inbound, Subscribe, &A3_1_IN_SUBSCRIBE);
    }

    #[test]
    fn a3_2_inbound_unsubscribe() {
        check_complete(&A3_2_IN_UNSUBSCRIBE);
        check_table("A.3.2", inbound, Unsubscribe, &A3_2_IN_UNSUBSCRIBE);
    }

    #[test]
    fn a3_3_inbound_subscribed() {
        check_complete(&A3_3_IN_SUBSCRIBED);
        check_table("A.3.3", inbound, Subscribed, &A3_3_IN_SUBSCRIBED);
    }

    #[test]
    fn a3_4_inbound_unsubscribed() {
        check_complete(&A3_4_IN_UNSUBSCRIBED);
        check_table("A.3.4", inbound, Unsubscribed, &A3_4_IN_UNSUBSCRIBED);
    }

    // §3.4 pre-approval: the three pre-approved states under every kind, both directions.

    #[test]
    fn pre_approved_outbound() {
        // A.2.1 / A.2.2: subscribe and unsubscribe leave the pre-approval alone.
        check_table(
            "A.2.1 + §3.4",
            outbound,
            Subscribe,
            &[
                ("None + Pre", Must, "None + Pending Out + Pre", false),
                ("None + Pending Out + Pre", Must, NSC, false),
                ("To + Pre", Must, NSC, false),
            ],
        );
        check_table(
            "A.2.2 + §3.4",
            outbound,
            Unsubscribe,
            &[
                ("None + Pre", Must, NSC, false),
                ("None + Pending Out + Pre", Must, "None + Pre", false),
                ("To + Pre", Must, "None + Pre", false),
            ],
        );
        // A.2.3: pre-approving again changes nothing and is still not routed.
        check_table(
            "A.2.3 + §3.4",
            outbound,
            Subscribed,
            &[
                ("None + Pre", MustNot, NSC, false),
                ("None + Pending Out + Pre", MustNot, NSC, false),
                ("To + Pre", MustNot, NSC, false),
            ],
        );
        // A.2.4 note 1 / §3.4 implementation note: "unsubscribed" cancels the pre-approval
        // (a change: roster push without 'approved'), and is not routed.
        check_table(
            "A.2.4 note 1",
            outbound,
            Unsubscribed,
            &[
                ("None + Pre", ShouldNot, "None", false),
                ("None + Pending Out + Pre", ShouldNot, "None + Pending Out", false),
                ("To + Pre", ShouldNot, "To", false),
            ],
        );
    }

    #[test]
    fn pre_approved_inbound() {
        // A.3.1 note 1 / §3.4.2: a pre-approved request is answered by the server, becomes
        // "from" at once, and is not delivered to the user.
        check_table(
            "A.3.1 note 1",
            inbound,
            Subscribe,
            &[
                ("None + Pre", ShouldNot, "From", true),
                ("None + Pending Out + Pre", ShouldNot, "From + Pending Out", true),
                ("To + Pre", ShouldNot, "Both", true),
            ],
        );
        // The other kinds concern the user's own subscription and keep the pre-approval.
        check_table(
            "A.3.2 + §3.4",
            inbound,
            Unsubscribe,
            &[
                ("None + Pre", ShouldNot, NSC, false),
                ("None + Pending Out + Pre", ShouldNot, NSC, false),
                ("To + Pre", ShouldNot, NSC, false),
            ],
        );
        check_table(
            "A.3.3 + §3.4",
            inbound,
            Subscribed,
            &[
                ("None + Pre", ShouldNot, NSC, false),
                ("None + Pending Out + Pre", Must, "To + Pre", false),
                ("To + Pre", ShouldNot, NSC, false),
            ],
        );
        check_table(
            "A.3.4 + §3.4",
            inbound,
            Unsubscribed,
            &[
                ("None + Pre", ShouldNot, NSC, false),
                ("None + Pending Out + Pre", Must, "None + Pre", false),
                ("To + Pre", Must, "None + Pre", false),
            ],
        );
    }

    #[test]
    fn pre_approval_without_roster_item() {
        // §3.4.2 rule 4: no item yet: create one with "None" and approved='true', not routed.
        let o = outbound(SubState::default(), Subscribed);
        assert_eq!(o.state, st("None + Pre"));
        assert!(o.changed && !o.forward);
    }

    #[test]
    fn auto_reply_only_for_inbound_subscribe() {
        for name in STATES.iter().chain(PRE_STATES.iter()) {
            for kind in [Subscribe, Subscribed, Unsubscribe, Unsubscribed] {
                assert!(!outbound(st(name), kind).auto_reply_subscribed, "outbound {kind:?} {name}");
                if kind != Subscribe {
                    assert!(!inbound(st(name), kind).auto_reply_subscribed, "inbound {kind:?} {name}");
                }
            }
        }
    }

    #[test]
    fn remove_reads_as_none() {
        let removed = SubState { subscription: Subscription::Remove, ..SubState::default() };
        for kind in [Subscribe, Subscribed, Unsubscribe, Unsubscribed] {
            assert_eq!(outbound(removed, kind).state, outbound(SubState::default(), kind).state);
            assert_eq!(inbound(removed, kind).state, inbound(SubState::default(), kind).state);
        }
    }

    #[test]
    fn two_sided_handshake() {
        // §3.1: user subscribes, contact approves, both rosters agree.
        let (mut user, mut contact) = (SubState::default(), SubState::default());
        let o = outbound(user, Subscribe);
        user = o.state;
        assert!(o.forward && user.pending_out);
        let i = inbound(contact, Subscribe);
        contact = i.state;
        assert!(i.forward && contact.pending_in);
        let o = outbound(contact, Subscribed);
        contact = o.state;
        assert!(o.forward);
        let i = inbound(user, Subscribed);
        user = i.state;
        assert!(i.forward);
        assert_eq!(user, st("To"));
        assert_eq!(contact, st("From"));
    }

    #[test]
    fn parsing() {
        for kind in [Subscribe, Subscribed, Unsubscribe, Unsubscribed] {
            assert_eq!(SubKind::parse(kind.as_str()), Some(kind));
        }
        for other in ["probe", "unavailable", "error", "", "Subscribe"] {
            assert_eq!(SubKind::parse(other), None);
        }
        for s in [
            Subscription::None,
            Subscription::To,
            Subscription::From,
            Subscription::Both,
            Subscription::Remove,
        ] {
            assert_eq!(Subscription::parse(s.as_str()), Some(s));
        }
        assert_eq!(Subscription::parse("Both"), None);
        assert_eq!(Subscription::default(), Subscription::None);
        let flags = |s: Subscription| (s.has_to(), s.has_from());
        assert_eq!(flags(Subscription::None), (false, false));
        assert_eq!(flags(Subscription::To), (true, false));
        assert_eq!(flags(Subscription::From), (false, true));
        assert_eq!(flags(Subscription::Both), (true, true));
        assert_eq!(flags(Subscription::Remove), (false, false));
    }

    fn any_state() -> impl Strategy<Value = SubState> {
        (0..5u8, any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(s, pending_out, pending_in, pre)| {
            let subscription = [
                Subscription::None,
                Subscription::To,
                Subscription::From,
                Subscription::Both,
                Subscription::Remove,
            ][usize::from(s)];
            SubState { subscription, pending_out, pending_in, preapproved: pre }
        })
    }

    fn any_kind() -> impl Strategy<Value = SubKind> {
        prop_oneof![Just(Subscribe), Just(Subscribed), Just(Unsubscribe), Just(Unsubscribed)]
    }

    /// Appendix A.1's invariants.
    fn well_formed(s: SubState) -> bool {
        s.subscription != Subscription::Remove
            && !(s.pending_out && s.subscription.has_to())
            && !(s.pending_in && s.subscription.has_from())
            && !(s.preapproved && s.subscription.has_from())
    }

    proptest! {
        /// Any input, even one breaking the invariants, gives a well-formed state, and
        /// `changed` says exactly whether it differs from the input.
        #[test]
        fn outputs_are_well_formed(s in any_state(), kind in any_kind()) {
            for o in [outbound(s, kind), inbound(s, kind)] {
                prop_assert!(well_formed(o.state), "{:?}", o);
                prop_assert_eq!(o.changed, o.state != s);
            }
        }

        /// Two servers that deliver every routed stanza at once (and the auto-replies) stay in
        /// agreement: the user's "to" is the contact's "from", the user's Pending Out is the
        /// contact's Pending In, and the other way round.
        #[test]
        fn two_sides_agree(actions in prop::collection::vec((any::<bool>(), any_kind()), 0..40)) {
            let mut sides = [SubState::default(), SubState::default()];
            for (first_acts, kind) in actions {
                let (a, b) = if first_acts { (0, 1) } else { (1, 0) };
                let o = outbound(sides[a], kind);
                sides[a] = o.state;
                if o.forward {
                    let i = inbound(sides[b], kind);
                    sides[b] = i.state;
                    if i.auto_reply_subscribed {
                        sides[a] = inbound(sides[a], Subscribed).state;
                    }
                }
                let [u, c] = sides;
                prop_assert!(well_formed(u) && well_formed(c));
                prop_assert_eq!(u.subscription.has_to(), c.subscription.has_from(), "{:?} {:?}", u, c);
                prop_assert_eq!(u.subscription.has_from(), c.subscription.has_to(), "{:?} {:?}", u, c);
                prop_assert_eq!(u.pending_out, c.pending_in, "{:?} {:?}", u, c);
                prop_assert_eq!(u.pending_in, c.pending_out, "{:?} {:?}", u, c);
            }
        }
    }
}
