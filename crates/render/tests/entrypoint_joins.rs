//! Which `retry_join` blocks the entrypoint keeps: none on the founder (pod 0 with the self-init
//! file on empty storage), every peer but itself on the others. A stand-in `bao` on PATH exits at
//! once, so the script only renders the config; `sh` and `awk` are the host's (busybox in the
//! image; the same POSIX subset).

use openbao_api::OpenBaoClusterSpec;
use openbao_render::{Cluster, config};
use std::path::Path;
use std::process::Command;

fn spec() -> OpenBaoClusterSpec {
    serde_json::from_value(serde_json::json!({
        "version": "2.7.2", "profile": "Development", "replicas": 3, "storage": {"size": "1Gi"},
    }))
    .expect("spec")
}

/// Runs the entrypoint as `pod` and returns the `leader_api_addr`s of its rendered server config.
fn join_targets(dir: &Path, pod: &str, with_init: bool, with_data: bool) -> Vec<String> {
    let spec = spec();
    let cluster = Cluster {
        name: "openbao",
        namespace: "lane",
        uid: "uid-1",
        spec: &spec,
    };
    let root = dir.join(pod);
    let (templates, init, rendered, data, bin) = (
        root.join("templates"),
        root.join("init"),
        root.join("rendered"),
        root.join("data"),
        root.join("bin"),
    );
    for d in [&templates, &init, &data.join("raft"), &bin] {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    std::fs::write(templates.join(config::SERVER_FILE), config::server_hcl(&cluster)).expect("template");
    if with_init {
        std::fs::write(init.join(config::INIT_FILE), "initialize \"x\" {}\n").expect("init file");
    }
    if with_data {
        std::fs::write(data.join("raft/raft.db"), "").expect("raft.db");
    }
    let fake_bao = bin.join("bao");
    std::fs::write(&fake_bao, "#!/bin/sh\nexit 0\n").expect("fake bao");
    Command::new("chmod").arg("+x").arg(&fake_bao).status().expect("chmod");
    let script = root.join(config::ENTRYPOINT_FILE);
    std::fs::write(&script, config::entrypoint_sh()).expect("entrypoint");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let out = Command::new("sh")
        .arg(&script)
        .env("PATH", path)
        .env("POD_NAME", pod)
        .env("BAO_TEMPLATE_DIR", &templates)
        .env("BAO_INIT_DIR", &init)
        .env("BAO_RENDERED_DIR", &rendered)
        .env("BAO_DATA_DIR", &data)
        .env("BAO_TLS_CERT", root.join("missing.crt"))
        .env("BAO_RELOAD_POLL_SECONDS", "1")
        .output()
        .expect("run the entrypoint");
    assert!(out.status.success(), "entrypoint failed: {out:?}");
    let hcl = std::fs::read_to_string(rendered.join(config::SERVER_FILE)).expect("rendered config");
    assert!(hcl.contains("node_id = \"") && hcl.trim_end().ends_with('}'), "{hcl}");
    assert_eq!(
        hcl.matches("retry_join {").count(),
        hcl.matches("leader_api_addr").count(),
        "{hcl}"
    );
    hcl.lines()
        .filter_map(|l| l.trim().strip_prefix("leader_api_addr = "))
        .map(|a| a.trim_matches('"').to_string())
        .collect()
}

fn addr(pod: &str) -> String {
    format!("https://{pod}.openbao.lane.svc:8200")
}

#[test]
fn the_founder_joins_nobody_and_no_server_joins_itself() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert!(join_targets(dir.path(), "openbao-0", true, false).is_empty());
    assert_eq!(
        join_targets(dir.path(), "openbao-1", true, false),
        [addr("openbao-0"), addr("openbao-2")]
    );
    assert_eq!(
        join_targets(dir.path(), "openbao-2", false, false),
        [addr("openbao-0"), addr("openbao-1")]
    );
}

#[test]
fn pod_zero_lists_its_peers_once_it_is_not_founding() {
    let dir = tempfile::tempdir().expect("tempdir");
    let peers = [addr("openbao-1"), addr("openbao-2")];
    // The operator removed the requests (cluster initialized) ...
    assert_eq!(join_targets(dir.path(), "openbao-0", false, false), peers);
    // ... or the server has storage already: it never founds again.
    let again = tempfile::tempdir().expect("tempdir");
    assert_eq!(join_targets(again.path(), "openbao-0", true, true), peers);
}
