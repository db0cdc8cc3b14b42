//! `tls.mode: External` with `tls.certManager` end to end on the real node, with a real
//! cert-manager running on the node (its Go module's controllers, our main, as a Deployment in
//! namespace `cert-manager` under Pod Security "restricted") and a CA Issuer made as a platform
//! team would (self-signed root, CA Certificate, CA Issuer):
//! - a 3-server cluster initializes and becomes `Available` on the certificate cert-manager
//!   issued for the Certificate the operator owns (`TLSReady` reason `CertManagerIssued`): raft
//!   peers and the operator's client verify it against the issuer's CA;
//! - every server serves that certificate;
//! - a renewal (as `cmctl renew` asks for it) is served by every server within 30 s without a
//!   restart: same pods, same restart counts, and each server's log says it reloaded (SIGHUP);
//!   the operator sees the renewed Secret and `status.tls.serverNotAfter` follows;
//! - the Secret deleted while cert-manager is down is `TLSReady=False/CertificateNotReady` and
//!   the servers keep serving; cert-manager back, the re-issued certificate is served (no
//!   restart) and `TLSReady` is True again.

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, ListParams, LogParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use openbao_api::{OpenBaoCluster, conditions, names};
use openbao_render::labels;
use serde_json::json;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use testkit::cert_manager;
use testkit::pki::{pem_fingerprint, served_cert_fingerprint};

mod node_common;
use node_common::transit::{wait_all_ready, wait_for};
use node_common::{HostOperator, condition, create, in_namespaces};

const CLUSTER: &str = "issued";
const ISSUER: &str = "platform-ca";
/// What the servers' entrypoint logs when it reloads a changed certificate.
const RELOAD_LOGGED: &str = "certificate changed, reloading OpenBao (SIGHUP)";
const ISSUER_TIMEOUT: Duration = Duration::from_secs(90);
/// The acceptance bound: a renewal is served by every server within this long.
const RENEWAL_BOUND: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_cert_manager_certificate_serves_the_cluster_and_renews_without_restarts() -> Result<()> {
    in_namespaces("bao-certmgr", issued_cluster).await
}

async fn issued_cluster(client: &Client, ns: &str, op_ns: &str) -> Result<()> {
    let started = Instant::now();
    cert_manager::deploy_on_node(client).await?;
    cert_manager::ca_issuer(client, ns, ISSUER, ISSUER_TIMEOUT).await?;
    eprintln!(
        "cert-manager on the node and the CA Issuer Ready after {:.1?}",
        started.elapsed()
    );

    let (operator, public_ip) = HostOperator::start(client, ns, op_ns).await?;
    create::<OpenBaoCluster>(
        client,
        ns,
        json!({
            "apiVersion": "openbao.org/v1alpha1", "kind": "OpenBaoCluster", "metadata": {"name": CLUSTER},
            "spec": {
                "version": "2.7.2", "profile": "Development", "replicas": 3, "storage": {"size": "256Mi"},
                // The hermetic node has no AppArmor: a node limitation, stated where it is turned off.
                "workloadHardening": {"appArmorEnabled": false},
                "tls": {"mode": "External", "certManager": {"issuerRef": {"name": ISSUER}}},
            },
        }),
    )
    .await?;
    let clusters = Api::<OpenBaoCluster>::namespaced(client.clone(), ns);
    let took = wait_all_ready(client, ns, CLUSTER, 3, &public_ip).await?;
    eprintln!("CR applied -> Available: {:.1?}", took);
    let c = clusters.get(CLUSTER).await?;
    ensure!(
        condition(&c, conditions::TLS_READY) == Some(("True".into(), "CertManagerIssued".into())),
        "{:?}",
        condition(&c, conditions::TLS_READY)
    );

    // Every server serves the certificate in the Secret cert-manager keeps.
    let secrets = Api::<Secret>::namespaced(client.clone(), ns);
    let first = issued_fingerprint(&secrets).await?;
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    let servers = server_pods(&pods).await?;
    ensure!(servers.len() == 3, "{} server pods", servers.len());
    for (name, (_, addr, _)) in &servers {
        let served = served_cert_fingerprint(*addr, &public_host(ns)).await?;
        ensure!(served == first, "{name} does not serve the issued certificate");
    }

    // Renewal: served by every server with no restart.
    let certificates = cert_manager::api(client, ns, "Certificate", "certificates");
    let renewing = Instant::now();
    cert_manager::renew(&certificates, &names::tls_server_secret(CLUSTER)).await?;
    wait_for("cert-manager to renew the certificate", || async {
        Ok(issued_fingerprint(&secrets).await? != first)
    })
    .await?;
    let renewed = &issued_fingerprint(&secrets).await?;
    eprintln!(
        "renewal asked -> new certificate in the Secret: {:.1?}",
        renewing.elapsed()
    );
    for (name, (_, addr, _)) in &servers {
        wait_for(&format!("{name} serving the renewed certificate"), || async {
            Ok(&served_cert_fingerprint(*addr, &public_host(ns)).await? == renewed)
        })
        .await?;
    }
    let renewal_served = renewing.elapsed();
    eprintln!("renewal asked -> served by all 3 servers: {renewal_served:.1?}");
    ensure!(
        renewal_served <= RENEWAL_BOUND,
        "the renewed certificate took {renewal_served:?} to be served (bound {RENEWAL_BOUND:?})"
    );
    // The operator saw the renewed Secret (it watches it): the status has the new expiry.
    let renewed_not_after = issued_not_after(&secrets).await?;
    wait_for("status.tls.serverNotAfter of the renewed certificate", || async {
        let c = clusters.get(CLUSTER).await?;
        Ok(c.status.and_then(|s| s.tls).and_then(|t| t.server_not_after) == Some(renewed_not_after.clone()))
    })
    .await?;
    let after = server_pods(&pods).await?;
    for (name, (uid, _, restarts)) in &servers {
        let now = after.get(name).with_context(|| format!("{name} is gone"))?;
        ensure!(
            (&now.0, now.2) == (uid, *restarts),
            "{name} was restarted instead of reloaded"
        );
        let log = pods
            .logs(
                name,
                &LogParams {
                    container: Some(openbao_render::SERVER_CONTAINER.into()),
                    ..Default::default()
                },
            )
            .await?;
        ensure!(log.contains(RELOAD_LOGGED), "{name} never signalled a reload");
    }

    // The Secret deleted while cert-manager is down: a condition, the servers keep serving what
    // they loaded; cert-manager back: a new certificate, served without restarts, TLSReady again.
    let deployments = Api::<Deployment>::namespaced(client.clone(), cert_manager::NODE_NAMESPACE);
    scale(&deployments, 0).await?;
    let cm_pods = Api::<Pod>::namespaced(client.clone(), cert_manager::NODE_NAMESPACE);
    wait_for("cert-manager stopped", || async {
        Ok(cm_pods
            .list(&ListParams::default().labels("app=cert-manager"))
            .await?
            .items
            .is_empty())
    })
    .await?;
    let secret_name = names::tls_server_secret(CLUSTER);
    secrets.delete(&secret_name, &Default::default()).await?;
    let deleted = Instant::now();
    wait_for("TLSReady False: the certificate Secret is gone", || async {
        let c = clusters.get(CLUSTER).await?;
        Ok(condition(&c, conditions::TLS_READY) == Some(("False".into(), "CertificateNotReady".into())))
    })
    .await?;
    eprintln!(
        "Secret deleted -> TLSReady False/CertificateNotReady: {:.1?}",
        deleted.elapsed()
    );
    for (name, (_, addr, _)) in &servers {
        let served = served_cert_fingerprint(*addr, &public_host(ns)).await?;
        ensure!(
            &served == renewed,
            "{name} stopped serving its certificate without a Secret"
        );
    }
    scale(&deployments, 1).await?;
    wait_for("cert-manager to issue a new Secret", || async {
        Ok(secrets.get_opt(&secret_name).await?.is_some())
    })
    .await?;
    let reissued = issued_fingerprint(&secrets).await?;
    ensure!(&reissued != renewed, "the re-created Secret holds the old certificate");
    for (name, (_, addr, _)) in &servers {
        wait_for(&format!("{name} serving the re-issued certificate"), || async {
            Ok(served_cert_fingerprint(*addr, &public_host(ns)).await? == reissued)
        })
        .await?;
    }
    wait_for("TLSReady True and the cluster Available again", || async {
        let c = clusters.get(CLUSTER).await?;
        Ok(
            condition(&c, conditions::TLS_READY) == Some(("True".into(), "CertManagerIssued".into()))
                && condition(&c, conditions::AVAILABLE).is_some_and(|(s, _)| s == "True"),
        )
    })
    .await?;
    eprintln!(
        "Secret deleted -> re-issued, served and Ready: {:.1?}",
        deleted.elapsed()
    );
    ensure!(
        server_pods(&pods)
            .await?
            .iter()
            .map(|(n, (uid, _, r))| (n.clone(), uid.clone(), *r))
            .collect::<Vec<_>>()
            == servers
                .iter()
                .map(|(n, (uid, _, r))| (n.clone(), uid.clone(), *r))
                .collect::<Vec<_>>(),
        "a server was restarted"
    );

    operator.stop().await?;
    Ok(())
}

fn public_host(ns: &str) -> String {
    format!("{}.{ns}.svc", names::public_service(CLUSTER))
}

/// The server Secret's `tls.crt`.
async fn issued_pem(secrets: &Api<Secret>) -> Result<String> {
    let secret = secrets.get(&names::tls_server_secret(CLUSTER)).await?;
    let pem = secret
        .data
        .as_ref()
        .and_then(|d| d.get("tls.crt"))
        .context("no tls.crt in the server Secret")?;
    Ok(String::from_utf8_lossy(&pem.0).into_owned())
}

async fn issued_fingerprint(secrets: &Api<Secret>) -> Result<String> {
    pem_fingerprint(&issued_pem(secrets).await?)
}

/// The notAfter of the server Secret's certificate, as the status writes it.
async fn issued_not_after(secrets: &Api<Secret>) -> Result<String> {
    Ok(openbao_render::pki::inspect(&issued_pem(secrets).await?)?
        .not_after
        .to_string())
}

async fn scale(deployments: &Api<Deployment>, replicas: i32) -> Result<()> {
    let patch = json!({"spec": {"replicas": replicas}});
    deployments
        .patch("cert-manager", &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// Each server pod's uid, API address and container restart count, by name.
async fn server_pods(pods: &Api<Pod>) -> Result<BTreeMap<String, (String, SocketAddr, i32)>> {
    let selector = format!("{}={CLUSTER}", labels::CLUSTER_LABEL);
    let mut found = BTreeMap::new();
    for pod in pods.list(&ListParams::default().labels(&selector)).await?.items {
        let status = pod.status.as_ref().context("pod without status")?;
        let ip = status.pod_ip.as_deref().context("pod without IP")?.parse()?;
        let restarts = status
            .container_statuses
            .iter()
            .flatten()
            .map(|c| c.restart_count)
            .sum();
        found.insert(
            pod.name_any(),
            (pod.uid().unwrap_or_default(), SocketAddr::new(ip, 8200), restarts),
        );
    }
    Ok(found)
}
