# Entry points; the scripts in hack/ and the Rust testkit do the work.
.PHONY: apiserver-up cluster-up cluster-down test fmt clippy run crds lane-up lane-down lane-status lane-backup lane-restore lane-upgrade lane-gitops

apiserver-up: ## etcd + kube-apiserver on loopback; kubeconfig at .cluster/kubeconfig
	bash hack/cluster.sh apiserver-up

cluster-up: ## cluster in its own network namespace (kubelet, containerd, CoreDNS, local-path); NODES=3 adds two worker nodes
	bash hack/cluster.sh cluster-up --nodes $(or $(NODES),1)

cluster-down: ## stops either mode; no process, mount, netns or veth stays behind
	bash hack/cluster.sh down

test: ## every test: unit, real OpenBao, real apiserver (installs what it needs)
	bash hack/test.sh

run: ## the operator against the current kubeconfig (or a hermetic apiserver when there is none)
	bash hack/dev.sh

lane-up: ## the local lane: k3d or the hermetic node, Traefik Gateway edge, S3 store, operator, a Development cluster
	bash hack/lane.sh up

lane-down: ## removes what lane-up created (a node or k3d cluster that was already running stays)
	bash hack/lane.sh down

lane-status: ## what the lane runs, the cluster's conditions and how to log in
	bash hack/lane.sh status

lane-backup: ## rehearsal: a manual backup of the lane cluster; prints the object in the S3 store
	bash hack/lane.sh backup

lane-restore: ## rehearsal: restore KEY=<object key> (default: the newest backup) into the lane cluster
	bash hack/lane.sh restore "$(KEY)"

lane-upgrade: ## rehearsal: upgrade the lane cluster to VERSION=<x.y.z>, probing the Gateway every 200 ms
	bash hack/lane.sh upgrade "$(VERSION)"

lane-gitops: ## rehearsal (hermetic node): Argo CD syncs an OpenBaoCluster from the lane's Git server; a re-sync writes nothing
	bash hack/lane.sh gitops

crds: ## regenerate deploy/crds.yaml and the chart's copy from the API types
	UPDATE_CRDS=1 cargo test -q -p openbao-api --test crd_drift
	UPDATE_CRDS=1 cargo test -q -p openbao-operator --test helm_chart chart_crds

fmt:
	cargo fmt --all

clippy:
	cargo clippy --workspace --all-targets -- -D warnings
