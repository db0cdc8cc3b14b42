//! `tls.certManager` through the OpenBaoCluster controller, with a real cert-manager (its Go
//! module's controllers) on a real kube-apiserver.
//!
//! Proven: the operator owns a Certificate `<c>-tls-server` (owner reference, the servers' SANs,
//! the CA Issuer named in the spec); cert-manager issues its Secret; `TLSReady` turns True with
//! reason `CertManagerIssued`, `status.tls.serverNotAfter` is the certificate's, and `<c>-tls-ca`
//! holds only the issuer's `ca.crt` (no key). A settled cluster writes nothing more. An Issuer
//! that does not exist is `TLSReady=False/CertificateNotReady` carrying cert-manager's words; a
//! ClusterIssuer the installer did not allow is `ClusterIssuerNotAllowed` and no Certificate is
//! made; dropping `tls.certManager` prunes the Certificate and keeps serving the Secret. A user's
//! External Secret whose certificate has expired is `TLSReady=False/CertificateExpired`, never a
//! crash loop.

mod apiserver_common;

use anyhow::{Context as _, Result, ensure};
use apiserver_common::{client_with_crds, context};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use openbao_api::{OpenBaoCluster, conditions, names};
use openbao_operator::context::Context;
use openbao_operator::controllers::cluster;
use openbao_render::objects::Certificate;
use openbao_render::pki;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::apiserver::{ApiServer, create_namespace};
use testkit::cert_manager::{self, CertManager};

/// Issuer set-up and a first issuance (cold informers, key generation on busy cores).
const ISSUE_TIMEOUT: Duration = Duration::from_secs(90);
const ISSUER: &str = "lane-ca";

fn manifest(name: &str, tls: Value) -> Result<OpenBaoCluster> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "openbao.org/v1alpha1", "kind": "OpenBaoCluster",
        "metadata": {"name": name},
        "spec": {
            "version": "2.7.2", "profile": "Development", "replicas": 1, "storage": {"size": "1Gi"},
            "selfInit": {"oidc": {"enabled": false}},
            "tls": tls,
        },
    }))?)
}

async fn reconcile(client: &Client, ctx: &Arc<Context>, ns: &str, name: &str) -> Result<OpenBaoCluster> {
    let api = Api::<OpenBaoCluster>::namespaced(client.clone(), ns);
    cluster::reconcile(Arc::new(api.get(name).await?), ctx.clone()).await?;
    Ok(api.get(name).await?)
}

/// `(status, reason, message)` of the cluster's `TLSReady`.
fn tls_ready(c: &OpenBaoCluster) -> Option<(String, String, String)> {
    let found = conditions::find(&c.status.as_ref()?.conditions, conditions::TLS_READY)?;
    Some((found.status.clone(), found.reason.clone(), found.message.clone()))
}

/// Reconciles until `TLSReady` has `reason` and a message containing `says` (cert-manager works
/// beside the reconciles, as the operator's own 5 s retries would let it).
async fn reconcile_until(
    cm: &mut CertManager,
    client: &Client,
    ctx: &Arc<Context>,
    ns: &str,
    name: &str,
    (reason, says): (&str, &str),
) -> Result<OpenBaoCluster> {
    let what = format!("{name} TLSReady reason {reason} saying {says:?}");
    cm.wait_until(&what, ISSUE_TIMEOUT, async |last| {
        let c = reconcile(client, ctx, ns, name).await?;
        let now = tls_ready(&c);
        *last = format!("{now:?}");
        Ok(now
            .is_some_and(|(_, r, m)| r == reason && m.contains(says))
            .then_some(c))
    })
    .await
}

fn text(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()?
        .get(key)
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
}

#[tokio::test]
async fn the_operator_owns_a_cert_manager_certificate_and_reports_its_state() -> Result<()> {
    let server = ApiServer::start().await?;
    let client = client_with_crds(&server).await?;
    cert_manager::install_crds(&client).await?;
    let ns = create_namespace(&client, "bao-certmgr").await?;
    let mut cm = CertManager::start(server.kubeconfig_path()).await?;
    let started = Instant::now();
    cert_manager::ca_issuer(&client, &ns, ISSUER, ISSUE_TIMEOUT).await?;
    eprintln!("CA Issuer Ready after {:.1?}", started.elapsed());

    let ctx = Arc::new(context(&client).await);
    let clusters = Api::<OpenBaoCluster>::namespaced(client.clone(), &ns);
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
    let certificates = Api::<Certificate>::namespaced(client.clone(), &ns);
    let pp = PostParams::default();
    let issuer = |name: &str, kind: &str| json!({"mode": "External", "certManager": {"issuerRef": {"name": name, "kind": kind}}});

    // 1. Issued: the Certificate is the cluster's, the Secret cert-manager's, TLS Ready.
    let c = clusters
        .create(&pp, &manifest("issued", issuer(ISSUER, "Issuer"))?)
        .await?;
    let applied = Instant::now();
    let c_ready = reconcile_until(&mut cm, &client, &ctx, &ns, "issued", ("CertManagerIssued", "")).await?;
    eprintln!("CR applied -> TLSReady CertManagerIssued: {:.1?}", applied.elapsed());
    ensure!(tls_ready(&c_ready).is_some_and(|(s, _, _)| s == "True"));
    let certificate = certificates.get(&names::tls_server_secret("issued")).await?;
    ensure!(
        certificate
            .owner_references()
            .iter()
            .any(|o| Some(&o.uid) == c.metadata.uid.as_ref()),
        "the Certificate is not owned by its cluster: {:?}",
        certificate.owner_references()
    );
    ensure!(
        certificate.spec.issuer_ref["name"] == ISSUER,
        "{:?}",
        certificate.spec.issuer_ref
    );
    let server_secret = secrets.get(&names::tls_server_secret("issued")).await?;
    let cert_pem = text(&server_secret, "tls.crt").context("tls.crt")?;
    let info = pki::inspect(&cert_pem)?;
    for san in [format!("issued-public.{ns}.svc"), "127.0.0.1".to_string()] {
        ensure!(info.sans.contains(&san), "{san} not in {:?}", info.sans);
    }
    let status_tls = c_ready
        .status
        .as_ref()
        .and_then(|s| s.tls.clone())
        .context("status.tls")?;
    ensure!(
        status_tls.server_not_after == Some(info.not_after.to_string()),
        "{status_tls:?} vs {}",
        info.not_after
    );
    let ca_copy = secrets.get(&names::tls_ca_secret("issued")).await?;
    let keys: Vec<_> = ca_copy.data.clone().unwrap_or_default().into_keys().collect();
    ensure!(keys == ["ca.crt"], "the CA copy holds {keys:?}");
    ensure!(
        text(&ca_copy, "ca.crt") == text(&server_secret, "ca.crt"),
        "ca.crt differs"
    );
    ensure!(
        Api::<StatefulSet>::namespaced(client.clone(), &ns)
            .get_opt("issued")
            .await?
            .is_some(),
        "no StatefulSet for a cluster whose TLS is ready"
    );
    // Settled: the next reconcile writes nothing.
    reconcile(&client, &ctx, &ns, "issued").await?;
    let before = ctx.metrics.kube_writes.get();
    reconcile(&client, &ctx, &ns, "issued").await?;
    ensure!(ctx.metrics.kube_writes.get() == before, "a settled cluster wrote again");

    // 2. An Issuer that does not exist: cert-manager's own words in the condition.
    clusters
        .create(&pp, &manifest("no-issuer", issuer("absent", "Issuer"))?)
        .await?;
    let c = reconcile_until(
        &mut cm,
        &client,
        &ctx,
        &ns,
        "no-issuer",
        ("CertificateNotReady", "cert-manager: "),
    )
    .await?;
    let (status, _, message) = tls_ready(&c).context("TLSReady")?;
    ensure!(status == "False" && message.contains("cert-manager"), "{message}");
    eprintln!("missing Issuer -> {message:?}");

    // 3. A ClusterIssuer the installer did not allow: refused, no Certificate.
    clusters
        .create(&pp, &manifest("cluster-wide", issuer("corp-ca", "ClusterIssuer"))?)
        .await?;
    let c = reconcile(&client, &ctx, &ns, "cluster-wide").await?;
    let (status, reason, message) = tls_ready(&c).context("TLSReady")?;
    ensure!(
        status == "False" && reason == "ClusterIssuerNotAllowed",
        "{reason}: {message}"
    );
    ensure!(message.contains("corp-ca"), "{message}");
    ensure!(
        certificates
            .get_opt(&names::tls_server_secret("cluster-wide"))
            .await?
            .is_none(),
        "a Certificate was made for a ClusterIssuer that is not allowed"
    );
    // Allowed by the installer: the Certificate is made (it stays unissued: no such issuer).
    let mut allowing = context(&client).await;
    allowing.cert_manager_cluster_issuers = vec!["corp-ca".into()];
    let allowing = Arc::new(allowing);
    reconcile(&client, &allowing, &ns, "cluster-wide").await?;
    let made = certificates.get(&names::tls_server_secret("cluster-wide")).await?;
    ensure!(
        made.spec.issuer_ref["kind"] == "ClusterIssuer",
        "{:?}",
        made.spec.issuer_ref
    );

    // 4. tls.certManager dropped: the Certificate goes, the Secret stays and is still served.
    clusters
        .patch(
            "issued",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"tls": {"certManager": null}}})),
        )
        .await?;
    let c = reconcile(&client, &ctx, &ns, "issued").await?;
    ensure!(
        certificates
            .get_opt(&names::tls_server_secret("issued"))
            .await?
            .is_none(),
        "the Certificate outlived tls.certManager"
    );
    let (status, reason, _) = tls_ready(&c).context("TLSReady")?;
    ensure!(
        (status.as_str(), reason.as_str()) == ("True", "ExternalSecretsPresent"),
        "{reason}"
    );

    // 5. A user's External Secret whose certificate has expired.
    let now = Timestamp::now();
    let ca = pki::issue_ca("expired", now - SignedDuration::from_hours(72))?;
    let old = pki::issue_server(
        &ca,
        &[format!("expired-public.{ns}.svc")],
        now - SignedDuration::from_hours(72),
        SignedDuration::from_hours(24),
    )?;
    let data = [
        ("tls.crt", &old.cert_pem),
        ("tls.key", &old.key_pem),
        ("ca.crt", &ca.cert_pem),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
    .collect();
    let user_secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(names::tls_server_secret("expired")),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(data),
        ..Default::default()
    };
    secrets.create(&pp, &user_secret).await?;
    clusters
        .create(&pp, &manifest("expired", json!({"mode": "External"}))?)
        .await?;
    let c = reconcile(&client, &ctx, &ns, "expired").await?;
    let (status, reason, message) = tls_ready(&c).context("TLSReady")?;
    ensure!(
        status == "False" && reason == "CertificateExpired",
        "{reason}: {message}"
    );
    ensure!(message.contains("expired at"), "{message}");
    ensure!(cm.is_running(), "cert-manager exited:\n{}", cm.log_tail(40));
    Ok(())
}
