//! A `Hardened` cluster on the real node, built only from real parts a platform team would run:
//! - TLS `External` from a real cert-manager (the operator owns the Certificate, a CA Issuer
//!   signs it);
//! - the transit seal of a second OpenBao in another namespace, which each server logs in to with
//!   its own service-account token (`transit.login`: no token and no seal key stored anywhere);
//! - an audit device (the profile requires one), writing to the servers' stdout;
//! - no demo login: the admin logs in with a service-account JWT;
//! - Pod Security `restricted` enforced on both namespaces and NetworkPolicy enforced by
//!   kube-router (the servers reach only DNS, their peers, the apiserver and the transit server).
//!
//! It becomes `Available` with `TLSReady` (`CertManagerIssued`), `AuditReady`,
//! `UnsealConfigurationReady` and `SecurityRisk=False`, with no `-unseal-key` and no
//! `-root-token` Secret; a secret written and read by the admin is in the audit trail with its
//! value HMAC'd.

use anyhow::{Result, ensure};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::api::Api;
use kube::{Client, ResourceExt};
use openbao_api::{OpenBaoCluster, conditions};
use serde_json::json;
use std::time::{Duration, Instant};
use testkit::cert_manager;

mod node_common;
use node_common::transit::{transit_with_login, wait_all_ready};
use node_common::{HostOperator, audit, cluster_admin, condition, create, in_namespaces, retrying};

const CLUSTER: &str = "hardened";
const ISSUER: &str = "platform-ca";
const ISSUER_TIMEOUT: Duration = Duration::from_secs(90);
const SECRET_PATH: &str = "secret/data/hardened";
const SECRET_VALUE: &str = "written-by-the-admin-of-a-hardened-cluster";

#[tokio::test]
async fn a_hardened_cluster_runs_on_cert_manager_transit_login_and_audit() -> Result<()> {
    in_namespaces("bao-hardened", hardened_cluster).await
}

async fn hardened_cluster(client: &Client, ns: &str, platform_ns: &str) -> Result<()> {
    let started = Instant::now();
    cert_manager::deploy_on_node(client).await?;
    cert_manager::ca_issuer(client, ns, ISSUER, ISSUER_TIMEOUT).await?;
    eprintln!("cert-manager and the CA Issuer Ready after {:.1?}", started.elapsed());
    let transit = transit_with_login(client, ns, platform_ns, CLUSTER).await?;
    create::<ServiceAccount>(client, ns, json!({"metadata": {"name": "bao-admin"}})).await?;
    let (operator, public_ip) = HostOperator::start(client, ns, platform_ns).await?;

    create::<OpenBaoCluster>(
        client,
        ns,
        json!({
            "apiVersion": "openbao.org/v1alpha1", "kind": "OpenBaoCluster", "metadata": {"name": CLUSTER},
            "spec": {
                "version": "2.7.2", "profile": "Hardened", "replicas": 3, "storage": {"size": "256Mi"},
                // The hermetic node has no AppArmor: a node limitation, stated where it is turned off.
                "workloadHardening": {"appArmorEnabled": false},
                "tls": {"mode": "External", "certManager": {"issuerRef": {"name": ISSUER}}},
                "unseal": transit.unseal,
                "audit": [{"type": "file", "name": "stdout", "fileOptions": {"filePath": "stdout"}}],
                "selfInit": {
                    "oidc": {"adminServiceAccount": {"name": "bao-admin"}},
                    "requests": [{"name": "kv", "operation": "update", "path": "sys/mounts/secret",
                                  "data": {"type": "kv", "options": {"version": "2"}}}],
                },
            },
        }),
    )
    .await?;
    let clusters = Api::<OpenBaoCluster>::namespaced(client.clone(), ns);
    let took = wait_all_ready(client, ns, CLUSTER, 3, &public_ip).await?;
    eprintln!("CR applied -> Available (Hardened): {:.1?}", took);
    let c = clusters.get(CLUSTER).await?;
    for (type_, status, reason) in [
        (conditions::TLS_READY, "True", "CertManagerIssued"),
        (conditions::AUDIT_READY, "True", "DevicesEnabled"),
        (openbao_api::UNSEAL_CONFIGURATION_READY, "True", "TransitConfigured"),
        (conditions::SECURITY_RISK, "False", "SealKeyOutsideCluster"),
        (conditions::DEGRADED, "False", "Reconciled"),
    ] {
        ensure!(
            condition(&c, type_) == Some((status.into(), reason.into())),
            "{type_}: {:?}, want {status} {reason}",
            condition(&c, type_)
        );
    }
    for s in Api::<Secret>::namespaced(client.clone(), ns)
        .list(&Default::default())
        .await?
        .items
    {
        let name = s.name_any();
        ensure!(
            !name.ends_with("-unseal-key") && !name.ends_with("-root-token"),
            "Secret {name} exists under Hardened"
        );
        let values = serde_json::to_string(&s.data)?;
        ensure!(
            !values.contains(&transit.seal_token),
            "a seal token is in Secret {name}"
        );
    }

    let admin = cluster_admin(client, ns, CLUSTER, &public_ip).await?;
    let data = json!({"data": {"written": SECRET_VALUE}});
    retrying("the admin writes a secret", || async {
        Ok(admin.write(SECRET_PATH, &data).await?)
    })
    .await?;
    // A standby may answer a read from its own copy before it has applied the write.
    retrying("the admin reads it back", || async {
        let read = admin.read(SECRET_PATH).await?;
        ensure!(
            read.as_ref()
                .is_some_and(|r| r["data"]["data"]["written"] == SECRET_VALUE),
            "not there yet: {read:?}"
        );
        Ok(())
    })
    .await?;
    let trail = audit::wait_for_audited_read(client, ns, SECRET_PATH, "written").await?;
    ensure!(
        trail.requested("auth/jwt-operator/login"),
        "the admin's login is not audited"
    );
    ensure!(
        !trail.text.contains(SECRET_VALUE),
        "the audit trail holds the secret in clear"
    );
    for value in trail.read_values(SECRET_PATH, "written") {
        ensure!(value.starts_with("hmac-sha256:"), "not HMAC'd: {value}");
    }
    eprintln!("audit: {} entries, the value HMAC'd", trail.entries.len());

    operator.stop().await?;
    Ok(())
}
