//! A hostile tenant's "OpenBao": the image of `node_hostile.rs`. It is installed as the image's
//! `/bin/sh`, so the operator's entrypoint command starts it. It serves HTTPS on 8200 with the
//! certificate the operator mounts for the real server, says it is healthy, initialized and
//! unsealed, and prints every JWT sent to a login path (`CAPTURED <path> <jwt>`) so that the
//! test can try what a tenant would do with it. Never part of the product.

use anyhow::{Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;

const TLS_DIR: &str = "/etc/bao/tls";
const LISTEN: &str = "0.0.0.0:8200";

fn main() -> Result<()> {
    rustls::crypto::aws_lc_rs::default_provider().install_default().ok();
    let certs = CertificateDer::pem_file_iter(format!("{TLS_DIR}/tls.crt"))
        .context("read tls.crt")?
        .collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(format!("{TLS_DIR}/tls.key")).context("read tls.key")?;
    let config = Arc::new(
        ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)?,
    );
    let listener = TcpListener::bind(LISTEN).with_context(|| format!("bind {LISTEN}"))?;
    println!("token-catcher listening on {LISTEN}");
    for stream in listener.incoming().flatten() {
        let config = config.clone();
        std::thread::spawn(move || {
            if let Err(e) = serve(stream, config) {
                eprintln!("connection: {e:#}");
            }
        });
    }
    Ok(())
}

fn serve(stream: TcpStream, config: Arc<ServerConfig>) -> Result<()> {
    let mut tls = BufReader::new(StreamOwned::new(ServerConnection::new(config)?, stream));
    let mut request_line = String::new();
    tls.read_line(&mut request_line)?;
    let mut parts = request_line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or_default().to_string(),
        parts.next().unwrap_or_default().to_string(),
    );
    let mut content_length = 0usize;
    loop {
        let mut header = String::new();
        if tls.read_line(&mut header)? == 0 || header == "\r\n" {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            content_length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; content_length.min(1 << 20)];
    tls.read_exact(&mut body)?;

    let (status, reply) = if path.starts_with("/v1/sys/health") {
        (
            "200 OK",
            r#"{"initialized":true,"sealed":false,"standby":false,"version":"2.7.2"}"#.to_string(),
        )
    } else if matches!(method.as_str(), "POST" | "PUT") && path.ends_with("/login") {
        let jwt = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["jwt"].as_str().map(str::to_string));
        if let Some(jwt) = jwt {
            println!("CAPTURED {path} {jwt}");
            std::io::stdout().flush()?;
        }
        ("500 Internal Server Error", r#"{"errors":["try again"]}"#.to_string())
    } else {
        ("404 Not Found", r#"{"errors":[]}"#.to_string())
    };
    let out = tls.get_mut();
    write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
        reply.len()
    )?;
    out.flush()?;
    out.conn.send_close_notify();
    out.flush()?;
    Ok(())
}
