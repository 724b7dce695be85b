//! The cluster's configuration: which nodes are members, which of them vote,
//! and the single-server changes that move from one configuration to the next
//! (dissertation §4.1).
//!
//! A configuration lives in the log as an entry of kind `Config` whose data is
//! [`Membership::encode`] of the whole new configuration (not a delta, so a
//! node that reads one entry knows everything). A node uses the latest
//! configuration in its log, committed or not, from the moment the entry is
//! appended; a leader proposes a new one only when the previous one committed,
//! so any two configurations in force at once differ by one voter and every
//! majority of one overlaps every majority of the other.
//!
//! Learners (non-voting members) receive the log but count toward no majority;
//! a new node joins as one, catches up, and is then promoted.
//!
//! Each member is also bound to one *incarnation*: a random number its data
//! dir drew when it was created, which every message it sends carries. The
//! leader binds a member (a `Bind` change) the first time it hears from it;
//! from then on votes and acknowledgements from any other incarnation of that
//! id count for nothing. A node whose disk was lost comes back as a new
//! incarnation: it has forgotten its votes and the entries it acknowledged,
//! so it must not count until it is removed and added back (dissertation
//! §3.8 on lost storage).

use serde::{Deserialize, Serialize};

use super::types::NodeId;

/// Most members of one configuration (voters and learners).
pub const MAX_MEMBERS: usize = 64;
/// Longest name or address a member may carry (bytes).
pub const MAX_LABEL_BYTES: usize = 64;
/// The largest [`Membership::encode`] output: the version byte, the count, and
/// per member an id, a flag and two length-prefixed labels.
pub const MAX_ENCODED_BYTES: usize = 1 + 2 + MAX_MEMBERS * (8 + 1 + 8 + 2 * (1 + MAX_LABEL_BYTES));

/// The version byte that starts an encoded membership (2: with incarnations;
/// 1, read only, had none).
const ENCODING_VERSION: u8 = 2;

/// One member of a configuration. `name` and `addr` are the runtime's labels
/// (the id people use and where the node listens); the core only carries them.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Member {
    pub id: NodeId,
    pub name: String,
    pub addr: String,
    /// False for a learner: it receives the log but does not vote and counts
    /// toward no majority.
    pub voter: bool,
    /// The incarnation whose votes and acknowledgements count (0: none bound
    /// yet, so the first one heard from is).
    pub incarnation: u64,
}

/// A whole configuration: its members, sorted by id, each id once.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Membership {
    members: Vec<Member>,
}

/// One single-server change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipChange {
    /// A new member joins as a learner.
    AddLearner {
        id: NodeId,
        name: String,
        addr: String,
    },
    /// A learner becomes a voter.
    Promote(NodeId),
    /// A member (voter or learner) leaves.
    Remove(NodeId),
    /// Members not bound yet are bound to the incarnation heard from them
    /// (the voters do not change).
    Bind(Vec<(NodeId, u64)>),
}

/// Why a configuration, or a change of one, cannot be; `Display` is the reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipError {
    /// Two members share an id.
    DuplicateId(NodeId),
    /// Two members share a name (the runtime's identity).
    DuplicateName(String),
    /// The configuration would have no voter: nothing could ever commit.
    NoVoter,
    /// More members than [`MAX_MEMBERS`].
    TooManyMembers,
    /// A name or address is empty or longer than [`MAX_LABEL_BYTES`].
    BadLabel,
    /// The change names a node that is not a member.
    NotAMember(NodeId),
    /// The change adds a node that is already a member.
    AlreadyAMember(NodeId),
    /// The change promotes a node that already votes.
    AlreadyAVoter(NodeId),
    /// The change binds a member already bound, or to incarnation 0.
    AlreadyBound(NodeId),
    /// The bytes of a configuration entry do not decode.
    Malformed(&'static str),
}

impl std::fmt::Display for MembershipError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MembershipError::DuplicateId(id) => write!(f, "node id {id} is listed twice"),
            MembershipError::DuplicateName(name) => write!(f, "node {name} is listed twice"),
            MembershipError::NoVoter => f.write_str("the configuration would have no voter"),
            MembershipError::TooManyMembers => write!(f, "more than {MAX_MEMBERS} members"),
            MembershipError::BadLabel => write!(
                f,
                "a member's name or address is empty or longer than {MAX_LABEL_BYTES} bytes"
            ),
            MembershipError::NotAMember(id) => write!(f, "node {id} is not a member"),
            MembershipError::AlreadyAMember(id) => write!(f, "node {id} is already a member"),
            MembershipError::AlreadyAVoter(id) => write!(f, "node {id} already votes"),
            MembershipError::AlreadyBound(id) => {
                write!(f, "node {id} is already bound to an incarnation")
            }
            MembershipError::Malformed(what) => write!(f, "malformed configuration: {what}"),
        }
    }
}

impl std::error::Error for MembershipError {}

impl Membership {
    /// A configuration of `members`, checked: ids and names unique, at least
    /// one voter, at most [`MAX_MEMBERS`], labels within bounds.
    pub fn new(mut members: Vec<Member>) -> Result<Membership, MembershipError> {
        members.sort_by_key(|m| m.id);
        let membership = Membership { members };
        membership.validate()?;
        Ok(membership)
    }

    /// Voters with the given ids and their ids as names (the core's tests and
    /// simulator, which need no labels).
    pub fn of_voters(ids: &[NodeId]) -> Result<Membership, MembershipError> {
        Membership::new(Membership::unchecked(ids).members)
    }

    /// Voters named by their ids, unchecked, so that `Config::validate` can name
    /// what is wrong with a list given to `Config::new`.
    pub(crate) fn unchecked(ids: &[NodeId]) -> Membership {
        let mut members: Vec<Member> = ids
            .iter()
            .map(|&id| Member {
                id,
                name: id.to_string(),
                addr: id.to_string(),
                voter: true,
                incarnation: 0,
            })
            .collect();
        members.sort_by_key(|m| m.id);
        Membership { members }
    }

    /// Checks the rules `new` enforces (a value that came off the wire).
    pub fn validate(&self) -> Result<(), MembershipError> {
        if self.members.len() > MAX_MEMBERS {
            return Err(MembershipError::TooManyMembers);
        }
        let label_ok = |s: &str| !s.is_empty() && s.len() <= MAX_LABEL_BYTES;
        for (i, m) in self.members.iter().enumerate() {
            if !label_ok(&m.name) || !label_ok(&m.addr) {
                return Err(MembershipError::BadLabel);
            }
            if i > 0 && self.members[i - 1].id >= m.id {
                return Err(MembershipError::DuplicateId(m.id));
            }
            if self.members[..i].iter().any(|o| o.name == m.name) {
                return Err(MembershipError::DuplicateName(m.name.clone()));
            }
        }
        if !self.members.iter().any(|m| m.voter) {
            return Err(MembershipError::NoVoter);
        }
        Ok(())
    }

    pub fn members(&self) -> &[Member] {
        &self.members
    }

    pub fn get(&self, id: NodeId) -> Option<&Member> {
        self.members.iter().find(|m| m.id == id)
    }

    pub fn by_name(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.get(id).is_some()
    }

    pub fn is_voter(&self, id: NodeId) -> bool {
        self.get(id).is_some_and(|m| m.voter)
    }

    /// The voters' ids, in id order.
    pub fn voters(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.members.iter().filter(|m| m.voter).map(|m| m.id)
    }

    pub fn voter_count(&self) -> usize {
        self.members.iter().filter(|m| m.voter).count()
    }

    /// The voters bound to an incarnation, and twice that minus the voters:
    /// positive when the bound voters are a majority.
    pub fn bound_margin(&self) -> (usize, i64) {
        let bound = self
            .members
            .iter()
            .filter(|m| m.voter && m.incarnation != 0)
            .count();
        (bound, 2 * bound as i64 - self.voter_count() as i64)
    }

    /// How many voters make a majority.
    pub fn quorum(&self) -> usize {
        self.voter_count() / 2 + 1
    }

    /// Whether `ids` hold a majority of the voters (non-voters in `ids` do not count).
    pub fn is_quorum<'a>(&self, ids: impl IntoIterator<Item = &'a NodeId>) -> bool {
        ids.into_iter().filter(|&&id| self.is_voter(id)).count() >= self.quorum()
    }

    /// The configuration after `change`.
    pub fn apply(&self, change: &MembershipChange) -> Result<Membership, MembershipError> {
        let mut members = self.members.clone();
        match change {
            MembershipChange::AddLearner { id, name, addr } => {
                if self.contains(*id) {
                    return Err(MembershipError::AlreadyAMember(*id));
                }
                members.push(Member {
                    id: *id,
                    name: name.clone(),
                    addr: addr.clone(),
                    voter: false,
                    incarnation: 0,
                });
            }
            MembershipChange::Promote(id) => {
                let member = members
                    .iter_mut()
                    .find(|m| m.id == *id)
                    .ok_or(MembershipError::NotAMember(*id))?;
                if member.voter {
                    return Err(MembershipError::AlreadyAVoter(*id));
                }
                member.voter = true;
            }
            MembershipChange::Remove(id) => {
                if !self.contains(*id) {
                    return Err(MembershipError::NotAMember(*id));
                }
                members.retain(|m| m.id != *id);
            }
            MembershipChange::Bind(bindings) => {
                for (id, incarnation) in bindings {
                    let member = members
                        .iter_mut()
                        .find(|m| m.id == *id)
                        .ok_or(MembershipError::NotAMember(*id))?;
                    if member.incarnation != 0 || *incarnation == 0 {
                        return Err(MembershipError::AlreadyBound(*id));
                    }
                    member.incarnation = *incarnation;
                }
            }
        }
        Membership::new(members)
    }

    /// Upper bound of the bytes this configuration takes inside an encoded
    /// message: its own encoding, plus a byte per member and a few for the
    /// codec's length prefixes (varints where `encode` has fixed widths).
    pub fn wire_bound(&self) -> usize {
        self.encode().len() + self.members.len() + 8
    }

    /// Whether a vote or an acknowledgement from incarnation `incarnation` of
    /// node `id` counts: it is a voter and that incarnation is the one bound
    /// (or none is yet).
    pub fn counts(&self, id: NodeId, incarnation: u64) -> bool {
        self.get(id)
            .is_some_and(|m| m.voter && (m.incarnation == 0 || m.incarnation == incarnation))
    }

    /// Whether `ids` (each with the incarnation heard from it) hold a majority
    /// of the voters, counting only the bound incarnations.
    pub fn is_quorum_of(&self, heard: impl IntoIterator<Item = (NodeId, u64)>) -> bool {
        heard
            .into_iter()
            .filter(|&(id, incarnation)| self.counts(id, incarnation))
            .count()
            >= self.quorum()
    }

    /// The bytes of a configuration entry: a version byte, a u16 count, then per
    /// member its id (u64), a voter flag, its incarnation (u64) and its name
    /// and address (u8 length each), all big-endian.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(3 + self.members.len() * 32);
        out.push(ENCODING_VERSION);
        out.extend_from_slice(&(self.members.len() as u16).to_be_bytes());
        for m in &self.members {
            out.extend_from_slice(&m.id.to_be_bytes());
            out.push(u8::from(m.voter));
            out.extend_from_slice(&m.incarnation.to_be_bytes());
            for label in [&m.name, &m.addr] {
                out.push(label.len() as u8);
                out.extend_from_slice(label.as_bytes());
            }
        }
        out
    }

    /// Reads [`Membership::encode`]'s bytes, refusing anything else: no length
    /// in them sizes an allocation past the input, and the result is validated.
    pub fn decode(bytes: &[u8]) -> Result<Membership, MembershipError> {
        let mut r = Reader { bytes };
        let version = r.take(1)?[0];
        if version != 1 && version != ENCODING_VERSION {
            return Err(MembershipError::Malformed("unknown version"));
        }
        let count = u16::from_be_bytes(r.array()?) as usize;
        if count > MAX_MEMBERS {
            return Err(MembershipError::TooManyMembers);
        }
        let mut members = Vec::with_capacity(count);
        for _ in 0..count {
            let id = u64::from_be_bytes(r.array()?);
            let voter = match r.take(1)? {
                [0] => false,
                [1] => true,
                _ => return Err(MembershipError::Malformed("bad voter flag")),
            };
            let incarnation = if version >= 2 {
                u64::from_be_bytes(r.array()?)
            } else {
                0
            };
            let name = r.label()?;
            let addr = r.label()?;
            members.push(Member {
                id,
                name,
                addr,
                voter,
                incarnation,
            });
        }
        if !r.bytes.is_empty() {
            return Err(MembershipError::Malformed("trailing bytes"));
        }
        let membership = Membership { members };
        membership.validate()?;
        Ok(membership)
    }
}

impl std::fmt::Display for Membership {
    /// `A (voter), B (voter), F (learner)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, m) in self.members.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            let role = if m.voter { "voter" } else { "learner" };
            write!(f, "{} ({role})", m.name)?;
        }
        Ok(())
    }
}

/// A cursor over untrusted bytes.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], MembershipError> {
        if self.bytes.len() < n {
            return Err(MembershipError::Malformed("truncated"));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], MembershipError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn label(&mut self) -> Result<String, MembershipError> {
        let len = self.take(1)?[0] as usize;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| MembershipError::Malformed("label not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn five() -> Membership {
        Membership::of_voters(&[1, 2, 3, 4, 5]).unwrap()
    }

    #[test]
    fn quorum_counts_voters_only() {
        let m = five()
            .apply(&MembershipChange::AddLearner {
                id: 6,
                name: "F".into(),
                addr: "10.0.0.6:1".into(),
            })
            .unwrap();
        assert_eq!(m.quorum(), 3);
        assert!(!m.is_quorum(&[1, 2, 6]));
        assert!(m.is_quorum(&[1, 2, 3]));
        let m = m.apply(&MembershipChange::Promote(6)).unwrap();
        assert_eq!(m.quorum(), 4);
        assert!(m.is_voter(6));
        assert_eq!(Membership::of_voters(&[1]).unwrap().quorum(), 1);
    }

    #[test]
    fn changes_are_checked() {
        let m = five();
        assert_eq!(
            m.apply(&MembershipChange::Promote(3)),
            Err(MembershipError::AlreadyAVoter(3))
        );
        assert_eq!(
            m.apply(&MembershipChange::Remove(9)),
            Err(MembershipError::NotAMember(9))
        );
        let add = |id, name: &str| MembershipChange::AddLearner {
            id,
            name: name.into(),
            addr: "h:1".into(),
        };
        assert_eq!(
            m.apply(&add(2, "X")),
            Err(MembershipError::AlreadyAMember(2))
        );
        assert_eq!(
            m.apply(&add(7, "2")),
            Err(MembershipError::DuplicateName("2".into()))
        );
        let one = Membership::of_voters(&[1]).unwrap();
        assert_eq!(
            one.apply(&MembershipChange::Remove(1)),
            Err(MembershipError::NoVoter)
        );
        assert_eq!(
            m.apply(&add(8, &"x".repeat(MAX_LABEL_BYTES + 1))),
            Err(MembershipError::BadLabel)
        );
    }

    #[test]
    fn encoding_round_trips_and_refuses_garbage() {
        let m = five()
            .apply(&MembershipChange::AddLearner {
                id: u64::MAX / 3,
                name: "F".into(),
                addr: "[::1]:9".into(),
            })
            .unwrap();
        let bytes = m.encode();
        assert!(bytes.len() <= MAX_ENCODED_BYTES);
        assert_eq!(Membership::decode(&bytes), Ok(m.clone()));
        for cut in 0..bytes.len() {
            assert!(Membership::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(Membership::decode(&trailing).is_err());
        let mut many = vec![ENCODING_VERSION];
        many.extend_from_slice(&u16::MAX.to_be_bytes());
        assert_eq!(
            Membership::decode(&many),
            Err(MembershipError::TooManyMembers)
        );
        let mut rng = super::super::rng::Rng::new(7);
        for _ in 0..20_000 {
            let mut b = bytes.clone();
            let at = rng.range(0, b.len() as u64) as usize;
            b[at] = rng.range(0, 256) as u8;
            if let Ok(d) = Membership::decode(&b) {
                d.validate().unwrap();
            }
        }
    }

    #[test]
    fn bindings_decide_whose_votes_count_and_version_1_reads_unbound() {
        let m = five()
            .apply(&MembershipChange::Bind(vec![(1, 11), (2, 22)]))
            .unwrap();
        assert!(
            m.counts(1, 11) && !m.counts(1, 12),
            "bound: only that incarnation"
        );
        assert!(m.counts(3, 99), "unbound: any incarnation");
        assert!(m.is_quorum_of([(1, 11), (2, 22), (3, 7)]));
        assert!(!m.is_quorum_of([(1, 12), (2, 23), (3, 7)]));
        assert_eq!(
            m.apply(&MembershipChange::Bind(vec![(1, 13)])),
            Err(MembershipError::AlreadyBound(1))
        );
        assert_eq!(
            m.apply(&MembershipChange::Bind(vec![(3, 0)])),
            Err(MembershipError::AlreadyBound(3))
        );
        // Version 1 (no incarnations) reads as unbound members.
        let mut v1 = vec![1u8];
        v1.extend_from_slice(&1u16.to_be_bytes());
        v1.extend_from_slice(&7u64.to_be_bytes());
        v1.push(1);
        for label in ["A", "h:1"] {
            v1.push(label.len() as u8);
            v1.extend_from_slice(label.as_bytes());
        }
        let read = Membership::decode(&v1).unwrap();
        assert_eq!(read.members()[0].incarnation, 0);
        assert_eq!(read.members()[0].name, "A");
    }

    #[test]
    fn the_largest_configuration_fits_the_bound() {
        let members = (0..MAX_MEMBERS as u64)
            .map(|id| Member {
                id,
                name: format!("{id:0>64}"),
                addr: "a".repeat(MAX_LABEL_BYTES),
                voter: true,
                incarnation: u64::MAX,
            })
            .collect();
        let m = Membership::new(members).unwrap();
        assert_eq!(m.encode().len(), MAX_ENCODED_BYTES);
        assert_eq!(m.to_string().matches("(voter)").count(), MAX_MEMBERS);
    }
}
