//! Names of the objects derived from a cluster, in one place so builders, controllers and
//! tests agree. They follow the Go operator's names where those are sound.

use k8s_openapi::jiff::Timestamp;

pub fn headless_service(cluster: &str) -> String {
    cluster.to_string()
}
pub fn public_service(cluster: &str) -> String {
    format!("{cluster}-public")
}
pub fn statefulset(cluster: &str) -> String {
    cluster.to_string()
}
pub fn config_map(cluster: &str) -> String {
    format!("{cluster}-config")
}
pub fn init_secret(cluster: &str) -> String {
    format!("{cluster}-config-init")
}
pub fn unseal_key_secret(cluster: &str) -> String {
    format!("{cluster}-unseal-key")
}
/// The recovery key the operator made for a seal migration (OpenBao unseals a server in
/// migration mode only with it).
pub fn recovery_key_secret(cluster: &str) -> String {
    format!("{cluster}-recovery-key")
}
pub fn tls_ca_secret(cluster: &str) -> String {
    format!("{cluster}-tls-ca")
}
pub fn tls_server_secret(cluster: &str) -> String {
    format!("{cluster}-tls-server")
}
pub fn gateway_ca_config_map(cluster: &str) -> String {
    format!("{cluster}-tls-ca")
}
pub fn service_account(cluster: &str) -> String {
    format!("{cluster}-serviceaccount")
}
/// The ClusterRole holding what OpenBao's Kubernetes service registration does to its own pod
/// (read it, patch its labels). Installed with the operator (chart, kustomize); each cluster's
/// server account gets it through a RoleBinding in the cluster's namespace, so the operator
/// itself needs only `bind` on this one ClusterRole, never pod `patch`.
pub const SERVICE_REGISTRATION_CLUSTER_ROLE: &str = "openbao-operator-service-registration";

/// The RoleBinding granting [`SERVICE_REGISTRATION_CLUSTER_ROLE`] to the server account. (Older
/// operators bound a Role of their own, `<cluster>-service-registration`; a binding's roleRef
/// cannot change, hence the new name. The old pair is left to garbage collection with the cluster.)
pub fn service_registration_binding(cluster: &str) -> String {
    format!("{cluster}-service-registration-binding")
}
/// Service `<cluster>-metrics`: every server's `/v1/sys/metrics`, for Prometheus to scrape.
pub fn metrics_service(cluster: &str) -> String {
    format!("{cluster}-metrics")
}
pub fn pdb(cluster: &str) -> String {
    format!("{cluster}-pdb")
}
pub fn network_policy(cluster: &str) -> String {
    format!("{cluster}-network-policy")
}
/// The NetworkPolicy of one OpenBaoRestore's Job (owned by the restore).
pub fn restore_network_policy(restore: &str) -> String {
    format!("{restore}-restore-network-policy")
}
/// The executor Jobs' NetworkPolicy (the Go operator's name).
pub fn jobs_network_policy(cluster: &str) -> String {
    format!("{cluster}-jobs-network-policy")
}
pub fn http_route(cluster: &str) -> String {
    format!("{cluster}-httproute")
}
pub fn backend_tls_policy(cluster: &str) -> String {
    format!("{cluster}-backend-tls-policy")
}

/// The StatefulSet of a set of servers: `<c>` for the original set (`revision` `None`), `<c>-<r>`
/// for the set of blue/green revision `r`.
pub fn server_set(cluster: &str, revision: Option<&str>) -> String {
    match revision {
        None => statefulset(cluster),
        Some(rev) => format!("{}-{rev}", statefulset(cluster)),
    }
}
/// The ConfigMap of a set of servers: `<c>-config`, or `<c>-config-<r>` for revision `r`.
pub fn server_set_config_map(cluster: &str, revision: Option<&str>) -> String {
    match revision {
        None => config_map(cluster),
        Some(rev) => format!("{}-{rev}", config_map(cluster)),
    }
}
/// Pod `ordinal` of a set of servers, which is also the server's raft node id, so raft peers
/// can be told apart by name even when their pod is gone.
pub fn pod(cluster: &str, revision: Option<&str>, ordinal: u32) -> String {
    format!("{}-{ordinal}", server_set(cluster, revision))
}
/// The revision and ordinal a pod name (raft node id) of `cluster` names, the inverse of
/// [`pod`]; `None` for names of other clusters. Revisions never consist of digits only, so
/// `<c>-<r>-<i>` and `<c>-<i>` are told apart.
pub fn parse_pod(cluster: &str, id: &str) -> Option<(Option<String>, u32)> {
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
/// The prefix of [`volume_claim`] names.
pub const VOLUME_CLAIM_PREFIX: &str = "data-";
/// The data volume claim of pod `ordinal` of a set (from the StatefulSet's claim template `data`).
pub fn volume_claim(cluster: &str, revision: Option<&str>, ordinal: u32) -> String {
    format!("{VOLUME_CLAIM_PREFIX}{}", pod(cluster, revision, ordinal))
}

/// The executor Jobs' names. At most 63 characters for a cluster name of at most 40 (the CRD's
/// limit): the stamp is UTC to the second.
const JOB_STAMP: &str = "%Y%m%d-%H%M%S";

/// A scheduled backup Job started at `at` (one backup per cluster at a time).
pub fn backup_job(cluster: &str, at: Timestamp) -> String {
    format!("{cluster}-backup-{}", at.strftime(JOB_STAMP))
}
/// A restore drill (verify) Job started at `at`.
pub fn verify_job(cluster: &str, at: Timestamp) -> String {
    format!("{cluster}-verify-{}", at.strftime(JOB_STAMP))
}
/// The Job of snapshot `attempt` of the upgrade that started at `started`.
pub fn pre_upgrade_snapshot_job(cluster: &str, started: Timestamp, attempt: i32) -> String {
    format!("{cluster}-snap-{}-{attempt}", started.strftime(JOB_STAMP))
}
/// `restore-<restore name>`: fixed, so a repeated create finds the same Job.
pub fn restore_job(restore: &str) -> String {
    format!("restore-{restore}")
}
/// Service accounts the executor Jobs run as, each bound to its own OpenBao JWT role.
pub fn job_service_account(cluster: &str, job: &str) -> String {
    format!("{cluster}-{job}-serviceaccount")
}

/// The audience every service-account token sent to this cluster's OpenBao carries, and the
/// only one its JWT roles accept: unique per cluster, so that a token this cluster's OpenBao
/// (whose image the tenant chooses) receives logs in nowhere else, neither at another cluster
/// nor at the Kubernetes apiserver (the operator also asks the apiserver, see
/// `openbao::operator_token`). Namespace and name rather than the uid: a cluster recreated under
/// the same name and restored from its own backup keeps trusting the tokens it is sent. Not a
/// URL, so that no apiserver or other relying party mistakes it for its own issuer or host.
pub fn jwt_audience(namespace: &str, cluster: &str) -> String {
    format!("openbao-operator.openbao.org/{namespace}/{cluster}")
}

/// The audience of the service-account token a server presents to the transit server's login
/// (`spec.unseal.transit.login`): unique per cluster and not this cluster's own OpenBao
/// audience, so the token the transit server receives logs in nowhere else.
pub fn transit_login_audience(namespace: &str, cluster: &str) -> String {
    format!("openbao-operator.openbao.org/transit/{namespace}/{cluster}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_names_round_trip() {
        for (rev, ordinal) in [(None, 0), (None, 12), (Some("v2-7-2"), 2)] {
            let id = pod("bao", rev, ordinal);
            assert_eq!(parse_pod("bao", &id), Some((rev.map(String::from), ordinal)), "{id}");
        }
        assert_eq!(pod("bao", Some("v2-7-2"), 1), "bao-v2-7-2-1");
        assert_eq!(server_set("bao", Some("v2-7-2")), "bao-v2-7-2");
        assert_eq!(server_set_config_map("bao", Some("v2-7-2")), "bao-config-v2-7-2");
        assert_eq!(volume_claim("vault", Some("v2-7-2"), 1), "data-vault-v2-7-2-1");
        assert_eq!(volume_claim("vault", None, 0), "data-vault-0");
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
            assert_eq!(parse_pod("bao", id), None, "{id}");
        }
    }

    #[test]
    fn job_names_carry_the_utc_stamp() {
        let at: Timestamp = "2026-11-24T19:30:05Z".parse().unwrap();
        assert_eq!(backup_job("c", at), "c-backup-20261124-193005");
        assert_eq!(verify_job("c", at), "c-verify-20261124-193005");
        assert_eq!(pre_upgrade_snapshot_job("lane", at, 0), "lane-snap-20261124-193005-0");
        assert_eq!(restore_job("r1"), "restore-r1");
    }
}
