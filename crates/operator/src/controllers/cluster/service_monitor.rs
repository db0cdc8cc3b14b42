//! The optional ServiceMonitor `<c>-metrics` (Prometheus Operator) for OpenBao's metrics
//! Service: applied through the one write layer, with owner reference and applied hash like
//! every child, only while the apiserver serves `monitoring.coreos.com/v1` ServiceMonitor.
//! Without that API nothing is applied, nothing fails and nothing is retried: the spec's switch
//! waits for the API (discovery is asked again every `OPTIONAL_API_TTL`), and an Event (at most
//! hourly, like every Event) tells a cluster that asks for one why it has none.

use openbao_api::names;
use openbao_render::Cluster;
use openbao_render::objects::{self, ServiceMonitor};

use crate::context::Context;
use crate::kube_write::{KubeError, Writer};

/// Reason of the Event of a cluster that wants a ServiceMonitor where none can exist.
pub const API_MISSING: &str = "ServiceMonitorAPIMissing";

/// Applies the ServiceMonitor the spec wants, or prunes the cluster's own when it wants none.
pub async fn apply(
    ctx: &Context,
    cluster: &Cluster<'_>,
    writer: &Writer<'_>,
    events: &mut Vec<(String, String)>,
) -> Result<(), KubeError> {
    if !ctx.service_monitors.served(&ctx.client).await {
        if objects::service_monitor(cluster).is_some() {
            events.push((
                API_MISSING.into(),
                format!(
                    "spec.telemetry.serviceMonitor is enabled, but this apiserver does not serve \
                     monitoring.coreos.com/v1 ServiceMonitor (install the Prometheus Operator's CRDs); \
                     the metrics Service {} is there for other scrapers",
                    names::metrics_service(cluster.name)
                ),
            ));
        }
        return Ok(());
    }
    match objects::service_monitor(cluster) {
        Some(monitor) => drop(writer.apply(&monitor).await?),
        None => drop(
            writer
                .delete_if_owned::<ServiceMonitor>(&names::metrics_service(cluster.name), cluster.uid)
                .await?,
        ),
    }
    Ok(())
}
