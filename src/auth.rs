//! The cluster key: who may speak to a node. Nodes, daemons and the client share
//! 32 random bytes (`raftlb keygen FILE`); every datagram between nodes and every
//! load report carries an HMAC-SHA256 tag made with it, checked in constant time
//! before anything in the message is believed.
//!
//! - [`keyfile`]: the key file (64 lowercase hex digits, mode 0600) and `keygen`.
//! - [`frame`]: a datagram's frame: epoch, counter, payload, tag; seal and open.
//! - [`replay`]: the per-peer replay window (newest epoch, highest counter, bitmap).
//!
//! [`Keys`] holds the key that signs and an optional previous one that still
//! verifies, so a cluster rotates its key without downtime; [`Auth`] is a
//! node's or daemon's choice between a key and the explicit `--insecure`.

pub mod frame;
pub mod keyfile;
pub mod replay;

use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub use keyfile::{keygen, read_key, Key, KeyError, KeyFormat, KEY_BYTES};

/// The HTTP header of a signed request body (SPEC: `POST /report`, admin commands).
pub const AUTH_HEADER: &str = "X-Raftlb-Auth";

/// The length of an HMAC-SHA256 tag.
pub(crate) const TAG_BYTES: usize = 32;

type HmacSha256 = Hmac<Sha256>;

/// The key file's name beside the nodes file when `--key` is not given.
pub(crate) const DEFAULT_KEY_FILE: &str = "cluster.key";

/// `cluster.key` in the nodes file's directory.
pub(crate) fn default_key_path(nodes_file: &Path) -> PathBuf {
    nodes_file
        .parent()
        .unwrap_or_else(|| Path::new(""))
        .join(DEFAULT_KEY_FILE)
}

/// The `--key`, `--previous-key` and `--insecure` flags of nodes and daemons.
#[derive(Clone, Debug)]
pub struct KeyFlags {
    /// `--key`, or None for `default_key_path`.
    pub key: Option<PathBuf>,
    pub previous_key: Option<PathBuf>,
    pub insecure: bool,
}

impl KeyFlags {
    /// The keys the flags name (the caller exits 2 on an error; one for the
    /// current key says how to make one).
    pub fn load(&self, nodes_file: &Path) -> Result<Auth, KeyError> {
        if self.insecure {
            return Ok(Auth::Insecure);
        }
        self.keys(nodes_file).map(Auth::Keyed)
    }

    /// The keys the flags name, whatever `--insecure` says.
    pub fn keys(&self, nodes_file: &Path) -> Result<Keys, KeyError> {
        let path = self
            .key
            .clone()
            .unwrap_or_else(|| default_key_path(nodes_file));
        let current = read_key(&path).map_err(|e| KeyError::Needed(Box::new(e)))?;
        let previous = match &self.previous_key {
            Some(p) => Some(read_key(p)?),
            None => None,
        };
        Ok(Keys::new(current, previous))
    }
}

/// The signing key and, during a rotation, the previous key: both verify, only
/// the current one signs.
#[derive(Clone)]
pub struct Keys {
    current: Key,
    previous: Option<Key>,
}

impl std::fmt::Debug for Keys {
    /// Never prints key bytes, so a key cannot leak into a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keys {{ previous: {} }}", self.previous.is_some())
    }
}

impl Keys {
    pub fn new(current: Key, previous: Option<Key>) -> Keys {
        Keys { current, previous }
    }

    /// The tag of the concatenated `parts` under the current key.
    pub fn sign(&self, parts: &[&[u8]]) -> [u8; TAG_BYTES] {
        mac(&self.current, parts).finalize().into_bytes().into()
    }

    /// Whether `tag` is the tag of `parts` under the current or the previous
    /// key, compared in constant time by the crate (`verify_slice`).
    pub(crate) fn verify(&self, parts: &[&[u8]], tag: &[u8]) -> bool {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .any(|key| mac(key, parts).verify_slice(tag).is_ok())
    }

    /// The `X-Raftlb-Auth` value of a body: lowercase hex HMAC-SHA256(key, body).
    pub fn sign_body(&self, body: &[u8]) -> String {
        to_hex(&self.sign(&[body]))
    }

    /// Checks an `X-Raftlb-Auth` value against a body; the error is a one-line
    /// reason for the 401.
    pub fn verify_body(&self, header: Option<&str>, body: &[u8]) -> Result<(), &'static str> {
        let header =
            header.ok_or("missing X-Raftlb-Auth header: sign the body with the cluster key")?;
        let tag: [u8; TAG_BYTES] =
            from_hex(header.trim()).ok_or("X-Raftlb-Auth must be 64 lowercase hex digits")?;
        if self.verify(&[body], &tag) {
            Ok(())
        } else {
            Err("X-Raftlb-Auth does not match the body under the cluster key")
        }
    }
}

/// A node's or daemon's authentication: a key, or the explicit way out.
#[derive(Clone, Debug)]
pub enum Auth {
    Keyed(Keys),
    /// `--insecure`: nothing is signed and reports are not checked.
    Insecure,
}

impl Auth {
    pub(crate) fn is_insecure(&self) -> bool {
        matches!(self, Auth::Insecure)
    }

    /// The one check of a signed request body: always Ok when insecure.
    pub fn verify_body(&self, header: Option<&str>, body: &[u8]) -> Result<(), &'static str> {
        match self {
            Auth::Keyed(keys) => keys.verify_body(header, body),
            Auth::Insecure => Ok(()),
        }
    }

    /// The `X-Raftlb-Auth` value for a body, None when insecure.
    pub fn sign_body(&self, body: &[u8]) -> Option<String> {
        match self {
            Auth::Keyed(keys) => Some(keys.sign_body(body)),
            Auth::Insecure => None,
        }
    }
}

fn mac(key: &Key, parts: &[&[u8]]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key.bytes()).expect("hmac takes a key of any length");
    for part in parts {
        mac.update(part);
    }
    mac
}

/// Lowercase hex of `bytes`.
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// Exactly `N` bytes from 2N lowercase hex digits; None for anything else.
pub(crate) fn from_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let text = text.as_bytes();
    if text.len() != 2 * N {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, pair) in text.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn key(byte: u8) -> Key {
        Key::from_bytes([byte; KEY_BYTES])
    }

    #[test]
    fn a_body_signed_with_the_key_verifies_and_nothing_else_does() {
        let keys = Keys::new(key(1), None);
        let body = br#"{"server":"a"}"#;
        let tag = keys.sign_body(body);
        assert_eq!(tag.len(), 64);
        assert!(tag
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
        assert_eq!(keys.verify_body(Some(&tag), body), Ok(()));
        assert!(keys.verify_body(None, body).is_err());
        assert!(keys.verify_body(Some(&tag), b"{}").is_err());
        assert!(keys.verify_body(Some(&tag[..63]), body).is_err());
        assert!(keys.verify_body(Some(&tag.to_uppercase()), body).is_err());
        let other = Keys::new(key(2), None);
        assert!(other.verify_body(Some(&tag), body).is_err());
        assert!(Auth::Insecure.verify_body(None, body).is_ok());
        assert!(Auth::Keyed(keys).verify_body(None, body).is_err());
    }

    #[test]
    fn the_report_tag_is_the_plain_hmac_of_the_body() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let mut mac = HmacSha256::new_from_slice(b"Jefe").expect("any length");
        mac.update(b"what do ya want for nothing?");
        let tag: [u8; 32] = mac.finalize().into_bytes().into();
        assert_eq!(
            to_hex(&tag),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn the_previous_key_verifies_but_does_not_sign() {
        let rotating = Keys::new(key(2), Some(key(1)));
        let old = Keys::new(key(1), None);
        let new = Keys::new(key(2), None);
        let old_tag = old.sign(&[b"m"]);
        assert!(rotating.verify(&[b"m"], &old_tag));
        assert!(rotating.verify(&[b"m"], &new.sign(&[b"m"])));
        assert_eq!(rotating.sign(&[b"m"]), new.sign(&[b"m"]));
        assert_ne!(rotating.sign(&[b"m"]), old_tag);
        assert!(!new.verify(&[b"m"], &old_tag));
    }

    #[test]
    fn hex_round_trips_and_refuses_anything_else() {
        let bytes = [0x00, 0x7f, 0xff, 0xa5];
        assert_eq!(to_hex(&bytes), "007fffa5");
        assert_eq!(from_hex::<4>("007fffa5"), Some(bytes));
        assert_eq!(from_hex::<4>("007fffa"), None);
        assert_eq!(from_hex::<4>("007FFFA5"), None);
        assert_eq!(from_hex::<4>("007fffg5"), None);
        assert_eq!(from_hex::<4>("007fffa500"), None);
    }
}
