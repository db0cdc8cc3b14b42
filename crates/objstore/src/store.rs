//! The operations on one bucket.

use crate::error::{Context, classify};
use crate::{StoreError, StoreOptions, Target, UploadError};
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use jiff::Timestamp;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{
    BackoffConfig, Certificate, ClientOptions, ObjectStore, ObjectStoreExt, RetryConfig, WriteMultipart,
};
use sha2::{Digest, Sha256};
use std::time::Duration;

/// One object as listed or HEADed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    pub last_modified: Timestamp,
}

/// A completed upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uploaded {
    pub key: String,
    pub size: u64,
    /// Lower-case hex SHA-256 of the bytes sent.
    pub sha256: String,
}

/// An object's bytes as they arrive.
pub type ByteStream = BoxStream<'static, Result<Bytes, StoreError>>;

/// A client for the bucket of one [`Target`]. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    s3: AmazonS3,
    endpoint: String,
    bucket: String,
    access_key_id: String,
    options: StoreOptions,
}

impl Store {
    /// Builds the client; nothing is sent until the first operation.
    pub fn new(target: &Target, options: StoreOptions) -> Result<Self, StoreError> {
        if target.bucket.is_empty() {
            return Err(StoreError::Config("the bucket name is empty".into()));
        }
        if options.part_size < StoreOptions::MIN_PART_SIZE {
            return Err(StoreError::Config(format!(
                "part size {} is below the S3 minimum of {} bytes",
                options.part_size,
                StoreOptions::MIN_PART_SIZE
            )));
        }
        let region = if target.region.is_empty() {
            "us-east-1"
        } else {
            &target.region
        };
        let mut client = ClientOptions::new()
            .with_connect_timeout(options.connect_timeout)
            .with_read_timeout(options.read_timeout)
            // A multi-GiB download must not hit a total deadline; stalls hit the read timeout.
            .with_timeout_disabled();
        if let Some(pem) = &target.credentials.ca_cert_pem {
            let certs = Certificate::from_pem_bundle(pem.as_bytes())
                .map_err(|e| StoreError::Config(format!("caCert is not a PEM certificate bundle: {e}")))?;
            if certs.is_empty() {
                return Err(StoreError::Config("caCert contains no certificate".into()));
            }
            for cert in certs {
                client = client.with_root_certificate(cert);
            }
            client = client.with_no_system_certificates(true);
        }
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(200),
                max_backoff: Duration::from_secs(5),
                base: 2.0,
            },
            max_retries: options.max_retries,
            retry_timeout: options.retry_timeout,
        };
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&target.bucket)
            .with_region(region)
            .with_access_key_id(&target.credentials.access_key_id)
            .with_secret_access_key(target.credentials.secret_access_key.expose())
            .with_virtual_hosted_style_request(!target.use_path_style)
            .with_retry(retry);
        let endpoint = target.endpoint.trim_end_matches('/');
        if !endpoint.is_empty() {
            let (scheme, rest) = endpoint.split_once("://").ok_or_else(|| {
                StoreError::Config(format!("endpoint {endpoint:?} must start with http:// or https://"))
            })?;
            if !matches!(scheme, "http" | "https") || rest.is_empty() {
                return Err(StoreError::Config(format!(
                    "endpoint {endpoint:?} must start with http:// or https://"
                )));
            }
            client = client.with_allow_http(scheme == "http");
            // object_store expects the bucket inside a virtual-hosted endpoint.
            let url = if target.use_path_style {
                endpoint.to_string()
            } else {
                format!("{scheme}://{}.{rest}", target.bucket)
            };
            builder = builder.with_endpoint(url);
        }
        let s3 = builder
            .with_client_options(client)
            .build()
            .map_err(|e| StoreError::Config(format!("S3 client for bucket {:?}: {e}", target.bucket)))?;
        Ok(Self {
            s3,
            endpoint: if endpoint.is_empty() {
                format!("AWS S3 ({region})")
            } else {
                endpoint.to_string()
            },
            bucket: target.bucket.clone(),
            access_key_id: target.credentials.access_key_id.clone(),
            options,
        })
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn context(&self) -> Context<'_> {
        Context {
            endpoint: &self.endpoint,
            bucket: &self.bucket,
            access_key_id: &self.access_key_id,
        }
    }

    fn fail(&self, op: &str, key: Option<&str>, err: object_store::Error) -> StoreError {
        let what = format!("{op} {}", key.unwrap_or_default()).trim_end().to_string();
        classify(&self.context(), what, key, err)
    }

    fn path(key: &str) -> Result<Path, StoreError> {
        Path::parse(key).map_err(|e| StoreError::Config(format!("object key {key:?}: {e}")))
    }

    /// Streams `data` into `key` as a multipart upload: parts of `part_size` bytes, at most
    /// `max_concurrency` in flight, so memory stays at about `(max_concurrency + 1) *
    /// part_size` whatever the object size. On any failure (of the source or the store) the
    /// multipart upload is aborted, so no object appears under `key`.
    pub async fn upload_stream<S, E>(&self, key: &str, data: S) -> Result<Uploaded, UploadError<E>>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::error::Error + Send + Sync + 'static,
    {
        let path = Self::path(key)?;
        let upload = self
            .s3
            .put_multipart(&path)
            .await
            .map_err(|e| self.fail("starting the multipart upload of", Some(key), e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, self.options.part_size);
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let pumped = pump(&mut writer, data, self.options.max_concurrency, &mut hasher, &mut size).await;
        let result = match pumped {
            // finish() aborts the upload itself when a part or the completion fails.
            Ok(()) => writer
                .finish()
                .await
                .map(drop)
                .map_err(|e| UploadError::Store(self.fail("completing the multipart upload of", Some(key), e))),
            Err(failure) => {
                if let Err(abort) = writer.abort().await {
                    // The upload never completed, so nothing is listed; the store keeps the
                    // parts until its lifecycle rule (AbortIncompleteMultipartUpload) runs.
                    tracing::warn!(key, error = %abort, "aborting the multipart upload failed");
                }
                Err(match failure {
                    Pumped::Source(e) => UploadError::Source(e),
                    Pumped::Store(e) => UploadError::Store(self.fail("uploading a part of", Some(key), e)),
                })
            }
        };
        result.map(|()| Uploaded {
            key: key.to_string(),
            size,
            sha256: hex::encode(hasher.finalize()),
        })
    }

    /// HEAD of `key`.
    pub async fn head(&self, key: &str) -> Result<ObjectInfo, StoreError> {
        let meta = self
            .s3
            .head(&Self::path(key)?)
            .await
            .map_err(|e| self.fail("HEAD", Some(key), e))?;
        Ok(object_info(&meta))
    }

    /// Checks that `key` exists with `size` bytes.
    pub async fn verify(&self, key: &str, size: u64) -> Result<ObjectInfo, StoreError> {
        let info = self.head(key).await?;
        if info.size != size {
            return Err(StoreError::VerificationFailed {
                key: key.to_string(),
                detail: format!("stored size {} bytes, uploaded {size} bytes", info.size),
            });
        }
        Ok(info)
    }

    /// Reads `key` back and checks its size and SHA-256 (streamed, bounded memory).
    pub async fn verify_checksum(&self, key: &str, size: u64, sha256: &str) -> Result<(), StoreError> {
        let (_, mut stream) = self.download_stream(key).await?;
        let mut hasher = Sha256::new();
        let mut read = 0u64;
        while let Some(chunk) = stream.try_next().await? {
            read += chunk.len() as u64;
            hasher.update(&chunk);
        }
        let stored = hex::encode(hasher.finalize());
        if read != size || stored != sha256 {
            return Err(StoreError::VerificationFailed {
                key: key.to_string(),
                detail: format!(
                    "read back {read} bytes with sha256 {stored}, uploaded {size} bytes with sha256 {sha256}"
                ),
            });
        }
        Ok(())
    }

    /// Every object under `prefix` (a `/`-separated key prefix; `""` for the whole bucket).
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let prefix = prefix.trim_matches('/');
        let path = if prefix.is_empty() {
            None
        } else {
            Some(Self::path(prefix)?)
        };
        let what = format!("listing {prefix:?} in bucket {:?}", self.bucket);
        let metas: Vec<_> = self
            .s3
            .list(path.as_ref())
            .try_collect()
            .await
            .map_err(|e| self.fail(&what, None, e))?;
        let mut objects: Vec<ObjectInfo> = metas.iter().map(object_info).collect();
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(objects)
    }

    /// Deletes `key` (S3 reports success for a key that does not exist).
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.s3
            .delete(&Self::path(key)?)
            .await
            .map_err(|e| self.fail("deleting", Some(key), e))
    }

    /// `key`'s metadata and its bytes as a stream.
    pub async fn download_stream(&self, key: &str) -> Result<(ObjectInfo, ByteStream), StoreError> {
        let got = self
            .s3
            .get(&Self::path(key)?)
            .await
            .map_err(|e| self.fail("downloading", Some(key), e))?;
        let info = object_info(&got.meta);
        let store = self.clone();
        let owned_key = key.to_string();
        let stream = got
            .into_stream()
            .map_err(move |e| store.fail("downloading", Some(&owned_key), e))
            .boxed();
        Ok((info, stream))
    }
}

enum Pumped<E> {
    Source(E),
    Store(object_store::Error),
}

async fn pump<S, E>(
    writer: &mut WriteMultipart,
    data: S,
    max_concurrency: usize,
    hasher: &mut Sha256,
    size: &mut u64,
) -> Result<(), Pumped<E>>
where
    S: Stream<Item = Result<Bytes, E>> + Send,
{
    let mut data = std::pin::pin!(data);
    while let Some(chunk) = data.next().await {
        let chunk = chunk.map_err(Pumped::Source)?;
        hasher.update(&chunk);
        *size += chunk.len() as u64;
        // Wait before buffering more: this is what bounds memory when the store is slower
        // than the source.
        writer.wait_for_capacity(max_concurrency).await.map_err(Pumped::Store)?;
        writer.put(chunk);
    }
    // Surface part failures here, so the caller aborts instead of completing.
    writer.wait_for_capacity(0).await.map_err(Pumped::Store)
}

fn object_info(meta: &object_store::ObjectMeta) -> ObjectInfo {
    let modified = &meta.last_modified;
    ObjectInfo {
        key: meta.location.to_string(),
        size: meta.size,
        last_modified: Timestamp::new(modified.timestamp(), modified.timestamp_subsec_nanos() as i32)
            .unwrap_or(Timestamp::UNIX_EPOCH),
    }
}
