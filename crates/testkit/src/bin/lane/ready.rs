//! `lane wait-ready`: what `lane-up` waits for before it prints how to log in.

use crate::watch::{Lane, Progress, follow};
use anyhow::Result;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use openbao_api::{OpenBaoCluster, conditions};
use std::time::Duration;

pub async fn wait(lane: &Lane, wanted: &[String], limit: Duration) -> Result<()> {
    follow(lane.api::<OpenBaoCluster>(), &lane.cluster, limit, |cluster| {
        let found = cluster.and_then(|c| c.status.as_ref()).map(|s| s.conditions.as_slice());
        let missing = not_true(found.unwrap_or_default(), wanted);
        Ok(if missing.is_empty() {
            Progress::Done(())
        } else {
            Progress::Waiting(format!("not True: {}", missing.join(", ")))
        })
    })
    .await
}

/// The wanted conditions that are not True, each with what the operator says of it.
fn not_true(found: &[Condition], wanted: &[String]) -> Vec<String> {
    wanted
        .iter()
        .filter_map(|type_| match conditions::find(found, type_) {
            Some(c) if c.status == "True" => None,
            Some(c) => Some(format!("{type_}={} ({}: {})", c.status, c.reason, c.message)),
            None => Some(format!("{type_} (not reported)")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_each_condition_not_true_with_the_operators_reason() {
        let found: Vec<Condition> = serde_json::from_value(json!([
            {"type": "Available", "status": "True", "reason": "Ready", "message": "", "lastTransitionTime": "2026-12-04T00:00:00Z"},
            {"type": "TLSReady", "status": "False", "reason": "Issuing", "message": "waiting", "lastTransitionTime": "2026-12-04T00:00:00Z"},
        ]))
        .unwrap();
        let wanted = ["Available", "TLSReady", "AuditReady"].map(String::from);
        assert_eq!(
            not_true(&found, &wanted),
            ["TLSReady=False (Issuing: waiting)", "AuditReady (not reported)"]
        );
        assert_eq!(not_true(&[], &wanted[..1]), ["Available (not reported)"]);
    }
}
