//! Turns the apiserver's service-account JWKS into the PEM public keys OpenBao's JWT auth
//! accepts (`jwt_validation_pubkeys`). RSA and EC P-256 keys; others are skipped.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::Deserialize;

#[derive(Deserialize)]
struct Jwks {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct Jwk {
    kty: String,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("JWKS document is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("JWKS key field {0} is not base64url")]
    Base64(&'static str),
    #[error("JWKS has no RSA or EC P-256 key")]
    NoUsableKey,
}

fn der_len(len: usize) -> Vec<u8> {
    if len < 0x80 {
        return vec![len as u8];
    }
    let bytes: Vec<u8> = len.to_be_bytes().into_iter().skip_while(|b| *b == 0).collect();
    let mut out = vec![0x80 | bytes.len() as u8];
    out.extend(bytes);
    out
}

fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend(der_len(content.len()));
    out.extend_from_slice(content);
    out
}

fn der_uint(bytes: &[u8]) -> Vec<u8> {
    let trimmed: Vec<u8> = bytes.iter().copied().skip_while(|b| *b == 0).collect();
    let mut content = Vec::with_capacity(trimmed.len() + 1);
    if trimmed.first().is_none_or(|b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend(trimmed);
    der(0x02, &content)
}

fn bit_string(content: &[u8]) -> Vec<u8> {
    let mut c = vec![0];
    c.extend_from_slice(content);
    der(0x03, &c)
}

const OID_RSA: &[u8] = &[0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_EC: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

fn decode(field: &'static str, v: &Option<String>) -> Result<Vec<u8>, JwksError> {
    URL_SAFE_NO_PAD
        .decode(v.as_deref().ok_or(JwksError::Base64(field))?)
        .map_err(|_| JwksError::Base64(field))
}

fn spki(jwk: &Jwk) -> Result<Option<Vec<u8>>, JwksError> {
    Ok(match (jwk.kty.as_str(), jwk.crv.as_deref()) {
        ("RSA", _) => {
            let key = der(
                0x30,
                &[der_uint(&decode("n", &jwk.n)?), der_uint(&decode("e", &jwk.e)?)].concat(),
            );
            let alg = der(0x30, &[OID_RSA, &[0x05, 0x00]].concat());
            Some(der(0x30, &[alg, bit_string(&key)].concat()))
        }
        ("EC", Some("P-256")) => {
            let point = [&[0x04][..], &decode("x", &jwk.x)?, &decode("y", &jwk.y)?].concat();
            let alg = der(0x30, &[OID_EC, OID_P256].concat());
            Some(der(0x30, &[alg, bit_string(&point)].concat()))
        }
        _ => None,
    })
}

fn pem(der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
        .collect();
    format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        lines.join("\n")
    )
}

/// PEM public keys of every usable key in `jwks_json`, sorted so the result is stable.
pub fn public_keys_pem(jwks_json: &str) -> Result<Vec<String>, JwksError> {
    let jwks: Jwks = serde_json::from_str(jwks_json)?;
    let mut keys = Vec::new();
    for k in &jwks.keys {
        if let Some(der) = spki(k)? {
            keys.push(pem(&der));
        }
    }
    if keys.is_empty() {
        return Err(JwksError::NoUsableKey);
    }
    keys.sort();
    keys.dedup();
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ec_key_round_trips_through_x509_parser() {
        // The P-256 generator point: a valid public key.
        let jwks = r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"a",
            "x":"axfR8uEsQkf4vOblY6RA8ncDfYEt6zOg9KE5RdiYwpY","y":"T-NC4v4af5uO5-tKfA-eFivOM1drMV7Oy7ZAaDe_UfU"}]}"#;
        let pems = public_keys_pem(jwks).unwrap();
        let (_, p) = x509_parser::pem::parse_x509_pem(pems[0].as_bytes()).unwrap();
        let (_, spki) =
            <x509_parser::x509::SubjectPublicKeyInfo as x509_parser::prelude::FromDer<_>>::from_der(&p.contents)
                .unwrap();
        assert_eq!(spki.algorithm.algorithm.to_id_string(), "1.2.840.10045.2.1");
    }

    #[test]
    fn rsa_key_encodes_modulus_as_positive_integer() {
        let n = URL_SAFE_NO_PAD.encode([0xc0u8; 256]);
        let jwks = format!(r#"{{"keys":[{{"kty":"RSA","n":"{n}","e":"AQAB"}}, {{"kty":"oct","k":"x"}}]}}"#);
        let pems = public_keys_pem(&jwks).unwrap();
        assert_eq!(pems.len(), 1);
        let (_, p) = x509_parser::pem::parse_x509_pem(pems[0].as_bytes()).unwrap();
        let (_, spki) =
            <x509_parser::x509::SubjectPublicKeyInfo as x509_parser::prelude::FromDer<_>>::from_der(&p.contents)
                .unwrap();
        match spki.parsed().unwrap() {
            x509_parser::public_key::PublicKey::RSA(rsa) => assert_eq!(rsa.key_size(), 2048),
            other => panic!("not RSA: {other:?}"),
        }
    }

    #[test]
    fn no_usable_key_is_an_error() {
        assert!(matches!(public_keys_pem(r#"{"keys":[]}"#), Err(JwksError::NoUsableKey)));
    }
}
