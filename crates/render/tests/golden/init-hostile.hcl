initialize "operator-policies" {
  request "openbao-operator" {
    operation = "update"
    path = "sys/policies/acl/openbao-operator"
    data = {
      "policy" = "path \"sys/storage/raft/configuration\" { capabilities = [\"read\"] }\npath \"sys/storage/raft/autopilot/*\" { capabilities = [\"read\", \"update\"] }\npath \"sys/storage/raft/remove-peer\" { capabilities = [\"update\"] }\npath \"sys/storage/raft/promote\" { capabilities = [\"update\"] }\npath \"sys/storage/raft/demote\" { capabilities = [\"update\"] }\npath \"sys/step-down\" { capabilities = [\"update\", \"sudo\"] }\npath \"auth/jwt-operator/config\" { capabilities = [\"read\", \"update\"] }\n"
    }
  }
  request "openbao-operator-seal-migration" {
    operation = "update"
    path = "sys/policies/acl/openbao-operator-seal-migration"
    data = {
      "policy" = "path \"sys/rotate/recovery/init\" { capabilities = [\"read\", \"update\", \"delete\", \"sudo\"] }\npath \"sys/rotate/recovery/verify\" { capabilities = [\"read\", \"update\", \"delete\", \"sudo\"] }\npath \"sys/step-down\" { capabilities = [\"update\", \"sudo\"] }\npath \"sys/storage/raft/configuration\" { capabilities = [\"read\"] }\npath \"sys/storage/raft/autopilot/state\" { capabilities = [\"read\"] }\npath \"sys/storage/raft/snapshot\" { capabilities = [\"read\"] }\n"
    }
  }
  request "openbao-operator-backup" {
    operation = "update"
    path = "sys/policies/acl/openbao-operator-backup"
    data = {
      "policy" = "path \"sys/storage/raft/snapshot\" { capabilities = [\"read\"] }\n"
    }
  }
  request "openbao-operator-upgrade" {
    operation = "update"
    path = "sys/policies/acl/openbao-operator-upgrade"
    data = {
      "policy" = "path \"sys/storage/raft/configuration\" { capabilities = [\"read\"] }\npath \"sys/storage/raft/autopilot/state\" { capabilities = [\"read\"] }\npath \"sys/storage/raft/snapshot\" { capabilities = [\"read\"] }\npath \"sys/storage/raft/promote\" { capabilities = [\"update\"] }\npath \"sys/storage/raft/demote\" { capabilities = [\"update\"] }\npath \"sys/storage/raft/remove-peer\" { capabilities = [\"update\"] }\npath \"sys/step-down\" { capabilities = [\"update\", \"sudo\"] }\n"
    }
  }
  request "openbao-operator-restore" {
    operation = "update"
    path = "sys/policies/acl/openbao-operator-restore"
    data = {
      "policy" = "path \"sys/storage/raft/snapshot\" { capabilities = [\"update\"] }\npath \"sys/storage/raft/snapshot-force\" { capabilities = [\"update\"] }\n"
    }
  }
}
initialize "operator-autopilot" {
  request "autopilot" {
    operation = "update"
    path = "sys/storage/raft/autopilot/configuration"
    data = {
      "cleanup_dead_servers" = false
      "dead_server_last_contact_threshold" = "5m"
      "min_quorum" = 1
      "server_stabilization_time" = "2s"
    }
  }
}
initialize "user-hostile" {
  request "hostile" {
    operation = "update"
    path = "secret/data/\u0024{a}\"/%{b}"
    data = {
      "data" = {
        "\u0024{identity.entity.id}" = "\u0024\u0024{x} %{y} \"}\nenable_response_header_hostname = true\n#"
        "controls" = "\u0000\r\t\u007f\ue123"
        "placeholder" = "\u0040\u0040POD_NAME\u0040\u0040"
        "unicode" = "é😀"
      }
    }
  }
}
