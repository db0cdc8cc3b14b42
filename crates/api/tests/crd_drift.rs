//! The committed CRDs under deploy/ must be exactly what the types derive.
//! Regenerate with `UPDATE_CRDS=1 cargo test -p openbao-api --test crd_drift`.

use std::path::Path;

#[test]
fn committed_crds_match_the_types() {
    let path = Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
        .join("../../deploy/crds.yaml");
    let generated = openbao_api::crd::yaml();
    if std::env::var_os("UPDATE_CRDS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "deploy/crds.yaml is stale: run `UPDATE_CRDS=1 cargo test -p openbao-api --test crd_drift`"
    );
}
