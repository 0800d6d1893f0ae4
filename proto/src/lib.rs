//! The Kubernetes protobuf envelope: `k8s\0` followed by a `runtime.Unknown` message. This crate
//! will also carry the CRI client types and k8s-pb bodies; for now it splits and checks the envelope.

/// The four magic bytes that start every Kubernetes protobuf body.
pub const MAGIC: &[u8; 4] = b"k8s\0";

/// A body that is not a Kubernetes protobuf envelope.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a Kubernetes protobuf body: it must start with the bytes \"k8s\\0\"")]
pub struct NotEnvelope;

/// The `runtime.Unknown` message inside an envelope.
pub fn unwrap_envelope(body: &[u8]) -> Result<&[u8], NotEnvelope> {
    body.strip_prefix(MAGIC.as_slice()).ok_or(NotEnvelope)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope() {
        assert_eq!(unwrap_envelope(b"k8s\0\x0a\x02"), Ok(&b"\x0a\x02"[..]));
        assert_eq!(unwrap_envelope(b"{}"), Err(NotEnvelope));
    }
}
