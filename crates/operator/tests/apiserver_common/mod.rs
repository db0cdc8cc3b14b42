//! Set-up shared by the operator's process-level tests on a real kube-apiserver (testkit's
//! `ApiServer`; each test still picks the shared one or one of its own): a client with the
//! operator's CRDs installed, the identity the operator runs as, its controller `Context`, and
//! admission checks for OpenBaoCluster objects sent untyped (as a user's YAML would be).

#![allow(dead_code)]

use anyhow::{Result, bail};
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use openbao_api::OpenBaoCluster;
use openbao_operator::context::Context;
use openbao_operator::runtime::metrics::Metrics;
use openbao_render::OperatorIdentity;
use serde_json::{Value, json};
use std::time::Duration;
use testkit::apiserver::{ApiServer, install_crds};

/// The namespace the operator runs in (the binary's `POD_NAMESPACE` default).
pub const OPERATOR_NAMESPACE: &str = "openbao-operator-system";

/// Installs rustls's process-wide crypto provider, which kube's TLS client needs. The tests of
/// one binary share the process, so every test installs it and a second install is ignored.
pub fn install_crypto_provider() {
    rustls::crypto::aws_lc_rs::default_provider().install_default().ok();
}

/// A client of `server` with the operator's CRDs installed (as the operator's install ships
/// them), after the crypto provider.
pub async fn client_with_crds(server: &ApiServer) -> Result<Client> {
    install_crypto_provider();
    let client = server.client().await?;
    install_crds(&client, openbao_api::crd::all()).await?;
    Ok(client)
}

/// The identity the operator runs as in these tests: what it renders into self-init and
/// NetworkPolicies, and whom the servers trust.
pub fn operator() -> OperatorIdentity {
    OperatorIdentity {
        namespace: OPERATOR_NAMESPACE.into(),
        service_account: "openbao-operator".into(),
    }
}

/// The controllers' context as the operator builds it at start-up, for [`operator`] through
/// `client` (discovery of the optional APIs happens here: install their CRDs first). Wrap it
/// in an `Arc` for the controllers; change a field first to scope or tune it.
pub async fn context(client: &Client) -> Context {
    Context::new(client.clone(), operator(), Metrics::default()).await
}

/// OpenBaoClusters in `ns` as untyped objects: what a user's YAML sends, before the operator's
/// types could refuse it.
pub fn untyped_clusters(client: Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client, ns, &ApiResource::erase::<OpenBaoCluster>(&()))
}

/// An OpenBaoCluster named `name` with `spec`, untyped.
pub fn cluster_object(name: &str, spec: Value) -> Result<DynamicObject> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "openbao.org/v1alpha1", "kind": "OpenBaoCluster",
        "metadata": {"name": name}, "spec": spec,
    }))?)
}

/// The apiserver's 422 message for an OpenBaoCluster named `name` with `spec`; an error if it
/// is admitted or refused otherwise.
pub async fn refusal(api: &Api<DynamicObject>, name: &str, spec: Value) -> Result<String> {
    match api.create(&PostParams::default(), &cluster_object(name, spec)?).await {
        Ok(created) => bail!("{name} accepted: {}", serde_json::to_string(&created.data)?),
        Err(kube::Error::Api(status)) if status.code == 422 => Ok(status.message),
        Err(other) => bail!("{name}: expected 422, got {other:?}"),
    }
}

/// Creates an OpenBaoCluster named `name` with `spec`; an error if admission refuses it.
pub async fn admitted(api: &Api<DynamicObject>, name: &str, spec: Value) -> Result<()> {
    api.create(&PostParams::default(), &cluster_object(name, spec)?).await?;
    Ok(())
}

/// `base` (a JSON object) with the top-level fields of `extra` (an object) set over it.
pub fn merged(mut base: Value, extra: Value) -> Value {
    let Value::Object(extra) = extra else {
        panic!("not a JSON object: {extra}")
    };
    base.as_object_mut().expect("base is a JSON object").extend(extra);
    base
}

/// Calls `f` every 100 ms until it yields a value (an error ends the wait at once); fails after
/// `timeout`, naming `what`. How a test waits for a state the controllers reach on their own.
pub async fn wait_for<T>(what: &str, timeout: Duration, check: impl AsyncFnMut() -> Result<Option<T>>) -> Result<T> {
    testkit::pods::wait_every(what, timeout, Duration::from_millis(100), check).await
}
