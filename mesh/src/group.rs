//! Groups: a group is a 32-byte secret, handed from person to person as a ticket
//! (`meshgroup…`, text or QR). Members prove membership to each other without revealing
//! the secret: each side answers the other's fresh nonce with a MAC keyed by the group,
//! bound to both endpoint ids (so a proof cannot be replayed to, or relayed from, a third
//! endpoint), and attestations carry a MAC that any member can check.
//!
//! The list of groups lives in `<mesh dir>/groups` (one ticket per line, mode 0600); it is
//! re-read when it changes, so `meshcache group join` takes effect on a running proxy.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use crate::MeshError;

const TICKET_PREFIX: &str = "meshgroup";

/// A group's public identifier (derived from the secret; reveals nothing about it).
pub type GroupId = [u8; 16];

/// One group: its secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Group {
    secret: [u8; 32],
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Group({})", crate::hex(&self.id()[..4]))
    }
}

impl Group {
    /// A new group with a random secret.
    pub fn generate() -> Result<Self, MeshError> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| MeshError::Io(format!("random: {e}")))?;
        Ok(Self { secret })
    }

    pub fn id(&self) -> GroupId {
        let k = blake3::derive_key("meshcache group id v1", &self.secret);
        let mut id = [0u8; 16];
        id.copy_from_slice(&k[..16]);
        id
    }

    fn key(&self, purpose: &str) -> [u8; 32] {
        blake3::derive_key(purpose, &self.secret)
    }

    /// The ticket: `meshgroup` + base32 of the secret and a 4-byte checksum (typos are
    /// caught instead of silently creating another group).
    pub fn ticket(&self) -> String {
        let mut raw = self.secret.to_vec();
        raw.extend_from_slice(&blake3::hash(&self.secret).as_bytes()[..4]);
        format!(
            "{TICKET_PREFIX}{}",
            data_encoding::BASE32_NOPAD
                .encode(&raw)
                .to_ascii_lowercase()
        )
    }

    pub fn from_ticket(ticket: &str) -> Result<Self, MeshError> {
        let bad = |why: &str| MeshError::BadTicket(format!("not a group ticket: {why}"));
        let rest = ticket
            .trim()
            .strip_prefix(TICKET_PREFIX)
            .ok_or_else(|| bad("it does not start with 'meshgroup'"))?;
        let raw = data_encoding::BASE32_NOPAD
            .decode(rest.to_ascii_uppercase().as_bytes())
            .map_err(|_| bad("not base32"))?;
        if raw.len() != 36 {
            return Err(bad("wrong length"));
        }
        let mut secret = [0u8; 32];
        secret.copy_from_slice(&raw[..32]);
        if blake3::hash(&secret).as_bytes()[..4] != raw[32..] {
            return Err(bad("checksum mismatch (a typo?)"));
        }
        Ok(Self { secret })
    }

    /// Proof of membership: `role` says which side of the handshake proves, so one side's
    /// proof can never be reflected back as the other's.
    pub fn membership_mac(
        &self,
        role: &[u8],
        prover: &[u8; 32],
        verifier: &[u8; 32],
        nonce: &[u8; 32],
    ) -> [u8; 32] {
        let mut h = blake3::Hasher::new_keyed(&self.key("meshcache group membership v1"));
        h.update(role);
        h.update(prover);
        h.update(verifier);
        h.update(nonce);
        *h.finalize().as_bytes()
    }

    /// MAC that a signer of an attestation (`claim_digest`) is a member of this group.
    pub fn attest_mac(&self, signer: &[u8; 32], claim_digest: &[u8; 32]) -> [u8; 32] {
        let mut h = blake3::Hasher::new_keyed(&self.key("meshcache group attestation v1"));
        h.update(signer);
        h.update(claim_digest);
        *h.finalize().as_bytes()
    }
}

/// Constant-time comparison of MACs.
pub fn mac_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    blake3::Hash::from_bytes(*a) == blake3::Hash::from_bytes(*b)
}

/// The groups this device belongs to, backed by a file.
#[derive(Debug)]
pub struct Groups {
    path: PathBuf,
    state: Mutex<(Option<SystemTime>, Vec<Group>)>,
}

impl Groups {
    pub fn open(dir: &Path) -> Result<Self, MeshError> {
        let g = Self {
            path: dir.join("groups"),
            state: Mutex::new((None, Vec::new())),
        };
        g.current()?;
        Ok(g)
    }

    /// The groups, re-read if the file changed.
    pub fn current(&self) -> Result<Vec<Group>, MeshError> {
        let mtime = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.0 != mtime || mtime.is_none() {
            st.1 = read_groups(&self.path)?;
            st.0 = mtime;
        }
        Ok(st.1.clone())
    }

    pub fn find(&self, id: &GroupId) -> Option<Group> {
        self.current().ok()?.into_iter().find(|g| &g.id() == id)
    }

    /// Adds a group; returns false if it was already there.
    pub fn add(&self, group: &Group) -> Result<bool, MeshError> {
        let mut all = read_groups(&self.path)?;
        if all.contains(group) {
            return Ok(false);
        }
        all.push(group.clone());
        let text: String = all.iter().map(|g| format!("{}\n", g.ticket())).collect();
        crate::identity::write_private(&self.path, text.as_bytes())?;
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.0 = None;
        Ok(true)
    }

    /// Removes a group by ticket; returns false if it was not there.
    pub fn remove(&self, group: &Group) -> Result<bool, MeshError> {
        let mut all = read_groups(&self.path)?;
        let before = all.len();
        all.retain(|g| g != group);
        if all.len() == before {
            return Ok(false);
        }
        let text: String = all.iter().map(|g| format!("{}\n", g.ticket())).collect();
        crate::identity::write_private(&self.path, text.as_bytes())?;
        self.state.lock().unwrap_or_else(|e| e.into_inner()).0 = None;
        Ok(true)
    }
}

fn read_groups(path: &Path) -> Result<Vec<Group>, MeshError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(MeshError::Io(format!("{}: {e}", path.display()))),
    };
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let g = Group::from_ticket(line)
            .map_err(|e| MeshError::BadTicket(format!("{}:{}: {e}", path.display(), n + 1)))?;
        if !out.contains(&g) {
            out.push(g);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_round_trip_and_typos_are_caught() {
        let g = Group::generate().unwrap();
        let t = g.ticket();
        assert!(t.starts_with("meshgroup"));
        assert_eq!(Group::from_ticket(&t).unwrap(), g);
        assert_eq!(
            Group::from_ticket(&t.to_ascii_uppercase().replace("MESHGROUP", "meshgroup")).unwrap(),
            g
        );
        let mut typo = t.clone().into_bytes();
        let i = typo.len() - 10;
        typo[i] = if typo[i] == b'a' { b'b' } else { b'a' };
        assert!(Group::from_ticket(std::str::from_utf8(&typo).unwrap()).is_err());
        assert!(Group::from_ticket("endpointabc").is_err());
    }

    #[test]
    fn proofs_are_bound_to_role_ids_and_nonce() {
        let g = Group::generate().unwrap();
        let other = Group::generate().unwrap();
        let (a, b, n) = ([1u8; 32], [2u8; 32], [3u8; 32]);
        let m = g.membership_mac(b"dialer", &a, &b, &n);
        assert!(mac_eq(&m, &g.membership_mac(b"dialer", &a, &b, &n)));
        assert!(!mac_eq(&m, &g.membership_mac(b"acceptor", &a, &b, &n)));
        assert!(!mac_eq(&m, &g.membership_mac(b"dialer", &b, &a, &n)));
        assert!(!mac_eq(
            &m,
            &g.membership_mac(b"dialer", &a, &b, &[4u8; 32])
        ));
        assert!(!mac_eq(&m, &other.membership_mac(b"dialer", &a, &b, &n)));
        assert_ne!(g.id(), other.id());
    }

    #[test]
    fn the_groups_file_is_private_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let groups = Groups::open(dir.path()).unwrap();
        assert!(groups.current().unwrap().is_empty());
        let g = Group::generate().unwrap();
        assert!(groups.add(&g).unwrap());
        assert!(!groups.add(&g).unwrap());
        let other_view = Groups::open(dir.path()).unwrap();
        assert_eq!(other_view.current().unwrap(), vec![g.clone()]);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("groups"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(dir.path().join("groups"), "nonsense\n").unwrap();
        let err = Groups::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("groups:1"), "{err}");
    }
}
