initialize "user-mounts" {
  request "kv" {
    operation = "update"
    path = "sys/mounts/secret"
    data = {
      "options" = {
        "version" = "2"
      }
      "type" = "kv"
    }
  }
}
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
  request "admin" {
    operation = "update"
    path = "sys/policies/acl/admin"
    data = {
      "policy" = "path \"*\" { capabilities = [\"create\", \"read\", \"update\", \"patch\", \"delete\", \"list\", \"sudo\"] }\n"
    }
  }
}
initialize "operator-auth" {
  request "enable-jwt" {
    operation = "update"
    path = "sys/auth/jwt-operator"
    data = {
      "description" = "Kubernetes service-account logins (managed by openbao-operator)"
      "type" = "jwt"
    }
  }
  request "jwt-config" {
    operation = "update"
    path = "auth/jwt-operator/config"
    data = {
      "bound_issuer" = "https://kubernetes.default.svc.cluster.local"
      "jwt_validation_pubkeys" = ["-----BEGIN PUBLIC KEY-----\nMFkw...\n-----END PUBLIC KEY-----\n"]
    }
  }
  request "role-openbao-operator" {
    operation = "update"
    path = "auth/jwt-operator/role/openbao-operator"
    data = {
      "bound_audiences" = ["openbao-operator.openbao.org/lane/openbao"]
      "bound_subject" = "system:serviceaccount:openbao-operator-system:openbao-operator"
      "role_type" = "jwt"
      "token_max_ttl" = "4h"
      "token_policies" = ["openbao-operator"]
      "token_ttl" = "1h"
      "user_claim" = "sub"
    }
  }
  request "role-openbao-operator-seal-migration" {
    operation = "update"
    path = "auth/jwt-operator/role/openbao-operator-seal-migration"
    data = {
      "bound_audiences" = ["openbao-operator.openbao.org/lane/openbao"]
      "bound_subject" = "system:serviceaccount:openbao-operator-system:openbao-operator"
      "role_type" = "jwt"
      "token_max_ttl" = "4h"
      "token_policies" = ["openbao-operator-seal-migration"]
      "token_ttl" = "1h"
      "user_claim" = "sub"
    }
  }
  request "role-openbao-operator-backup" {
    operation = "update"
    path = "auth/jwt-operator/role/openbao-operator-backup"
    data = {
      "bound_audiences" = ["openbao-operator.openbao.org/lane/openbao"]
      "bound_subject" = "system:serviceaccount:lane:openbao-backup-serviceaccount"
      "role_type" = "jwt"
      "token_max_ttl" = "4h"
      "token_policies" = ["openbao-operator-backup"]
      "token_ttl" = "1h"
      "user_claim" = "sub"
    }
  }
  request "role-openbao-operator-upgrade" {
    operation = "update"
    path = "auth/jwt-operator/role/openbao-operator-upgrade"
    data = {
      "bound_audiences" = ["openbao-operator.openbao.org/lane/openbao"]
      "bound_subject" = "system:serviceaccount:lane:openbao-upgrade-serviceaccount"
      "role_type" = "jwt"
      "token_max_ttl" = "4h"
      "token_policies" = ["openbao-operator-upgrade"]
      "token_ttl" = "1h"
      "user_claim" = "sub"
    }
  }
  request "role-openbao-operator-restore" {
    operation = "update"
    path = "auth/jwt-operator/role/openbao-operator-restore"
    data = {
      "bound_audiences" = ["openbao-operator.openbao.org/lane/openbao"]
      "bound_subject" = "system:serviceaccount:lane:openbao-restore-serviceaccount"
      "role_type" = "jwt"
      "token_max_ttl" = "4h"
      "token_policies" = ["openbao-operator-restore"]
      "token_ttl" = "1h"
      "user_claim" = "sub"
    }
  }
  request "role-admin" {
    operation = "update"
    path = "auth/jwt-operator/role/admin"
    data = {
      "bound_audiences" = ["openbao-operator.openbao.org/lane/openbao"]
      "bound_subject" = "system:serviceaccount:platform:bao-admin"
      "role_type" = "jwt"
      "token_max_ttl" = "4h"
      "token_policies" = ["admin"]
      "token_ttl" = "1h"
      "user_claim" = "sub"
    }
  }
  request "enable-userpass" {
    operation = "update"
    path = "sys/auth/userpass"
    data = {
      "description" = "Demo login for local development only"
      "type" = "userpass"
    }
  }
  request "demo-user" {
    operation = "update"
    path = "auth/userpass/users/demo"
    data = {
      "password" = {
        "env_var" = "BAO_DEMO_PASSWORD"
        "eval_source" = "env"
        "eval_type" = "string"
        "require_present" = true
      }
      "token_policies" = ["admin"]
      "token_ttl" = "1h"
    }
  }
}
initialize "operator-autopilot" {
  request "autopilot" {
    operation = "update"
    path = "sys/storage/raft/autopilot/configuration"
    data = {
      "cleanup_dead_servers" = true
      "dead_server_last_contact_threshold" = "5m"
      "min_quorum" = 3
      "server_stabilization_time" = "2s"
    }
  }
}
initialize "user-seed" {
  request "seed" {
    operation = "update"
    path = "secret/data/demo"
    data = {
      "data" = {
        "hello" = "world"
      }
    }
  }
}
