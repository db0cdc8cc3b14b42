//! Names of server sets and servers. A cluster starts with servers `<cluster>-<ordinal>` (no
//! revision, the StatefulSet `<cluster>`); a blue/green upgrade brings up servers
//! `<cluster>-<revision>-<ordinal>` (StatefulSet `<cluster>-<revision>`). The raft node id of a
//! server is its pod name, so raft peers can be told apart by name even when their pod is gone.

/// A set of servers: `None` is the cluster's original set.
pub type Revision = Option<String>;

/// The revision name of a green set on `version`: `v` and the version with every character
/// that a DNS label cannot hold replaced by `-`, e.g. `2.7.2` -> `v2-7-2`. It never consists
/// of digits only, so node ids parse back unambiguously.
pub fn revision_for(version: &str) -> String {
    let body: String = version
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    format!("v{}", body.trim_matches('-'))
}

/// The raft node id (pod name) of server `ordinal` of `revision`.
pub fn node_id(cluster: &str, revision: &Revision, ordinal: u32) -> String {
    match revision {
        None => format!("{cluster}-{ordinal}"),
        Some(rev) => format!("{cluster}-{rev}-{ordinal}"),
    }
}

/// The revision and ordinal a node id names, or `None` for ids of other clusters.
pub fn parse_node_id(cluster: &str, id: &str) -> Option<(Revision, u32)> {
    let rest = id.strip_prefix(cluster)?.strip_prefix('-')?;
    let (head, ordinal) = match rest.rsplit_once('-') {
        Some((head, tail)) => (Some(head), tail),
        None => (None, rest),
    };
    if ordinal.is_empty() || !ordinal.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let ordinal = ordinal.parse().ok()?;
    match head {
        None => Some((None, ordinal)),
        Some(rev) if rev.starts_with('v') => Some((Some(rev.to_string()), ordinal)),
        Some(_) => None,
    }
}

/// How a revision is written in messages.
pub fn describe(revision: &Revision) -> String {
    match revision {
        None => "the original servers".to_string(),
        Some(rev) => format!("revision {rev}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revisions_are_dns_labels_that_never_look_like_ordinals() {
        assert_eq!(revision_for("2.7.2"), "v2-7-2");
        assert_eq!(revision_for("2.8.0-Beta20250101"), "v2-8-0-beta20250101");
    }

    #[test]
    fn node_ids_round_trip() {
        for (rev, ordinal) in [(None, 0), (None, 12), (Some("v2-7-2".to_string()), 2)] {
            let id = node_id("bao", &rev, ordinal);
            assert_eq!(parse_node_id("bao", &id), Some((rev, ordinal)), "{id}");
        }
        assert_eq!(node_id("bao", &Some("v2-7-2".into()), 1), "bao-v2-7-2-1");
    }

    #[test]
    fn foreign_ids_are_not_parsed() {
        for id in [
            "node1",
            "other-0",
            "bao",
            "bao-",
            "bao-x",
            "bao-1-2",
            "bao-v2-7-2-",
            "baox-0",
        ] {
            assert_eq!(parse_node_id("bao", id), None, "{id}");
        }
    }
}
