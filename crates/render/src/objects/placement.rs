//! The user's placement and pod customisation (`spec.affinity`, `topologySpreadConstraints`,
//! `tolerations`, `nodeSelector`, `priorityClassName`, `imagePullSecrets`, `podMetadata`)
//! applied to a pod template the builders made. The operator's own labels and annotations
//! always win; admission and `OpenBaoClusterSpec::check` refuse colliding keys before this.

use k8s_openapi::api::core::v1::{Affinity, PodSpec, PodTemplateSpec, TopologySpreadConstraint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use std::collections::BTreeMap;

use openbao_api::OpenBaoClusterSpec;
use openbao_api::placement::Placement;

/// The topology key of the default spread: one server per node where the nodes allow it.
pub const HOSTNAME_TOPOLOGY_KEY: &str = "kubernetes.io/hostname";

/// The spread of a set of servers selected by `selector`: the user's constraints (one without
/// a `labelSelector` gets `selector`, without which it would count no pod), else one soft
/// constraint across nodes. Soft: a single-node cluster, or a blue/green upgrade that briefly
/// runs twice the servers, still schedules.
pub fn topology_spread(placement: &Placement, selector: &BTreeMap<String, String>) -> Vec<TopologySpreadConstraint> {
    let select = || LabelSelector {
        match_labels: Some(selector.clone()),
        ..Default::default()
    };
    if placement.topology_spread_constraints.is_empty() {
        return vec![TopologySpreadConstraint {
            max_skew: 1,
            topology_key: HOSTNAME_TOPOLOGY_KEY.to_string(),
            when_unsatisfiable: "ScheduleAnyway".to_string(),
            label_selector: Some(select()),
            ..Default::default()
        }];
    }
    placement
        .topology_spread_constraints
        .iter()
        .cloned()
        .map(|mut c| {
            c.label_selector.get_or_insert_with(select);
            c
        })
        .collect()
}

/// Scheduling fields every pod of the cluster gets (servers and Jobs).
fn common(pod: &mut PodSpec, placement: &Placement) {
    if !placement.node_selector.is_empty() {
        pod.node_selector = Some(placement.node_selector.clone());
    }
    if !placement.tolerations.is_empty() {
        pod.tolerations = Some(placement.tolerations.to_vec());
    }
    if let Some(class) = placement.priority_class_name {
        pod.priority_class_name = Some(class.to_string());
    }
    if !placement.image_pull_secrets.is_empty() {
        pod.image_pull_secrets = Some(placement.image_pull_secrets.to_vec());
    }
}

/// An OpenBao server pod template of the set selected by `selector`: every placement field,
/// and `podMetadata` under the operator's own labels and annotations.
pub fn server_pod(template: &mut PodTemplateSpec, spec: &OpenBaoClusterSpec, selector: &BTreeMap<String, String>) {
    let placement = spec.placement();
    if let Some(meta) = &spec.pod_metadata {
        let m = template.metadata.get_or_insert_with(Default::default);
        for (mine, theirs) in [(&mut m.labels, &meta.labels), (&mut m.annotations, &meta.annotations)] {
            if theirs.is_empty() {
                continue;
            }
            let mut merged = theirs.clone();
            merged.extend(mine.take().unwrap_or_default());
            *mine = Some(merged);
        }
    }
    let pod = template.spec.get_or_insert_with(Default::default);
    common(pod, &placement);
    pod.affinity = placement.affinity.cloned();
    pod.topology_spread_constraints = Some(topology_spread(&placement, selector));
}

/// An executor Job's pod: where it may run (node selector, tolerations, node affinity),
/// its priority and pull secrets. Not the servers' pod affinity, spread or pod metadata: those
/// are written about the servers, and would keep a Job away from (or next to) them.
pub fn job_pod(pod: &mut PodSpec, spec: &OpenBaoClusterSpec) {
    let placement = spec.placement();
    common(pod, &placement);
    if let Some(node_affinity) = placement.affinity.and_then(|a| a.node_affinity.clone()) {
        pod.affinity = Some(Affinity {
            node_affinity: Some(node_affinity),
            ..Default::default()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels;
    use crate::objects::{fixtures, jobs, public_service, revision_statefulset, service_account, statefulset};
    use serde_json::json;

    fn spread_of(spec: &OpenBaoClusterSpec) -> Vec<TopologySpreadConstraint> {
        let sts = statefulset(&fixtures::cluster(spec)).spec.unwrap();
        sts.template.spec.unwrap().topology_spread_constraints.unwrap()
    }

    #[test]
    fn the_default_spread_is_soft_across_nodes_for_every_profile() {
        let spread = spread_of(&fixtures::spec(json!({})));
        assert_eq!(spread.len(), 1);
        let c = &spread[0];
        assert_eq!(
            (c.max_skew, c.topology_key.as_str(), c.when_unsatisfiable.as_str()),
            (1, HOSTNAME_TOPOLOGY_KEY, "ScheduleAnyway")
        );
        let selector = c.label_selector.as_ref().unwrap().match_labels.clone().unwrap();
        assert_eq!(selector, crate::objects::server_set_selector("vault", None));
        // Hardened does not make it hard by itself.
        let hardened = fixtures::spec(json!({"profile": "Hardened"}));
        assert_eq!(spread_of(&hardened)[0].when_unsatisfiable, "ScheduleAnyway");
    }

    #[test]
    fn user_constraints_replace_the_default_and_get_the_set_selector() {
        let spec = fixtures::spec(json!({"topologySpreadConstraints": [
            {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule"},
            {"maxSkew": 2, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway",
             "labelSelector": {"matchLabels": {"mine": "yes"}}},
        ]}));
        let cluster = fixtures::cluster(&spec);
        let green = revision_statefulset(&cluster, "v2", &crate::objects::Rollout::of_spec(&cluster));
        let spread = green
            .spec
            .unwrap()
            .template
            .spec
            .unwrap()
            .topology_spread_constraints
            .unwrap();
        assert_eq!(spread.len(), 2);
        assert_eq!(spread[0].when_unsatisfiable, "DoNotSchedule");
        assert_eq!(
            spread[0].label_selector.as_ref().unwrap().match_labels.clone().unwrap(),
            crate::objects::server_set_selector("vault", Some("v2"))
        );
        assert_eq!(
            spread[1].label_selector.as_ref().unwrap().match_labels.clone().unwrap(),
            BTreeMap::from([("mine".to_string(), "yes".to_string())])
        );
    }

    fn full_spec() -> OpenBaoClusterSpec {
        fixtures::spec(json!({
            "affinity": {
                "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["vault"]}]}]}},
                "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                    {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"openbao.org/cluster": "vault"}}}]}
            },
            "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "priorityClassName": "vault-critical",
            "podMetadata": {"labels": {"team": "platform"}, "annotations": {"example.com/role": "bao"}},
            "serviceAccount": {"annotations": {"iam.example.com/role": "arn"}},
            "imagePullSecrets": [{"name": "registry"}],
            "service": {"type": "NodePort", "annotations": {"lb.example.com/x": "y"}},
            "backup": {"schedule": "0 3 * * *", "target": {"endpoint": "http://s3.storage.svc:9000",
                "bucket": "b", "credentialsSecretRef": {"name": "s3"}}}
        }))
    }

    #[test]
    fn servers_get_every_field_and_keep_their_own_labels() {
        let spec = full_spec();
        let cluster = fixtures::cluster(&spec);
        for sts in [
            statefulset(&cluster),
            revision_statefulset(&cluster, "v2", &crate::objects::Rollout::of_spec(&cluster)),
        ] {
            let t = sts.spec.unwrap().template;
            let m = t.metadata.unwrap();
            let l = m.labels.unwrap();
            assert_eq!(l["team"], "platform");
            assert_eq!(l[labels::CLUSTER_LABEL], "vault");
            let a = m.annotations.unwrap();
            assert_eq!(a["example.com/role"], "bao");
            assert!(a.contains_key(labels::CONFIG_HASH_ANNOTATION));
            let pod = t.spec.unwrap();
            assert_eq!(pod.affinity, spec.affinity);
            assert_eq!(pod.tolerations.unwrap(), spec.tolerations);
            assert_eq!(pod.node_selector.unwrap(), spec.node_selector);
            assert_eq!(pod.priority_class_name.as_deref(), Some("vault-critical"));
            assert_eq!(pod.image_pull_secrets.unwrap()[0].name, "registry");
        }
        let svc = public_service(&cluster);
        assert_eq!(svc.spec.unwrap().type_.as_deref(), Some("NodePort"));
        assert_eq!(svc.metadata.annotations.unwrap()["lb.example.com/x"], "y");
        let sa = service_account(&cluster);
        assert_eq!(sa.metadata.annotations.unwrap()["iam.example.com/role"], "arn");
    }

    #[test]
    fn the_operator_labels_win_over_pod_metadata() {
        // Admission and `check` refuse this; the builder still never lets it through.
        let mut spec = fixtures::spec(json!({}));
        spec.pod_metadata = Some(openbao_api::PodMetadata {
            labels: BTreeMap::from([(labels::CLUSTER_LABEL.to_string(), "other".to_string())]),
            annotations: BTreeMap::new(),
        });
        let sts = statefulset(&fixtures::cluster(&spec)).spec.unwrap();
        assert_eq!(
            sts.template.metadata.unwrap().labels.unwrap()[labels::CLUSTER_LABEL],
            "vault"
        );
        assert!(spec.check().is_err());
    }

    #[test]
    fn jobs_get_node_placement_but_not_the_servers_pod_affinity_or_metadata() {
        let spec = full_spec();
        let cluster = fixtures::cluster(&spec);
        let backup = spec.backup.as_ref().unwrap();
        for job in [
            jobs::backup_job(&cluster, backup, "b", "op:1"),
            jobs::verify_job(&cluster, backup, "v", "op:1", "2.7.2", None),
            jobs::pre_upgrade_snapshot_job(&cluster, backup, "p", "op:1"),
        ] {
            let t = job.spec.unwrap().template;
            assert!(!t.metadata.unwrap().labels.unwrap().contains_key("team"));
            let pod = t.spec.unwrap();
            let affinity = pod.affinity.unwrap();
            assert!(affinity.node_affinity.is_some());
            assert!(affinity.pod_anti_affinity.is_none() && affinity.pod_affinity.is_none());
            assert!(pod.topology_spread_constraints.is_none());
            assert_eq!(pod.tolerations.unwrap(), spec.tolerations);
            assert_eq!(pod.node_selector.unwrap(), spec.node_selector);
            assert_eq!(pod.priority_class_name.as_deref(), Some("vault-critical"));
            assert_eq!(pod.image_pull_secrets.unwrap()[0].name, "registry");
        }
    }

    #[test]
    fn every_label_the_operator_sets_on_pods_is_reserved() {
        let spec = full_spec();
        let cluster = fixtures::cluster(&spec);
        let backup = spec.backup.as_ref().unwrap();
        let mut keys: Vec<String> = Vec::new();
        let sts = revision_statefulset(&cluster, "v2", &crate::objects::Rollout::of_spec(&cluster));
        let m = sts.spec.unwrap().template.metadata.unwrap();
        keys.extend(m.labels.unwrap().into_keys().filter(|k| k != "team"));
        let job = jobs::backup_job(&cluster, backup, "b", "op:1");
        keys.extend(job.spec.unwrap().template.metadata.unwrap().labels.unwrap().into_keys());
        for key in keys {
            assert!(
                openbao_api::placement::reserved_label(&key).is_some(),
                "{key} is not reserved"
            );
        }
        for key in m.annotations.unwrap().into_keys().filter(|k| k != "example.com/role") {
            assert!(openbao_api::placement::reserved_annotation(&key).is_some(), "{key}");
        }
    }
}
