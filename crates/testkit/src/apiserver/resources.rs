//! Objects most apiserver tests need first: CRDs (ours and Gateway API) and a private namespace.

use crate::cache::run_hack;
use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use std::path::PathBuf;
use std::time::Duration;

const FIELD_MANAGER: &str = "testkit";
const ESTABLISH_TIMEOUT: Duration = Duration::from_secs(60);

/// Server-side applies `crds` (forcing ownership, so re-installing is a no-op) and waits until
/// every one is Established, i.e. its resources are served.
pub async fn install_crds(client: &kube::Client, crds: Vec<CustomResourceDefinition>) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut names = Vec::with_capacity(crds.len());
    for mut crd in crds {
        let name = crd.metadata.name.clone().context("CRD without metadata.name")?;
        // Apply bodies must not carry server-owned fields.
        crd.metadata.managed_fields = None;
        crd.metadata.resource_version = None;
        crd.status = None;
        api.patch(&name, &params, &Patch::Apply(&crd))
            .await
            .with_context(|| format!("apply CRD {name}"))?;
        names.push(name);
    }
    for name in names {
        let established = await_condition(api.clone(), &name, conditions::is_crd_established());
        tokio::time::timeout(ESTABLISH_TIMEOUT, established)
            .await
            .with_context(|| format!("CRD {name} not Established after {ESTABLISH_TIMEOUT:?}"))?
            .with_context(|| format!("watch CRD {name}"))?;
    }
    Ok(())
}

/// Server-side applies a cluster-scoped object (e.g. the ClusterRole an operator install ships),
/// forcing ownership so that applying it again is a no-op.
pub async fn apply_cluster_scoped<K>(client: &kube::Client, obj: &K) -> Result<()>
where
    K: kube::Resource<Scope = k8s_openapi::ClusterResourceScope, DynamicType = ()>
        + serde::Serialize
        + serde::de::DeserializeOwned
        + Clone
        + std::fmt::Debug,
{
    let name = obj.meta().name.clone().context("object without metadata.name")?;
    Api::<K>::all(client.clone())
        .patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(obj))
        .await
        .with_context(|| format!("apply {} {name}", K::kind(&())))?;
    Ok(())
}

/// The Gateway API standard-channel CRDs of the pinned release (HTTPRoute, Gateway, GatewayClass,
/// GRPCRoute, ReferenceGrant, BackendTLSPolicy), as `hack/fetch-gateway-api-crds.sh` caches them.
pub async fn install_gateway_api_crds(client: &kube::Client) -> Result<()> {
    let dir = tokio::task::spawn_blocking(|| run_hack("fetch-gateway-api-crds.sh", &[])).await??;
    let crds = tokio::task::spawn_blocking(move || read_crd_dir(PathBuf::from(dir))).await??;
    install_crds(client, crds).await
}

/// Every CustomResourceDefinition in the `*.yaml` files of `dir` (multi-document files included).
pub(crate) fn read_crd_dir(dir: PathBuf) -> Result<Vec<CustomResourceDefinition>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("read {}", dir.display()))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    files.retain(|path| path.extension().is_some_and(|ext| ext == "yaml"));
    files.sort();
    let mut crds = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        let docs: Vec<serde_json::Value> =
            serde_saphyr::from_multiple(&text).with_context(|| format!("parse YAML {}", path.display()))?;
        for doc in docs.into_iter().filter(|d| d["kind"] == "CustomResourceDefinition") {
            crds.push(serde_json::from_value(doc).with_context(|| format!("CRD in {}", path.display()))?);
        }
    }
    if crds.is_empty() {
        bail!("no CustomResourceDefinition in {}", dir.display());
    }
    Ok(crds)
}

/// Labels that make the apiserver's built-in PodSecurity admission refuse every pod that does
/// not meet the `restricted` Pod Security Standard, at the newest version the server knows.
pub const POD_SECURITY_RESTRICTED: [(&str, &str); 2] = [
    ("pod-security.kubernetes.io/enforce", "restricted"),
    ("pod-security.kubernetes.io/enforce-version", "latest"),
];

/// Creates a namespace named `<prefix>-<random>` (the server picks the suffix, so parallel tests
/// never collide) and returns its name.
pub async fn create_namespace(client: &kube::Client, prefix: &str) -> Result<String> {
    create_namespace_labelled(client, prefix, &[]).await
}

/// [`create_namespace`] with Pod Security `restricted` enforced ([`POD_SECURITY_RESTRICTED`]).
pub async fn create_restricted_namespace(client: &kube::Client, prefix: &str) -> Result<String> {
    create_namespace_labelled(client, prefix, &POD_SECURITY_RESTRICTED).await
}

async fn create_namespace_labelled(client: &kube::Client, prefix: &str, labels: &[(&str, &str)]) -> Result<String> {
    let api: Api<Namespace> = Api::all(client.clone());
    let namespace = Namespace {
        metadata: ObjectMeta {
            generate_name: Some(format!("{prefix}-")),
            labels: (!labels.is_empty()).then(|| labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            ..Default::default()
        },
        ..Default::default()
    };
    let created = api
        .create(&PostParams::default(), &namespace)
        .await
        .with_context(|| format!("create namespace {prefix}-*"))?;
    created.metadata.name.context("created namespace has no name")
}
