//! A datagram's frame: `epoch (u64 LE) | counter (u64 LE) | payload | tag (32)`.
//!
//! The tag is HMAC-SHA256 under the cluster key of a label, the sender's id, the
//! receiver's id, the epoch, the counter and the payload: a datagram for node B
//! cannot be replayed to C, a report tag (the plain HMAC of a JSON body) can
//! never stand for a datagram tag, and the replay window ([`super::replay`])
//! can trust the epoch and counter. [`open`] checks the tag before anyone looks
//! at the payload. Insecure nodes send a zero tag and refuse a non-zero one, so
//! an insecure node and a keyed node never believe each other.

use super::{Auth, TAG_BYTES};

/// Epoch and counter.
pub(crate) const HEADER_BYTES: usize = 16;
/// What a frame adds to its payload.
pub(crate) const OVERHEAD_BYTES: usize = HEADER_BYTES + TAG_BYTES;

/// Domain separation: no other tag of raftlb is computed over these bytes first.
const LABEL: &[u8] = b"raftlb-datagram-v1\0";

/// Where a datagram sits in its sender's stream: the sender's boot and its
/// place in that boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub epoch: u64,
    pub counter: u64,
}

/// Why a frame was refused; both count as reason `auth`.
#[derive(Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Shorter than a header and a tag.
    Short,
    /// The tag does not verify (or an insecure node got a signed frame).
    Tag,
}

/// The frame of `payload` from node `from` to node `to`.
pub fn seal(auth: &Auth, from: u64, to: u64, header: Header, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(OVERHEAD_BYTES + payload.len());
    frame.extend_from_slice(&header.epoch.to_le_bytes());
    frame.extend_from_slice(&header.counter.to_le_bytes());
    frame.extend_from_slice(payload);
    let tag = match auth {
        Auth::Keyed(keys) => keys.sign(&[LABEL, &from.to_le_bytes(), &to.to_le_bytes(), &frame]),
        Auth::Insecure => [0u8; TAG_BYTES],
    };
    frame.extend_from_slice(&tag);
    frame
}

/// The header and payload of a frame from `from` to `to`, once its tag verified.
pub fn open<'a>(
    auth: &Auth,
    from: u64,
    to: u64,
    frame: &'a [u8],
) -> Result<(Header, &'a [u8]), FrameError> {
    if frame.len() < OVERHEAD_BYTES {
        return Err(FrameError::Short);
    }
    let (signed, tag) = frame.split_at(frame.len() - TAG_BYTES);
    let verified = match auth {
        Auth::Keyed(keys) => keys.verify(
            &[LABEL, &from.to_le_bytes(), &to.to_le_bytes(), signed],
            tag,
        ),
        Auth::Insecure => tag.iter().all(|b| *b == 0),
    };
    if !verified {
        return Err(FrameError::Tag);
    }
    let (header, payload) = signed.split_at(HEADER_BYTES);
    let word = |i: usize| u64::from_le_bytes(header[i..i + 8].try_into().expect("8 bytes"));
    Ok((
        Header {
            epoch: word(0),
            counter: word(8),
        },
        payload,
    ))
}

#[cfg(test)]
mod tests {
    use super::super::{Key, Keys, KEY_BYTES};
    use super::*;

    fn keyed(byte: u8) -> Auth {
        Auth::Keyed(Keys::new(Key::from_bytes([byte; KEY_BYTES]), None))
    }

    const H: Header = Header {
        epoch: 1_700_000_000_000_000,
        counter: 42,
    };

    #[test]
    fn a_sealed_frame_opens_for_its_receiver_only() {
        let auth = keyed(1);
        let frame = seal(&auth, 1, 2, H, b"payload");
        assert_eq!(frame.len(), 7 + OVERHEAD_BYTES);
        assert_eq!(open(&auth, 1, 2, &frame), Ok((H, &b"payload"[..])));
        assert_eq!(
            open(&auth, 1, 3, &frame),
            Err(FrameError::Tag),
            "other receiver"
        );
        assert_eq!(
            open(&auth, 3, 2, &frame),
            Err(FrameError::Tag),
            "other sender"
        );
        assert_eq!(
            open(&keyed(2), 1, 2, &frame),
            Err(FrameError::Tag),
            "other key"
        );
        assert_eq!(
            open(&auth, 1, 2, &frame[..OVERHEAD_BYTES - 1]),
            Err(FrameError::Short)
        );
        let empty = seal(&auth, 1, 2, H, b"");
        assert_eq!(open(&auth, 1, 2, &empty), Ok((H, &b""[..])));
    }

    #[test]
    fn a_flipped_bit_anywhere_is_refused() {
        let auth = keyed(1);
        let frame = seal(&auth, 1, 2, H, b"hello raft");
        for byte in 0..frame.len() {
            for bit in 0..8 {
                let mut bad = frame.clone();
                bad[byte] ^= 1 << bit;
                assert_eq!(
                    open(&auth, 1, 2, &bad),
                    Err(FrameError::Tag),
                    "{byte}.{bit}"
                );
            }
        }
        let mut longer = frame.clone();
        longer.insert(HEADER_BYTES, 0);
        assert_eq!(open(&auth, 1, 2, &longer), Err(FrameError::Tag));
    }

    #[test]
    fn insecure_frames_carry_a_zero_tag_and_keyed_ones_are_not_mixed_in() {
        let frame = seal(&Auth::Insecure, 1, 2, H, b"x");
        assert!(frame[frame.len() - TAG_BYTES..].iter().all(|b| *b == 0));
        assert_eq!(open(&Auth::Insecure, 1, 2, &frame), Ok((H, &b"x"[..])));
        assert_eq!(open(&keyed(1), 1, 2, &frame), Err(FrameError::Tag));
        let signed = seal(&keyed(1), 1, 2, H, b"x");
        assert_eq!(open(&Auth::Insecure, 1, 2, &signed), Err(FrameError::Tag));
    }

    #[test]
    fn a_frame_signed_with_the_previous_key_opens_during_a_rotation() {
        let old = Key::from_bytes([1; KEY_BYTES]);
        let new = Key::from_bytes([2; KEY_BYTES]);
        let rotating = Auth::Keyed(Keys::new(new.clone(), Some(old.clone())));
        let from_old = seal(&Auth::Keyed(Keys::new(old, None)), 1, 2, H, b"x");
        assert!(open(&rotating, 1, 2, &from_old).is_ok());
        let from_rotating = seal(&rotating, 1, 2, H, b"x");
        assert!(open(&Auth::Keyed(Keys::new(new, None)), 1, 2, &from_rotating).is_ok());
    }
}
