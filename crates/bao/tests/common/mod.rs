//! Shared set-up for the client tests: a temp dir with a test CA, a static seal key, a JWT
//! signing key, and nodes whose config is written by hand here (test-only HCL).

#![allow(dead_code)]

use anyhow::Result;
use openbao_client::{BaoClient, Token};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tempfile::TempDir;
use testkit::openbao::{
    BaoServerSpec, NodeAddr, TestJwtSigner, TestNodeConfig, TestTls, unix_now, write_static_seal_key,
};

pub const NAMESPACE: &str = "obtest";
pub const DEMO_PASSWORD: &str = "demo-password-for-tests";
pub const JWT_ISSUER: &str = "https://obtest.example/issuer";
pub const JWT_SUBJECT: &str = "system:serviceaccount:obtest:openbao-operator";

pub struct Workspace {
    pub dir: TempDir,
    pub tls: TestTls,
    pub seal_key: PathBuf,
    pub jwt: TestJwtSigner,
    pub jwt_public_key_file: PathBuf,
    pub started: Instant,
}

impl Workspace {
    pub fn new() -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("openbao-client-test-").tempdir()?;
        let tls = TestTls::generate(&dir.path().join("tls"), NAMESPACE)?;
        let seal_key = write_static_seal_key(&dir.path().join("tls/unseal.key"))?;
        let jwt = TestJwtSigner::new()?;
        let jwt_public_key_file = dir.path().join("tls/jwt-pub.pem");
        std::fs::write(&jwt_public_key_file, jwt.public_key_pem())?;
        Ok(Self {
            dir,
            tls,
            seal_key,
            jwt,
            jwt_public_key_file,
            started: Instant::now(),
        })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Milliseconds since the workspace was created, for timing lines.
    pub fn elapsed_ms(&self) -> u128 {
        self.started.elapsed().as_millis()
    }

    /// The base config of node `index` (node id `node<index+1>`), static seal, fast raft.
    pub fn node_config(&self, index: usize, addr: NodeAddr) -> TestNodeConfig {
        let data_dir = self.path().join(format!("n{index}/data"));
        TestNodeConfig::new(&format!("node{}", index + 1), addr, &data_dir, &self.tls).static_seal(&self.seal_key)
    }

    /// Writes `n<index>/config/` with `00-node.hcl` and, when `self_init`, `10-initialize.hcl`,
    /// and returns the spec to start it with `binary`.
    pub fn node_spec(
        &self,
        index: usize,
        config: &TestNodeConfig,
        self_init: bool,
        binary: &Path,
    ) -> Result<BaoServerSpec> {
        let init_hcl = initialize_hcl(&self.jwt_public_key_file);
        let extra: &[(&str, &str)] = if self_init {
            &[("10-initialize.hcl", &init_hcl)]
        } else {
            &[]
        };
        let config_dir = config.write_to(&self.path().join(format!("n{index}/config")), extra)?;
        Ok(BaoServerSpec::new(
            &config.node_id,
            binary,
            &config_dir,
            self.tls.client_config(index, &config.addr),
        )
        .env("DEMO_PASSWORD", DEMO_PASSWORD))
    }

    /// Three nodes that form one raft cluster: node 0 self-initializes, nodes 1 and 2
    /// `retry_join` the other two. Returns their addresses and the specs to start them with.
    pub fn three_node_specs(&self, binary: &Path) -> Result<([NodeAddr; 3], Vec<BaoServerSpec>)> {
        let addrs = [NodeAddr::allocate()?, NodeAddr::allocate()?, NodeAddr::allocate()?];
        let mut specs = Vec::new();
        for (i, addr) in addrs.iter().enumerate() {
            let mut config = self.node_config(i, *addr);
            for (j, peer) in addrs.iter().enumerate().filter(|(j, _)| *j != i) {
                config = config.join(&self.tls, j, peer);
            }
            specs.push(self.node_spec(i, &config, i == 0, binary)?);
        }
        Ok((addrs, specs))
    }

    /// A JWT for the `operator` role, with `aud` as given.
    pub fn operator_jwt(&self, audience: &str) -> Result<String> {
        let now = unix_now();
        self.jwt.sign(&json!({
            "iss": JWT_ISSUER,
            "sub": JWT_SUBJECT,
            "aud": [audience],
            "iat": now,
            "nbf": now - 5,
            "exp": now + 600,
        }))
    }
}

/// Logs in as the userpass demo user (policy `admin`: everything incl. sudo).
pub async fn admin(client: &BaoClient) -> Result<BaoClient> {
    let login = client.login_userpass("userpass", "demo", DEMO_PASSWORD).await?;
    Ok(client.with_token(login.token))
}

pub fn token_of(client: &BaoClient) -> Token {
    client.token().expect("client has a token").clone()
}

/// The self-init blocks: KV v2 first, then policies, auth (userpass demo user, JWT with the
/// test's public key, role `operator`), and the KV seed last (KV v2 needs a moment after
/// mounting; see the runtime facts).
pub fn initialize_hcl(jwt_public_key_file: &Path) -> String {
    let template = r#"
initialize "mounts" {
  request "enable-kv" {
    operation = "update"
    path      = "sys/mounts/secret"
    data = {
      type    = "kv"
      options = {
        version = "2"
      }
    }
  }
}

initialize "policies" {
  request "operator-policy" {
    operation = "update"
    path      = "sys/policies/acl/operator"
    data = {
      policy = <<EOP
path "sys/storage/raft/*" { capabilities = ["create", "read", "update", "delete", "list"] }
path "sys/step-down"      { capabilities = ["update", "sudo"] }
path "secret/data/*"      { capabilities = ["read"] }
EOP
    }
  }
  request "admin-policy" {
    operation = "update"
    path      = "sys/policies/acl/admin"
    data = {
      policy = <<EOP
path "*" { capabilities = ["create", "read", "update", "patch", "delete", "list", "sudo"] }
EOP
    }
  }
}

initialize "auth" {
  request "enable-userpass" {
    operation = "update"
    path      = "sys/auth/userpass"
    data      = { type = "userpass" }
  }
  request "demo-user" {
    operation = "update"
    path      = "auth/userpass/users/demo"
    data = {
      password = {
        eval_type       = "string"
        eval_source     = "env"
        env_var         = "DEMO_PASSWORD"
        require_present = true
      }
      token_policies = ["admin"]
    }
  }
  request "enable-jwt" {
    operation = "update"
    path      = "sys/auth/jwt"
    data      = { type = "jwt" }
  }
  request "jwt-config" {
    operation = "update"
    path      = "auth/jwt/config"
    data = {
      jwt_validation_pubkeys = {
        eval_type   = "string"
        eval_source = "file"
        path        = "@JWT_PUB@"
      }
      bound_issuer = "@ISSUER@"
    }
  }
  request "jwt-role" {
    operation = "update"
    path      = "auth/jwt/role/operator"
    data = {
      role_type       = "jwt"
      user_claim      = "sub"
      bound_audiences = ["openbao"]
      bound_subject   = "@SUBJECT@"
      token_policies  = ["operator"]
      token_ttl       = "1h"
    }
  }
}

initialize "seed" {
  request "seed-demo" {
    operation = "update"
    path      = "secret/data/demo"
    data      = { data = { hello = "world" } }
  }
}
"#;
    template
        .replace("@JWT_PUB@", &jwt_public_key_file.display().to_string())
        .replace("@ISSUER@", JWT_ISSUER)
        .replace("@SUBJECT@", JWT_SUBJECT)
}
