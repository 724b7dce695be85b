//! The cluster key on the client side: the admin commands (`raftlb server
//! forget`, `raftlb member`) sign their JSON body with it, as the daemon signs
//! its reports. `raftlb --key FILE`, by default `cluster.key` beside the nodes
//! file.

use std::path::Path;

use crate::auth::{KeyError, KeyFlags, Keys};

/// The keys of `raftlb --key` (None: the default beside `nodes_file`); the
/// error says how to make one.
pub fn load(key: Option<&Path>, nodes_file: &Path) -> Result<Keys, KeyError> {
    let flags = KeyFlags {
        key: key.map(Path::to_path_buf),
        previous_key: None,
        insecure: false,
    };
    flags.keys(nodes_file)
}

/// The `X-Raftlb-Auth` header of a request body: (name, value).
pub fn sign(keys: &Keys, body: &[u8]) -> (&'static str, String) {
    (crate::auth::AUTH_HEADER, keys.sign_body(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_signed_by_the_client_verifies_at_a_node_with_the_same_key() {
        let dir = tempfile::tempdir().expect("temp dir");
        let nodes = dir.path().join("nodes.txt");
        let missing = load(None, &nodes).expect_err("no key yet");
        assert!(matches!(missing, KeyError::Needed(_)), "{missing:?}");
        let missing = missing.to_string();
        assert!(
            missing.contains("raftlb keygen") && missing.contains("cluster.key"),
            "{missing}"
        );
        crate::auth::keygen(&dir.path().join("cluster.key")).expect("keygen");
        let keys = load(None, &nodes).expect("the default beside nodes.txt");
        let (name, value) = sign(&keys, b"{\"server\":\"x\"}");
        assert_eq!(name, "X-Raftlb-Auth");
        let node = crate::auth::Auth::Keyed(keys);
        assert!(node
            .verify_body(Some(&value), b"{\"server\":\"x\"}")
            .is_ok());
        assert!(node
            .verify_body(Some(&value), b"{\"server\":\"y\"}")
            .is_err());
    }
}
