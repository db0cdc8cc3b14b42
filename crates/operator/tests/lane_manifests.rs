//! The lane's manifests (deploy/lane/) name exactly the images hack/versions.env pins, the ones
//! hack/images.sh assembles for the hermetic node and k3d pulls: a bumped version that misses a
//! manifest would leave a pod that cannot start (ErrImageNeverPull on the node). No cluster needed.

use anyhow::{Context as _, Result, ensure};
use testkit::cache::{pinned, repo_root};

fn images_in(manifest: &str) -> Result<Vec<String>> {
    let path = repo_root().join("deploy/lane").join(manifest);
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|line| line.trim().strip_prefix("image:"))
        .map(|image| image.trim().to_string())
        .collect())
}

#[test]
fn lane_manifests_name_the_pinned_images() -> Result<()> {
    let wanted = [
        (
            "edge.yaml",
            format!("docker.io/library/traefik:v{}", pinned("TRAEFIK_VERSION")?),
        ),
        (
            "storage-rustfs.yaml",
            format!("docker.io/rustfs/rustfs:{}", pinned("RUSTFS_VERSION")?),
        ),
        (
            "storage-s3s-fs.yaml",
            format!("localhost/openbao-operator/s3s-fs:{}", pinned("S3S_FS_VERSION")?),
        ),
        (
            "monitoring.yaml",
            format!("docker.io/prom/prometheus:v{}", pinned("PROMETHEUS_VERSION")?),
        ),
    ];
    for (manifest, image) in wanted {
        let named = images_in(manifest)?;
        ensure!(
            named == [image.clone()],
            "deploy/lane/{manifest} names {named:?}, the pin is {image}"
        );
    }
    let oldest = pinned("OPENBAO_VERSIONS")?
        .split_whitespace()
        .next()
        .context("OPENBAO_VERSIONS is empty")?
        .to_string();
    for manifest in ["openbao-cluster.yaml", "hardened/openbao-cluster.yaml"] {
        let cluster = std::fs::read_to_string(repo_root().join("deploy/lane").join(manifest))?;
        ensure!(
            cluster.contains(&format!("version: \"{oldest}\"")) || cluster.contains(&format!("version: {oldest}")),
            "deploy/lane/{manifest}: the lane cluster starts on the oldest pinned OpenBao ({oldest}) so lane-upgrade has somewhere to go"
        );
    }
    // Argo CD on the node (hack/images.sh with LANE_ARGOCD=1): every Argo CD component runs
    // argocd's image, the cache runs redis's, both as hack/versions.env pins them.
    let argocd = format!("quay.io/argoproj/argocd:{}", pinned("ARGOCD_VERSION")?);
    let redis = format!("docker.io/library/redis:{}", pinned("ARGOCD_REDIS_VERSION")?);
    let named = images_in("argocd.yaml")?;
    ensure!(
        named.contains(&argocd) && named.contains(&redis) && named.iter().all(|i| *i == argocd || *i == redis),
        "deploy/lane/argocd.yaml names {named:?}, the pins are {argocd} and {redis}"
    );
    // Images the lane fills in itself: the transit server's version, cert-manager's build.
    ensure!(
        images_in("hardened/transit.yaml")? == ["docker.io/openbao/openbao:LANE_TRANSIT_VERSION"],
        "deploy/lane/hardened/transit.yaml names its image for hack/lane.sh to fill in"
    );
    ensure!(
        images_in("cert-manager-node.yaml")? == ["@IMAGE@"],
        "deploy/lane/cert-manager-node.yaml names its image for hack/lane.sh and testkit to fill in"
    );
    Ok(())
}

/// The hardened lane's transit role binds what the operator gives each server of the lane
/// cluster (`openbao/openbao`): its service account and its transit login audience. A renamed
/// one would leave the servers unable to unseal.
#[test]
fn the_hardened_lanes_transit_role_binds_the_servers_identity() -> Result<()> {
    use openbao_api::names;
    let lane = std::fs::read_to_string(repo_root().join("hack/lane.sh"))?;
    for (variable, value) in [
        ("TENANT_NS", "openbao".to_string()),
        ("CLUSTER", "openbao".to_string()),
        ("SERVER_SERVICE_ACCOUNT", names::service_account("openbao")),
        (
            "TRANSIT_LOGIN_AUDIENCE",
            names::transit_login_audience("openbao", "openbao"),
        ),
    ] {
        ensure!(
            lane.contains(&format!("\n{variable}={value}\n")),
            "hack/lane.sh's {variable} is not {value}"
        );
    }
    let cluster = std::fs::read_to_string(repo_root().join("deploy/lane/hardened/openbao-cluster.yaml"))?;
    for (field, variable) in [("role", "TRANSIT_ROLE"), ("keyName", "TRANSIT_KEY")] {
        let value = lane
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{variable}=")))
            .with_context(|| format!("hack/lane.sh sets no {variable}"))?;
        ensure!(
            cluster.contains(&format!("{field}: {value}\n")),
            "deploy/lane/hardened/openbao-cluster.yaml's {field} is not hack/lane.sh's {variable} ({value})"
        );
    }
    Ok(())
}

/// The installs name the service-registration ClusterRole the operator binds (one fixed name):
/// the chart, the kustomize RBAC and the lane script (which hands an existing one to Helm).
#[test]
fn every_install_names_the_cluster_role_the_operator_binds() -> Result<()> {
    let name = openbao_api::names::SERVICE_REGISTRATION_CLUSTER_ROLE;
    for file in [
        "charts/openbao-operator/templates/rbac.yaml",
        "deploy/operator/rbac.yaml",
        "hack/lane.sh",
    ] {
        let text = std::fs::read_to_string(repo_root().join(file)).with_context(|| format!("read {file}"))?;
        ensure!(text.contains(name), "{file} does not name the ClusterRole {name}");
    }
    let lane = std::fs::read_to_string(repo_root().join("hack/lane.sh"))?;
    ensure!(
        lane.contains(&format!("SERVICE_REGISTRATION_CLUSTER_ROLE={name}\n")),
        "hack/lane.sh's SERVICE_REGISTRATION_CLUSTER_ROLE is not {name}"
    );
    Ok(())
}

/// The GitOps rehearsal's Application reads the Git server the lane waits for (hack/lane.sh's
/// GITOPS_REPO, served by deploy/lane/gitops/git-server.yaml's Service lane-git).
#[test]
fn the_gitops_application_reads_the_lanes_git_server() -> Result<()> {
    let lane = std::fs::read_to_string(repo_root().join("hack/lane.sh"))?;
    let repo = lane
        .lines()
        .find_map(|l| l.strip_prefix("GITOPS_REPO="))
        .context("hack/lane.sh sets no GITOPS_REPO")?;
    let application = std::fs::read_to_string(repo_root().join("deploy/lane/gitops/application.yaml"))?;
    ensure!(
        application.contains(&format!("repoURL: {repo}\n")),
        "deploy/lane/gitops/application.yaml's repoURL is not hack/lane.sh's GITOPS_REPO ({repo})"
    );
    let server = std::fs::read_to_string(repo_root().join("deploy/lane/gitops/git-server.yaml"))?;
    ensure!(
        repo.starts_with("git://lane-git.argocd.svc:9418/") && server.contains("name: lane-git\n  namespace: argocd"),
        "GITOPS_REPO {repo} is not the Service lane-git of deploy/lane/gitops/git-server.yaml"
    );
    Ok(())
}
