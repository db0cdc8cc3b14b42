# Entry points; the scripts in hack/ and the Rust testkit do the work.
.PHONY: apiserver-up cluster-up cluster-down test fmt clippy run crds

apiserver-up: ## etcd + kube-apiserver on loopback; kubeconfig at .cluster/kubeconfig
	bash hack/cluster.sh apiserver-up

cluster-up: ## single-node cluster in its own network namespace (kubelet, containerd, CoreDNS, local-path)
	bash hack/cluster.sh cluster-up

cluster-down: ## stops either mode; no process, mount, netns or veth stays behind
	bash hack/cluster.sh down

test: ## every test: unit, real OpenBao, real apiserver (installs what it needs)
	bash hack/test.sh

run: ## the operator against the current kubeconfig (or a hermetic apiserver when there is none)
	bash hack/dev.sh

crds: ## regenerate deploy/crds.yaml from the API types
	UPDATE_CRDS=1 cargo test -q -p openbao-api --test crd_drift

fmt:
	cargo fmt --all

clippy:
	cargo clippy --workspace --all-targets -- -D warnings
