//! The hermetic apiserver is a real one: CEL rules in CRDs are enforced by the server, Gateway API
//! CRDs install, and the ServiceAccount issuer serves OIDC discovery, JWKS and verifiable tokens.

use anyhow::{Context, Result};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec, TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, CustomResourceDefinitionNames, CustomResourceDefinitionSpec,
    CustomResourceDefinitionVersion, CustomResourceValidation, JSONSchemaProps, ValidationRule,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, PostParams};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use testkit::apiserver::{self, ApiServer};

const CEL_MESSAGE: &str = "Hardened clusters need at least 3 replicas";

fn widget_crd() -> CustomResourceDefinition {
    let integer = JSONSchemaProps {
        type_: Some("integer".into()),
        ..Default::default()
    };
    let string = JSONSchemaProps {
        type_: Some("string".into()),
        ..Default::default()
    };
    let spec = JSONSchemaProps {
        type_: Some("object".into()),
        required: Some(vec!["replicas".into(), "profile".into()]),
        properties: Some(BTreeMap::from([
            ("replicas".into(), integer),
            ("profile".into(), string),
        ])),
        x_kubernetes_validations: Some(vec![ValidationRule {
            rule: "self.replicas >= 3 || self.profile == 'Development'".into(),
            message: Some(CEL_MESSAGE.into()),
            ..Default::default()
        }]),
        ..Default::default()
    };
    let root = JSONSchemaProps {
        type_: Some("object".into()),
        properties: Some(BTreeMap::from([("spec".into(), spec)])),
        ..Default::default()
    };
    CustomResourceDefinition {
        metadata: ObjectMeta {
            name: Some("widgets.cel.testkit.example".into()),
            ..Default::default()
        },
        spec: CustomResourceDefinitionSpec {
            group: "cel.testkit.example".into(),
            names: CustomResourceDefinitionNames {
                kind: "Widget".into(),
                plural: "widgets".into(),
                ..Default::default()
            },
            scope: "Namespaced".into(),
            versions: vec![CustomResourceDefinitionVersion {
                name: "v1".into(),
                served: true,
                storage: true,
                schema: Some(CustomResourceValidation {
                    open_api_v3_schema: Some(root),
                }),
                ..Default::default()
            }],
            ..Default::default()
        },
        status: None,
    }
}

fn widget(name: &str, replicas: i64, profile: &str) -> Result<DynamicObject> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "cel.testkit.example/v1",
        "kind": "Widget",
        "metadata": { "name": name },
        "spec": { "replicas": replicas, "profile": profile },
    }))?)
}

#[tokio::test]
async fn crd_cel_rule_is_enforced_by_the_server() -> Result<()> {
    let server = ApiServer::shared().await?;
    eprintln!("shared apiserver started in {:.2?}", server.startup_time());
    let client = server.client().await?;
    // Twice: installing is idempotent.
    apiserver::install_crds(&client, vec![widget_crd()]).await?;
    apiserver::install_crds(&client, vec![widget_crd()]).await?;
    let namespace = apiserver::create_namespace(&client, "cel").await?;
    let resource =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("cel.testkit.example", "v1", "Widget"), "widgets");
    let widgets: Api<DynamicObject> = Api::namespaced_with(client, &namespace, &resource);

    let rejected = widgets
        .create(&PostParams::default(), &widget("too-small", 1, "Hardened")?)
        .await;
    match rejected {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "expected 422 Invalid, got {status:?}");
            assert!(
                status.message.contains(CEL_MESSAGE),
                "CEL message missing in {:?}",
                status.message
            );
        }
        other => panic!("invalid Widget was not rejected by the CEL rule: {other:?}"),
    }

    widgets
        .create(&PostParams::default(), &widget("dev", 1, "Development")?)
        .await?;
    let stored = widgets.get("dev").await?;
    assert_eq!(stored.data["spec"], json!({ "replicas": 1, "profile": "Development" }));
    Ok(())
}

#[tokio::test]
async fn gateway_api_crds_install_and_serve() -> Result<()> {
    let server = ApiServer::shared().await?;
    let client = server.client().await?;
    apiserver::install_gateway_api_crds(&client).await?;
    apiserver::install_gateway_api_crds(&client).await?;
    let namespace = apiserver::create_namespace(&client, "gateway").await?;
    for (kind, plural, version) in [
        ("HTTPRoute", "httproutes", "v1"),
        ("GRPCRoute", "grpcroutes", "v1"),
        ("Gateway", "gateways", "v1"),
        ("ReferenceGrant", "referencegrants", "v1beta1"),
        ("BackendTLSPolicy", "backendtlspolicies", "v1"),
    ] {
        let gvk = GroupVersionKind::gvk("gateway.networking.k8s.io", version, kind);
        let api: Api<DynamicObject> = Api::namespaced_with(
            client.clone(),
            &namespace,
            &ApiResource::from_gvk_with_plural(&gvk, plural),
        );
        let list = api
            .list(&ListParams::default())
            .await
            .with_context(|| format!("list {plural}"))?;
        assert!(list.items.is_empty(), "fresh namespace has {plural}");
    }
    let gvk = GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "GatewayClass");
    let classes: Api<DynamicObject> = Api::all_with(client, &ApiResource::from_gvk_with_plural(&gvk, "gatewayclasses"));
    classes
        .list(&ListParams::default())
        .await
        .context("list gatewayclasses")?;
    Ok(())
}

/// What OpenBao's JWT auth does with a ServiceAccount token: discover the issuer, fetch its
/// JWKS, check the signature. Also the apiserver's own TokenReview accepts the token.
#[tokio::test]
async fn service_account_issuer_serves_discovery_jwks_and_tokens() -> Result<()> {
    let server = ApiServer::shared().await?;
    let http = server.http_client()?;
    let discovery: Value = http
        .get(format!("{}/.well-known/openid-configuration", server.url()))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    assert_eq!(discovery["issuer"], "https://kubernetes.default.svc.cluster.local");
    let jwks_uri = discovery["jwks_uri"].as_str().context("jwks_uri")?;
    assert!(jwks_uri.ends_with("/openid/v1/jwks"), "jwks_uri {jwks_uri}");
    let jwks: Value = http
        .get(format!("{}/openid/v1/jwks", server.url()))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let keys = jwks["keys"].as_array().context("jwks keys")?;
    assert!(!keys.is_empty(), "empty JWKS");

    let client = server.client().await?;
    let namespace = apiserver::create_namespace(&client, "sa").await?;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &namespace);
    let account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some("openbao-auth".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    accounts.create(&PostParams::default(), &account).await?;
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec!["openbao".into()],
            expiration_seconds: Some(600),
            ..Default::default()
        },
        ..Default::default()
    };
    let issued = accounts
        .create_token_request("openbao-auth", &PostParams::default(), &request)
        .await?;
    let token = issued.status.context("TokenRequest status")?.token;

    let (header, claims) = verify_with_jwks(&token, keys)?;
    assert_eq!(header["alg"], "ES256");
    assert_eq!(claims["iss"], "https://kubernetes.default.svc.cluster.local");
    assert_eq!(claims["aud"], json!(["openbao"]));
    assert_eq!(claims["sub"], format!("system:serviceaccount:{namespace}:openbao-auth"));

    let review = TokenReview {
        spec: TokenReviewSpec {
            token: Some(token),
            audiences: Some(vec!["openbao".into()]),
        },
        ..Default::default()
    };
    let reviewed = Api::<TokenReview>::all(client)
        .create(&PostParams::default(), &review)
        .await?;
    let status = reviewed.status.context("TokenReview status")?;
    assert_eq!(
        status.authenticated,
        Some(true),
        "TokenReview error: {:?}",
        status.error
    );
    Ok(())
}

/// Checks the ES256 signature of `token` against the JWKS key with its `kid`; returns header and
/// claims. The token itself is never printed.
fn verify_with_jwks(token: &str, keys: &[Value]) -> Result<(Value, Value)> {
    let mut parts = token.split('.');
    let (Some(header_b64), Some(claims_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        anyhow::bail!("token is not a compact JWS");
    };
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header_b64)?)?;
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims_b64)?)?;
    let key = keys
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .context("no JWKS key with the token's kid")?;
    assert_eq!(key["crv"], "P-256");
    let coordinate = |name: &str| -> Result<Vec<u8>> {
        Ok(URL_SAFE_NO_PAD.decode(key[name].as_str().with_context(|| format!("JWK {name}"))?)?)
    };
    let point = [vec![0x04], coordinate("x")?, coordinate("y")?].concat();
    let signed = format!("{header_b64}.{claims_b64}");
    aws_lc_rs::signature::UnparsedPublicKey::new(&aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED, point)
        .verify(signed.as_bytes(), &URL_SAFE_NO_PAD.decode(signature_b64)?)
        .map_err(|_| anyhow::anyhow!("token signature does not verify against the JWKS"))?;
    Ok((header, claims))
}

/// Start-up cost of an owned apiserver (first and second start in this process), and that drop
/// really stops it and removes its directory.
#[tokio::test]
async fn owned_apiserver_starts_and_cleans_up() -> Result<()> {
    for attempt in ["first", "second"] {
        let server = ApiServer::start().await?;
        eprintln!(
            "owned apiserver ({attempt} start in this process): {:.2?}",
            server.startup_time()
        );
        let dir = server.kubeconfig_path().parent().context("state dir")?.to_path_buf();
        let url = server.url().to_string();
        let version = server.client().await?.apiserver_version().await?;
        assert_eq!(version.git_version, "v1.34.4");
        drop(server);
        assert!(!dir.exists(), "{} left behind", dir.display());
        let port = url.rsplit(':').next().context("port")?;
        assert!(
            std::net::TcpStream::connect(format!("127.0.0.1:{port}")).is_err(),
            "apiserver still listens on {url}"
        );
    }
    Ok(())
}
