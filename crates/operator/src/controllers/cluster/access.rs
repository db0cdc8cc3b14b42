//! Access: once OpenBao serves, the operator logs in with a token for the cluster's own
//! audience and keeps OpenBao's trusted service-account keys in step with the apiserver.

use openbao_api::{OpenBaoClusterStatus, names};
use openbao_render::Cluster;
use std::time::Duration;

use super::status;
use crate::context::Context;

/// Logs in to OpenBao and keeps its trusted service-account keys equal to the apiserver's.
/// Runs only on a serving cluster; failures are reported in status, not retried as errors.
/// Also returns the logged-in client (when the login succeeded) for the reads that follow.
pub(super) async fn sync_openbao_access(
    ctx: &Context,
    cluster: &Cluster<'_>,
    previous: &OpenBaoClusterStatus,
    bundle: &str,
    events: &mut Vec<(String, String)>,
) -> (status::Access, Option<openbao_client::BaoClient>) {
    use crate::openbao::AccessError;
    use status::Access;
    let oidc = &cluster.spec.self_init.oidc;
    let trust = match ctx.refreshed_jwt_trust().await {
        Ok(trust) => trust,
        Err(e) => return (Access::Failed(e.to_string()), None),
    };
    let issuer = oidc.issuer.clone().unwrap_or(trust.issuer);
    let endpoint = (ctx.endpoints)(cluster.name, cluster.namespace);
    let mut logged_in = None;
    let work = async {
        let jwt = crate::openbao::operator_token(
            &ctx.client,
            &ctx.operator,
            &ctx.safe_audiences,
            cluster.namespace,
            cluster.name,
        )
        .await?;
        let client = crate::openbao::login(&endpoint, bundle, &jwt).await?;
        let synced = crate::openbao::sync_jwt_keys(&client, &issuer, &trust.public_keys_pem).await;
        logged_in = Some(client);
        synced
    };
    let access = match tokio::time::timeout(Duration::from_secs(20), work).await {
        Err(_) => Access::Failed(format!("OpenBao at {} did not answer within 20 s", endpoint.url)),
        Ok(Err(e @ AccessError::AudienceUnsafe { .. })) => Access::AudienceUnsafe(e.to_string()),
        Ok(Err(e)) if crate::openbao::is_audience_refusal(&e) => {
            let roles: Vec<String> = openbao_render::selfinit::jwt_roles(cluster, &ctx.operator)
                .into_iter()
                .map(|r| r.role.to_string())
                .collect();
            Access::audience_refused(previous, &roles, &names::jwt_audience(cluster.namespace, cluster.name))
        }
        Ok(Err(e)) => Access::Failed(e.to_string()),
        Ok(Ok(crate::openbao::KeySync::Unchanged)) => Access::Ok,
        Ok(Ok(crate::openbao::KeySync::Updated { added, removed })) => {
            events.push((
                "JWTKeysSynced".into(),
                format!(
                    "OpenBao now trusts the apiserver's current service-account keys ({added} added, {removed} removed)"
                ),
            ));
            Access::Ok
        }
    };
    (access, logged_in)
}
