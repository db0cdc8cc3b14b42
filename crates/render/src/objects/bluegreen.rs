//! Sets of servers for blue/green upgrades. A cluster starts with its original set (StatefulSet
//! `<c>`, ConfigMap `<c>-config`, pods `<c>-<i>`); a blue/green upgrade adds a set of revision
//! `r` (StatefulSet `<c>-r`, ConfigMap `<c>-config-r`, pods `<c>-r-<i>`) whose servers join the
//! running set's raft cluster as non-voters.
//!
//! Every set shares the headless Service `<c>`, so every pod is `<pod>.<c>.<ns>.svc` and the
//! NetworkPolicy, the PodDisruptionBudget and the pod watch cover all of them. The public
//! Service (and with it the HTTPRoute, whose backend it is) selects exactly one set by the
//! component label: `server` for the original set, `server-<r>` for revision `r` (the labels
//! are built in [`super::server_set`], the names in `openbao_api::names`).

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use openbao_api::names;
use serde_json::json;
use std::collections::BTreeMap;

use super::server_set::{REVISION_LABEL, server_set_selector};
use super::workload::{Rollout, ServerSet, config_data, server_statefulset};
use super::{meta, typed};
use crate::config::{self, JoinTarget};
use crate::{API_PORT, Cluster, labels};

/// How a revision's servers find the raft cluster when their storage is empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Joining<'a> {
    /// The set is the live one: join its own servers, with a vote (a server whose volume was
    /// lost comes back as what it was).
    Own,
    /// The set is being added beside the running set `revision` of `replicas` servers: join
    /// those as a non-voter; the upgrade promotes it once it has caught up.
    AsNonVoter { revision: Option<&'a str>, replicas: i32 },
}

/// `10-server.hcl` of revision `revision`. Certificates name the original pods and the headless
/// Service, not revision pods, so every join verifies the headless Service's name.
pub fn revision_server_hcl(cluster: &Cluster, revision: &str, joining: &Joining) -> String {
    let (target_revision, replicas, as_non_voter) = match joining {
        Joining::Own => (Some(revision), cluster.spec.replicas, false),
        Joining::AsNonVoter { revision, replicas } => (*revision, *replicas, true),
    };
    let server_name = format!("{}.{}.svc", names::headless_service(cluster.name), cluster.namespace);
    let targets: Vec<JoinTarget> = (0..replicas.max(0) as u32)
        .map(|ordinal| JoinTarget {
            api_host: format!(
                "{}.{}.{}.svc",
                names::pod(cluster.name, target_revision, ordinal),
                names::headless_service(cluster.name),
                cluster.namespace
            ),
            tls_server_name: server_name.clone(),
        })
        .collect();
    config::server_hcl_joining(cluster, &targets, as_non_voter)
}

/// ConfigMap `<c>-config-<revision>`.
pub fn revision_config_map(cluster: &Cluster, revision: &str, joining: &Joining) -> ConfigMap {
    let mut metadata = meta(
        cluster,
        names::server_set_config_map(cluster.name, Some(revision)),
        "config",
    );
    labels_of(&mut metadata).insert(REVISION_LABEL.to_string(), revision.to_string());
    ConfigMap {
        metadata,
        data: Some(config_data(cluster, revision_server_hcl(cluster, revision, joining))),
        ..Default::default()
    }
}

/// StatefulSet `<c>-<revision>`. Its pods restart only for changes of the steady-state config
/// (joining as a non-voter or not is read at start only), and never for self-init.
pub fn revision_statefulset(cluster: &Cluster, revision: &str, rollout: &Rollout) -> StatefulSet {
    let set = ServerSet {
        revision: Some(revision),
        server_hcl: revision_server_hcl(cluster, revision, &Joining::Own),
        self_init: false,
    };
    let mut sts = server_statefulset(cluster, rollout, &set);
    labels_of(&mut sts.metadata).insert(REVISION_LABEL.to_string(), revision.to_string());
    sts
}

/// Service `<c>-public` sending clients to the ready servers of one set (`traffic`; `None`:
/// the original set). The HTTPRoute's backend is this Service, so it follows.
pub fn public_service_to(cluster: &Cluster, traffic: Option<&str>) -> Service {
    let service = cluster.spec.service.clone().unwrap_or_default();
    let mut svc: Service = typed(json!({
        "spec": {
            "type": service.type_.as_str(),
            "selector": server_set_selector(cluster.name, traffic),
            "ports": [{"name": "api", "port": API_PORT, "targetPort": API_PORT, "appProtocol": "https"}],
        }
    }));
    svc.metadata = meta(cluster, names::public_service(cluster.name), "server");
    if !service.annotations.is_empty() {
        svc.metadata.annotations = Some(service.annotations);
    }
    svc
}

/// The set a public Service's selector picks, if it picks one set.
pub fn traffic_of(cluster: &str, service: &Service) -> Option<Option<String>> {
    let selector = service.spec.as_ref()?.selector.as_ref()?;
    let component = selector.get(labels::COMPONENT_LABEL)?;
    if component == "server" {
        return Some(None);
    }
    let rev = component.strip_prefix("server-")?;
    (server_set_selector(cluster, Some(rev)) == *selector).then(|| Some(rev.to_string()))
}

fn labels_of(
    metadata: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> &mut BTreeMap<String, String> {
    metadata.labels.get_or_insert_with(BTreeMap::new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SERVER_FILE;
    use crate::objects::{fixtures, statefulset};

    fn template_labels(sts: &StatefulSet) -> BTreeMap<String, String> {
        sts.spec.clone().unwrap().template.metadata.unwrap().labels.unwrap()
    }

    #[test]
    fn a_revision_set_is_named_and_labelled_apart_from_the_original() {
        let spec = fixtures::spec(json!({"replicas": 3}));
        let c = fixtures::cluster(&spec);
        let rollout = Rollout {
            version: "2.7.2".into(),
            on_delete: true,
        };
        let green = revision_statefulset(&c, "v2-7-2", &rollout);
        assert_eq!(green.metadata.name.as_deref(), Some("vault-v2-7-2"));
        let s = green.spec.clone().unwrap();
        assert_eq!(s.service_name.as_deref(), Some("vault"), "shares the headless Service");
        assert_eq!(
            s.selector.match_labels.unwrap(),
            server_set_selector("vault", Some("v2-7-2"))
        );
        let pod_labels = template_labels(&green);
        assert_eq!(pod_labels["app.kubernetes.io/component"], "server-v2-7-2");
        assert_eq!(pod_labels[REVISION_LABEL], "v2-7-2");
        // Still a pod of the cluster: headless Service, NetworkPolicy and PDB select it.
        for (k, v) in labels::selector("vault") {
            assert_eq!(pod_labels.get(&k), Some(&v));
        }
        let pod = s.template.spec.unwrap();
        let volumes = pod.volumes.unwrap();
        assert!(volumes.iter().all(|v| v.name != "init"), "never founds a cluster");
        let config = volumes.iter().find(|v| v.name == "config").unwrap();
        assert_eq!(config.config_map.as_ref().unwrap().name, "vault-config-v2-7-2");
        assert_eq!(pod.containers[0].image.as_deref(), Some("openbao/openbao:2.7.2"));
        assert_eq!(s.update_strategy.unwrap().type_.as_deref(), Some("OnDelete"));

        // The original set keeps its immutable selector and its labels.
        let blue = statefulset(&c);
        assert_eq!(
            blue.spec.clone().unwrap().selector.match_labels.unwrap(),
            labels::selector("vault")
        );
        assert_eq!(template_labels(&blue), server_set_selector("vault", None));
    }

    #[test]
    fn green_joins_blue_as_non_voter_and_restarts_for_nothing_else() {
        let spec = fixtures::spec(json!({"replicas": 3}));
        let c = fixtures::cluster(&spec);
        let joining = Joining::AsNonVoter {
            revision: None,
            replicas: 3,
        };
        let hcl = revision_server_hcl(&c, "v2-7-2", &joining);
        assert!(hcl.contains("retry_join_as_non_voter = true"), "{hcl}");
        assert!(
            hcl.contains("leader_api_addr = \"https://vault-2.vault.team-a.svc:8200\""),
            "{hcl}"
        );
        assert!(hcl.contains("leader_tls_servername = \"vault.team-a.svc\""), "{hcl}");
        assert!(hcl.contains("node_id = \"@@POD_NAME@@\""), "{hcl}");
        let own = revision_server_hcl(&c, "v2-7-2", &Joining::Own);
        assert!(!own.contains("retry_join_as_non_voter"), "{own}");
        assert!(own.contains("https://vault-v2-7-2-0.vault.team-a.svc:8200"), "{own}");
        // From a revision set to the next one.
        let next = revision_server_hcl(
            &c,
            "v2-8-0",
            &Joining::AsNonVoter {
                revision: Some("v2-7-2"),
                replicas: 3,
            },
        );
        assert!(next.contains("https://vault-v2-7-2-1.vault.team-a.svc:8200"), "{next}");
        let cm = revision_config_map(&c, "v2-7-2", &joining);
        assert_eq!(cm.metadata.name.as_deref(), Some("vault-config-v2-7-2"));
        assert_eq!(cm.data.unwrap()[SERVER_FILE], hcl);

        // The config hash is that of the steady state: becoming the live set restarts nothing.
        let rollout = Rollout {
            version: "2.7.2".into(),
            on_delete: true,
        };
        let a = revision_statefulset(&c, "v2-7-2", &rollout);
        let b = revision_statefulset(
            &c,
            "v2-7-2",
            &Rollout {
                on_delete: false,
                ..rollout
            },
        );
        assert_eq!(a.spec.unwrap().template, b.spec.unwrap().template);
    }

    #[test]
    fn the_public_service_selects_one_set() {
        let spec = fixtures::spec(json!({}));
        let c = fixtures::cluster(&spec);
        let blue = public_service_to(&c, None);
        assert_eq!(blue.metadata.name.as_deref(), Some("vault-public"));
        assert_eq!(traffic_of("vault", &blue), Some(None));
        let green = public_service_to(&c, Some("v2-7-2"));
        assert_eq!(
            green.spec.as_ref().unwrap().selector.as_ref().unwrap()["app.kubernetes.io/component"],
            "server-v2-7-2"
        );
        assert_eq!(traffic_of("vault", &green), Some(Some("v2-7-2".to_string())));
        assert_eq!(traffic_of("other", &green), None);
    }
}
