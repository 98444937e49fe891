//! TLS for Redis connections (feature `redis-tls`: rustls with the ring provider): CA and
//! client certificate files read once at [`RedisConnection::open`](super::RedisConnection::open).
//! Without the feature a `rediss` URL is refused with a message naming the feature.

use redis::ConnectionAddr;

use super::config::RedisConfig;
use crate::config::ConfigError;

#[cfg(feature = "redis-tls")]
pub(crate) type Certificates = Option<redis::TlsCertificates>;
#[cfg(not(feature = "redis-tls"))]
pub(crate) type Certificates = ();

/// The CA and client certificate of `config`, read from their files (`None`: no files, the
/// system's roots are trusted).
#[cfg(feature = "redis-tls")]
pub(crate) fn certificates(config: &RedisConfig) -> Result<Certificates, ConfigError> {
    if !config.uses_tls() {
        return Ok(None);
    }
    // One process-wide provider; another crate may have installed one already. rustls 0.23.48
    // deprecates ring's provider for its lack of post-quantum key exchange; aws-lc-rs has it
    // but is a C and cmake build. Redis TLS inside a deployment is the classic kind.
    #[allow(deprecated)]
    let _ = rustls::crypto::ring::default_provider().install_default();
    let t = config.tls_options();
    let read = |field: &str,
                path: &Option<std::path::PathBuf>|
     -> Result<Option<Vec<u8>>, ConfigError> {
        let Some(path) = path else { return Ok(None) };
        let bytes = std::fs::read(path)
            .map_err(|e| ConfigError::new(field, format!("cannot read {}: {e}", path.display())))?;
        if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
            return Err(ConfigError::new(
                field,
                format!("{} is not a PEM file (no -----BEGIN line)", path.display()),
            ));
        }
        Ok(Some(bytes))
    };
    let root_cert = read("tls.ca_file", &t.ca_file)?;
    let cert = read("tls.cert_file", &t.cert_file)?;
    let key = read("tls.key_file", &t.key_file)?;
    let client_tls = match (cert, key) {
        (Some(client_cert), Some(client_key)) => Some(redis::ClientTlsConfig {
            client_cert,
            client_key,
        }),
        _ => None,
    };
    if root_cert.is_none() && client_tls.is_none() {
        return Ok(None);
    }
    Ok(Some(redis::TlsCertificates {
        client_tls,
        root_cert,
    }))
}

#[cfg(not(feature = "redis-tls"))]
pub(crate) fn certificates(config: &RedisConfig) -> Result<Certificates, ConfigError> {
    if config.uses_tls() {
        return Err(ConfigError::new(
            "redis_url",
            "TLS (rediss) needs palisade-core's `redis-tls` feature, which this build lacks",
        ));
    }
    Ok(())
}

/// A client for one node, with the certificates when there are any.
pub(crate) fn client(
    info: redis::ConnectionInfo,
    certs: Certificates,
) -> Result<redis::Client, ConfigError> {
    #[cfg(feature = "redis-tls")]
    let client = match certs {
        Some(certs) => redis::Client::build_with_tls(info, certs),
        None => redis::Client::open(info),
    };
    #[cfg(not(feature = "redis-tls"))]
    let client = {
        let () = certs;
        redis::Client::open(info)
    };
    client.map_err(|e| tls_error(&e))
}

fn tls_error(e: &redis::RedisError) -> ConfigError {
    let text = e.to_string();
    let field = if text.contains("root certificate") || text.contains("trust anchors") {
        "tls.ca_file"
    } else if text.contains("client certificate") {
        "tls.cert_file"
    } else if text.contains("private key") {
        "tls.key_file"
    } else {
        "redis_url"
    };
    ConfigError::new(field, format!("cannot set up the connection: {text}"))
}

/// The cluster builder with the certificates.
pub(crate) fn cluster_builder(
    builder: redis::cluster::ClusterClientBuilder,
    certs: Certificates,
) -> redis::cluster::ClusterClientBuilder {
    #[cfg(feature = "redis-tls")]
    match certs {
        Some(certs) => builder.certs(certs),
        None => builder,
    }
    #[cfg(not(feature = "redis-tls"))]
    {
        let () = certs;
        builder
    }
}

/// The Sentinel builder with TLS towards the sentinels and the data nodes.
pub(crate) fn sentinel_builder(
    builder: redis::sentinel::SentinelClientBuilder,
    config: &RedisConfig,
    certs: Certificates,
) -> redis::sentinel::SentinelClientBuilder {
    if !config.uses_tls() {
        return builder;
    }
    let mode = if config.tls_options().insecure {
        redis::TlsMode::Insecure
    } else {
        redis::TlsMode::Secure
    };
    let builder = builder
        .set_client_to_redis_tls_mode(mode)
        .set_client_to_sentinel_tls_mode(mode);
    #[cfg(feature = "redis-tls")]
    match certs {
        Some(certs) => builder
            .set_client_to_redis_certificates(certs.clone())
            .set_client_to_sentinel_certificates(certs),
        None => builder,
    }
    #[cfg(not(feature = "redis-tls"))]
    {
        let () = certs;
        builder
    }
}

/// A sentinel's address, over TLS when the config says so.
pub(crate) fn addr(config: &RedisConfig, host: &str, port: u16) -> ConnectionAddr {
    if config.uses_tls() {
        ConnectionAddr::TcpTls {
            host: host.to_owned(),
            port,
            insecure: config.tls_options().insecure,
            tls_params: None,
        }
    } else {
        ConnectionAddr::Tcp(host.to_owned(), port)
    }
}
