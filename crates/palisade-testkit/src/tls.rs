//! Redis over TLS for the tests: [`TlsRedis`], a private `redis-server` that only listens on a
//! TLS port, with a throwaway CA, server and client certificates made by the `openssl` CLI, and
//! a second, unrelated ("untrusted") CA with a client certificate of its own.
//!
//! Every key is an EC P-256 key in PEM PKCS#8 (`BEGIN PRIVATE KEY`), every certificate PEM X.509
//! v3, as rustls reads them: the CAs have `basicConstraints=critical,CA:TRUE` and `keyUsage
//! keyCertSign`; the server certificate has `subjectAltName=IP:127.0.0.1,DNS:localhost` and
//! `extendedKeyUsage=serverAuth`; the client certificates `extendedKeyUsage=clientAuth`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::process::{ServerProcess, TempDir, spare_ports};

/// A `redis-server` with TLS only (`--port 0 --tls-port <port>`) on a spare loopback port, its
/// certificates in a temporary directory; killed (SIGKILL) and reaped, and the directory
/// removed, on drop.
#[derive(Debug)]
pub struct TlsRedis {
    /// Declared before `dir`, so the process is killed before its directory is removed.
    server: ServerProcess,
    require_client_cert: bool,
    dir: TempDir,
}

impl TlsRedis {
    /// Makes the certificates, starts the server (`--tls-auth-clients yes` when
    /// `require_client_cert`, else `no`) and waits (up to 10 s) until
    /// `redis-cli --tls --cacert <ca> PING` answers `PONG`. Panics, with `openssl`'s or the
    /// server's output, when something cannot be set up.
    pub fn start(require_client_cert: bool) -> Self {
        let dir = TempDir::new("palisade-tls");
        let d = dir.path();
        make_ca(d, "ca", "Palisade Test CA");
        make_leaf(d, "ca", "server", "localhost", SERVER_EXT);
        make_leaf(d, "ca", "client", "palisade-test-client", CLIENT_EXT);
        make_ca(d, "untrusted-ca", "Palisade Untrusted Test CA");
        make_leaf(
            d,
            "untrusted-ca",
            "untrusted-client",
            "palisade-untrusted-client",
            CLIENT_EXT,
        );

        let port = spare_ports(1)[0];
        let path = |name: &str| d.join(name).to_string_lossy().into_owned();
        let args = vec![
            "--port".into(),
            "0".into(),
            "--tls-port".into(),
            port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--tls-cert-file".into(),
            path("server.crt"),
            "--tls-key-file".into(),
            path("server.key"),
            "--tls-ca-cert-file".into(),
            path("ca.crt"),
            "--tls-auth-clients".into(),
            (if require_client_cert { "yes" } else { "no" }).into(),
            "--dir".into(),
            path(""),
            "--save".into(),
            String::new(),
            "--appendonly".into(),
            "no".into(),
        ];
        let mut server = ServerProcess::new("Redis (TLS)".into(), port, args, d.join("redis.log"));
        server.spawn();
        let mut redis = TlsRedis {
            server,
            require_client_cert,
            dir,
        };
        redis.wait_ready(Duration::from_secs(10));
        redis
    }

    fn wait_ready(&mut self, deadline: Duration) {
        let end = Instant::now() + deadline;
        loop {
            self.server.assert_alive();
            let out = self.cli(&["PING"]);
            let stdout = String::from_utf8_lossy(&out.stdout);
            if stdout.trim() == "PONG" {
                return;
            }
            assert!(
                Instant::now() < end,
                "the TLS redis-server did not answer on port {} within {deadline:?} (redis-cli: \
                 {stdout} {}); end of its log {}",
                self.server.port,
                String::from_utf8_lossy(&out.stderr),
                self.server.log_tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs `redis-cli --tls --cacert <ca> [--cert <client> --key <client key>] -h 127.0.0.1
    /// -p <port> <args>` (with the client certificate when the server requires one) and
    /// returns its output: a way to reach the server without a TLS-capable Redis client.
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new("redis-cli");
        cmd.arg("--tls").arg("--cacert").arg(self.ca_file());
        if self.require_client_cert {
            cmd.arg("--cert")
                .arg(self.client_cert_file())
                .arg("--key")
                .arg(self.client_key_file());
        }
        cmd.args(["-h", "127.0.0.1", "-p", &self.server.port.to_string()])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run redis-cli ({e}); it must be installed"))
    }

    /// The TLS port.
    pub fn port(&self) -> u16 {
        self.server.port
    }

    /// Whether the server requires a client certificate signed by [`Self::ca_file`]
    /// (`--tls-auth-clients yes`).
    pub fn requires_client_cert(&self) -> bool {
        self.require_client_cert
    }

    /// `rediss://127.0.0.1:<port>` (the server certificate has `IP:127.0.0.1` among its names).
    pub fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.server.port)
    }

    /// `rediss://localhost:<port>` (the server certificate has `DNS:localhost` among its names).
    pub fn url_localhost(&self) -> String {
        format!("rediss://localhost:{}", self.server.port)
    }

    /// The CA certificate (PEM) that signed the server's and the client's certificates: what a
    /// client trusts.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// The server's certificate (PEM), for `127.0.0.1` and `localhost`.
    pub fn server_cert_file(&self) -> PathBuf {
        self.dir.path().join("server.crt")
    }

    /// The server's private key (PEM PKCS#8).
    pub fn server_key_file(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }

    /// A client certificate (PEM) signed by [`Self::ca_file`], accepted for mutual TLS.
    pub fn client_cert_file(&self) -> PathBuf {
        self.dir.path().join("client.crt")
    }

    /// The private key (PEM PKCS#8) of [`Self::client_cert_file`].
    pub fn client_key_file(&self) -> PathBuf {
        self.dir.path().join("client.key")
    }

    /// An unrelated CA certificate (PEM): trusting only it, a client must reject the server.
    pub fn untrusted_ca_file(&self) -> PathBuf {
        self.dir.path().join("untrusted-ca.crt")
    }

    /// A client certificate (PEM) signed by [`Self::untrusted_ca_file`]: a server that
    /// requires client certificates rejects it.
    pub fn untrusted_client_cert_file(&self) -> PathBuf {
        self.dir.path().join("untrusted-client.crt")
    }

    /// The private key (PEM PKCS#8) of [`Self::untrusted_client_cert_file`].
    pub fn untrusted_client_key_file(&self) -> PathBuf {
        self.dir.path().join("untrusted-client.key")
    }
}

/// A minimal `openssl req` configuration (so the system's `openssl.cnf` plays no part) with the
/// CA extensions.
const REQ_CONF: &str = "[req]\n\
    distinguished_name = dn\n\
    prompt = no\n\
    [dn]\n\
    [v3_ca]\n\
    basicConstraints = critical,CA:TRUE\n\
    keyUsage = critical,keyCertSign,cRLSign\n\
    subjectKeyIdentifier = hash\n";

/// Extensions of the server certificate.
const SERVER_EXT: &str = "basicConstraints = critical,CA:FALSE\n\
    keyUsage = critical,digitalSignature\n\
    extendedKeyUsage = serverAuth\n\
    subjectAltName = IP:127.0.0.1,DNS:localhost\n\
    subjectKeyIdentifier = hash\n\
    authorityKeyIdentifier = keyid,issuer\n";

/// Extensions of the client certificates.
const CLIENT_EXT: &str = "basicConstraints = critical,CA:FALSE\n\
    keyUsage = critical,digitalSignature\n\
    extendedKeyUsage = clientAuth\n\
    subjectKeyIdentifier = hash\n\
    authorityKeyIdentifier = keyid,issuer\n";

/// Runs `openssl <args>` in `dir`, panicking with its output when it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run openssl ({e}); it must be installed (scripts/test installs it)")
        });
    assert!(
        output.status.success(),
        "openssl {} failed ({}):\n{}{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `<name>.key`: a new EC P-256 key, PEM PKCS#8.
fn make_key(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            &format!("{name}.key"),
        ],
    );
}

/// `<name>.key` and the self-signed CA certificate `<name>.crt`.
fn make_ca(dir: &Path, name: &str, common_name: &str) {
    std::fs::write(dir.join("req.cnf"), REQ_CONF).unwrap();
    make_key(dir, name);
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-config",
            "req.cnf",
            "-extensions",
            "v3_ca",
            "-key",
            &format!("{name}.key"),
            "-sha256",
            "-days",
            "30",
            "-subj",
            &format!("/CN={common_name}"),
            "-out",
            &format!("{name}.crt"),
        ],
    );
}

/// `<name>.key` and `<name>.crt`, signed by the CA `<ca>`, with the extensions `ext`.
fn make_leaf(dir: &Path, ca: &str, name: &str, common_name: &str, ext: &str) {
    make_key(dir, name);
    let ext_file = format!("{name}.ext");
    std::fs::write(dir.join(&ext_file), ext).unwrap();
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-config",
            "req.cnf",
            "-key",
            &format!("{name}.key"),
            "-subj",
            &format!("/CN={common_name}"),
            "-out",
            &format!("{name}.csr"),
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-CAserial",
            &format!("{ca}.srl"),
            "-sha256",
            "-days",
            "30",
            "-extfile",
            &ext_file,
            "-out",
            &format!("{name}.crt"),
        ],
    );
}
