//! Test support shared by the integration tests: real parts only.
//!
//! - [`pki`]: throw-away certificate authorities for harness processes.
//! - [`process`]: child processes that die with the test, even on panic or SIGKILL.
//! - [`apiserver`]: a hermetic control plane (real etcd + kube-apiserver) for controller tests.
//! - [`node`]: a real single-node cluster (kubelet, containerd, CoreDNS, storage) in its own
//!   network namespace, for `make cluster-up` and the node-mode tests.
//! - [`pods`]: waiting on the node's pods (Ready, finished) with their state in errors.
//! - [`openbao`]: real `bao server` processes on their own loopback addresses.
//! - [`s3`]: a real S3-compatible server (RustFS or s3s-fs) on loopback.
//! - [`cache`]: where `hack/*.sh` put the real binaries.
//! - [`browser`]: a real headless Chromium (WebDriver) that trusts only the test's CA, for UI checks.
//! - [`cert_manager`]: a real cert-manager (built from its Go module) against a kubeconfig.

pub mod apiserver;
pub mod browser;
pub mod cache;
pub mod cert_manager;
pub mod node;
pub mod openbao;
pub mod pki;
pub mod pods;
pub mod probe;
pub mod process;
pub mod s3;
pub mod transit;
