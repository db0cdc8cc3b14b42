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
    let cluster = std::fs::read_to_string(repo_root().join("deploy/lane/openbao-cluster.yaml"))?;
    let oldest = pinned("OPENBAO_VERSIONS")?
        .split_whitespace()
        .next()
        .context("OPENBAO_VERSIONS is empty")?
        .to_string();
    ensure!(
        cluster.contains(&format!("version: \"{oldest}\"")) || cluster.contains(&format!("version: {oldest}")),
        "the lane cluster starts on the oldest pinned OpenBao ({oldest}) so lane-upgrade has somewhere to go"
    );
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
