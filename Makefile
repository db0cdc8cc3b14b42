# Entry points; the scripts in hack/ and the Rust testkit do the work.
.PHONY: apiserver-up cluster-up cluster-down test fmt clippy

apiserver-up: ## etcd + kube-apiserver on loopback; kubeconfig at .cluster/kubeconfig
	bash hack/cluster.sh apiserver-up

cluster-up: ## node mode (apiserver + kubelet & co.)
	@echo "node mode: not implemented yet" >&2; exit 1

cluster-down:
	bash hack/cluster.sh down

test:
	cargo test --workspace

fmt:
	cargo fmt --all

clippy:
	cargo clippy --workspace --all-targets -- -D warnings
