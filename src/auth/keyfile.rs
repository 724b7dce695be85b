//! The key file: 32 random bytes as 64 lowercase hex digits and a newline, mode
//! 0600. Reading ignores surrounding whitespace and refuses anything else,
//! naming the file; `keygen` never replaces an existing file.

use std::fmt;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The key's length in bytes (SPEC: 32 random bytes).
pub const KEY_BYTES: usize = 32;

/// A key file is tiny; reading stops past this, so a wrong path (a log, a
/// device) is refused without being read whole.
const KEY_FILE_BYTES_MAX: u64 = 1024;

/// Only the owner may read the key.
const KEY_FILE_MODE: u32 = 0o600;

/// The kernel's random source: no crate needed, and it never blocks once the
/// system has booted.
const RANDOM_SOURCE: &str = "/dev/urandom";

/// A cluster key. `Debug` does not print it.
#[derive(Clone, PartialEq, Eq)]
pub struct Key([u8; KEY_BYTES]);

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Key {
    pub fn from_bytes(bytes: [u8; KEY_BYTES]) -> Key {
        Key(bytes)
    }

    pub fn bytes(&self) -> &[u8; KEY_BYTES] {
        &self.0
    }

    /// The key from the file's text: 64 lowercase hex digits, whitespace around.
    pub fn parse(text: &str) -> Result<Key, KeyFormat> {
        let digits = text.trim();
        if digits.len() != 2 * KEY_BYTES {
            return Err(KeyFormat::Length(digits.chars().count()));
        }
        super::from_hex(digits).map(Key).ok_or(KeyFormat::NotHex)
    }
}

/// Why a key file's text is not a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyFormat {
    /// Not 64 characters (this many).
    Length(usize),
    /// Not lowercase hex digits only.
    NotHex,
}

impl fmt::Display for KeyFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyFormat::Length(found) => write!(
                f,
                "expected {} hex digits, found {found} characters",
                2 * KEY_BYTES
            ),
            KeyFormat::NotHex => f.write_str("expected lowercase hex digits (0-9, a-f) only"),
        }
    }
}

/// Why a key could not be read or written; each names the file.
#[derive(Debug)]
pub enum KeyError {
    Read {
        path: PathBuf,
        reason: String,
    },
    Malformed {
        path: PathBuf,
        reason: KeyFormat,
    },
    Exists {
        path: PathBuf,
    },
    Write {
        path: PathBuf,
        reason: String,
    },
    /// A node, daemon or client needs a key and this one cannot be used: the
    /// message says how to make one.
    Needed(Box<KeyError>),
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Read { path, reason } => {
                write!(
                    f,
                    "cannot read the cluster key {}: {reason}",
                    path.display()
                )
            }
            KeyError::Malformed { path, reason } => {
                write!(f, "{} is not a cluster key: {reason}", path.display())
            }
            KeyError::Exists { path } => {
                write!(
                    f,
                    "{} already exists: not overwriting a key",
                    path.display()
                )
            }
            KeyError::Write { path, reason } => {
                write!(
                    f,
                    "cannot write the cluster key {}: {reason}",
                    path.display()
                )
            }
            KeyError::Needed(e) => {
                let path = match e.as_ref() {
                    KeyError::Read { path, .. }
                    | KeyError::Malformed { path, .. }
                    | KeyError::Exists { path }
                    | KeyError::Write { path, .. } => path.display().to_string(),
                    KeyError::Needed(_) => "cluster.key".to_string(),
                };
                write!(
                    f,
                    "{e}; make one with `raftlb keygen {path}` (the same file for every node and daemon), or run with --insecure"
                )
            }
        }
    }
}

impl std::error::Error for KeyError {}

/// Reads and parses the key file at `path`.
pub fn read_key(path: &Path) -> Result<Key, KeyError> {
    let read = |reason: String| KeyError::Read {
        path: path.to_path_buf(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| read(e.to_string()))?;
    let mut text = String::new();
    file.take(KEY_FILE_BYTES_MAX)
        .read_to_string(&mut text)
        .map_err(|e| read(e.to_string()))?;
    Key::parse(&text).map_err(|reason| KeyError::Malformed {
        path: path.to_path_buf(),
        reason,
    })
}

/// Writes a new random key to `path` with mode 0600, refusing to replace an
/// existing file (create_new: no window between checking and creating).
pub fn keygen(path: &Path) -> Result<(), KeyError> {
    let write = |reason: String| KeyError::Write {
        path: path.to_path_buf(),
        reason,
    };
    let mut bytes = [0u8; KEY_BYTES];
    std::fs::File::open(RANDOM_SOURCE)
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| write(format!("cannot read {RANDOM_SOURCE}: {e}")))?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(KEY_FILE_MODE)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => KeyError::Exists {
                path: path.to_path_buf(),
            },
            _ => write(e.to_string()),
        })?;
    let text = format!("{}\n", super::to_hex(&bytes));
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| write(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const HEX: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn a_key_file_parses_with_surrounding_whitespace_only() {
        let key = Key::parse(&format!(" \n\t{HEX}\n\n")).expect("whitespace is ignored");
        assert_eq!(key.bytes()[1], 0x11);
        assert!(Key::parse(&HEX.to_uppercase()).is_err(), "uppercase");
        assert!(Key::parse(&HEX[..62]).is_err(), "short");
        assert!(Key::parse(&format!("{HEX}00")).is_err(), "long");
        assert!(Key::parse(&format!("{}zz", &HEX[..62])).is_err(), "not hex");
        assert!(
            Key::parse(&format!("{} {}", &HEX[..32], &HEX[32..])).is_err(),
            "inner space"
        );
        assert!(Key::parse("").is_err());
        assert!(
            Key::parse(&"é".repeat(64)).is_err(),
            "multibyte is no panic"
        );
    }

    #[test]
    fn a_bad_key_file_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("bad.key");
        std::fs::write(&path, "not a key\n").expect("write");
        let message = read_key(&path).expect_err("malformed").to_string();
        assert!(
            message.contains("bad.key") && !message.contains('\n'),
            "{message}"
        );
        let missing = dir.path().join("missing.key");
        let message = read_key(&missing).expect_err("missing").to_string();
        assert!(message.contains("missing.key"), "{message}");
    }

    #[test]
    fn keygen_writes_a_readable_0600_key_and_never_overwrites() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("cluster.key");
        keygen(&path).expect("first keygen");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text.len(), 65);
        assert!(text.ends_with('\n'));
        let key = read_key(&path).expect("keygen's file reads back");
        let again = keygen(&path).expect_err("the file exists");
        assert!(matches!(again, KeyError::Exists { .. }));
        assert!(again.to_string().contains("cluster.key"));
        assert_eq!(read_key(&path).expect("still there"), key, "untouched");
        let other = dir.path().join("other.key");
        keygen(&other).expect("second key");
        assert_ne!(read_key(&other).expect("reads"), key, "random, not fixed");
        let nowhere = dir.path().join("no/such/dir/k");
        assert!(matches!(keygen(&nowhere), Err(KeyError::Write { .. })));
    }
}
