//! A real cert-manager (its Go module's controllers, our own main) against a real kube-apiserver:
//! a self-signed ClusterIssuer makes a CA, a CA Issuer signs a server certificate with the names
//! the operator's External TLS needs, a TLS client trusting `ca.crt` accepts it for those names,
//! renewal — manual (the `Issuing` condition `cmctl renew` sets) — gives a new certificate within
//! 30 s, and a deleted Secret is back within 30 s: with a new certificate, or with the current one
//! when cert-manager still holds it and its key (a write of the last issuance that was still
//! queued re-creates the Secret; seen on a loaded machine).

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, DynamicObject, PostParams};
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::apiserver::{self, ApiServer};
use testkit::cert_manager::{self, CertManager};

/// Issuer set-up and the first issuance (cold informers, key generation on busy cores).
const ISSUE_TIMEOUT: Duration = Duration::from_secs(90);
/// The acceptance bound for a renewal.
const RENEW_TIMEOUT: Duration = Duration::from_secs(30);
/// The OpenBao cluster whose names the server certificate carries.
const CLUSTER: &str = "bao";
const CA_SECRET: &str = "bao-ca";
const SERVER_SECRET: &str = "bao-tls";

fn object(value: Value) -> Result<DynamicObject> {
    Ok(serde_json::from_value(value)?)
}

/// A Secret's PEM entry, decoded.
fn pem_entry(secret: &Secret, key: &str) -> Result<Vec<u8>> {
    let data = secret.data.as_ref().context("Secret without data")?;
    Ok(data
        .get(key)
        .with_context(|| format!("Secret without {key}"))?
        .0
        .clone())
}

/// The DER certificates of a PEM bundle, in order.
fn certificates(pem: &[u8]) -> Result<Vec<Vec<u8>>> {
    let mut ders = Vec::new();
    for block in x509_parser::pem::Pem::iter_from_buffer(pem) {
        let block = block.context("parse PEM")?;
        ensure!(block.label == "CERTIFICATE", "unexpected PEM block {}", block.label);
        ders.push(block.contents);
    }
    ensure!(!ders.is_empty(), "no certificate in PEM");
    Ok(ders)
}

/// What the test checks on a leaf certificate.
#[derive(Debug, PartialEq)]
struct Leaf {
    serial: String,
    issuer: String,
    dns: Vec<String>,
    ips: Vec<String>,
}

fn leaf(der: &[u8]) -> Result<Leaf> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).context("parse certificate")?;
    let (mut dns, mut ips) = (Vec::new(), Vec::new());
    if let Some(san) = cert.subject_alternative_name().context("SAN extension")? {
        for name in &san.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(d) => dns.push(d.to_string()),
                x509_parser::extensions::GeneralName::IPAddress(ip) if ip.len() == 4 => {
                    ips.push(std::net::Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]).to_string())
                }
                other => bail!("unexpected SAN {other:?}"),
            }
        }
    }
    dns.sort();
    Ok(Leaf {
        serial: cert.raw_serial_as_string(),
        issuer: cert.issuer().to_string(),
        dns,
        ips,
    })
}

fn subject(der: &[u8]) -> Result<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).context("parse certificate")?;
    Ok(cert.subject().to_string())
}

/// A TLS client that trusts only `ca` accepts `chain` for `name` (a DNS name or an IP address).
fn verify_for(ca: &[u8], chain: &[Vec<u8>], name: &str) -> Result<()> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(ca.to_vec()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider).build()?;
    let end_entity = CertificateDer::from(chain[0].clone());
    let intermediates: Vec<CertificateDer> = chain[1..].iter().map(|d| CertificateDer::from(d.clone())).collect();
    let server_name = ServerName::try_from(name.to_string())?;
    verifier
        .verify_server_cert(&end_entity, &intermediates, &server_name, &[], UnixTime::now())
        .with_context(|| format!("a client trusting ca.crt refuses the certificate for {name}"))?;
    Ok(())
}

/// The server Secret once it holds a certificate whose serial is not `previous`.
async fn issued_after(
    cm: &mut CertManager,
    secrets: &Api<Secret>,
    previous: Option<&str>,
    timeout: Duration,
) -> Result<(Secret, Leaf)> {
    let what = format!("Secret {SERVER_SECRET} with a certificate other than {previous:?}");
    server_secret_when(cm, secrets, &what, timeout, |_, current| {
        Some(current.serial.as_str()) != previous
    })
    .await
}

/// The server Secret and its leaf certificate once `wanted` says yes to them.
async fn server_secret_when(
    cm: &mut CertManager,
    secrets: &Api<Secret>,
    what: &str,
    timeout: Duration,
    wanted: impl Fn(&Secret, &Leaf) -> bool,
) -> Result<(Secret, Leaf)> {
    cm.wait_until(what, timeout, async |last| {
        let Some(secret) = secrets.get_opt(SERVER_SECRET).await? else {
            *last = "no Secret".into();
            return Ok(None);
        };
        let Ok(pem) = pem_entry(&secret, "tls.crt") else {
            *last = "no tls.crt".into();
            return Ok(None);
        };
        let current = leaf(&certificates(&pem)?[0])?;
        *last = format!("uid {:?}, serial {}", secret.metadata.uid, current.serial);
        Ok(wanted(&secret, &current).then_some((secret, current)))
    })
    .await
}

#[tokio::test]
async fn cert_manager_issues_and_renews_a_server_certificate() -> Result<()> {
    let server = ApiServer::start().await?;
    let client = server.client().await?;
    let began = Instant::now();
    cert_manager::install_crds(&client).await?;
    eprintln!("cert-manager CRDs installed in {:.2?}", began.elapsed());
    let ns = apiserver::create_namespace(&client, "certmgr").await?;
    let mut cm = CertManager::start(server.kubeconfig_path()).await?;
    let started = Instant::now();

    let cluster_issuers: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &cert_manager::resource("ClusterIssuer", "clusterissuers"),
    );
    let issuers: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &ns, &cert_manager::resource("Issuer", "issuers"));
    let certs: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns,
        &cert_manager::resource("Certificate", "certificates"),
    );
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let pp = PostParams::default();

    // Self-signed root → CA Certificate → CA Issuer, the usual cert-manager bootstrap.
    let selfsigned = format!("selfsigned-{ns}");
    let ref_to = |name: &str, kind: &str| json!({ "name": name, "kind": kind, "group": cert_manager::GROUP });
    cluster_issuers
        .create(
            &pp,
            &object(json!({
                "apiVersion": "cert-manager.io/v1", "kind": "ClusterIssuer",
                "metadata": { "name": selfsigned },
                "spec": { "selfSigned": {} },
            }))?,
        )
        .await?;
    cert_manager::wait_ready(&cluster_issuers, &selfsigned, ISSUE_TIMEOUT).await?;
    eprintln!(
        "ClusterIssuer Ready {:.2?} after cert-manager started",
        started.elapsed()
    );
    certs
        .create(
            &pp,
            &object(json!({
                "apiVersion": "cert-manager.io/v1", "kind": "Certificate",
                "metadata": { "name": "bao-ca" },
                "spec": {
                    "isCA": true, "commonName": "bao test CA", "secretName": CA_SECRET,
                    "privateKey": { "algorithm": "ECDSA", "size": 256 },
                    "issuerRef": ref_to(&selfsigned, "ClusterIssuer"),
                },
            }))?,
        )
        .await?;
    cert_manager::wait_ready(&certs, "bao-ca", ISSUE_TIMEOUT).await?;
    issuers
        .create(
            &pp,
            &object(json!({
                "apiVersion": "cert-manager.io/v1", "kind": "Issuer",
                "metadata": { "name": "bao-ca" },
                "spec": { "ca": { "secretName": CA_SECRET } },
            }))?,
        )
        .await?;
    cert_manager::wait_ready(&issuers, "bao-ca", ISSUE_TIMEOUT).await?;

    // The server certificate, with the names clients and raft peers use.
    let public = format!("{CLUSTER}-public.{ns}.svc");
    let headless = format!("{CLUSTER}.{ns}.svc");
    let pods = format!("*.{CLUSTER}.{ns}.svc");
    certs
        .create(
            &pp,
            &object(json!({
                "apiVersion": "cert-manager.io/v1", "kind": "Certificate",
                "metadata": { "name": "bao-server" },
                "spec": {
                    "secretName": SERVER_SECRET,
                    "dnsNames": ["localhost", public, headless, pods],
                    "ipAddresses": ["127.0.0.1"],
                    "usages": ["server auth", "client auth", "digital signature", "key encipherment"],
                    "privateKey": { "algorithm": "ECDSA", "size": 256 },
                    "issuerRef": ref_to("bao-ca", "Issuer"),
                },
            }))?,
        )
        .await?;
    cert_manager::wait_ready(&certs, "bao-server", ISSUE_TIMEOUT).await?;
    eprintln!(
        "server Certificate Ready {:.2?} after cert-manager started",
        started.elapsed()
    );

    let ca_secret = secrets.get(CA_SECRET).await?;
    let ca_der = certificates(&pem_entry(&ca_secret, "tls.crt")?)?.remove(0);
    let (secret, first) = issued_after(&mut cm, &secrets, None, ISSUE_TIMEOUT).await?;
    for key in ["tls.crt", "tls.key", "ca.crt"] {
        ensure!(!pem_entry(&secret, key)?.is_empty(), "{key} is empty");
    }
    ensure!(
        String::from_utf8(pem_entry(&secret, "tls.key")?)?.contains("PRIVATE KEY-----"),
        "tls.key is not a PEM private key"
    );
    let served_ca = certificates(&pem_entry(&secret, "ca.crt")?)?;
    ensure!(
        served_ca == vec![ca_der.clone()],
        "ca.crt is not the CA Certificate's certificate"
    );
    let mut expected_dns = vec!["localhost".to_string(), public.clone(), headless.clone(), pods.clone()];
    expected_dns.sort();
    assert_eq!(first.dns, expected_dns, "DNS SANs");
    assert_eq!(first.ips, vec!["127.0.0.1".to_string()], "IP SANs");
    assert_eq!(first.issuer, subject(&ca_der)?, "issued by the CA");
    let chain = certificates(&pem_entry(&secret, "tls.crt")?)?;
    for name in [
        public.as_str(),
        headless.as_str(),
        &format!("{CLUSTER}-0.{CLUSTER}.{ns}.svc"),
        "127.0.0.1",
    ] {
        verify_for(&ca_der, &chain, name)?;
    }
    ensure!(
        verify_for(&ca_der, &chain, &format!("other.{ns}.svc")).is_err(),
        "the certificate must not be valid for a name it does not carry"
    );
    eprintln!(
        "issued: serial {}, {} certificate(s) in tls.crt, issuer {}",
        first.serial,
        chain.len(),
        first.issuer
    );

    // Manual renewal, as `cmctl renew` does it: the Issuing condition on the Certificate status.
    // The Secret is updated in place (same object), so a mounted volume sees new files.
    let renew_started = Instant::now();
    cert_manager::renew(&certs, "bao-server").await?;
    let (renewed_secret, second) = issued_after(&mut cm, &secrets, Some(&first.serial), RENEW_TIMEOUT).await?;
    eprintln!(
        "manual renewal served in {:.2?}: serial {}",
        renew_started.elapsed(),
        second.serial
    );
    assert_eq!(
        renewed_secret.metadata.uid, secret.metadata.uid,
        "renewal updates the Secret in place"
    );
    assert_eq!(
        (second.dns.clone(), second.ips.clone()),
        (first.dns.clone(), first.ips.clone())
    );
    cert_manager::wait_ready(&certs, "bao-server", RENEW_TIMEOUT).await?;

    // A deleted Secret comes back: a new certificate, or the current one with its key.
    let delete_started = Instant::now();
    secrets.delete(SERVER_SECRET, &DeleteParams::default()).await?;
    let deleted = renewed_secret.metadata.uid.as_deref();
    let what = format!("Secret {SERVER_SECRET} re-created (the deleted one was uid {deleted:?})");
    let (reissued_secret, third) = server_secret_when(&mut cm, &secrets, &what, RENEW_TIMEOUT, |s, _| {
        s.metadata.uid.as_deref() != deleted
    })
    .await?;
    eprintln!(
        "deleted Secret back in {:.2?}: serial {}",
        delete_started.elapsed(),
        third.serial
    );
    assert_ne!(reissued_secret.metadata.uid, secret.metadata.uid, "a new Secret object");
    ensure!(
        third.serial != first.serial,
        "a new certificate, not the first one back"
    );
    verify_for(
        &ca_der,
        &certificates(&pem_entry(&reissued_secret, "tls.crt")?)?,
        &public,
    )?;

    ensure!(cm.is_running(), "cert-manager exited:\n{}", cm.log_tail(60));
    Ok(())
}
