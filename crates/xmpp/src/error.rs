//! RFC 6120 stream errors (§4.9) and stanza errors (§8.3).
//!
//! Each condition has exactly one element name; [`StreamError::to_element`] and
//! [`StanzaError::to_element`] write them in their namespaces.

use crate::ns;
use starling_xml::{Element, Name};

/// Stream-level error conditions (RFC 6120 §4.9.3). Sending one closes the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// §4.9.3.1: the entity sent XML that cannot be processed.
    #[error("bad-format")]
    BadFormat,
    /// §4.9.3.3: a newer stream for the same resource replaced this one.
    #[error("conflict")]
    Conflict,
    /// §4.9.3.4: the entity has not sent anything for too long.
    #[error("connection-timeout")]
    ConnectionTimeout,
    /// §4.9.3.6: the 'to' names a domain this server does not serve.
    #[error("host-unknown")]
    HostUnknown,
    /// §4.9.3.8: the server hit an internal problem.
    #[error("internal-server-error")]
    InternalServerError,
    /// §4.9.3.9: the 'from' does not match an authorized JID.
    #[error("invalid-from")]
    InvalidFrom,
    /// §4.9.3.10: wrong stream or content namespace.
    #[error("invalid-namespace")]
    InvalidNamespace,
    /// §4.9.3.11: invalid XML (e.g. a bad attribute value).
    #[error("invalid-xml")]
    InvalidXml,
    /// §4.9.3.12: stanzas sent before authentication, or a bad component handshake.
    #[error("not-authorized")]
    NotAuthorized,
    /// §4.9.3.13: XML that is not well-formed.
    #[error("not-well-formed")]
    NotWellFormed,
    /// §4.9.3.14: a local policy was violated (size, rate, limits).
    #[error("policy-violation")]
    PolicyViolation,
    /// §4.9.3.16: the server lacks resources to serve the stream.
    #[error("resource-constraint")]
    ResourceConstraint,
    /// §4.9.3.18: comments, PIs, DTDs or entity declarations (§11.1).
    #[error("restricted-xml")]
    RestrictedXml,
    /// §4.9.3.17: the server is shutting down.
    #[error("system-shutdown")]
    SystemShutdown,
    /// §4.9.3.19: anything else.
    #[error("undefined-condition")]
    UndefinedCondition,
    /// §4.9.3.21: a stanza of a kind the server does not support at stream level.
    #[error("unsupported-stanza-type")]
    UnsupportedStanzaType,
    /// §4.9.3.22: the 'version' is not 1.x.
    #[error("unsupported-version")]
    UnsupportedVersion,
}

impl StreamError {
    /// Every condition, for lookups by name.
    pub const ALL: [StreamError; 17] = [
        StreamError::BadFormat,
        StreamError::Conflict,
        StreamError::ConnectionTimeout,
        StreamError::HostUnknown,
        StreamError::InternalServerError,
        StreamError::InvalidFrom,
        StreamError::InvalidNamespace,
        StreamError::InvalidXml,
        StreamError::NotAuthorized,
        StreamError::NotWellFormed,
        StreamError::PolicyViolation,
        StreamError::ResourceConstraint,
        StreamError::RestrictedXml,
        StreamError::SystemShutdown,
        StreamError::UndefinedCondition,
        StreamError::UnsupportedStanzaType,
        StreamError::UnsupportedVersion,
    ];

    /// The condition named `name` (as [`StreamError::condition`] spells it); unknown names read
    /// as `undefined-condition` (RFC 6120 §4.9.3.19).
    pub fn from_condition(name: &str) -> StreamError {
        StreamError::ALL
            .into_iter()
            .find(|e| e.condition() == name)
            .unwrap_or(StreamError::UndefinedCondition)
    }

    /// The condition's element name.
    pub fn condition(self) -> &'static str {
        match self {
            StreamError::BadFormat => "bad-format",
            StreamError::Conflict => "conflict",
            StreamError::ConnectionTimeout => "connection-timeout",
            StreamError::HostUnknown => "host-unknown",
            StreamError::InternalServerError => "internal-server-error",
            StreamError::InvalidFrom => "invalid-from",
            StreamError::InvalidNamespace => "invalid-namespace",
            StreamError::InvalidXml => "invalid-xml",
            StreamError::NotAuthorized => "not-authorized",
            StreamError::NotWellFormed => "not-well-formed",
            StreamError::PolicyViolation => "policy-violation",
            StreamError::ResourceConstraint => "resource-constraint",
            StreamError::RestrictedXml => "restricted-xml",
            StreamError::SystemShutdown => "system-shutdown",
            StreamError::UndefinedCondition => "undefined-condition",
            StreamError::UnsupportedStanzaType => "unsupported-stanza-type",
            StreamError::UnsupportedVersion => "unsupported-version",
        }
    }

    /// `<stream:error><condition xmlns='…streams'/><text>…</text></stream:error>`, optionally with text.
    pub fn to_element(self, text: Option<&str>) -> Element {
        let mut e =
            Element::new("error", ns::STREAM).with_child(Element::new(self.condition(), ns::STREAM_ERRORS));
        if let Some(t) = text {
            e.append_child(Element::new("text", ns::STREAM_ERRORS).with_text(t));
        }
        e
    }
}

impl From<starling_xml::XmlError> for StreamError {
    fn from(e: starling_xml::XmlError) -> StreamError {
        match e {
            starling_xml::XmlError::NotWellFormed(_) => StreamError::NotWellFormed,
            starling_xml::XmlError::RestrictedXml(_) => StreamError::RestrictedXml,
            starling_xml::XmlError::PolicyViolation(_) => StreamError::PolicyViolation,
        }
    }
}

/// The 'type' of a stanza error (RFC 6120 §8.3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StanzaErrorType {
    /// Retry after providing credentials.
    Auth,
    /// Do not retry.
    Cancel,
    /// Proceed; the condition was only a warning.
    Continue,
    /// Retry after changing the data sent.
    Modify,
    /// Retry after waiting.
    Wait,
}

impl StanzaErrorType {
    /// Attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            StanzaErrorType::Auth => "auth",
            StanzaErrorType::Cancel => "cancel",
            StanzaErrorType::Continue => "continue",
            StanzaErrorType::Modify => "modify",
            StanzaErrorType::Wait => "wait",
        }
    }
}

/// Stanza error conditions (RFC 6120 §8.3.3) Starling sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StanzaError {
    /// §8.3.3.1
    #[error("bad-request")]
    BadRequest,
    /// §8.3.3.2
    #[error("conflict")]
    Conflict,
    /// §8.3.3.3
    #[error("feature-not-implemented")]
    FeatureNotImplemented,
    /// §8.3.3.4
    #[error("forbidden")]
    Forbidden,
    /// §8.3.3.6
    #[error("internal-server-error")]
    InternalServerError,
    /// §8.3.3.7
    #[error("item-not-found")]
    ItemNotFound,
    /// §8.3.3.8
    #[error("jid-malformed")]
    JidMalformed,
    /// §8.3.3.9
    #[error("not-acceptable")]
    NotAcceptable,
    /// §8.3.3.10
    #[error("not-allowed")]
    NotAllowed,
    /// §8.3.3.11
    #[error("not-authorized")]
    NotAuthorized,
    /// §8.3.3.12
    #[error("policy-violation")]
    PolicyViolation,
    /// §8.3.3.13
    #[error("recipient-unavailable")]
    RecipientUnavailable,
    /// §8.3.3.15
    #[error("remote-server-not-found")]
    RemoteServerNotFound,
    /// §8.3.3.17
    #[error("resource-constraint")]
    ResourceConstraint,
    /// §8.3.3.18
    #[error("service-unavailable")]
    ServiceUnavailable,
    /// §8.3.3.21
    #[error("undefined-condition")]
    UndefinedCondition,
    /// §8.3.3.22
    #[error("unexpected-request")]
    UnexpectedRequest,
}

impl StanzaError {
    /// The condition's element name.
    pub fn condition(self) -> &'static str {
        match self {
            StanzaError::BadRequest => "bad-request",
            StanzaError::Conflict => "conflict",
            StanzaError::FeatureNotImplemented => "feature-not-implemented",
            StanzaError::Forbidden => "forbidden",
            StanzaError::InternalServerError => "internal-server-error",
            StanzaError::ItemNotFound => "item-not-found",
            StanzaError::JidMalformed => "jid-malformed",
            StanzaError::NotAcceptable => "not-acceptable",
            StanzaError::NotAllowed => "not-allowed",
            StanzaError::NotAuthorized => "not-authorized",
            StanzaError::PolicyViolation => "policy-violation",
            StanzaError::RecipientUnavailable => "recipient-unavailable",
            StanzaError::RemoteServerNotFound => "remote-server-not-found",
            StanzaError::ResourceConstraint => "resource-constraint",
            StanzaError::ServiceUnavailable => "service-unavailable",
            StanzaError::UndefinedCondition => "undefined-condition",
            StanzaError::UnexpectedRequest => "unexpected-request",
        }
    }

    /// The error type RFC 6120 §8.3.3 recommends for the condition.
    pub fn default_type(self) -> StanzaErrorType {
        match self {
            StanzaError::BadRequest
            | StanzaError::JidMalformed
            | StanzaError::NotAcceptable
            | StanzaError::PolicyViolation => StanzaErrorType::Modify,
            StanzaError::Forbidden | StanzaError::NotAuthorized => StanzaErrorType::Auth,
            StanzaError::InternalServerError
            | StanzaError::RecipientUnavailable
            | StanzaError::ResourceConstraint
            | StanzaError::UnexpectedRequest => StanzaErrorType::Wait,
            _ => StanzaErrorType::Cancel,
        }
    }

    /// `<error type='…'><condition xmlns='…stanzas'/></error>` in namespace `content_ns`.
    pub fn to_element(self, content_ns: &str) -> Element {
        Element::new("error", Name::interned(content_ns))
            .with_attr("type", self.default_type().as_str())
            .with_child(Element::new(self.condition(), ns::STANZAS))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_error_serializes_in_its_namespaces() {
        let bytes = StreamError::HostUnknown.to_element(None).to_bytes();
        let s = String::from_utf8(bytes).unwrap();
        assert!(s.contains("host-unknown"), "{s}");
        assert!(s.contains(ns::STREAM_ERRORS), "{s}");
    }

    #[test]
    fn stanza_error_has_type_and_condition() {
        let e = StanzaError::ServiceUnavailable.to_element(ns::CLIENT);
        assert_eq!(e.attr("type"), Some("cancel"));
        assert!(e.get_child("service-unavailable", ns::STANZAS).is_some());
        assert_eq!(StanzaError::BadRequest.default_type(), StanzaErrorType::Modify);
    }
}

#[cfg(test)]
mod condition_tests {
    use super::StreamError;

    #[test]
    fn conditions_read_back_by_name() {
        for e in StreamError::ALL {
            assert_eq!(StreamError::from_condition(e.condition()), e);
        }
        assert_eq!(StreamError::from_condition("no-such"), StreamError::UndefinedCondition);
    }
}
