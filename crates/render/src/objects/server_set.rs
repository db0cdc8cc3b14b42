//! The labels that tell sets of servers apart (see [`super::bluegreen`] for the sets
//! themselves; their object names are in `openbao_api::names::server_set` and its siblings).
//! A set is selected by the component label: `server` for the original set, `server-<r>` for
//! revision `r`. The original pods never carried a revision label and their StatefulSet's
//! selector cannot change, so a set is told apart by a label the others lack rather than one
//! they would have to gain.

use std::collections::BTreeMap;

use crate::labels;

/// Carried by the pods, StatefulSets, ConfigMaps and volumes of a revision's set.
pub const REVISION_LABEL: &str = "openbao.org/revision";

/// The component label value of a set's pods.
fn server_set_component(revision: Option<&str>) -> String {
    match revision {
        None => "server".to_string(),
        Some(rev) => format!("server-{rev}"),
    }
}

/// Labels selecting exactly the pods of one set.
pub fn server_set_selector(cluster: &str, revision: Option<&str>) -> BTreeMap<String, String> {
    let mut l = labels::selector(cluster);
    l.insert(labels::COMPONENT_LABEL.to_string(), server_set_component(revision));
    l
}

/// Labels of a set's pods: its selector, and the revision label for a revision's set.
pub fn server_set_pod_labels(cluster: &str, revision: Option<&str>) -> BTreeMap<String, String> {
    let mut l = server_set_selector(cluster, revision);
    if let Some(rev) = revision {
        l.insert(REVISION_LABEL.to_string(), rev.to_string());
    }
    l
}
