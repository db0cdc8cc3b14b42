ui = true
cluster_name = "openbao"
api_addr = "https://@@POD_NAME@@.openbao.lane.svc:8200"
cluster_addr = "https://@@POD_NAME@@.openbao.lane.svc:8201"
disable_mlock = true
listener "tcp" {
  address = "0.0.0.0:8200"
  cluster_address = "0.0.0.0:8201"
  tls_cert_file = "/etc/bao/tls/tls.crt"
  tls_key_file = "/etc/bao/tls/tls.key"
  tls_min_version = "tls12"
  telemetry {
    unauthenticated_metrics_access = true
  }
}
seal "static" {
  current_key_id = "operator-generated-v1"
  current_key = "file:///etc/bao/unseal/key"
}
storage "raft" {
  path = "/bao/data"
  node_id = "@@POD_NAME@@"
  performance_multiplier = 2
  autopilot_update_interval = "1s"
  autopilot_reconcile_interval = "2s"
  retry_join {
    leader_api_addr = "https://openbao-0.openbao.lane.svc:8200"
    leader_tls_servername = "openbao-0.openbao.lane.svc"
    leader_ca_cert_file = "/etc/bao/tls/ca.crt"
  }
  retry_join {
    leader_api_addr = "https://openbao-1.openbao.lane.svc:8200"
    leader_tls_servername = "openbao-1.openbao.lane.svc"
    leader_ca_cert_file = "/etc/bao/tls/ca.crt"
  }
  retry_join {
    leader_api_addr = "https://openbao-2.openbao.lane.svc:8200"
    leader_tls_servername = "openbao-2.openbao.lane.svc"
    leader_ca_cert_file = "/etc/bao/tls/ca.crt"
  }
}
