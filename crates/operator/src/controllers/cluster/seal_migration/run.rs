//! The reconcile's seal-migration step: whether the driver may step, the login, one driver
//! step, and the `SealMigration` condition.

use super::*;

/// What one reconcile's seal-migration step leaves: the status to build on, when to step again,
/// and Events (never a secret in them).
pub struct SealStepOutcome {
    pub status: OpenBaoClusterStatus,
    pub requeue: Option<Duration>,
    pub events: Vec<(String, String)>,
}

/// Why no driver step runs although a migration is wanted; reported in
/// `status.sealMigration.lastError` and the `SealMigration` condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocked {
    pub reason: &'static str,
    pub message: String,
}

/// Whether the driver may step now (pure): `Err` says why not.
pub fn may_step(
    spec: &OpenBaoClusterSpec,
    status: &OpenBaoClusterStatus,
    from: Option<UnsealType>,
    new_seal_ready: bool,
) -> Result<(), Blocked> {
    let m = status.seal_migration.clone().unwrap_or_default();
    let to = spec_seal(spec);
    let migratable = |t: UnsealType| matches!(t, UnsealType::Static | UnsealType::Transit);
    if m.phase != SealMigrationPhase::Idle {
        return Ok(());
    }
    if let Some(from) = from
        && (!migratable(from) || !migratable(to))
    {
        return Err(Blocked {
            reason: "UnsupportedSealChange",
            message: format!(
                "spec.unseal.type: the servers run the {} seal; only static <-> transit can be migrated, \
                 so spec.unseal.type must go back to {}",
                from.as_str(),
                from.as_str()
            ),
        });
    }
    let upgrading = status.upgrade.as_ref().is_some_and(|u| u.phase != UpgradePhase::Idle)
        || status.blue_green.as_ref().is_some_and(|b| b.green_revision.is_some());
    if upgrading {
        return Err(Blocked {
            reason: "WaitingForUpgrade",
            message: "the seal migration starts once the upgrade in progress is finished".into(),
        });
    }
    if let Some(lock) = &status.operation_lock {
        return Err(Blocked {
            reason: "WaitingForOperationLock",
            message: format!(
                "the seal migration starts once {} releases the cluster's operation lock",
                lock.holder
            ),
        });
    }
    if !new_seal_ready {
        return Err(Blocked {
            reason: "WaitingForUnsealConfiguration",
            message: format!(
                "the seal migration to {} starts once what that seal needs is in place (see the \
                 UnsealConfigurationReady condition)",
                to.as_str()
            ),
        });
    }
    Ok(())
}

/// Records `reason`/`message` in `m.lastError` unless the same is recorded (a lasting state
/// does not rewrite status on every reconcile).
pub(super) fn note(m: &mut SealMigrationStatus, reason: &str, message: &str) {
    if m.last_error
        .as_ref()
        .is_some_and(|e| e.reason == reason && e.message == message)
    {
        return;
    }
    m.last_error = Some(UpgradeError {
        reason: reason.into(),
        message: message.into(),
        at: Time(Timestamp::now()),
    });
}

/// The `SealMigration` condition for `m`.
pub fn condition(m: &SealMigrationStatus) -> Desired {
    let message = m.message.clone().unwrap_or_default();
    let error = m.last_error.as_ref();
    let with_error = |message: String| match error {
        Some(e) => format!("{message} (last error: {}: {})", e.reason, e.message),
        None => message,
    };
    match (m.phase, error) {
        (SealMigrationPhase::Idle, _) if m.aborted_to.is_some() => Desired::new(
            cond::SEAL_MIGRATION,
            Status::False,
            "Aborted",
            if message.is_empty() {
                with_error(String::new())
            } else {
                message
            },
        ),
        (SealMigrationPhase::Idle, Some(e)) => {
            Desired::new(cond::SEAL_MIGRATION, Status::False, e.reason.clone(), e.message.clone())
        }
        (SealMigrationPhase::Idle, None) => Desired::new(cond::SEAL_MIGRATION, Status::False, "Idle", message),
        (phase, _) => Desired::new(
            cond::SEAL_MIGRATION,
            Status::True,
            format!("{phase:?}"),
            with_error(message),
        ),
    }
}

/// What to write for a cluster initialized before self-init wrote the seal-migration login:
/// the policy (its text is `SEAL_MIGRATION_POLICY`, in docs/seal-migration.md) and the role as
/// self-init writes it, bound to the operator's service account and this cluster's audience.
pub fn role_missing_message(operator: &OperatorIdentity, audience: &str) -> String {
    format!(
        "the cluster was initialized before the operator's self-init wrote its seal-migration login, so the \
         migration cannot start. Log in as an admin and run: bao policy write {SEAL_MIGRATION_ROLE} \
         seal-migration.hcl (the policy in docs/seal-migration.md); bao write auth/{JWT_MOUNT}/role/{SEAL_MIGRATION_ROLE} \
         role_type=jwt user_claim=sub bound_subject=system:serviceaccount:{}:{} bound_audiences={audience} \
         token_policies={SEAL_MIGRATION_ROLE} token_ttl=1h token_max_ttl=4h. The migration then starts by itself",
        operator.namespace, operator.service_account
    )
}

/// Whether OpenBao refused a login because the role does not exist (`role "x" could not be
/// found`, HTTP 400; seen on 2.7.2 in tests/openbao_access.rs).
pub fn is_role_missing(e: &openbao_client::BaoError) -> bool {
    e.status() == Some(400) && e.api_errors().iter().any(|m| m.contains("could not be found"))
}

/// One reconcile's seal-migration step. `None`: no migration is wanted, nothing to report.
pub async fn step(
    ctx: &Context,
    cluster: &Cluster<'_>,
    previous: &OpenBaoClusterStatus,
    bundle: Option<&str>,
    new_seal_ready: bool,
    workloads: &SealWorkloads,
) -> Option<SealStepOutcome> {
    let m = previous.seal_migration.clone().unwrap_or_default();
    if !previous.initialized {
        return None;
    }
    if workloads.hold == Hold::None
        && m.phase == SealMigrationPhase::Idle
        && let Some(secret) = recovery_key_wanted(cluster.spec, previous)
    {
        return Box::pin(make_recovery_key(
            ctx, cluster, previous, bundle, workloads, &m, &secret,
        ))
        .await;
    }
    if workloads.hold == Hold::None && m.phase == SealMigrationPhase::Idle {
        // Settled on the spec's seal: clear what an aborted or blocked migration left, and
        // keep the condition saying so (nothing when no migration was ever wanted).
        let recorded = previous.seal_migration.as_ref()?;
        let cleared = SealMigrationStatus {
            message: m.message.clone().filter(|_| m.aborted_to.is_none()),
            ..SealMigrationStatus::default()
        };
        let shown = cond::find(&previous.conditions, cond::SEAL_MIGRATION);
        let wanted = condition(&cleared);
        let unchanged = *recorded == cleared
            && shown.is_some_and(|c| {
                c.status == wanted.status.as_str() && c.reason == wanted.reason && c.message == wanted.message
            });
        return (!unchanged).then(|| outcome(previous, cleared, None, Vec::new()));
    }
    let mut blocked = m.clone();
    let block = |blocked: &mut SealMigrationStatus, reason: &str, message: &str| {
        note(blocked, reason, message);
        Some(outcome(
            previous,
            blocked.clone(),
            Some(Duration::from_secs(15)),
            Vec::new(),
        ))
    };
    let new_seal_ready = workloads
        .new_seal
        .as_ref()
        .map_or(new_seal_ready, super::super::status::SealState::is_ready);
    if let Err(mut b) = may_step(cluster.spec, previous, workloads.from, new_seal_ready) {
        if let Some(super::super::status::SealState::Problem { message, .. }) = &workloads.new_seal {
            b.message = format!("{}: {message}", b.message);
        }
        return block(&mut blocked, b.reason, &b.message);
    }
    let Some(bundle) = bundle else {
        return block(&mut blocked, "NoCABundle", "no CA bundle to reach OpenBao with");
    };
    let token = match migration_login(ctx, cluster, bundle).await {
        Ok(token) => token,
        Err(b) => return block(&mut blocked, b.reason, &b.message),
    };
    let platform = KubeSealPlatform::new(ctx, cluster, workloads, bundle.to_string(), token, &m);
    let driver = SealDriver::new(cluster.name, platform);
    let target = SealTarget {
        to: spec_seal(cluster.spec),
        snapshot_first: cluster.spec.backup.is_some(),
    };
    match Box::pin(driver.step(target, &m)).await {
        Ok(report) => {
            let mut events = Vec::new();
            if report.status.phase != m.phase {
                events.push((
                    "SealMigrationPhaseChanged".to_string(),
                    format!(
                        "seal migration phase {:?} -> {:?}: {}",
                        m.phase,
                        report.status.phase,
                        report.status.message.clone().unwrap_or_default()
                    ),
                ));
            }
            Some(outcome(previous, report.status, report.requeue_after, events))
        }
        Err(e) => block(
            &mut blocked,
            "ObserveFailed",
            &format!("observing the servers for the seal migration: {e}"),
        ),
    }
}

/// The operator's login with the seal-migration role (which may also make the recovery key).
async fn migration_login(ctx: &Context, cluster: &Cluster<'_>, bundle: &str) -> Result<Token, Blocked> {
    // Boxed (here and the driver's step): their futures are large, and the reconcile's own
    // future must stay small enough for the stack of whoever polls it.
    let login = tokio::time::timeout(
        LOGIN_TIMEOUT,
        Box::pin(super::super::upgrade::operator_login_as(
            ctx,
            cluster,
            bundle,
            SEAL_MIGRATION_ROLE,
        )),
    )
    .await;
    match login {
        Err(_) => Err(Blocked {
            reason: "LoginFailed",
            message: "logging in for the seal migration: no answer within 20 s".into(),
        }),
        Ok(Err(e)) if e.refused.as_ref().is_some_and(is_role_missing) => {
            let audience = names::jwt_audience(cluster.namespace, cluster.name);
            Err(Blocked {
                reason: "SealMigrationRoleMissing",
                message: role_missing_message(&ctx.operator, &audience),
            })
        }
        Ok(Err(e)) => Err(Blocked {
            reason: "LoginFailed",
            message: e.message,
        }),
        Ok(Ok(token)) => Ok(token),
    }
}

/// `RecoveryKeyReady=True`'s message: it names the Secret, so a changed name is seen.
pub fn recovery_key_stored_message(secret: &str) -> String {
    format!("the cluster's recovery key is in Secret {secret} (key `key`)")
}

/// The Secret `spec.unseal.recoveryKey` asks the recovery key to be made in, unless the
/// condition already says it is there: a settled cluster sends no request for it.
pub fn recovery_key_wanted(spec: &OpenBaoClusterSpec, status: &OpenBaoClusterStatus) -> Option<String> {
    let secret = &spec.unseal.as_ref()?.recovery_key.as_ref()?.secret_name;
    let stored = cond::find(&status.conditions, openbao_api::RECOVERY_KEY_READY)
        .is_some_and(|c| c.status == "True" && c.message == recovery_key_stored_message(secret));
    (!stored).then(|| secret.clone())
}

/// Makes the recovery key `spec.unseal.recoveryKey` asks for (the seal migration's own step:
/// stored before it is verified, so a crash leaves no key unknown) once the cluster serves.
/// `None` while it does not yet.
async fn make_recovery_key(
    ctx: &Context,
    cluster: &Cluster<'_>,
    previous: &OpenBaoClusterStatus,
    bundle: Option<&str>,
    workloads: &SealWorkloads,
    m: &SealMigrationStatus,
    secret: &str,
) -> Option<SealStepOutcome> {
    let serving = cond::find(&previous.conditions, cond::AVAILABLE).is_some_and(|c| c.status == "True");
    if !serving {
        return None;
    }
    let report = |status: Status, reason: &str, message: String, events: Vec<(String, String)>| {
        let mut next = previous.clone();
        let desired = Desired::new(openbao_api::RECOVERY_KEY_READY, status, reason, message);
        cond::set_condition(&mut next.conditions, desired, None, Time(Timestamp::now()));
        let requeue = (status != Status::True).then_some(Duration::from_secs(30));
        Some(SealStepOutcome {
            status: next,
            requeue,
            events,
        })
    };
    let Some(bundle) = bundle else {
        return report(
            Status::False,
            "NoCABundle",
            "no CA bundle to reach OpenBao with".into(),
            vec![],
        );
    };
    let token = match migration_login(ctx, cluster, bundle).await {
        Ok(token) => token,
        Err(b) => return report(Status::False, b.reason, b.message, vec![]),
    };
    let platform = KubeSealPlatform::new(ctx, cluster, workloads, bundle.to_string(), token, m);
    let driver = SealDriver::new(cluster.name, platform);
    match Box::pin(driver.ensure_recovery_key()).await {
        Ok(()) => {
            let message = recovery_key_stored_message(secret);
            let event = ("RecoveryKeyStored".to_string(), message.clone());
            report(Status::True, "Stored", message, vec![event])
        }
        Err(e) => report(
            Status::False,
            "RecoveryKeyFailed",
            format!("making the recovery key: {e}"),
            vec![],
        ),
    }
}

fn outcome(
    previous: &OpenBaoClusterStatus,
    m: SealMigrationStatus,
    requeue: Option<Duration>,
    events: Vec<(String, String)>,
) -> SealStepOutcome {
    let mut status = previous.clone();
    cond::set_condition(&mut status.conditions, condition(&m), None, Time(Timestamp::now()));
    status.seal_migration = Some(m);
    SealStepOutcome {
        status,
        requeue,
        events,
    }
}
