//! The servers' NetworkPolicy through the OpenBaoCluster controller on a real kube-apiserver.
//!
//! Proven:
//! - the operator reads where pods reach the apiserver from the apiserver itself: the
//!   `default/kubernetes` Service's ClusterIP on its port, and every ready endpoint of its
//!   EndpointSlices (this loopback apiserver publishes none, `--endpoint-reconciler-type=none`,
//!   so the test writes one as a real control plane's reconciler would); the applied policy lets
//!   the servers reach exactly those, admits the API from the operator's namespace, its external
//!   source CIDR and the cluster's executor Jobs, and no longer from the whole namespace;
//! - an operator that may not read them (no Role in `default`) writes no policy and starts no
//!   pod: the cluster is `Degraded` with reason `APIServerDiscoveryFailed`; once the shipped Role
//!   (deploy/operator/rbac.yaml) is bound, the next reconcile writes both;
//! - the executor Jobs' policy `<c>-jobs-network-policy` is written with the backups: no ingress,
//!   egress to DNS, the servers' 8200 and the in-cluster store's namespace and port; it is
//!   pruned when `spec.backup` is removed;
//! - admission refuses `spec.network.ingressRules` under `Hardened`, and a seal reaching outside
//!   the cluster (a transit server outside it, KMIP) without `spec.network.egressRules`, each
//!   message naming the field; an in-cluster transit seal needs no rule. Likewise a backup store
//!   and a socket audit device outside the cluster, where admission and the operator agree on
//!   what is inside; under `Hardened` an egress rule without ports or with a wildcard peer.

mod apiserver_common;

use anyhow::{Context as _, Result, bail, ensure};
use apiserver_common::{
    OPERATOR_NAMESPACE, admitted, client_with_crds, cluster_object, context, merged, refusal, untyped_clusters,
};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use openbao_api::{OpenBaoCluster, conditions, names};
use openbao_operator::context::{Context, NetworkSettings};
use openbao_operator::controllers::cluster;
use serde_json::{Value, json};
use std::sync::Arc;
use testkit::apiserver::{ApiServer, create_namespace};
use testkit::cache::repo_root;

const EXTERNAL: &str = "198.19.255.1/32";

/// The operator's context with the network settings the policies are checked against.
async fn network_context(client: &Client) -> Arc<Context> {
    let mut ctx = context(client).await;
    ctx.network = NetworkSettings {
        dns_namespace: "kube-system".into(),
        external_source_cidrs: vec![EXTERNAL.into()],
    };
    Arc::new(ctx)
}

fn manifest(name: &str) -> Result<OpenBaoCluster> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "openbao.org/v1alpha1", "kind": "OpenBaoCluster",
        "metadata": {"name": name},
        "spec": {"version": "2.7.2", "profile": "Development", "replicas": 1, "storage": {"size": "1Gi"},
                 "selfInit": {"oidc": {"enabled": false}}},
    }))?)
}

async fn reconcile(client: &Client, ctx: &Arc<Context>, ns: &str, name: &str) -> Result<OpenBaoCluster> {
    let api = Api::<OpenBaoCluster>::namespaced(client.clone(), ns);
    cluster::reconcile(Arc::new(api.get(name).await?), ctx.clone()).await?;
    Ok(api.get(name).await?)
}

/// The `kubernetes` EndpointSlice a control plane's endpoint reconciler writes: one ready
/// apiserver and one that is not (documentation addresses: the apiserver refuses loopback ones).
async fn publish_apiserver_endpoints(client: &Client) -> Result<()> {
    let slice: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "kubernetes"}},
        "addressType": "IPv4",
        "endpoints": [
            {"addresses": ["192.0.2.1"], "conditions": {"ready": true}},
            {"addresses": ["192.0.2.9"], "conditions": {"ready": false}},
        ],
        "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}],
    }))?;
    let resource = kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
        "discovery.k8s.io",
        "v1",
        "EndpointSlice",
    ));
    Api::<DynamicObject>::namespaced_with(client.clone(), "default", &resource)
        .patch("kubernetes", &PatchParams::apply("test").force(), &Patch::Apply(&slice))
        .await?;
    Ok(())
}

fn namespace_peer(ns: &str) -> Value {
    json!({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}})
}

#[tokio::test]
async fn the_policy_holds_the_discovered_apiserver_and_only_the_named_peers() -> Result<()> {
    let client = client_with_crds(ApiServer::shared().await?).await?;
    publish_apiserver_endpoints(&client).await?;
    let kubernetes = Api::<Service>::namespaced(client.clone(), "default")
        .get("kubernetes")
        .await?;
    let cluster_ip = kubernetes
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.clone())
        .context("kubernetes ClusterIP")?;
    let port = kubernetes
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .context("ports")?[0]
        .port;

    let ctx = network_context(&client).await;
    let ns = create_namespace(&client, "bao-netpol").await?;
    let name = "fenced";
    Api::<OpenBaoCluster>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &manifest(name)?)
        .await?;
    reconcile(&client, &ctx, &ns, name).await?;

    let np = Api::<NetworkPolicy>::namespaced(client.clone(), &ns)
        .get(&names::network_policy(name))
        .await
        .context("the NetworkPolicy")?;
    let spec = serde_json::to_value(np.spec.context("spec")?)?;
    ensure!(spec["policyTypes"] == json!(["Ingress", "Egress"]), "{spec}");
    let egress = spec["egress"].as_array().context("egress")?;
    let reaches = |cidr: &str, port: i32| {
        egress.iter().any(|r| {
            r["to"]
                .as_array()
                .is_some_and(|to| to.iter().any(|p| p["ipBlock"]["cidr"] == cidr))
                && r["ports"]
                    .as_array()
                    .is_some_and(|ps| ps.iter().any(|p| p["port"] == port))
        })
    };
    ensure!(
        reaches(&format!("{cluster_ip}/32"), port),
        "the Service address: {spec}"
    );
    ensure!(reaches("192.0.2.1/32", 6443), "the ready endpoint: {spec}");
    ensure!(
        !spec.to_string().contains("192.0.2.9"),
        "an endpoint that is not ready: {spec}"
    );
    ensure!(egress[0]["to"] == json!([namespace_peer("kube-system")]), "DNS: {spec}");

    let api_peers = &spec["ingress"][1]["from"];
    ensure!(
        *api_peers
            == json!([
                namespace_peer(OPERATOR_NAMESPACE),
                {"podSelector": {"matchLabels": {
                    "app.kubernetes.io/name": "openbao-executor",
                    "app.kubernetes.io/instance": name,
                    "openbao.org/executor-for": name,
                }}},
                {"ipBlock": {"cidr": EXTERNAL}},
            ]),
        "the API's peers: {api_peers}"
    );
    ensure!(
        !spec.to_string().contains(r#""podSelector":{}"#),
        "the whole namespace is still admitted: {spec}"
    );
    ensure!(
        Api::<StatefulSet>::namespaced(client.clone(), &ns)
            .get_opt(name)
            .await?
            .is_some(),
        "the servers were not applied"
    );
    Ok(())
}

#[tokio::test]
async fn the_jobs_policy_comes_and_goes_with_the_backups() -> Result<()> {
    let client = client_with_crds(ApiServer::shared().await?).await?;
    publish_apiserver_endpoints(&client).await?;
    let ctx = network_context(&client).await;
    let ns = create_namespace(&client, "bao-netpol-jobs").await?;
    let name = "saved";
    let mut cluster = manifest(name)?;
    cluster.spec.backup = Some(serde_json::from_value(json!({
        "schedule": "0 3 * * *",
        "target": {"endpoint": "http://s3.storage.svc:9000", "bucket": "backups", "credentialsSecretRef": {"name": "s3"}},
    }))?);
    let clusters = Api::<OpenBaoCluster>::namespaced(client.clone(), &ns);
    clusters.create(&PostParams::default(), &cluster).await?;
    reconcile(&client, &ctx, &ns, name).await?;

    let policies = Api::<NetworkPolicy>::namespaced(client.clone(), &ns);
    let np = policies
        .get(&names::jobs_network_policy(name))
        .await
        .context("the Jobs' NetworkPolicy")?;
    ensure!(
        np.owner_references()
            .iter()
            .any(|o| o.kind == "OpenBaoCluster" && o.name == name),
        "owner: {:?}",
        np.metadata.owner_references
    );
    let spec = serde_json::to_value(np.spec.context("spec")?)?;
    ensure!(spec["policyTypes"] == json!(["Ingress", "Egress"]), "{spec}");
    ensure!(
        spec["podSelector"]["matchLabels"]
            == json!({"app.kubernetes.io/name": "openbao-executor", "app.kubernetes.io/instance": name,
                      "openbao.org/executor-for": name}),
        "{spec}"
    );
    // No ingress rule at all (the apiserver drops an empty list).
    ensure!(spec["ingress"].as_array().is_none_or(Vec::is_empty), "ingress: {spec}");
    ensure!(
        spec["egress"]
            == json!([
                {"to": [namespace_peer("kube-system")], "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
                {"to": [{"podSelector": {"matchLabels": openbao_render::labels::selector(name)}}],
                 "ports": [{"protocol": "TCP", "port": 8200}]},
                {"to": [namespace_peer("storage")], "ports": [{"protocol": "TCP", "port": 9000}]},
            ]),
        "egress: {spec}"
    );

    // Nothing changed: the next reconcile leaves the policy alone.
    let version = np.metadata.resource_version.clone();
    reconcile(&client, &ctx, &ns, name).await?;
    let again = policies.get(&names::jobs_network_policy(name)).await?;
    ensure!(again.metadata.resource_version == version, "rewritten without a change");

    // Backups off: the policy goes with them.
    clusters
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"backup": null}})),
        )
        .await?;
    reconcile(&client, &ctx, &ns, name).await?;
    ensure!(
        policies.get_opt(&names::jobs_network_policy(name)).await?.is_none(),
        "the Jobs' policy outlived the backups"
    );
    ensure!(
        policies.get_opt(&names::network_policy(name)).await?.is_some(),
        "the servers' policy was pruned with it"
    );
    Ok(())
}

/// A client acting as a service account that holds every right in `ns` and none in `default`.
async fn confined_client(server: &ApiServer, client: &Client, ns: &str, account: &str) -> Result<Client> {
    let binding: k8s_openapi::api::rbac::v1::RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "confined-operator"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": OPERATOR_NAMESPACE}],
    }))?;
    Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &binding)
        .await?;
    let kubeconfig = kube::config::Kubeconfig::read_from(server.kubeconfig_path())?;
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    config.auth_info.impersonate = Some(format!("system:serviceaccount:{OPERATOR_NAMESPACE}:{account}"));
    config.auth_info.impersonate_groups = Some(vec![
        "system:serviceaccounts".into(),
        format!("system:serviceaccounts:{OPERATOR_NAMESPACE}"),
        "system:authenticated".into(),
    ]);
    Ok(Client::try_from(config)?)
}

/// The shipped Role and RoleBinding in `default` (deploy/operator/rbac.yaml), bound to `account`.
async fn bind_shipped_discovery_role(client: &Client, account: &str) -> Result<()> {
    let text = std::fs::read_to_string(repo_root().join("deploy/operator/rbac.yaml"))?;
    let docs: Vec<Option<Value>> = serde_saphyr::from_multiple(&text)?;
    let mut found = 0;
    for mut doc in docs.into_iter().flatten() {
        if doc["metadata"]["namespace"] != "default" {
            continue;
        }
        let kind = doc["kind"].as_str().unwrap_or_default().to_string();
        let name = doc["metadata"]["name"].as_str().unwrap_or_default().to_string();
        match kind.as_str() {
            "Role" => {
                let role: k8s_openapi::api::rbac::v1::Role = serde_json::from_value(doc)?;
                Api::<k8s_openapi::api::rbac::v1::Role>::namespaced(client.clone(), "default")
                    .patch(&name, &PatchParams::apply("test").force(), &Patch::Apply(&role))
                    .await?;
            }
            "RoleBinding" => {
                doc["metadata"]["name"] = json!(format!("{name}-{account}"));
                doc["subjects"][0]["name"] = json!(account);
                let binding: k8s_openapi::api::rbac::v1::RoleBinding = serde_json::from_value(doc)?;
                Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(client.clone(), "default")
                    .patch(
                        &binding.name_any(),
                        &PatchParams::apply("test").force(),
                        &Patch::Apply(&binding),
                    )
                    .await?;
            }
            other => bail!("unexpected {other} in namespace default"),
        }
        found += 1;
    }
    ensure!(found == 2, "deploy/operator/rbac.yaml has {found} objects in default");
    Ok(())
}

#[tokio::test]
async fn without_the_apiserver_addresses_no_policy_and_no_pods_then_both() -> Result<()> {
    let server = ApiServer::shared().await?;
    let client = client_with_crds(server).await?;
    let ns = create_namespace(&client, "bao-netpol-rbac").await?;
    let account = format!("operator-{ns}");
    let confined = confined_client(server, &client, &ns, &account).await?;
    let ctx = network_context(&confined).await;
    let name = "undiscovered";
    Api::<OpenBaoCluster>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &manifest(name)?)
        .await?;

    let c = reconcile(&client, &ctx, &ns, name).await?;
    let status = c.status.context("status")?;
    let degraded = conditions::find(&status.conditions, conditions::DEGRADED).context("Degraded")?;
    ensure!(
        degraded.status == "True"
            && degraded.reason == "APIServerDiscoveryFailed"
            && degraded.message.contains("Service default/kubernetes"),
        "{degraded:?}"
    );
    let policies = Api::<NetworkPolicy>::namespaced(client.clone(), &ns);
    let statefulsets = Api::<StatefulSet>::namespaced(client.clone(), &ns);
    ensure!(
        policies.get_opt(&names::network_policy(name)).await?.is_none(),
        "a policy without the apiserver"
    );
    ensure!(
        statefulsets.get_opt(name).await?.is_none(),
        "servers without their policy"
    );

    bind_shipped_discovery_role(&client, &account).await?;
    // RBAC changes reach the authorizer through an informer: wait for the state, not a time.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let c = reconcile(&client, &ctx, &ns, name).await?;
        if policies.get_opt(&names::network_policy(name)).await?.is_some() {
            let status = c.status.context("status")?;
            let degraded = conditions::find(&status.conditions, conditions::DEGRADED).context("Degraded")?;
            ensure!(degraded.reason != "APIServerDiscoveryFailed", "{degraded:?}");
            break;
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "no policy 30 s after the Role was bound"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    ensure!(
        statefulsets.get_opt(name).await?.is_some(),
        "no servers once the policy exists"
    );
    Ok(())
}

/// Admission and the operator agree on whether a Development cluster with `extra` reaches
/// outside the cluster (`inside`: the operator's answer): admitted without an egress rule
/// exactly when it is inside, else refused asking for one.
async fn admission_agrees(api: &Api<DynamicObject>, name: &str, extra: Value, inside: bool, what: &str) -> Result<()> {
    let spec = merged(
        json!({"version": "2.7.2", "profile": "Development", "storage": {"size": "1Gi"}}),
        extra,
    );
    match api.create(&PostParams::default(), &cluster_object(name, spec)?).await {
        Ok(_) => ensure!(
            inside,
            "{what}: admitted without an egress rule, but outside for the operator"
        ),
        Err(kube::Error::Api(status)) if status.code == 422 => ensure!(
            !inside && status.message.contains("spec.network.egressRules: required when"),
            "{what} (in-cluster for the operator: {inside}): {}",
            status.message
        ),
        Err(other) => bail!("{what}: {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn admission_refuses_hardened_ingress_rules_and_an_outside_seal_without_egress() -> Result<()> {
    let client = client_with_crds(ApiServer::shared().await?).await?;
    let ns = create_namespace(&client, "bao-netpol-cel").await?;
    let api = untyped_clusters(client, &ns);
    let transit = |address: &str| {
        json!({"type": "transit", "transit": {"address": address, "keyName": "k",
               "tokenSecretRef": {"name": "t", "key": "token"}}})
    };
    let spec = |extra: Value| {
        merged(
            json!({"version": "2.7.2", "profile": "Hardened", "replicas": 3, "storage": {"size": "1Gi"},
                "tls": {"mode": "External"}, "unseal": transit("https://transit.vault.svc:8200"),
                "audit": [{"type": "file", "name": "file", "fileOptions": {"filePath": "stdout"}}]}),
            extra,
        )
    };
    let egress = json!({"egressRules": [{"to": [{"ipBlock": {"cidr": "203.0.113.7/32"}}], "ports": [{"port": 5696}]}]});

    let message = refusal(
        &api,
        "hostile-ingress",
        spec(json!({"network": {"ingressRules": [{"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]}})),
    )
    .await?;
    ensure!(
        message.contains("spec.network.ingressRules: not allowed with the Hardened profile"),
        "{message}"
    );
    for (name, unseal) in [
        ("outside-transit", transit("https://vault.example.com:8200")),
        (
            "kmip",
            json!({"type": "kmip", "kmip": {"address": "kmip.example.com:5696", "keyId": "1",
                "clientCertSecretRef": {"name": "c", "key": "tls.crt"}, "clientKeySecretRef": {"name": "c", "key": "tls.key"}}}),
        ),
    ] {
        let message = refusal(&api, name, spec(json!({"unseal": unseal}))).await?;
        ensure!(
            message.contains("spec.network.egressRules: required when the seal reaches outside the cluster"),
            "{name}: {message}"
        );
        // With a rule to it, the same seal is admitted.
        admitted(&api, name, spec(json!({"unseal": unseal, "network": egress})))
            .await
            .with_context(|| format!("{name} with an egress rule"))?;
    }
    // Admission and the operator agree on what an in-cluster transit address is.
    let addresses = [
        "https://t.vault.svc",
        "https://t.vault.svc:8200/",
        "https://t.vault.svc.cluster.local:65535/x",
        "https://t.vault.svc:65536",
        "https://t.vault.svc:0",
        "https://T.vault.svc",
        "https://t-.vault.svc",
        "https://t.vault.svc.example.com",
        "https://a.t.vault.svc",
        "https://10.0.0.1:8200",
    ];
    for (i, address) in addresses.iter().enumerate() {
        let inside = openbao_api::in_cluster_service(address).is_some();
        let extra = json!({"unseal": transit(address)});
        admission_agrees(&api, &format!("parity-{i}"), extra, inside, address).await?;
    }
    // A backup store and a socket audit device: admission and the operator agree on what is in
    // the cluster (an outside one needs an egress rule).
    let backup = |endpoint: &str| {
        json!({"backup": {"schedule": "0 3 * * *", "target": {"endpoint": endpoint, "bucket": "backups",
               "credentialsSecretRef": {"name": "s3"}}}})
    };
    let socket = |address: &str| json!({"audit": [{"type": "socket", "name": "siem", "socketOptions": {"address": address, "socketType": "udp"}}]});
    let mut cases = Vec::new();
    for endpoint in [
        "http://s3.storage.svc:9000",
        "https://s3.storage.svc.cluster.local",
        "https://s3.storage.svc:9443?x",
        "https://s3.example.com",
        "https://10.1.2.3:9000",
        "https://S3.storage.svc",
        "https://s3.storage.svc:65536",
    ] {
        cases.push((
            backup(endpoint),
            openbao_api::in_cluster_url(endpoint).is_some(),
            endpoint,
        ));
    }
    for address in [
        "siem.logs.svc:6514",
        "siem.logs.svc.cluster.local:514",
        "siem.logs.svc:0",
        "siem.example.com:514",
        "10.0.0.1:514",
    ] {
        cases.push((
            socket(address),
            openbao_api::in_cluster_socket(address).is_some(),
            address,
        ));
    }
    let inside_count = cases.iter().filter(|c| c.1).count();
    ensure!(inside_count == 5, "{inside_count} in-cluster cases");
    for (i, (extra, inside, what)) in cases.into_iter().enumerate() {
        admission_agrees(&api, &format!("reach-{i}"), extra, inside, what).await?;
    }
    // Hardened: every egress rule names its ports and peers, none a wildcard.
    for (i, rule) in [
        json!({"to": [{"ipBlock": {"cidr": "203.0.113.7/32"}}]}),
        json!({"ports": [{"port": 443}]}),
        json!({"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"port": 443}]}),
        json!({"to": [{"ipBlock": {"cidr": "::/0"}}], "ports": [{"port": 443}]}),
        json!({"to": [{"namespaceSelector": {}}], "ports": [{"port": 443}]}),
        json!({"to": [{"namespaceSelector": {}, "podSelector": {}}], "ports": [{"port": 443}]}),
        json!({"to": [{}], "ports": [{"port": 443}]}),
        json!({"to": [{"ipBlock": {"cidr": "203.0.113.7/32"}}], "ports": [{"protocol": "TCP"}]}),
    ]
    .into_iter()
    .enumerate()
    {
        let rules = json!({"network": {"egressRules": [egress["egressRules"][0], rule]}});
        let message = refusal(&api, &format!("broad-{i}"), spec(rules.clone())).await?;
        ensure!(
            message.contains("spec.network.egressRules: with the Hardened profile every rule names its ports"),
            "{rules}: {message}"
        );
        // The operator refuses the same spec.
        let typed: openbao_api::OpenBaoClusterSpec = serde_json::from_value(spec(rules.clone()))?;
        ensure!(
            typed.check().is_err_and(|e| e.reason == "EgressRuleTooBroad"),
            "{rules}"
        );
    }
    // The lists inside a rule are bounded (what keeps the rules' CEL cost within the budget).
    let peers: Vec<_> = (0..17)
        .map(|i| json!({"ipBlock": {"cidr": format!("203.0.113.{i}/32")}}))
        .collect();
    let rules = json!({"network": {"egressRules": [{"to": peers, "ports": [{"port": 443}]}]}});
    let message = refusal(&api, "many-peers", spec(rules.clone())).await?;
    ensure!(
        message.contains("spec.network.egressRules[0].to") && message.contains("16"),
        "{message}"
    );
    let typed: openbao_api::OpenBaoClusterSpec = serde_json::from_value(spec(rules))?;
    ensure!(
        typed.check().is_err_and(|e| e.reason == "InvalidNetworkRules"),
        "17 peers"
    );
    // A narrow rule to a namespace's labelled pods is admitted under Hardened.
    let narrow = json!({"network": {"egressRules": [{"to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "kms"}}}],
                                                     "ports": [{"protocol": "TCP", "port": 5696}]}]}});
    admitted(&api, "narrow", spec(narrow))
        .await
        .context("a narrow Hardened egress rule")?;

    // An in-cluster transit seal (the operator derives its rule) needs none.
    let inside = spec(json!({"unseal": transit("https://transit.vault.svc.cluster.local:8300/")}));
    admitted(&api, "inside", inside).await.context("in-cluster transit")?;
    Ok(())
}
