//! Revisions of server sets. A cluster starts with servers `<cluster>-<ordinal>` (no revision,
//! the StatefulSet `<cluster>`); a blue/green upgrade brings up servers
//! `<cluster>-<revision>-<ordinal>` (StatefulSet `<cluster>-<revision>`). The names themselves,
//! and the raft node ids (pod names), are built and parsed by `openbao_api::names`.

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
}
