use super::*;
use serde_json::json;

fn spec(unseal: serde_json::Value) -> OpenBaoClusterSpec {
    serde_json::from_value(json!({
        "version": "2.7.2", "profile": "Development", "replicas": 3, "storage": {"size": "1Gi"},
        "unseal": unseal,
    }))
    .expect("a spec")
}

fn static_spec() -> OpenBaoClusterSpec {
    spec(json!({"type": "static"}))
}

fn transit_spec() -> OpenBaoClusterSpec {
    spec(json!({"type": "transit", "transit": {
        "address": "https://transit.vault.svc:8200", "keyName": "unseal",
        "caSecretRef": {"name": "transit-ca", "key": "ca.crt"},
        "tokenSecretRef": {"name": "transit-token", "key": "token"},
    }}))
}

fn cluster(spec: &OpenBaoClusterSpec) -> Cluster<'_> {
    Cluster {
        name: "bao",
        namespace: "team-a",
        uid: "uid-1",
        spec,
    }
}

fn at(phase: SealMigrationPhase) -> SealMigrationStatus {
    SealMigrationStatus {
        phase,
        from: Some(UnsealType::Static),
        to: Some(UnsealType::Transit),
        ..Default::default()
    }
}

fn initialized(m: SealMigrationStatus) -> OpenBaoClusterStatus {
    OpenBaoClusterStatus {
        initialized: true,
        seal_migration: Some(m),
        ..Default::default()
    }
}

/// The live set as the settled static cluster left it.
fn live_static() -> (String, StatefulSet) {
    let s = static_spec();
    let c = cluster(&s);
    (config::server_hcl(&c), objects::statefulset(&c))
}

fn pod_env(sts: &StatefulSet) -> Vec<String> {
    let pod = sts.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    pod.containers[0].env.iter().flatten().map(|e| e.name.clone()).collect()
}

fn pod_volumes(sts: &StatefulSet) -> Vec<String> {
    let pod = sts.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    pod.volumes.iter().flatten().map(|v| v.name.clone()).collect()
}

fn strategy(sts: &StatefulSet) -> Option<String> {
    sts.spec.as_ref()?.update_strategy.as_ref()?.type_.clone()
}

#[test]
fn the_live_set_is_frozen_until_a_server_restarts_then_follows_the_phase() {
    use SealMigrationPhase::*;
    let (s, t) = (UnsealType::Static, UnsealType::Transit);
    let idle = SealMigrationStatus::default();
    assert_eq!(hold(s, Some(s), &idle), Hold::None, "settled");
    assert_eq!(hold(s, None, &idle), Hold::None, "a new cluster renders its spec");
    assert_eq!(hold(t, Some(s), &idle), Hold::Freeze, "spec changed, not started");
    for phase in [PreMigrationSnapshot, RecoveryKey] {
        assert_eq!(hold(t, Some(s), &at(phase)), Hold::Freeze, "{phase:?}");
    }
    for phase in [Standbys, StepDown] {
        assert_eq!(
            hold(t, Some(s), &at(phase)),
            Hold::Stage(SealStage::Migration),
            "{phase:?}"
        );
        // The spec changed back meanwhile: the migration still finishes.
        assert_eq!(
            hold(s, Some(s), &at(phase)),
            Hold::Stage(SealStage::Migration),
            "{phase:?}"
        );
    }
    assert_eq!(hold(t, Some(t), &at(Finalize)), Hold::Stage(SealStage::New));
    // Given up before any server changed: frozen on the old seal until the spec goes back.
    let aborted = SealMigrationStatus {
        aborted_to: Some(t),
        ..Default::default()
    };
    assert_eq!(hold(t, Some(s), &aborted), Hold::Freeze);
    assert_eq!(hold(s, Some(s), &aborted), Hold::None);
}

#[test]
fn the_configured_seal_is_the_first_one_not_disabled() {
    let (static_hcl, _) = live_static();
    assert_eq!(configured_seal(&static_hcl), Some(UnsealType::Static));
    let t = transit_spec();
    assert_eq!(
        configured_seal(&config::server_hcl(&cluster(&t))),
        Some(UnsealType::Transit)
    );
    let s = static_spec();
    let migration = config::migration_seal_hcl(&cluster(&s), &cluster(&t));
    assert_eq!(configured_seal(&migration), Some(UnsealType::Transit));
    let back = config::migration_seal_hcl(&cluster(&t), &cluster(&s));
    assert_eq!(configured_seal(&back), Some(UnsealType::Static));
    assert_eq!(configured_seal("storage \"raft\" {\n}\n"), None);
}

#[test]
fn the_old_stanza_is_read_back_from_either_stage() {
    let (s, t) = (static_spec(), transit_spec());
    let transit_stanza = config::seal_hcl(&cluster(&t));
    // The way back: the transit settings are no longer in the spec, only in the live config.
    assert_eq!(
        old_seal_stanza(&config::server_hcl(&cluster(&t)), UnsealType::Transit).as_deref(),
        Some(transit_stanza.as_str())
    );
    let migrating = config::migration_seal_hcl(&cluster(&t), &cluster(&s));
    assert_eq!(
        old_seal_stanza(&migrating, UnsealType::Transit).as_deref(),
        Some(transit_stanza.as_str())
    );
    assert_eq!(
        old_seal_stanza(&config::server_hcl(&cluster(&s)), UnsealType::Transit),
        None
    );
}

#[test]
fn the_migration_stage_is_the_rendered_one_from_the_new_spec_to_the_old_configuration() {
    let (s, t) = (static_spec(), transit_spec());
    let (live_hcl, live_sts) = live_static();
    let status = initialized(at(SealMigrationPhase::Standbys));
    let w = SealWorkloads::new(&cluster(&t), &status, None, Some(&live_hcl), Some(live_sts.clone()));
    assert_eq!(w.hold, Hold::Stage(SealStage::Migration));
    assert_eq!(w.from, Some(UnsealType::Static));
    let cm = w.config_map(objects::config_map(&cluster(&t))).expect("written");
    let server = &cm.data.as_ref().unwrap()[SERVER_FILE];
    // Exactly what the process test ran: render's migration stanzas.
    assert!(
        server.contains(&config::migration_seal_hcl(&cluster(&s), &cluster(&t))),
        "{server}"
    );
    let sts = w.statefulset(objects::statefulset(&cluster(&t))).expect("written");
    assert_eq!(strategy(&sts).as_deref(), Some("OnDelete"));
    // Both seals' inputs: the static key stays mounted, the transit token and CA are added.
    let volumes = pod_volumes(&sts);
    assert!(
        volumes.contains(&"unseal".to_string()) && volumes.contains(&"transit-ca".to_string()),
        "{volumes:?}"
    );
    assert!(pod_env(&sts).contains(&paths::TRANSIT_TOKEN_ENV.to_string()));
    // A migrated standby answers sys/health with 500 until the leader migrates: its liveness
    // only checks the port.
    let container = &sts.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0];
    let liveness = container.liveness_probe.as_ref().expect("a liveness probe");
    assert!(
        liveness.http_get.is_none() && liveness.tcp_socket.is_some(),
        "{liveness:?}"
    );
    assert!(container.readiness_probe.as_ref().unwrap().http_get.is_some());
    // The template's config hash names the migration stage, and differs from the others.
    let hash = template_hash(&sts).cloned();
    assert_eq!(hash, w.stage_hash(SealStage::Migration));
    assert_ne!(hash, w.stage_hash(SealStage::New));
    assert_ne!(hash.as_ref(), template_hash(&live_sts));
    // Idempotent: from what it wrote, the next reconcile writes the same.
    let again = SealWorkloads::new(&cluster(&t), &status, None, Some(server), Some(sts.clone()));
    assert_eq!(again.config_map(objects::config_map(&cluster(&t))), Some(cm));
    assert_eq!(again.statefulset(objects::statefulset(&cluster(&t))), Some(sts));
}

#[test]
fn the_way_back_keeps_the_transit_inputs_from_the_live_statefulset() {
    let (s, t) = (static_spec(), transit_spec());
    let live_hcl = config::server_hcl(&cluster(&t));
    let live_sts = objects::statefulset(&cluster(&t));
    let mut m = at(SealMigrationPhase::Standbys);
    m.from = Some(UnsealType::Transit);
    m.to = Some(UnsealType::Static);
    let w = SealWorkloads::new(&cluster(&s), &initialized(m), None, Some(&live_hcl), Some(live_sts));
    let cm = w.config_map(objects::config_map(&cluster(&s))).expect("written");
    assert!(
        cm.data.unwrap()[SERVER_FILE].contains(&config::migration_seal_hcl(&cluster(&t), &cluster(&s))),
        "the transit stanza, disabled, next to the static one"
    );
    let sts = w.statefulset(objects::statefulset(&cluster(&s))).expect("written");
    assert!(pod_env(&sts).contains(&paths::TRANSIT_TOKEN_ENV.to_string()));
    assert!(pod_volumes(&sts).contains(&"transit-ca".to_string()));
    assert!(pod_volumes(&sts).contains(&"unseal".to_string()), "the new static key");
    // The policy keeps the way to the old transit server until the servers leave it.
    assert_eq!(w.previous_transit_address(), Some("https://transit.vault.svc:8200"));
    let (static_hcl, static_sts) = live_static();
    let settled = SealWorkloads::new(
        &cluster(&s),
        &initialized(at(SealMigrationPhase::Idle)),
        None,
        Some(&static_hcl),
        Some(static_sts),
    );
    assert_eq!(settled.previous_transit_address(), None);
}

#[test]
fn until_a_server_restarts_the_servers_are_rendered_with_the_seal_they_run() {
    let (s, t) = (static_spec(), transit_spec());
    let (live_hcl, live_sts) = live_static();
    let pending = initialized(SealMigrationStatus::default());
    // From static: the whole spec is rendered with the static seal, so everything else (an
    // upgrade in progress too) goes on.
    let w = SealWorkloads::new(&cluster(&t), &pending, None, Some(&live_hcl), Some(live_sts));
    assert_eq!(w.hold, Hold::Old);
    assert!(w.holds());
    let c = cluster(&t);
    let applied = w.cluster(&c);
    assert_eq!(config::server_hcl(&applied), config::server_hcl(&cluster(&s)));
    assert_eq!(objects::statefulset(&applied), objects::statefulset(&cluster(&s)));
    let rendered = objects::config_map(&applied);
    assert_eq!(w.config_map(rendered.clone()), Some(rendered));
    let mut upgrading = pending.clone();
    assert!(w.blocks_upgrade(&upgrading), "an upgrade does not start");
    upgrading.upgrade = Some(openbao_api::UpgradeStatus {
        phase: UpgradePhase::RollingUpdate,
        ..Default::default()
    });
    assert!(!w.blocks_upgrade(&upgrading), "one in progress goes on");

    // From transit (the way back): the transit settings are not in the spec any more; the
    // servers' objects are left as they are.
    let live_hcl = config::server_hcl(&cluster(&t));
    let live_sts = objects::statefulset(&cluster(&t));
    let w = SealWorkloads::new(&cluster(&s), &pending, None, Some(&live_hcl), Some(live_sts));
    assert_eq!(w.hold, Hold::Freeze);
    assert_eq!(w.cluster(&cluster(&s)).spec, &s);
    assert_eq!(w.config_map(objects::config_map(&cluster(&s))), None);
    assert_eq!(w.statefulset(objects::statefulset(&cluster(&s))), None);
    // Other objects pass (a ConfigMap of another set).
    let mut other = objects::config_map(&cluster(&s));
    other.metadata.name = Some("bao-config-v2-7-2".into());
    assert!(w.config_map(other).is_some());
}

#[test]
fn the_final_stage_is_the_settled_template_under_on_delete() {
    let t = transit_spec();
    let (_, live_sts) = live_static();
    let finalize = initialized(at(SealMigrationPhase::Finalize));
    let live_hcl = config::server_hcl(&cluster(&t));
    let w = SealWorkloads::new(&cluster(&t), &finalize, None, Some(&live_hcl), Some(live_sts));
    assert!(w.blocks_upgrade(&finalize));
    let rendered = objects::statefulset(&cluster(&t));
    let sts = w.statefulset(rendered.clone()).expect("written");
    assert_eq!(strategy(&sts).as_deref(), Some("OnDelete"));
    // Only the strategy differs from the settled cluster's: going back to RollingUpdate after
    // the migration restarts nothing.
    assert_eq!(sts.spec.as_ref().unwrap().template, rendered.spec.unwrap().template);
    assert_eq!(template_hash(&sts).cloned(), w.stage_hash(SealStage::New));
    assert_eq!(
        w.config_map(objects::config_map(&cluster(&t))),
        Some(objects::config_map(&cluster(&t)))
    );
}

#[test]
fn an_uninitialized_cluster_is_never_held() {
    let t = transit_spec();
    let (live_hcl, live_sts) = live_static();
    let status = OpenBaoClusterStatus::default();
    let w = SealWorkloads::new(&cluster(&t), &status, None, Some(&live_hcl), Some(live_sts));
    assert_eq!(w.hold, Hold::None);
}

#[test]
fn a_migration_starts_only_when_nothing_else_holds_the_cluster() {
    let t = transit_spec();
    let pending = initialized(SealMigrationStatus::default());
    assert_eq!(may_step(&t, &pending, Some(UnsealType::Static), true), Ok(()));
    let reason = |status: &OpenBaoClusterStatus, from, ready| may_step(&t, status, from, ready).unwrap_err().reason;
    assert_eq!(
        reason(&pending, Some(UnsealType::Static), false),
        "WaitingForUnsealConfiguration"
    );
    assert_eq!(reason(&pending, Some(UnsealType::Kmip), true), "UnsupportedSealChange");
    let mut upgrading = pending.clone();
    upgrading.upgrade = Some(openbao_api::UpgradeStatus {
        phase: UpgradePhase::RollingUpdate,
        ..Default::default()
    });
    assert_eq!(reason(&upgrading, Some(UnsealType::Static), true), "WaitingForUpgrade");
    // Once servers changed, nothing stops it.
    let running = initialized(at(SealMigrationPhase::Standbys));
    assert_eq!(may_step(&t, &running, Some(UnsealType::Static), false), Ok(()));
}

#[test]
fn the_condition_tells_the_phase_and_why_it_waits() {
    let mut m = at(SealMigrationPhase::Standbys);
    m.message = Some("restarting bao-2 with the old seal disabled next to the new one".into());
    let c = condition(&m);
    assert_eq!((c.status, c.reason.as_str()), (Status::True, "Standbys"));
    assert!(c.message.contains("bao-2"), "{}", c.message);

    let mut blocked = SealMigrationStatus::default();
    let operator = OperatorIdentity {
        namespace: "openbao-operator-system".into(),
        service_account: "openbao-operator".into(),
    };
    let missing = role_missing_message(&operator, "aud");
    note(&mut blocked, "SealMigrationRoleMissing", &missing);
    let c = condition(&blocked);
    assert_eq!(
        (c.status, c.reason.as_str()),
        (Status::False, "SealMigrationRoleMissing")
    );
    assert!(
        c.message
            .contains("auth/jwt-operator/role/openbao-operator-seal-migration"),
        "{}",
        c.message
    );
    // The same note again changes nothing (no status write per reconcile).
    let before = blocked.clone();
    note(&mut blocked, "SealMigrationRoleMissing", &missing);
    assert_eq!(blocked, before);

    let aborted = SealMigrationStatus {
        aborted_to: Some(UnsealType::Transit),
        message: Some("seal migration given up".into()),
        ..Default::default()
    };
    assert_eq!(condition(&aborted).reason, "Aborted");
    assert_eq!(condition(&SealMigrationStatus::default()).reason, "Idle");
}

#[test]
fn the_recovery_key_secret_holds_the_key_and_never_shows_it() {
    let s = transit_spec();
    let key = RecoveryKey {
        key: "cmVjb3Zlcnkta2V5".into(),
        verification_nonce: "nonce-1".into(),
    };
    let secret = recovery_key_secret(&cluster(&s), &key);
    assert_eq!(secret.metadata.name.as_deref(), Some("bao-recovery-key"));
    assert_eq!(secret.data.as_ref().unwrap()[RECOVERY_KEY].0, key.key.as_bytes());
    // Like the static key, it outlives the cluster unless DeleteAll.
    assert!(secret.metadata.owner_references.is_none());
    assert!(!format!("{key:?}").contains(&key.key));
}

#[test]
fn the_documented_policy_is_the_one_self_init_writes() {
    // An admin of a cluster initialized before the role existed writes it from the docs.
    let docs = include_str!("../../../../../../docs/seal-migration.md");
    for line in openbao_render::selfinit::SEAL_MIGRATION_POLICY.lines() {
        assert!(docs.contains(line), "docs/seal-migration.md lacks {line}");
    }
}

#[test]
fn a_recovery_key_is_wanted_until_the_condition_names_its_secret() {
    let without = transit_spec();
    let status = OpenBaoClusterStatus::default();
    assert_eq!(recovery_key_wanted(&without, &status), None, "not asked for");

    let mut with = transit_spec();
    with.unseal.as_mut().unwrap().recovery_key = Some(openbao_api::RecoveryKeySpec {
        secret_name: "break-glass".into(),
    });
    assert_eq!(recovery_key_wanted(&with, &status).as_deref(), Some("break-glass"));

    let mut stored = status.clone();
    let now = Time(Timestamp::now());
    let ready = |status, message: String| Desired::new(openbao_api::RECOVERY_KEY_READY, status, "Stored", message);
    cond::set_condition(
        &mut stored.conditions,
        ready(Status::False, recovery_key_stored_message("break-glass")),
        None,
        now.clone(),
    );
    assert!(
        recovery_key_wanted(&with, &stored).is_some(),
        "a failure is tried again"
    );
    cond::set_condition(
        &mut stored.conditions,
        ready(Status::True, recovery_key_stored_message("old-name")),
        None,
        now.clone(),
    );
    assert!(recovery_key_wanted(&with, &stored).is_some(), "another Secret named");
    cond::set_condition(
        &mut stored.conditions,
        ready(Status::True, recovery_key_stored_message("break-glass")),
        None,
        now,
    );
    assert_eq!(recovery_key_wanted(&with, &stored), None, "settled: no request");
}
