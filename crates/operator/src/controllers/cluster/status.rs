//! The status a person reads: phase and conditions derived from what the reconcile observed
//! and applied. Pure, so every reason is unit-tested.

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use openbao_api::conditions::{self as cond, Desired, Status};
use openbao_api::{
    ClusterPhase, OpenBaoClusterSpec, OpenBaoClusterStatus, Profile, TlsMode, TlsStatus, TransitSeal,
    UNSEAL_CONFIGURATION_READY, UpgradePhase, names,
};
use openbao_render::selfinit::JWT_MOUNT;

/// Condition type of an upgrade: True while one is in progress (reason: its phase).
pub const UPGRADING: &str = "Upgrading";

/// What this reconcile did about upgrades.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum UpgradeState {
    /// No upgrade step ran.
    #[default]
    NotRun,
    /// One driver step ran; `status.upgrade` says where the upgrade stands.
    Stepped,
    /// The step (or logging in for it) failed again and again; it is still tried again.
    StepFailed(String),
    /// The step failed fewer than `STEP_FAILURES_DEGRADED` times in a row: `status.upgrade.lastError`
    /// tells, and it is tried again soon (no `Degraded` for a leader handover in passing).
    StepRetrying,
    /// An upgrade is wanted but cannot run; nothing was touched.
    Refused { reason: &'static str, message: String },
}

/// One OpenBao pod as its Kubernetes service-registration labels describe it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodView {
    pub name: String,
    pub initialized: Option<bool>,
    pub sealed: Option<bool>,
    pub active: bool,
    /// Why its server's last start failed at the seal (see [`seal_start_failure`]).
    pub seal_failure: Option<String>,
}

impl PodView {
    pub fn from_labels(name: &str, labels: &std::collections::BTreeMap<String, String>) -> Self {
        let flag = |k: &str| labels.get(k).map(|v| v == "true");
        Self {
            name: name.to_string(),
            initialized: flag("openbao-initialized"),
            sealed: flag("openbao-sealed"),
            active: flag("openbao-active") == Some(true),
            seal_failure: None,
        }
    }
}

/// OpenBao's own words when its seal cannot be reached as it starts; the server then exits.
const SEAL_START_ERROR: &str = "Error configuring seal";
/// At most this much of that line reaches the status.
const SEAL_FAILURE_MAX_CHARS: usize = 300;

/// Why a server's last start failed at its seal, from the end of its log that the kubelet keeps
/// as the container's termination message (`FallbackToLogsOnError`): OpenBao's line
/// (`Error configuring seal "transit": ...`, which names the server and the error, never a
/// token), on one line, control characters dropped, at most [`SEAL_FAILURE_MAX_CHARS`]. `None`
/// for any other exit. Only a `kms` plugin's error is left out (a cloud SDK may echo an access
/// key id): the reason alone says it.
pub fn seal_start_failure(termination_message: &str, seal: &openbao_api::Seal<'_>) -> Option<String> {
    let line = termination_message
        .lines()
        .rev()
        .find(|l| l.contains(SEAL_START_ERROR))?;
    if matches!(seal, openbao_api::Seal::Kms(_)) {
        return Some("its kms seal plugin failed at start (the pod's log says why)".into());
    }
    let start = line.find(SEAL_START_ERROR).unwrap_or(0);
    let clean: String = line[start..]
        .chars()
        .filter(|c| !c.is_control())
        .take(SEAL_FAILURE_MAX_CHARS)
        .collect();
    Some(clean)
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GatewayState {
    Disabled,
    Attached,
    ApiMissing,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsState {
    Ready {
        server_not_after: Option<String>,
        ca_not_after: Option<String>,
    },
    /// No usable server certificate: `reason` is the `TLSReady` (and `Degraded`) reason, one of
    /// the `tls_reason` constants.
    NotReady { reason: &'static str, message: String },
}

/// Reasons of a `TLSReady=False`.
pub mod tls_reason {
    /// External mode and the Secrets are not there (yet), or lack a key.
    pub const SECRET_MISSING: &str = "TLSSecretMissing";
    /// The operator could not issue its own certificates.
    pub const ISSUE_FAILED: &str = "TLSIssueFailed";
    /// The server certificate in the Secret is past its notAfter.
    pub const EXPIRED: &str = "CertificateExpired";
    /// The Secret's `tls.crt` is not a PEM certificate.
    pub const UNREADABLE: &str = "CertificateUnreadable";
    /// cert-manager has not issued the Certificate yet (its Ready message says why).
    pub const NOT_ISSUED: &str = "CertificateNotReady";
    /// `tls.certManager` names a ClusterIssuer the operator's installer did not allow.
    pub const CLUSTER_ISSUER_NOT_ALLOWED: &str = "ClusterIssuerNotAllowed";
    /// `tls.certManager` is set and this apiserver does not serve cert-manager's Certificate.
    pub const CERT_MANAGER_MISSING: &str = "CertManagerAPIMissing";
}

/// `UnsealConfigurationReady=True` of a transit seal.
pub const TRANSIT_CONFIGURED: &str = "TransitConfigured";

/// What the seal needs, as this reconcile found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SealState {
    /// Not looked at (a paused cluster): the condition stays as it was.
    NotChecked,
    /// The static seal: its key Secret is in place.
    Static,
    /// An auto-unseal seal (transit, KMIP, KMS plugin) has what it needs in place.
    Ready { reason: &'static str, message: String },
    /// Something the transit seal needs is missing or unacceptable.
    Problem { reason: &'static str, message: String },
}

impl SealState {
    /// Whether pods may be created or changed.
    pub fn is_ready(&self) -> bool {
        !matches!(self, SealState::Problem { .. })
    }
}

/// Checks what the transit seal needs: an acceptable address (admission checked it already;
/// objects stored before a rule existed are checked here), the token Secret with its key, and
/// the CA Secret with its key. `ca` is `None` when no CA Secret is referenced. Secret values
/// are never read into the message.
pub fn transit_seal_state(transit: &TransitSeal, token: Option<&Secret>, ca: Option<Option<&Secret>>) -> SealState {
    let unseal = openbao_api::UnsealSpec {
        type_: openbao_api::UnsealType::Transit,
        transit: Some(transit.clone()),
        kmip: None,
        kms: None,
        recovery_key: None,
    };
    let found = |name: &str| {
        if transit.token_secret_ref.as_ref().is_some_and(|t| t.name == name) {
            token
        } else {
            ca.flatten()
        }
    };
    seal_state(Some(&unseal), "2.7.2", ("ns", "c"), &found)
}

/// Checks what an auto-unseal seal needs (pure): the spec's rules again (admission checked them
/// already; objects stored before a rule existed are caught here), then every Secret key the
/// seal reads, looked up by name through `secret`. Reasons and messages name the Secret and
/// the spec field, never a value.
pub fn seal_state<'a>(
    unseal: Option<&openbao_api::UnsealSpec>,
    version: &str,
    cluster: (&str, &str),
    secret: &dyn Fn(&str) -> Option<&'a Secret>,
) -> SealState {
    if let Some((reason, message)) = openbao_api::seal_problem(unseal, version) {
        return SealState::Problem { reason, message };
    }
    let seal = openbao_api::seal_of(unseal);
    let has_key = |s: &Secret, key: &str| {
        s.data
            .as_ref()
            .is_some_and(|d| d.get(key).is_some_and(|v| !v.0.is_empty()))
    };
    for u in seal.secret_uses() {
        let (secret_missing, key_missing) = u.reasons;
        match secret(&u.secret.name) {
            None => {
                return SealState::Problem {
                    reason: secret_missing,
                    message: format!(
                        "Secret {} ({}) does not exist; create it with {} under key {}",
                        u.secret.name, u.field, u.holds, u.secret.key
                    ),
                };
            }
            Some(s) if !has_key(s, &u.secret.key) => {
                return SealState::Problem {
                    reason: key_missing,
                    message: format!(
                        "Secret {} ({}) has no non-empty key {}: {}",
                        u.secret.name, u.field, u.secret.key, u.holds
                    ),
                };
            }
            Some(_) => {}
        }
    }
    match seal {
        openbao_api::Seal::Static | openbao_api::Seal::MissingBlock(_) => SealState::Static,
        openbao_api::Seal::Transit(t) => SealState::Ready {
            reason: TRANSIT_CONFIGURED,
            message: match &t.login {
                None => "the transit token Secret (and CA Secret) are in place".into(),
                Some(login) => format!(
                    "the servers log in to the transit server at {} as role {} with their service-account \
                     token (audience {}, subject system:serviceaccount:{}:{})",
                    openbao_api::transit_login_path(login),
                    login.role,
                    names::transit_login_audience(cluster.0, cluster.1),
                    cluster.0,
                    names::service_account(cluster.1),
                ),
            },
        },
        openbao_api::Seal::Kmip(k) => SealState::Ready {
            reason: "KmipConfigured",
            message: format!(
                "the KMIP client certificate, key (and CA) Secrets are in place; the KMIP server at {} wraps the seal key",
                k.address
            ),
        },
        openbao_api::Seal::Kms(k) => SealState::Ready {
            reason: "KmsPluginConfigured",
            message: format!(
                "the {} KMS plugin is declared and its credentials Secrets are in place",
                k.wrapper.as_str()
            ),
        },
    }
}

/// Everything the status is derived from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub paused: bool,
    pub ready_replicas: i32,
    pub pods: Vec<PodView>,
    pub tls: TlsState,
    pub gateway: GatewayState,
    /// Set when the JWT issuer could not be discovered (bootstrap is blocked).
    pub trust_error: Option<String>,
    /// Set when the apiserver's addresses could not be read: the NetworkPolicy and the
    /// workloads were left as they are.
    pub network_error: Option<String>,
    /// Set when the spec breaks a rule admission should have enforced: nothing was applied.
    pub invalid_spec: Option<openbao_api::SpecViolation>,
    /// Set when applying objects failed.
    pub apply_error: Option<String>,
    /// What the operator's login to OpenBao (and the key sync behind it) showed.
    pub access: Access,
    /// This cluster's token audience (`names::jwt_audience`) when it has JWT login: recorded in
    /// `status.jwtAudience` while the cluster initializes (its roles are rendered with it) or
    /// once a login with it succeeded.
    pub jwt_audience: Option<String>,
    pub upgrade: UpgradeState,
    /// Each pod's `openbao.org/audit-hash` (the audit configuration it was started with).
    pub pod_audit_hashes: Vec<(String, Option<String>)>,
    pub seal: SealState,
    /// Raft membership as the leader's autopilot reports it (read with the operator's login).
    pub raft: super::raft_membership::RaftObservation,
}

/// What logging in to OpenBao as the operator showed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Access {
    /// Not tried (the cluster does not serve yet, or has no JWT login).
    #[default]
    NotTried,
    /// Logged in, and OpenBao trusts the apiserver's current keys.
    Ok,
    /// Login or key sync failed (the server may still be starting): logged, tried again.
    Failed(String),
    /// The apiserver itself accepts this cluster's audience: no token was sent.
    AudienceUnsafe(String),
    /// OpenBao's roles accept another audience; the message says what an admin runs.
    AudienceRefused { legacy: bool, message: String },
}

/// Reason of `Degraded` when where pods reach the apiserver could not be read (the operator's
/// Role in `default` is missing, say): the servers' NetworkPolicy cannot be written.
pub const APISERVER_DISCOVERY_FAILED: &str = "APIServerDiscoveryFailed";

/// Reason of `Degraded` when the apiserver accepts the cluster's token audience.
pub const TOKEN_AUDIENCE_UNSAFE: &str = "TokenAudienceUnsafe";
/// Reason of `Degraded` when a cluster an older operator initialized (shared audience
/// `openbao-internal`) refuses the operator's login with its own audience.
pub const LEGACY_TOKEN_AUDIENCE: &str = "LegacyTokenAudience";
/// Reason of `Degraded` when a cluster that recorded its audience refuses it: its data comes
/// from another cluster's backup, whose roles accept that cluster's audience.
pub const TOKEN_AUDIENCE_REFUSED: &str = "TokenAudienceRefused";

/// The audience the operators before per-cluster audiences used for every cluster.
pub const LEGACY_AUDIENCE: &str = "openbao-internal";

impl Access {
    /// OpenBao refused the operator's login with `audience` because of the audience. Legacy
    /// when the cluster is initialized and never recorded an audience (an older operator set
    /// it up). The message names the commands an admin runs (one per role), nothing secret.
    pub fn audience_refused(previous: &OpenBaoClusterStatus, roles: &[String], audience: &str) -> Self {
        let legacy = previous.initialized && previous.jwt_audience.is_none();
        let (why, login) = if legacy {
            (
                format!(
                    "this cluster was initialized by an older operator, whose JWT roles accept the audience \
                     {LEGACY_AUDIENCE} shared by all clusters"
                ),
                format!("kubectl create token <admin service account> --audience {LEGACY_AUDIENCE}"),
            )
        } else {
            (
                "its JWT roles accept another audience (its data was restored from another cluster's backup, \
                 whose audience they keep)"
                    .to_string(),
                "kubectl create token <admin service account> --audience <that cluster's status.jwtAudience>"
                    .to_string(),
            )
        };
        let writes: Vec<String> = roles
            .iter()
            // An older operator never wrote the seal-migration role: rewriting its audience
            // would fail (SealMigrationRoleMissing says how to create it).
            .filter(|role| !(legacy && role.as_str() == openbao_render::selfinit::SEAL_MIGRATION_ROLE))
            // `role_type=jwt` again: OpenBao reads a role update without it as an OIDC role
            // and refuses it (allowed_redirect_uris missing); the other fields are kept.
            .map(|role| format!("bao write auth/{JWT_MOUNT}/role/{role} role_type=jwt bound_audiences={audience}"))
            .collect();
        Self::AudienceRefused {
            legacy,
            message: format!(
                "OpenBao refused the operator's login with this cluster's audience {audience}: {why}. \
                 Log in as an admin (e.g. JWT role admin with a token from `{login}`) and run: {}",
                writes.join("; ")
            ),
        }
    }
}

impl Observed {
    /// What is known before the apply step: the rest is filled in as steps run.
    pub fn before_apply(paused: bool, ready_replicas: i32, pods: Vec<PodView>) -> Self {
        Self {
            paused,
            ready_replicas,
            pods,
            tls: TlsState::Ready {
                server_not_after: None,
                ca_not_after: None,
            },
            gateway: GatewayState::Disabled,
            trust_error: None,
            network_error: None,
            invalid_spec: None,
            apply_error: None,
            access: Access::NotTried,
            jwt_audience: None,
            upgrade: UpgradeState::NotRun,
            pod_audit_hashes: Vec::new(),
            seal: SealState::NotChecked,
            raft: Default::default(),
        }
    }
}

pub fn derive(
    spec: &OpenBaoClusterSpec,
    previous: &OpenBaoClusterStatus,
    observed: &Observed,
    generation: Option<i64>,
    now: Time,
) -> OpenBaoClusterStatus {
    let mut status = previous.clone();
    let mut set = |d: Desired| cond::set_condition(&mut status.conditions, d, generation, now.clone());
    let initialized = previous.initialized || observed.pods.iter().any(|p| p.initialized == Some(true));
    let replicas = spec.replicas;
    let ready = observed.ready_replicas;

    // Once initialized, Available needs a leader and a majority of healthy voters as autopilot
    // reports them (when the operator reads it), and all of them for AllReplicasReady.
    use super::raft_membership::{self as raft, Quorum};
    let quorum = if initialized {
        raft::quorum(&observed.raft, replicas)
    } else {
        Quorum::NotRead
    };
    let (voters_full, voters) = match &quorum {
        Quorum::Serving { full, message } => (*full, format!("; {message}")),
        _ => (true, String::new()),
    };
    set(if observed.paused {
        Desired::new(
            cond::AVAILABLE,
            Status::Unknown,
            "Paused",
            "spec.paused is true: the operator makes no changes",
        )
    } else if let Quorum::Lost { reason, message } = &quorum {
        Desired::new(cond::AVAILABLE, Status::False, *reason, message.clone())
    } else if ready >= replicas && voters_full {
        Desired::new(
            cond::AVAILABLE,
            Status::True,
            "AllReplicasReady",
            format!("{ready}/{replicas} servers unsealed and serving{voters}"),
        )
    } else if ready > replicas / 2 {
        Desired::new(
            cond::AVAILABLE,
            Status::True,
            "QuorumReady",
            format!("{ready}/{replicas} servers ready: a raft quorum serves{voters}"),
        )
    } else if let Some((pod, failure)) = observed
        .pods
        .iter()
        .filter(|p| p.sealed != Some(false))
        .find_map(|p| Some((&p.name, p.seal_failure.as_ref()?)))
    {
        Desired::new(
            cond::AVAILABLE,
            Status::False,
            "SealUnavailable",
            format!("{ready}/{replicas} servers ready; {pod} cannot start: {failure}"),
        )
    } else {
        Desired::new(
            cond::AVAILABLE,
            Status::False,
            "NotEnoughReplicas",
            format!("{ready}/{replicas} servers ready"),
        )
    });

    if !observed.paused {
        set(raft::condition(&observed.raft, replicas, spec.self_init.oidc.enabled));
    }

    set(match &observed.tls {
        TlsState::Ready { .. } if spec.tls.mode == TlsMode::OperatorManaged => Desired::new(
            cond::TLS_READY,
            Status::True,
            "OperatorManaged",
            "CA and server certificate issued by the operator",
        ),
        TlsState::Ready { .. } if spec.tls.cert_manager.is_some() => Desired::new(
            cond::TLS_READY,
            Status::True,
            "CertManagerIssued",
            "server certificate issued by cert-manager and valid",
        ),
        TlsState::Ready { .. } => Desired::new(
            cond::TLS_READY,
            Status::True,
            "ExternalSecretsPresent",
            "user-provided TLS Secrets found and the server certificate valid",
        ),
        TlsState::NotReady { reason, message } => {
            Desired::new(cond::TLS_READY, Status::False, *reason, message.clone())
        }
    });

    set(if initialized {
        Desired::new(
            cond::OPENBAO_INITIALIZED,
            Status::True,
            "SelfInitialized",
            "OpenBao initialized itself; the root token was revoked",
        )
    } else {
        Desired::new(
            cond::OPENBAO_INITIALIZED,
            Status::False,
            "WaitingForSelfInit",
            "the first server has not finished self-initialization",
        )
    });

    let reporting: Vec<&PodView> = observed.pods.iter().filter(|p| p.sealed.is_some()).collect();
    let sealed: Vec<&str> = reporting
        .iter()
        .filter(|p| p.sealed == Some(true))
        .map(|p| p.name.as_str())
        .collect();
    set(if reporting.is_empty() {
        Desired::new(
            cond::OPENBAO_SEALED,
            Status::Unknown,
            "NoServerReporting",
            "no server has reported its seal state yet",
        )
    } else if sealed.is_empty() {
        Desired::new(
            cond::OPENBAO_SEALED,
            Status::False,
            "Unsealed",
            format!("{} servers unsealed", reporting.len()),
        )
    } else {
        Desired::new(
            cond::OPENBAO_SEALED,
            Status::True,
            "ServersSealed",
            format!("sealed: {}", sealed.join(", ")),
        )
    });

    let oidc = &spec.self_init.oidc;
    let demo = openbao_render::selfinit::demo_enabled(spec);
    set(if let Some(err) = &observed.trust_error {
        Desired::new(
            cond::USER_ACCESS_BOOTSTRAP,
            Status::False,
            "IssuerDiscoveryFailed",
            err.clone(),
        )
    } else if oidc.enabled && oidc.admin_service_account.is_some() {
        let how = if demo {
            "JWT admin role and demo userpass login"
        } else {
            "JWT admin role"
        };
        Desired::new(cond::USER_ACCESS_BOOTSTRAP, Status::True, "AdminLoginConfigured", how)
    } else if demo {
        Desired::new(
            cond::USER_ACCESS_BOOTSTRAP,
            Status::True,
            "DemoLoginOnly",
            "only the demo userpass login can administer this cluster",
        )
    } else {
        Desired::new(
            cond::USER_ACCESS_BOOTSTRAP,
            Status::False,
            "NoAdminLogin",
            "no admin login is bootstrapped and the root token is revoked: set selfInit.oidc.adminServiceAccount or add an auth request",
        )
    });

    set(audit_ready(spec, observed));

    match observed.gateway {
        GatewayState::Disabled => status.conditions.retain(|c| c.type_ != cond::GATEWAY_INTEGRATION_READY),
        GatewayState::Attached => cond::set_condition(
            &mut status.conditions,
            Desired::new(
                cond::GATEWAY_INTEGRATION_READY,
                Status::True,
                "RouteApplied",
                "HTTPRoute and BackendTLSPolicy applied",
            ),
            generation,
            now.clone(),
        ),
        GatewayState::ApiMissing => cond::set_condition(
            &mut status.conditions,
            Desired::new(
                cond::GATEWAY_INTEGRATION_READY,
                Status::False,
                "GatewayAPIMissing",
                "the Gateway API (HTTPRoute, BackendTLSPolicy v1) is not installed in this cluster",
            ),
            generation,
            now.clone(),
        ),
    }

    // An upgrade starts, restarts and stops servers, which are sealed for a while by design; it
    // reports on them itself (`Upgrading`, `status.upgrade.lastError`), and `OpenBaoSealed` still
    // tells the truth.
    let upgrade_running = previous
        .upgrade
        .as_ref()
        .is_some_and(|u| u.phase != openbao_api::UpgradePhase::Idle);
    let problem = observed
        .invalid_spec
        .as_ref()
        .map(|v| (v.reason, v.message.clone()))
        .or_else(|| observed.apply_error.as_ref().map(|m| ("ApplyFailed", m.clone())))
        .or_else(|| match &observed.tls {
            TlsState::NotReady { reason, message } => Some((*reason, message.clone())),
            TlsState::Ready { .. } => None,
        })
        .or_else(|| {
            observed
                .trust_error
                .as_ref()
                .map(|m| ("IssuerDiscoveryFailed", m.clone()))
        })
        .or_else(|| {
            observed
                .network_error
                .as_ref()
                .map(|m| (APISERVER_DISCOVERY_FAILED, m.clone()))
        })
        .or_else(|| match &observed.seal {
            SealState::Problem { reason, message } => Some((*reason, message.clone())),
            _ => None,
        })
        .or_else(|| match &observed.access {
            Access::AudienceUnsafe(m) => Some((TOKEN_AUDIENCE_UNSAFE, m.clone())),
            Access::AudienceRefused { legacy: true, message } => Some((LEGACY_TOKEN_AUDIENCE, message.clone())),
            Access::AudienceRefused { legacy: false, message } => Some((TOKEN_AUDIENCE_REFUSED, message.clone())),
            _ => None,
        })
        .or_else(|| match &observed.upgrade {
            UpgradeState::StepFailed(m) => Some(("UpgradeStepFailed", m.clone())),
            _ => None,
        })
        .or_else(|| {
            (!sealed.is_empty() && !upgrade_running)
                .then(|| ("ServersSealed", format!("sealed: {}", sealed.join(", "))))
        });
    cond::set_condition(
        &mut status.conditions,
        match problem {
            Some((reason, message)) => Desired::new(cond::DEGRADED, Status::True, reason, message),
            None => Desired::new(cond::DEGRADED, Status::False, "Reconciled", "desired state applied"),
        },
        generation,
        now.clone(),
    );

    match upgrading(&status, &observed.upgrade) {
        Some(desired) => cond::set_condition(&mut status.conditions, desired, generation, now.clone()),
        None => status.conditions.retain(|c| c.type_ != UPGRADING),
    }

    let seal = match &observed.seal {
        SealState::NotChecked => None,
        SealState::Static => Some(Desired::new(
            UNSEAL_CONFIGURATION_READY,
            Status::True,
            "StaticSealKey",
            "the servers unseal with the key in the Secret of the static seal",
        )),
        SealState::Ready { reason, message } => Some(Desired::new(
            UNSEAL_CONFIGURATION_READY,
            Status::True,
            *reason,
            message.clone(),
        )),
        SealState::Problem { reason, message } => Some(Desired::new(
            UNSEAL_CONFIGURATION_READY,
            Status::False,
            *reason,
            message.clone(),
        )),
    };
    if let Some(desired) = seal {
        cond::set_condition(&mut status.conditions, desired, generation, now.clone());
    }

    if let Some(audience) = &observed.jwt_audience
        && (!initialized || observed.access == Access::Ok)
    {
        status.jwt_audience = Some(audience.clone());
    }

    let mut risk = security_risk(spec, demo);
    if risk.status == Status::False && migrating_from_static(previous) {
        risk = Desired::new(
            cond::SECURITY_RISK,
            Status::True,
            "StaticSealKeyInCluster",
            "a seal migration away from the static seal runs: its key stays in a Kubernetes Secret until every \
             server runs the new seal",
        );
    }
    cond::set_condition(&mut status.conditions, risk, generation, now);
    status.initialized = initialized;
    status.ready_replicas = ready;
    status.observed_generation = generation;
    status.active_leader = observed.pods.iter().find(|p| p.active).map(|p| p.name.clone());
    if initialized && status.current_version.is_none() {
        status.current_version = Some(spec.version.clone());
    }
    if let TlsState::Ready {
        server_not_after,
        ca_not_after,
    } = &observed.tls
    {
        status.tls = Some(TlsStatus {
            server_not_after: server_not_after.clone(),
            ca_not_after: ca_not_after.clone(),
        });
    }
    status.phase = Some(if observed.paused {
        ClusterPhase::Paused
    } else if observed.apply_error.is_some() {
        ClusterPhase::Failed
    } else if !initialized {
        ClusterPhase::Initializing
    } else if ready >= replicas {
        ClusterPhase::Running
    } else {
        ClusterPhase::Degraded
    });
    status
}

/// `AuditReady`: True once every server is unsealed running the current audit devices (its pod
/// carries their hash; the devices are in `30-audit.hcl` of every set's ConfigMap). Without
/// devices it is False, `NotConfigured`, whatever the profile: nothing is audited, which is
/// worth seeing (admission refuses a Hardened cluster without devices, so under Hardened it only
/// appears on clusters created before that rule). Devices breaking an admission rule (checked
/// again in Rust) give `InvalidSpec`.
fn audit_ready(spec: &OpenBaoClusterSpec, observed: &Observed) -> Desired {
    let Some(want) = openbao_render::config::audit_hash(spec) else {
        let message = match spec.profile {
            Profile::Hardened => {
                "spec.audit declares no audit device: requests are not audited (the Hardened profile requires one)"
            }
            Profile::Development => "spec.audit declares no audit device: requests are not audited",
        };
        return Desired::new(cond::AUDIT_READY, Status::False, "NotConfigured", message);
    };
    let problems = openbao_api::audit::problems(spec);
    if !problems.is_empty() {
        return Desired::new(cond::AUDIT_READY, Status::False, "InvalidSpec", problems.join("; "));
    }
    let devices: Vec<&str> = spec.audit.iter().map(|d| d.name.as_str()).collect();
    let total = observed.pod_audit_hashes.len();
    let current = observed
        .pod_audit_hashes
        .iter()
        .filter(|(pod, hash)| {
            hash.as_deref() == Some(want.as_str())
                && observed.pods.iter().any(|p| &p.name == pod && p.sealed == Some(false))
        })
        .count();
    if total > 0 && current == total {
        Desired::new(
            cond::AUDIT_READY,
            Status::True,
            "DevicesEnabled",
            format!("audit devices {} enabled on all {total} servers", devices.join(", ")),
        )
    } else {
        Desired::new(
            cond::AUDIT_READY,
            Status::False,
            "ServersPending",
            format!(
                "{current}/{total} servers run the current audit devices ({}) unsealed",
                devices.join(", ")
            ),
        )
    }
}

/// A seal migration from the static seal has begun and not finished (the key Secret exists).
fn migrating_from_static(status: &OpenBaoClusterStatus) -> bool {
    status.seal_migration.as_ref().is_some_and(|m| {
        m.phase != openbao_api::SealMigrationPhase::Idle && m.from == Some(openbao_api::UnsealType::Static)
    })
}

/// `SecurityRisk`: True exactly while something in the cluster alone opens the data: the static
/// seal's key (a Kubernetes Secret) or the demo login's shared password.
fn security_risk(spec: &OpenBaoClusterSpec, demo: bool) -> Desired {
    let seal = openbao_api::seal_of(spec.unseal.as_ref());
    if demo {
        let seal = if seal.key_in_cluster() {
            ", a seal key stored in Kubernetes"
        } else {
            ""
        };
        return Desired::new(
            cond::SECURITY_RISK,
            Status::True,
            "DemoLoginEnabled",
            format!("the demo userpass login is enabled (a shared password){seal}: never use this for real secrets"),
        );
    }
    let outside = |holder: String| {
        Desired::new(
            cond::SECURITY_RISK,
            Status::False,
            "SealKeyOutsideCluster",
            format!("the seal key is held by {holder}"),
        )
    };
    match seal {
        // A missing block never runs (UnsealConfigurationReady stays False); reported as static.
        openbao_api::Seal::Static | openbao_api::Seal::MissingBlock(_) => Desired::new(
            cond::SECURITY_RISK,
            Status::True,
            "StaticSealKeyInCluster",
            "the seal key is stored in a Kubernetes Secret: whoever reads it and a volume or a snapshot reads every secret; use spec.unseal.type: transit, kmip or kms",
        ),
        openbao_api::Seal::Transit(t) => outside(format!("the transit server at {}", t.address)),
        openbao_api::Seal::Kmip(k) => outside(format!("the KMIP server at {}", k.address)),
        openbao_api::Seal::Kms(k) => outside(format!("the KMS behind the {} plugin", k.wrapper.as_str())),
    }
}

/// The `Upgrading` condition: only on clusters that ever had an upgrade (or a refused one).
fn upgrading(status: &OpenBaoClusterStatus, state: &UpgradeState) -> Option<Desired> {
    if let UpgradeState::Refused { reason, message } = state {
        return Some(Desired::new(UPGRADING, Status::False, *reason, message.clone()));
    }
    let u = status.upgrade.as_ref()?;
    let message = u.message.clone().unwrap_or_default();
    Some(if u.phase != UpgradePhase::Idle {
        Desired::new(UPGRADING, Status::True, format!("{:?}", u.phase), message)
    } else if let Some(e) = &u.last_error {
        Desired::new(UPGRADING, Status::False, e.reason.clone(), e.message.clone())
    } else {
        Desired::new(UPGRADING, Status::False, "Idle", message)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(extra: serde_json::Value) -> OpenBaoClusterSpec {
        let mut v = serde_json::json!({"version": "2.7.2", "profile": "Development", "storage": {"size": "1Gi"}});
        for (k, val) in extra.as_object().unwrap() {
            v[k] = val.clone();
        }
        serde_json::from_value(v).unwrap()
    }

    fn observed() -> Observed {
        Observed::before_apply(false, 0, vec![])
    }

    fn now() -> Time {
        Time("2026-01-01T00:00:00Z".parse().unwrap())
    }

    fn reason(s: &OpenBaoClusterStatus, t: &str) -> (String, String) {
        let c = cond::find(&s.conditions, t).unwrap_or_else(|| panic!("{t} missing"));
        (c.status.clone(), c.reason.clone())
    }

    #[test]
    fn a_new_cluster_is_initializing_and_flags_its_risks() {
        let s = derive(
            &spec(serde_json::json!({})),
            &Default::default(),
            &observed(),
            Some(1),
            now(),
        );
        assert_eq!(s.phase, Some(ClusterPhase::Initializing));
        assert_eq!(
            reason(&s, cond::AVAILABLE),
            ("False".into(), "NotEnoughReplicas".into())
        );
        assert_eq!(
            reason(&s, cond::SECURITY_RISK),
            ("True".into(), "StaticSealKeyInCluster".into())
        );
        assert_eq!(
            reason(&s, cond::USER_ACCESS_BOOTSTRAP),
            ("False".into(), "NoAdminLogin".into())
        );
        assert_eq!(reason(&s, cond::OPENBAO_SEALED).0, "Unknown");
        assert!(cond::find(&s.conditions, cond::GATEWAY_INTEGRATION_READY).is_none());
    }

    #[test]
    fn a_server_that_cannot_reach_its_seal_says_so_in_available() {
        let log = "==> OpenBao server configuration:\n\
            Error configuring seal \"transit\": Put \"https://openbao.vault.svc:8200/v1/transit/encrypt/k\": dial tcp 10.43.0.9:8200: connect: connection refused\x1b[0m\n";
        let transit = spec(serde_json::json!({"unseal": {"type": "transit", "transit": {
            "address": "https://openbao.vault.svc:8200", "keyName": "k",
            "tokenSecretRef": {"name": "t", "key": "token"}}}}));
        let seal = openbao_api::seal_of(transit.unseal.as_ref());
        let failure = seal_start_failure(log, &seal).expect("the seal line is found");
        assert!(
            failure.starts_with("Error configuring seal \"transit\": Put"),
            "{failure}"
        );
        assert!(!failure.chars().any(char::is_control), "{failure:?}");
        assert_eq!(seal_start_failure("panic: something else\n", &seal), None);
        assert!(
            seal_start_failure(&format!("Error configuring seal \"x\": {}", "y".repeat(5000)), &seal)
                .is_some_and(|f| f.chars().count() == SEAL_FAILURE_MAX_CHARS)
        );

        let mut o = observed();
        o.ready_replicas = 1;
        o.pods = (0..3)
            .map(|i| PodView {
                name: format!("b-{i}"),
                initialized: Some(true),
                sealed: Some(i != 0),
                active: i == 0,
                // A pod serving now keeps its last failure in lastState: it must not be blamed.
                seal_failure: Some(if i == 0 { "old".into() } else { failure.clone() }),
            })
            .collect();
        let s = derive(&transit, &Default::default(), &o, Some(1), now());
        assert_eq!(reason(&s, cond::AVAILABLE), ("False".into(), "SealUnavailable".into()));
        let message = &cond::find(&s.conditions, cond::AVAILABLE).unwrap().message;
        assert!(
            message.starts_with("1/3 servers ready; b-1 cannot start: Error configuring seal"),
            "{message}"
        );

        o.ready_replicas = 3;
        let s = derive(&transit, &Default::default(), &o, Some(1), now());
        assert_eq!(reason(&s, cond::AVAILABLE), ("True".into(), "AllReplicasReady".into()));
    }

    #[test]
    fn a_kms_plugin_error_stays_in_the_pod_log() {
        let kms = spec(serde_json::json!({"unseal": {"type": "kms", "kms": {
            "wrapper": "awskms", "plugin": {"command": "p", "sha256sum": "0".repeat(64)}}}}));
        let seal = openbao_api::seal_of(kms.unseal.as_ref());
        assert!(matches!(seal, openbao_api::Seal::Kms(_)));
        let f = seal_start_failure("Error configuring seal \"awskms\": AKIAEXAMPLE denied", &seal).unwrap();
        assert!(!f.contains("AKIA"), "{f}");
    }

    #[test]
    fn a_healthy_cluster_runs_and_reports_its_leader() {
        let mut o = observed();
        o.ready_replicas = 3;
        o.pods = (0..3)
            .map(|i| PodView {
                name: format!("b-{i}"),
                initialized: Some(true),
                sealed: Some(false),
                active: i == 1,
                seal_failure: None,
            })
            .collect();
        o.gateway = GatewayState::Attached;
        let sp = spec(
            serde_json::json!({"selfInit": {"oidc": {"adminServiceAccount": {"name": "admin"}},
            "demoUserpass": {"passwordSecretRef": {"name": "pw"}}}}),
        );
        let s = derive(&sp, &Default::default(), &o, Some(2), now());
        assert_eq!(s.phase, Some(ClusterPhase::Running));
        assert_eq!(s.active_leader.as_deref(), Some("b-1"));
        assert_eq!(s.current_version.as_deref(), Some("2.7.2"));
        assert_eq!(reason(&s, cond::OPENBAO_SEALED), ("False".into(), "Unsealed".into()));
        assert_eq!(
            reason(&s, cond::GATEWAY_INTEGRATION_READY),
            ("True".into(), "RouteApplied".into())
        );
        assert_eq!(
            reason(&s, cond::SECURITY_RISK),
            ("True".into(), "DemoLoginEnabled".into())
        );
        assert_eq!(reason(&s, cond::DEGRADED), ("False".into(), "Reconciled".into()));
    }

    #[test]
    fn available_means_voters_once_membership_is_read() {
        use super::super::raft_membership::{Membership, RaftObservation};
        let mut o = observed();
        o.ready_replicas = 3;
        o.pods = (0..3)
            .map(|i| PodView {
                name: format!("b-{i}"),
                initialized: Some(true),
                sealed: Some(false),
                active: i == 0,
                seal_failure: None,
            })
            .collect();
        let sp = spec(serde_json::json!({}));
        let membership = |healthy_voters, voters, leader: bool| {
            RaftObservation::Read(Membership {
                leader: leader.then(|| "b-0".to_string()),
                voters,
                healthy_voters,
                healthy: healthy_voters == 3,
            })
        };
        let cases = [
            // Ready pods alone while membership is not read.
            (
                RaftObservation::NotRead,
                ("True", "AllReplicasReady"),
                ("Unknown", "NotObserved"),
            ),
            (
                membership(3, 3, true),
                ("True", "AllReplicasReady"),
                ("True", "Healthy"),
            ),
            // Pods ready, but one server joined as a non-voter: a quorum serves, not all of it.
            (
                membership(2, 2, true),
                ("True", "QuorumReady"),
                ("False", "VotersMissing"),
            ),
            (membership(2, 3, true), ("True", "QuorumReady"), ("False", "Unhealthy")),
            (
                membership(1, 3, true),
                ("False", "NoRaftQuorum"),
                ("False", "Unhealthy"),
            ),
            (membership(3, 3, false), ("False", "NoLeader"), ("False", "NoLeader")),
            (
                RaftObservation::Unreadable("reading the raft autopilot state: HTTP 500".into()),
                ("False", "RaftMembershipUnknown"),
                ("Unknown", "Unknown"),
            ),
        ];
        for (raft, available, membership) in cases {
            o.raft = raft.clone();
            let s = derive(&sp, &Default::default(), &o, Some(1), now());
            let pair = |(a, b): (&str, &str)| (a.to_string(), b.to_string());
            assert_eq!(reason(&s, cond::AVAILABLE), pair(available), "{raft:?}");
            assert_eq!(reason(&s, cond::RAFT_MEMBERSHIP_READY), pair(membership), "{raft:?}");
        }
        // Before initialization membership does not gate Available.
        o.pods.iter_mut().for_each(|p| p.initialized = Some(false));
        o.raft = RaftObservation::Unreadable("x".into());
        let s = derive(&sp, &Default::default(), &o, Some(1), now());
        assert_eq!(reason(&s, cond::AVAILABLE).1, "AllReplicasReady");
    }

    #[test]
    fn problems_surface_as_degraded_with_a_reason() {
        let mut o = observed();
        o.gateway = GatewayState::ApiMissing;
        o.tls = TlsState::NotReady {
            reason: tls_reason::SECRET_MISSING,
            message: "secret t-tls-server not found".into(),
        };
        let s = derive(&spec(serde_json::json!({})), &Default::default(), &o, Some(1), now());
        assert_eq!(
            reason(&s, cond::GATEWAY_INTEGRATION_READY),
            ("False".into(), "GatewayAPIMissing".into())
        );
        assert_eq!(reason(&s, cond::DEGRADED), ("True".into(), "TLSSecretMissing".into()));
        o.paused = true;
        let s = derive(&spec(serde_json::json!({})), &s, &o, Some(1), now());
        assert_eq!(s.phase, Some(ClusterPhase::Paused));
        assert_eq!(reason(&s, cond::AVAILABLE), ("Unknown".into(), "Paused".into()));
    }

    #[test]
    fn an_invalid_spec_is_the_degraded_reason_before_any_other() {
        let mut o = observed();
        o.tls = TlsState::NotReady {
            reason: tls_reason::SECRET_MISSING,
            message: "secret t-tls-server not found".into(),
        };
        o.invalid_spec = Some(openbao_api::SpecViolation {
            reason: "InvalidSelfInitRequest",
            message: "spec.selfInit.requests[0].data.a.a.a.a.a.a.a: nested deeper than 6 levels".into(),
        });
        let s = derive(&spec(serde_json::json!({})), &Default::default(), &o, Some(1), now());
        assert_eq!(
            reason(&s, cond::DEGRADED),
            ("True".into(), "InvalidSelfInitRequest".into())
        );
        let degraded = s.conditions.iter().find(|c| c.type_ == cond::DEGRADED).unwrap();
        assert!(degraded.message.starts_with("spec.selfInit.requests[0].data.a"));
    }

    #[test]
    fn servers_an_upgrade_starts_or_stops_are_sealed_without_degrading_the_cluster() {
        let mut o = observed();
        o.ready_replicas = 3;
        o.pods = ["b-0", "b-v2-7-2-0"]
            .iter()
            .map(|name| PodView {
                name: name.to_string(),
                initialized: Some(true),
                sealed: Some(name.contains("v2-7-2")),
                active: *name == "b-0",
                seal_failure: None,
            })
            .collect();
        let sp = spec(serde_json::json!({}));
        let s = derive(&sp, &Default::default(), &o, Some(1), now());
        assert_eq!(reason(&s, cond::DEGRADED), ("True".into(), "ServersSealed".into()));
        let deploying = OpenBaoClusterStatus {
            upgrade: Some(openbao_api::UpgradeStatus {
                phase: openbao_api::UpgradePhase::DeployingGreen,
                ..Default::default()
            }),
            ..Default::default()
        };
        let s = derive(&sp, &deploying, &o, Some(1), now());
        assert_eq!(reason(&s, cond::DEGRADED), ("False".into(), "Reconciled".into()));
        assert_eq!(
            reason(&s, cond::OPENBAO_SEALED),
            ("True".into(), "ServersSealed".into())
        );
    }

    #[test]
    fn upgrades_show_their_phase_and_refusals() {
        let sp = spec(serde_json::json!({}));
        let s = derive(&sp, &Default::default(), &observed(), Some(1), now());
        assert!(cond::find(&s.conditions, UPGRADING).is_none(), "no upgrade ever");
        let mut o = observed();
        o.upgrade = UpgradeState::Refused {
            reason: "BlueGreenNotAvailable",
            message: "not here".into(),
        };
        let s = derive(&sp, &s, &o, Some(1), now());
        assert_eq!(reason(&s, UPGRADING), ("False".into(), "BlueGreenNotAvailable".into()));
        let rolling = OpenBaoClusterStatus {
            upgrade: Some(openbao_api::UpgradeStatus {
                phase: UpgradePhase::RollingUpdate,
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut o = observed();
        o.upgrade = UpgradeState::StepFailed("lane-2 did not answer".into());
        let s = derive(&sp, &rolling, &o, Some(1), now());
        assert_eq!(reason(&s, UPGRADING), ("True".into(), "RollingUpdate".into()));
        assert_eq!(reason(&s, cond::DEGRADED), ("True".into(), "UpgradeStepFailed".into()));
        o.upgrade = UpgradeState::StepRetrying;
        let s = derive(&sp, &rolling, &o, Some(1), now());
        assert_eq!(reason(&s, UPGRADING), ("True".into(), "RollingUpdate".into()));
        assert_eq!(reason(&s, cond::DEGRADED), ("False".into(), "Reconciled".into()));
    }

    #[test]
    fn audit_is_ready_once_every_server_runs_the_devices_unsealed() {
        let none = derive(
            &spec(serde_json::json!({})),
            &Default::default(),
            &observed(),
            Some(1),
            now(),
        );
        assert_eq!(
            reason(&none, cond::AUDIT_READY),
            ("False".into(), "NotConfigured".into())
        );
        let sp = spec(serde_json::json!({"audit": [
            {"type": "file", "name": "file", "fileOptions": {"filePath": "stdout"}}]}));
        let want = openbao_render::config::audit_hash(&sp);
        let mut o = observed();
        o.pods = (0..2)
            .map(|i| PodView {
                name: format!("b-{i}"),
                initialized: Some(true),
                sealed: Some(false),
                active: i == 0,
                seal_failure: None,
            })
            .collect();
        o.pod_audit_hashes = vec![("b-0".into(), want.clone()), ("b-1".into(), None)];
        let s = derive(&sp, &Default::default(), &o, Some(1), now());
        assert_eq!(reason(&s, cond::AUDIT_READY), ("False".into(), "ServersPending".into()));
        o.pod_audit_hashes[1].1 = want.clone();
        let s = derive(&sp, &s, &o, Some(1), now());
        assert_eq!(reason(&s, cond::AUDIT_READY), ("True".into(), "DevicesEnabled".into()));
        // A sealed server audits nothing yet.
        o.pods[1].sealed = Some(true);
        let s = derive(&sp, &s, &o, Some(1), now());
        assert_eq!(reason(&s, cond::AUDIT_READY).0, "False");
        // Rules admission enforces are checked again (an object admitted under an older CRD).
        let raw = spec(serde_json::json!({"audit": [
            {"type": "file", "name": "file", "fileOptions": {"filePath": "/var/log/audit.log"}}]}));
        let s = derive(&raw, &s, &o, Some(1), now());
        assert_eq!(reason(&s, cond::AUDIT_READY), ("False".into(), "InvalidSpec".into()));
        // Changed devices: the pods' hash is no longer current.
        let other = spec(serde_json::json!({"audit": [
            {"type": "file", "name": "other", "fileOptions": {"filePath": "stdout"}}]}));
        o.pods[1].sealed = Some(false);
        let s = derive(&other, &s, &o, Some(1), now());
        assert_eq!(reason(&s, cond::AUDIT_READY), ("False".into(), "ServersPending".into()));
    }

    #[test]
    fn the_audience_is_recorded_at_initialization_or_once_it_logs_in() {
        let sp = spec(serde_json::json!({}));
        let mut o = observed();
        o.jwt_audience = Some("openbao-operator.openbao.org/ns/b".into());
        let s = derive(&sp, &Default::default(), &o, Some(1), now());
        assert_eq!(s.jwt_audience, o.jwt_audience, "a new cluster initializes with it");
        // Initialized by an older operator: nothing recorded until a login proves the roles.
        let legacy = OpenBaoClusterStatus {
            initialized: true,
            ..Default::default()
        };
        o.access = Access::Failed("connection refused".into());
        assert_eq!(derive(&sp, &legacy, &o, Some(1), now()).jwt_audience, None);
        o.access = Access::Ok;
        assert_eq!(derive(&sp, &legacy, &o, Some(1), now()).jwt_audience, o.jwt_audience);
    }

    #[test]
    fn a_refused_audience_says_what_the_admin_runs() {
        let roles: Vec<String> = [
            "openbao-operator",
            "openbao-operator-seal-migration",
            "openbao-operator-backup",
            "admin",
        ]
        .map(String::from)
        .to_vec();
        let audience = "openbao-operator.openbao.org/team-a/bao";
        let legacy = OpenBaoClusterStatus {
            initialized: true,
            ..Default::default()
        };
        let access = Access::audience_refused(&legacy, &roles, audience);
        let Access::AudienceRefused { legacy: true, message } = &access else {
            panic!("legacy: initialized and no audience recorded: {access:?}");
        };
        assert!(message.contains("--audience openbao-internal"), "{message}");
        assert!(
            message.ends_with(
                "run: bao write auth/jwt-operator/role/openbao-operator role_type=jwt bound_audiences=openbao-operator.openbao.org/team-a/bao; \
                 bao write auth/jwt-operator/role/openbao-operator-backup role_type=jwt bound_audiences=openbao-operator.openbao.org/team-a/bao; \
                 bao write auth/jwt-operator/role/admin role_type=jwt bound_audiences=openbao-operator.openbao.org/team-a/bao"
            ),
            "{message}"
        );
        let mut o = observed();
        o.access = access;
        let s = derive(&spec(serde_json::json!({})), &legacy, &o, Some(1), now());
        assert_eq!(
            reason(&s, cond::DEGRADED),
            ("True".into(), LEGACY_TOKEN_AUDIENCE.into())
        );

        // A cluster that recorded its audience and refuses it holds another cluster's data.
        let recorded = OpenBaoClusterStatus {
            initialized: true,
            jwt_audience: Some(audience.into()),
            ..Default::default()
        };
        o.access = Access::audience_refused(&recorded, &roles, audience);
        assert!(
            matches!(&o.access, Access::AudienceRefused { legacy: false, message } if message.contains("restored"))
        );
        // Restored data may come from a cluster that has the seal-migration role: it is moved too
        // (an older operator's cluster never had it, so the legacy commands leave it out).
        assert!(matches!(&o.access, Access::AudienceRefused { message, .. }
                if message.contains("role/openbao-operator-seal-migration role_type=jwt")));
        let s = derive(&spec(serde_json::json!({})), &recorded, &o, Some(1), now());
        assert_eq!(
            reason(&s, cond::DEGRADED),
            ("True".into(), TOKEN_AUDIENCE_REFUSED.into())
        );

        o.access = Access::AudienceUnsafe("the apiserver accepts it".into());
        let s = derive(&spec(serde_json::json!({})), &recorded, &o, Some(1), now());
        assert_eq!(
            reason(&s, cond::DEGRADED),
            ("True".into(), TOKEN_AUDIENCE_UNSAFE.into())
        );
    }

    #[test]
    fn same_inputs_give_the_same_status() {
        let o = observed();
        let sp = spec(serde_json::json!({}));
        let first = derive(&sp, &Default::default(), &o, Some(1), now());
        let later = Time("2026-01-01T01:00:00Z".parse().unwrap());
        assert_eq!(
            derive(&sp, &first, &o, Some(1), later),
            first,
            "no status write when nothing changed"
        );
    }

    fn transit_spec(demo: bool) -> OpenBaoClusterSpec {
        let mut extra = serde_json::json!({"unseal": {"type": "transit", "transit": {
            "address": "https://transit.vault.svc:8200", "keyName": "unseal",
            "tokenSecretRef": {"name": "transit-token", "key": "token"},
            "caSecretRef": {"name": "transit-ca", "key": "ca.crt"},
        }}});
        if demo {
            extra["selfInit"] = serde_json::json!({"demoUserpass": {"passwordSecretRef": {"name": "pw"}}});
        }
        spec(extra)
    }

    fn secret(data: &[(&str, &str)]) -> Secret {
        Secret {
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), k8s_openapi::ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn security_risk_is_true_exactly_while_the_seal_key_or_a_shared_password_is_in_the_cluster() {
        let risk = |sp: &OpenBaoClusterSpec| {
            reason(
                &derive(sp, &Default::default(), &observed(), Some(1), now()),
                cond::SECURITY_RISK,
            )
        };
        assert_eq!(
            risk(&spec(serde_json::json!({}))),
            ("True".into(), "StaticSealKeyInCluster".into())
        );
        assert_eq!(
            risk(&spec(serde_json::json!({"unseal": {"type": "static"}}))),
            ("True".into(), "StaticSealKeyInCluster".into())
        );
        assert_eq!(
            risk(&transit_spec(false)),
            ("False".into(), "SealKeyOutsideCluster".into())
        );
        assert_eq!(risk(&transit_spec(true)), ("True".into(), "DemoLoginEnabled".into()));
        let hardened = spec(serde_json::json!({"profile": "Hardened", "tls": {"mode": "External"},
            "unseal": transit_spec(false).unseal}));
        assert_eq!(risk(&hardened), ("False".into(), "SealKeyOutsideCluster".into()));
        // Migrating from static to transit: the static key Secret is there until the end.
        let mut migrating = OpenBaoClusterStatus {
            seal_migration: Some(openbao_api::SealMigrationStatus {
                phase: openbao_api::SealMigrationPhase::Standbys,
                from: Some(openbao_api::UnsealType::Static),
                to: Some(openbao_api::UnsealType::Transit),
                ..Default::default()
            }),
            ..Default::default()
        };
        let during = |status: &OpenBaoClusterStatus| {
            reason(
                &derive(&transit_spec(false), status, &observed(), Some(1), now()),
                cond::SECURITY_RISK,
            )
        };
        assert_eq!(during(&migrating), ("True".into(), "StaticSealKeyInCluster".into()));
        migrating.seal_migration = Some(Default::default());
        assert_eq!(during(&migrating), ("False".into(), "SealKeyOutsideCluster".into()));
    }

    #[test]
    fn a_missing_transit_secret_is_a_reason_not_an_error() {
        let sp = transit_spec(false);
        let t = sp.unseal.as_ref().unwrap().transit.as_ref().unwrap();
        let token = secret(&[("token", "s.not-looked-at")]);
        let ca = secret(&[("ca.crt", "PEM")]);
        let state = |token: Option<&Secret>, ca: Option<&Secret>| transit_seal_state(t, token, Some(ca));
        let ready = state(Some(&token), Some(&ca));
        assert!(
            matches!(&ready, SealState::Ready { reason: TRANSIT_CONFIGURED, message } if message.contains("token Secret")),
            "{ready:?}"
        );
        // With a login there is no token Secret to look for; the message says what to bind.
        let mut login = t.clone();
        login.token_secret_ref = None;
        login.login = Some(openbao_api::TransitLogin {
            mount_path: "k8s/jwt".into(),
            role: "sealer".into(),
        });
        let SealState::Ready {
            reason: TRANSIT_CONFIGURED,
            message,
        } = transit_seal_state(&login, None, Some(Some(&ca)))
        else {
            panic!("login not ready")
        };
        assert_eq!(
            message,
            "the servers log in to the transit server at auth/k8s/jwt/login as role sealer with their \
             service-account token (audience openbao-operator.openbao.org/transit/ns/c, subject \
             system:serviceaccount:ns:c-serviceaccount)"
        );
        login.token_secret_ref = t.token_secret_ref.clone();
        assert!(matches!(
            transit_seal_state(&login, Some(&token), Some(Some(&ca))),
            SealState::Problem {
                reason: "InvalidTransitAuth",
                ..
            }
        ));
        for (got, want) in [
            (state(None, Some(&ca)), "TokenSecretMissing"),
            (
                state(Some(&secret(&[("other", "x")])), Some(&ca)),
                "TokenSecretKeyMissing",
            ),
            (
                state(Some(&secret(&[("token", "")])), Some(&ca)),
                "TokenSecretKeyMissing",
            ),
            (state(Some(&token), None), "CASecretMissing"),
            (state(Some(&token), Some(&secret(&[]))), "CASecretKeyMissing"),
        ] {
            let SealState::Problem { reason: why, message } = &got else {
                panic!("{want}: {got:?}")
            };
            assert_eq!(*why, want);
            assert!(message.contains("spec.unseal.transit."), "{message}");
            assert!(!message.contains("s.not-looked-at"), "{message}");
            assert!(!got.is_ready());
            let mut o = observed();
            o.seal = got.clone();
            let s = derive(&sp, &Default::default(), &o, Some(1), now());
            assert_eq!(
                reason(&s, UNSEAL_CONFIGURATION_READY),
                ("False".into(), want.to_string())
            );
            assert_eq!(reason(&s, cond::DEGRADED), ("True".into(), want.to_string()));
        }
        let mut bad = t.clone();
        bad.address = "https://169.254.169.254".into();
        assert!(matches!(
            transit_seal_state(&bad, Some(&token), Some(Some(&ca))),
            SealState::Problem {
                reason: "InvalidTransitAddress",
                ..
            }
        ));
        let mut o = observed();
        o.seal = ready;
        let s = derive(&sp, &Default::default(), &o, Some(1), now());
        assert_eq!(
            reason(&s, UNSEAL_CONFIGURATION_READY),
            ("True".into(), "TransitConfigured".into())
        );
        // A paused cluster is not looked at: the condition stays as it was.
        let paused = derive(&sp, &s, &observed(), Some(1), now());
        assert_eq!(
            reason(&paused, UNSEAL_CONFIGURATION_READY),
            ("True".into(), "TransitConfigured".into())
        );
    }

    #[test]
    fn kms_and_kmip_seal_states() {
        let kms = |version: &str| {
            spec(
                serde_json::json!({"version": version, "unseal": {"type": "kms", "kms": {
                    "wrapper": "pkcs11", "plugin": {"command": "p", "sha256sum": "0".repeat(64)},
                    "credentialsEnv": [{"name": "BAO_HSM_PIN", "secretKeyRef": {"name": "hsm", "key": "pin"}}],
                }}}),
            )
        };
        let pin = secret(&[("pin", "1234-never-in-a-message")]);
        let with_pin = |_: &str| Some(&pin);
        let nothing = |_: &str| None;
        // OpenBao 2.6 has no plugin seals the operator configures: refused before any Secret.
        let old = kms("2.6.2");
        let SealState::Problem { reason: why, message } =
            seal_state(old.unseal.as_ref(), &old.version, ("ns", "c"), &with_pin)
        else {
            panic!("2.6.2 accepted")
        };
        assert_eq!(why, "InvalidKmsSeal");
        assert!(
            message.starts_with("spec.unseal.type: kms needs OpenBao 2.7"),
            "{message}"
        );
        let new = kms("2.7.2");
        let SealState::Problem { reason: why, message } =
            seal_state(new.unseal.as_ref(), "2.7.2", ("ns", "c"), &nothing)
        else {
            panic!("missing credentials accepted")
        };
        assert_eq!(why, "CredentialsSecretMissing");
        assert!(
            message.contains("Secret hsm (spec.unseal.kms.credentialsEnv[0].secretKeyRef)"),
            "{message}"
        );
        let ready = seal_state(new.unseal.as_ref(), "2.7.2", ("ns", "c"), &with_pin);
        let SealState::Ready { reason: why, message } = &ready else {
            panic!("{ready:?}")
        };
        assert_eq!(*why, "KmsPluginConfigured");
        assert!(!message.contains("1234"), "{message}");
        assert_eq!(
            reason(
                &derive(&new, &Default::default(), &observed(), Some(1), now()),
                cond::SECURITY_RISK
            ),
            ("False".into(), "SealKeyOutsideCluster".into())
        );
        // A type without its block (stored before the rule): refused, never run.
        let bare = spec(serde_json::json!({"unseal": {"type": "kmip"}}));
        assert!(matches!(
            seal_state(bare.unseal.as_ref(), "2.7.2", ("ns", "c"), &nothing),
            SealState::Problem {
                reason: "SealBlockMissing",
                ..
            }
        ));
    }
}
