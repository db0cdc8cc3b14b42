//! `tls.certManager`: the cluster's cert-manager `Certificate`, applied through the one write
//! layer while the apiserver serves cert-manager's API, and pruned when the spec stops asking.
//!
//! A ClusterIssuer signs for every namespace, so a tenant may name one only when the operator's
//! installer listed it (`--cert-manager-cluster-issuers`); an Issuer lives in the tenant's own
//! namespace and is always theirs to use.

use openbao_api::{IssuerKind, names};
use openbao_render::objects::{self, Certificate};
use openbao_render::{Cluster, labels};

use super::status::{TlsState, tls_reason};
use crate::context::Context;
use crate::kube_write::{KubeError, Writer};

/// cert-manager's `Ready` condition of the Certificate: (status, reason, message).
pub type Issuance = Option<(String, String, String)>;

/// Applies the Certificate the spec asks for and returns what cert-manager says of it, or the
/// `TLSReady` state that explains why none can be applied.
pub async fn apply(
    ctx: &Context,
    cluster: &Cluster<'_>,
    writer: &Writer<'_>,
) -> Result<Result<Issuance, TlsState>, KubeError> {
    let not_ready = |reason, message| Ok(Err(TlsState::NotReady { reason, message }));
    let Some(issuer) = cluster.spec.tls.cert_manager.as_ref().map(|c| &c.issuer_ref) else {
        return Ok(Ok(None));
    };
    if issuer.kind == IssuerKind::ClusterIssuer && !ctx.cert_manager_cluster_issuers.contains(&issuer.name) {
        prune(ctx, cluster, writer, false).await?;
        return not_ready(
            tls_reason::CLUSTER_ISSUER_NOT_ALLOWED,
            format!(
                "spec.tls.certManager.issuerRef: ClusterIssuer {} is not one the operator's installer allowed \
                 (--cert-manager-cluster-issuers); use an Issuer in namespace {}",
                issuer.name, cluster.namespace
            ),
        );
    }
    if !ctx.certificates.served(&ctx.client).await {
        return not_ready(
            tls_reason::CERT_MANAGER_MISSING,
            "spec.tls.certManager is set, but this apiserver does not serve cert-manager.io/v1 Certificate \
             (install cert-manager)"
                .to_string(),
        );
    }
    let certificate = match objects::certificate(cluster) {
        Ok(Some(certificate)) => certificate,
        Ok(None) => return Ok(Ok(None)),
        Err(e) => return not_ready(tls_reason::ISSUE_FAILED, e.to_string()),
    };
    let applied = writer.apply(&certificate).await?;
    prune(ctx, cluster, writer, true).await?;
    Ok(Ok(applied.ready()))
}

/// Deletes the cluster's own Certificate unless `keep` (nothing is asked of an apiserver
/// without cert-manager; a settled cluster costs no request, see [`Writer::prune`]).
pub async fn prune(ctx: &Context, cluster: &Cluster<'_>, writer: &Writer<'_>, keep: bool) -> Result<(), KubeError> {
    if !ctx.certificates.served(&ctx.client).await {
        return Ok(());
    }
    let keep = if keep {
        vec![names::tls_server_secret(cluster.name)]
    } else {
        Vec::new()
    };
    let tls = labels::children_selector(cluster.name, &["tls"]);
    writer.prune::<Certificate>(&tls, cluster.uid, &keep).await?;
    Ok(())
}
