//! [`RedisConfig`]: where Redis is (one node, a Sentinel group or a Cluster) and how to reach it
//! (credentials, database, TLS). Pure: parsing touches no network and no file.

use std::fmt;
use std::path::PathBuf;

use crate::config::{ConfigError, Env};

/// How Palisade's Redis is deployed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Topology {
    /// One node (`redis://host:port`).
    Single,
    /// A Sentinel group: the sentinels named in the config are asked for the current primary
    /// of `master`, and asked again after a failover.
    Sentinel {
        /// The name the sentinels monitor the primary under (`sentinel monitor <name> …`).
        master: String,
    },
    /// A Redis Cluster: the nodes named in the config are seeds; the slot map is read from
    /// them and followed through `MOVED` and `ASK` redirections.
    Cluster,
}

impl Topology {
    /// `single`, `sentinel` or `cluster`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Topology::Single => "single",
            Topology::Sentinel { .. } => "sentinel",
            Topology::Cluster => "cluster",
        }
    }
}

/// TLS settings beyond the `rediss` scheme: the CA that signs the servers' certificates (the
/// system's roots when unset), a client certificate and key for mutual TLS, and a switch that
/// turns verification off (for tests; never in production).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsOptions {
    /// PEM file of the certificate authorities trusted for the servers' certificates.
    pub ca_file: Option<PathBuf>,
    /// PEM file of the client certificate (chain) presented for mutual TLS.
    pub cert_file: Option<PathBuf>,
    /// PEM file of the client certificate's private key.
    pub key_file: Option<PathBuf>,
    /// Accept any server certificate and host name. Insecure: for tests against self-signed
    /// servers only.
    pub insecure: bool,
}

/// Where Redis is and how to reach it: one node, a Sentinel group or a Cluster, with
/// credentials, database and TLS. Every Redis-backed component (rate limiter, dead-letter
/// store, health check) is configured with one, or with a URL parsed into one.
///
/// # URLs
///
/// | form | topology |
/// | --- | --- |
/// | `redis://[user:password@]host:port[/db]` | one node |
/// | `rediss://…` | one node over TLS |
/// | `redis+sentinel://[user:password@]s1:26379,s2:26379,s3:26379/<master>[/db]` | Sentinel |
/// | `redis+cluster://[user:password@]n1:6379,n2:6379,n3:6379` | Cluster (seed nodes) |
/// | `rediss+sentinel://…`, `rediss+cluster://…` | the same over TLS |
///
/// Credentials, database and TLS in a URL are those of the data nodes (the primary, the cluster
/// nodes); a Sentinel group's own password is set with [`RedisConfig::sentinel_auth`] (or
/// `REDIS_SENTINEL_USERNAME` / `REDIS_SENTINEL_PASSWORD`), and with `rediss+sentinel` the
/// sentinels are reached over TLS too. Cluster mode has one database, so a cluster URL takes
/// no `/db`. Passwords are percent-decoded; they are never printed (`Debug` redacts them, and
/// errors never quote a URL).
///
/// ```
/// use palisade_core::redis::{RedisConfig, Topology};
///
/// let single = RedisConfig::from_url("redis://127.0.0.1:6379/2")?;
/// assert_eq!(single.topology(), &Topology::Single);
///
/// let sentinel = RedisConfig::from_url(
///     "redis+sentinel://:secret@10.0.0.1:26379,10.0.0.2:26379/mymaster",
/// )?
/// .sentinel_auth(None, "sentinel-secret");
/// assert_eq!(sentinel.topology(), &Topology::Sentinel { master: "mymaster".into() });
/// assert!(!format!("{sentinel:?}").contains("secret"));
///
/// let cluster = RedisConfig::cluster(["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"])?;
/// assert_eq!(cluster.nodes().len(), 2);
/// # Ok::<(), palisade_core::ConfigError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct RedisConfig {
    topology: Topology,
    /// The node (single), the seeds (cluster) or the sentinels (sentinel).
    nodes: Vec<(String, u16)>,
    tls: bool,
    username: Option<String>,
    password: Option<String>,
    db: i64,
    tls_options: TlsOptions,
    sentinel_username: Option<String>,
    sentinel_password: Option<String>,
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("topology", &self.topology)
            .field("nodes", &self.nodes)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("db", &self.db)
            .field("tls_options", &self.tls_options)
            .field("sentinel_username", &self.sentinel_username)
            .field(
                "sentinel_password",
                &self.sentinel_password.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl fmt::Display for RedisConfig {
    /// The URL without credentials: `rediss+sentinel://s1:26379,s2:26379/mymaster/0`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "rediss" } else { "redis" };
        let suffix = match &self.topology {
            Topology::Single => "",
            Topology::Sentinel { .. } => "+sentinel",
            Topology::Cluster => "+cluster",
        };
        write!(f, "{scheme}{suffix}://")?;
        for (i, (host, port)) in self.nodes.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}:{port}", host_for_url(host))?;
        }
        if let Topology::Sentinel { master } = &self.topology {
            write!(f, "/{master}")?;
        }
        if self.db != 0 {
            write!(f, "/{}", self.db)?;
        }
        Ok(())
    }
}

/// The environment variables [`RedisConfig::from_env`] reads.
pub const ENV_VARS: [&str; 7] = [
    "REDIS_URL",
    "REDIS_SENTINEL_USERNAME",
    "REDIS_SENTINEL_PASSWORD",
    "REDIS_TLS_CA_FILE",
    "REDIS_TLS_CERT_FILE",
    "REDIS_TLS_KEY_FILE",
    "REDIS_TLS_INSECURE",
];

impl RedisConfig {
    /// Parses a URL of any of the forms in the [type's documentation](RedisConfig). Errors
    /// name the field `redis_url` (rename with `ConfigError { field, .. }`) and never quote the
    /// URL, which may hold a password.
    pub fn from_url(url: &str) -> Result<RedisConfig, ConfigError> {
        parse_url(url.trim()).map_err(|reason| ConfigError::new("redis_url", reason))
    }

    /// One node at `url` (`redis://` or `rediss://`).
    pub fn single(url: &str) -> Result<RedisConfig, ConfigError> {
        let config = Self::from_url(url)?;
        match config.topology {
            Topology::Single => Ok(config),
            _ => Err(ConfigError::new(
                "redis_url",
                "expected one node (redis:// or rediss://)",
            )),
        }
    }

    /// A cluster reached through these seed nodes (`redis://host:port` or `rediss://…`, all
    /// with the same scheme and credentials; the first one's are used).
    pub fn cluster<I, S>(seeds: I) -> Result<RedisConfig, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut config: Option<RedisConfig> = None;
        for (i, seed) in seeds.into_iter().enumerate() {
            let node = Self::single(seed.as_ref())
                .map_err(|e| ConfigError::new(format!("cluster.seeds[{i}]"), e.reason))?;
            match &mut config {
                None => config = Some(node),
                Some(c) => {
                    if c.tls != node.tls {
                        return Err(ConfigError::new(
                            format!("cluster.seeds[{i}]"),
                            "mixes redis:// and rediss:// seeds",
                        ));
                    }
                    c.nodes.extend(node.nodes);
                }
            }
        }
        let mut config = config
            .ok_or_else(|| ConfigError::new("cluster.seeds", "at least one seed is needed"))?;
        config.topology = Topology::Cluster;
        config.db = 0;
        Ok(config)
    }

    /// A Sentinel group monitoring `master`, reached through these sentinels
    /// (`host:port`). The data nodes' credentials, database and TLS come from `node_url`
    /// (`redis://[user:password@]any[/db]`, whose host is not used) or are absent with `None`.
    pub fn sentinel<I, S>(
        master: &str,
        sentinels: I,
        node_url: Option<&str>,
    ) -> Result<RedisConfig, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut config = match node_url {
            Some(url) => Self::single(url)?,
            None => Self::single("redis://localhost")?,
        };
        check_master(master).map_err(|r| ConfigError::new("sentinel.master", r))?;
        config.nodes = sentinels
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                parse_host_port(s.as_ref(), 26379)
                    .map_err(|r| ConfigError::new(format!("sentinel.sentinels[{i}]"), r))
            })
            .collect::<Result<_, _>>()?;
        if config.nodes.is_empty() {
            return Err(ConfigError::new(
                "sentinel.sentinels",
                "at least one sentinel is needed",
            ));
        }
        config.topology = Topology::Sentinel {
            master: master.to_owned(),
        };
        Ok(config)
    }

    /// `REDIS_URL` (any form above; required), with `REDIS_SENTINEL_USERNAME` and
    /// `REDIS_SENTINEL_PASSWORD` (a Sentinel group's own credentials), `REDIS_TLS_CA_FILE`,
    /// `REDIS_TLS_CERT_FILE`, `REDIS_TLS_KEY_FILE` and `REDIS_TLS_INSECURE` (`true` turns
    /// certificate verification off). Errors name the variable.
    ///
    /// ```
    /// use palisade_core::config::Env;
    /// use palisade_core::redis::RedisConfig;
    ///
    /// let env = Env::from_fn(|k| match k {
    ///     "REDIS_URL" => Some("rediss+cluster://n1:7000,n2:7000".into()),
    ///     "REDIS_TLS_CA_FILE" => Some("/etc/redis/ca.pem".into()),
    ///     _ => None,
    /// });
    /// let config = RedisConfig::from_env_with(&env)?.expect("REDIS_URL is set");
    /// assert_eq!(config.to_string(), "rediss+cluster://n1:7000,n2:7000");
    /// # Ok::<(), palisade_core::ConfigError>(())
    /// ```
    pub fn from_env() -> Result<Option<RedisConfig>, ConfigError> {
        Self::from_env_with(&Env::process())
    }

    /// [`RedisConfig::from_env`] over any [`Env`]; `Ok(None)` when `REDIS_URL` is unset.
    pub fn from_env_with<F>(env: &Env<F>) -> Result<Option<RedisConfig>, ConfigError>
    where
        F: Fn(&str) -> Option<String>,
    {
        let Some(url) = env.get("REDIS_URL") else {
            return Ok(None);
        };
        let mut config =
            Self::from_url(&url).map_err(|e| ConfigError::new("REDIS_URL", e.reason))?;
        config.apply_env(env)?;
        Ok(Some(config))
    }

    /// Applies the variables of [`RedisConfig::from_env`] but `REDIS_URL` over this config.
    pub fn apply_env<F>(&mut self, env: &Env<F>) -> Result<(), ConfigError>
    where
        F: Fn(&str) -> Option<String>,
    {
        if let Some(user) = env.get("REDIS_SENTINEL_USERNAME") {
            self.sentinel_username = Some(user);
        }
        if let Some(pass) = env.get("REDIS_SENTINEL_PASSWORD") {
            self.sentinel_password = Some(pass);
        }
        if let Some(f) = env.get("REDIS_TLS_CA_FILE") {
            self.tls_options.ca_file = Some(f.into());
        }
        if let Some(f) = env.get("REDIS_TLS_CERT_FILE") {
            self.tls_options.cert_file = Some(f.into());
        }
        if let Some(f) = env.get("REDIS_TLS_KEY_FILE") {
            self.tls_options.key_file = Some(f.into());
        }
        if let Some(b) = env.parse_bool("REDIS_TLS_INSECURE")? {
            self.tls_options.insecure = b;
        }
        self.validate()
            .map_err(|e| ConfigError::new(env_field(&e.field), e.reason))
    }

    /// The same config with these TLS options (they need a `rediss` URL).
    #[must_use]
    pub fn tls(mut self, options: TlsOptions) -> Self {
        self.tls_options = options;
        self
    }

    /// The same config with a Sentinel group's own credentials (`requirepass` of the
    /// sentinels), distinct from the data nodes'.
    #[must_use]
    pub fn sentinel_auth(mut self, username: Option<&str>, password: &str) -> Self {
        self.sentinel_username = username.map(str::to_owned);
        self.sentinel_password = Some(password.to_owned());
        self
    }

    /// Checks what parsing alone cannot: TLS options without a `rediss` scheme, half a client
    /// certificate, Sentinel credentials without Sentinel. Errors name the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let t = &self.tls_options;
        let any_tls_option =
            t.ca_file.is_some() || t.cert_file.is_some() || t.key_file.is_some() || t.insecure;
        if any_tls_option && !self.tls {
            return Err(ConfigError::new(
                "tls",
                "TLS options are set but the URL is not rediss:// (use rediss, rediss+sentinel or rediss+cluster)",
            ));
        }
        if t.cert_file.is_some() != t.key_file.is_some() {
            return Err(ConfigError::new(
                if t.cert_file.is_some() {
                    "tls.key_file"
                } else {
                    "tls.cert_file"
                },
                "a client certificate needs both cert_file and key_file",
            ));
        }
        let sentinel_creds = self.sentinel_username.is_some() || self.sentinel_password.is_some();
        if sentinel_creds && !matches!(self.topology, Topology::Sentinel { .. }) {
            return Err(ConfigError::new(
                "sentinel_password",
                "Sentinel credentials are set but the URL is not redis+sentinel://",
            ));
        }
        Ok(())
    }

    /// Reads the TLS files (CA, client certificate and key) and checks that they are PEM, as
    /// [`RedisConnection::open`](super::RedisConnection::open) will: for a program that wants
    /// to refuse a bad file at start, before anything connects. Errors name `tls.ca_file`,
    /// `tls.cert_file` or `tls.key_file` (or, with [`RedisConfig::env_field`], the variable).
    pub fn check_files(&self) -> Result<(), ConfigError> {
        self.validate()?;
        #[allow(clippy::let_unit_value)] // `()` without the `redis-tls` feature
        let _certs = super::tls::certificates(self)?;
        Ok(())
    }

    /// The environment variable of [`RedisConfig::from_env`] that sets `field` (a field named
    /// by this type's errors): `tls.ca_file` → `REDIS_TLS_CA_FILE`, …, else `REDIS_URL`.
    pub fn env_field(field: &str) -> &'static str {
        env_field(field)
    }

    /// Single node, Sentinel or Cluster.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The node (single), the seed nodes (cluster) or the sentinels (sentinel), as
    /// `(host, port)`.
    pub fn nodes(&self) -> &[(String, u16)] {
        &self.nodes
    }

    /// Whether connections use TLS (`rediss`).
    pub fn uses_tls(&self) -> bool {
        self.tls
    }

    /// The TLS options.
    pub fn tls_options(&self) -> &TlsOptions {
        &self.tls_options
    }

    /// The logical database (always 0 on a cluster).
    pub fn db(&self) -> i64 {
        self.db
    }

    pub(crate) fn username(&self) -> Option<&str> {
        self.username.as_deref()
    }

    pub(crate) fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    pub(crate) fn sentinel_username(&self) -> Option<&str> {
        self.sentinel_username.as_deref()
    }

    pub(crate) fn sentinel_password(&self) -> Option<&str> {
        self.sentinel_password.as_deref()
    }

    /// `redis[s]://` URLs of the nodes, credentials and database included (for the redis
    /// crate; never logged).
    #[cfg(test)]
    pub(crate) fn node_urls(&self, with_db: bool) -> Vec<String> {
        self.nodes
            .iter()
            .map(|(host, port)| self.node_url(host, *port, with_db))
            .collect()
    }

    pub(crate) fn node_url(&self, host: &str, port: u16, with_db: bool) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        let auth = match (&self.username, &self.password) {
            (None, None) => String::new(),
            (u, p) => format!(
                "{}:{}@",
                encode(u.as_deref().unwrap_or("")),
                encode(p.as_deref().unwrap_or(""))
            ),
        };
        let db = if with_db && self.db != 0 {
            format!("/{}", self.db)
        } else {
            String::new()
        };
        let fragment = if self.tls && self.tls_options.insecure {
            "#insecure"
        } else {
            ""
        };
        format!(
            "{scheme}://{auth}{}:{port}{db}{fragment}",
            host_for_url(host)
        )
    }
}

impl std::str::FromStr for RedisConfig {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_url(s)
    }
}

fn env_field(field: &str) -> &'static str {
    match field {
        "tls.ca_file" => "REDIS_TLS_CA_FILE",
        "tls.key_file" => "REDIS_TLS_KEY_FILE",
        "tls.cert_file" => "REDIS_TLS_CERT_FILE",
        "sentinel_password" => "REDIS_SENTINEL_PASSWORD",
        _ => "REDIS_URL",
    }
}

fn host_for_url(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

fn check_master(master: &str) -> Result<(), String> {
    if master.is_empty()
        || master.len() > 128
        || !master
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err("the master name must be 1 to 128 characters of A-Z a-z 0-9 - _ .".to_owned());
    }
    Ok(())
}

/// `[user:password@]` decoded.
fn parse_userinfo(s: &str) -> Result<(Option<String>, Option<String>), String> {
    let (user, pass) = match s.split_once(':') {
        Some((u, p)) => (u, Some(p)),
        None => (s, None),
    };
    let user = decode(user).ok_or("the username is not valid percent-encoding")?;
    let pass = pass
        .map(|p| decode(p).ok_or("the password is not valid percent-encoding"))
        .transpose()?;
    Ok((
        (!user.is_empty()).then_some(user),
        pass.filter(|p| !p.is_empty()),
    ))
}

fn parse_host_port(s: &str, default_port: u16) -> Result<(String, u16), String> {
    let s = s.trim();
    let s = s
        .strip_prefix("redis://")
        .or_else(|| s.strip_prefix("rediss://"))
        .unwrap_or(s);
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, rest) = rest
            .split_once(']')
            .ok_or("an IPv6 address needs a closing ]")?;
        match rest.strip_prefix(':') {
            Some(p) => (host, Some(p)),
            None if rest.is_empty() => (host, None),
            None => return Err("expected host:port".into()),
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
    {
        return Err("expected host:port with a host name or an IP address".into());
    }
    let port = match port {
        None => default_port,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or("the port must be a number from 1 to 65535")?,
    };
    Ok((host.to_owned(), port))
}

fn parse_db(s: &str) -> Result<i64, String> {
    s.parse::<i64>()
        .ok()
        .filter(|d| *d >= 0)
        .ok_or_else(|| "the database must be a number (0, 1, …)".to_owned())
}

fn parse_url(url: &str) -> Result<RedisConfig, String> {
    let (scheme, rest) = url.split_once("://").ok_or(
        "not a Redis URL: expected redis://, rediss://, redis+sentinel:// or redis+cluster://",
    )?;
    let (tls, topology_name) = match scheme.to_ascii_lowercase().as_str() {
        "redis" => (false, "single"),
        "rediss" => (true, "single"),
        "redis+sentinel" => (false, "sentinel"),
        "rediss+sentinel" => (true, "sentinel"),
        "redis+cluster" => (false, "cluster"),
        "rediss+cluster" => (true, "cluster"),
        _ => {
            return Err(
                "unknown scheme: expected redis, rediss, redis+sentinel, rediss+sentinel, redis+cluster or rediss+cluster"
                    .into(),
            );
        }
    };
    if rest.contains(['?', '#']) {
        return Err(
            "query strings and fragments are not supported (TLS options are separate settings)"
                .into(),
        );
    }
    let (userinfo, rest) = match rest.rsplit_once('@') {
        Some((u, r)) => (Some(u), r),
        None => (None, rest),
    };
    let (username, password) = match userinfo {
        Some(u) => parse_userinfo(u)?,
        None => (None, None),
    };
    let (hosts, path) = match rest.split_once('/') {
        Some((h, p)) => (h, p),
        None => (rest, ""),
    };
    let default_port = if topology_name == "sentinel" {
        26379
    } else {
        6379
    };
    let nodes = hosts
        .split(',')
        .filter(|h| !h.trim().is_empty())
        .map(|h| parse_host_port(h, default_port))
        .collect::<Result<Vec<_>, _>>()?;
    if nodes.is_empty() {
        return Err("no host: expected host:port".into());
    }
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (topology, db) = match topology_name {
        "single" => {
            if nodes.len() > 1 {
                return Err(
                    "several hosts in a single-node URL: use redis+cluster:// or redis+sentinel://"
                        .into(),
                );
            }
            match segments.as_slice() {
                [] => (Topology::Single, 0),
                [db] => (Topology::Single, parse_db(db)?),
                _ => return Err("expected /<db> after the host".into()),
            }
        }
        "sentinel" => match segments.as_slice() {
            [master] => {
                check_master(master)?;
                (
                    Topology::Sentinel {
                        master: (*master).to_owned(),
                    },
                    0,
                )
            }
            [master, db] => {
                check_master(master)?;
                (
                    Topology::Sentinel {
                        master: (*master).to_owned(),
                    },
                    parse_db(db)?,
                )
            }
            _ => return Err(
                "a Sentinel URL needs the master name: redis+sentinel://host:26379,…/<master>[/db]"
                    .into(),
            ),
        },
        _ => match segments.as_slice() {
            [] | ["0"] => (Topology::Cluster, 0),
            _ => {
                return Err(
                    "a cluster has only database 0: redis+cluster://host:port,… takes no /db"
                        .into(),
                );
            }
        },
    };
    Ok(RedisConfig {
        topology,
        nodes,
        tls,
        username,
        password,
        db,
        tls_options: TlsOptions::default(),
        sentinel_username: None,
        sentinel_password: None,
    })
}

fn decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What a Redis-backed component can be pointed at: a URL (any form [`RedisConfig`] parses)
/// or a [`RedisConfig`]. A URL that does not parse is reported when the component is built.
pub trait IntoRedisConfig {
    /// The config, or why the URL does not parse (naming the field `redis_url`).
    fn into_redis_config(self) -> Result<RedisConfig, ConfigError>;
}

impl IntoRedisConfig for RedisConfig {
    fn into_redis_config(self) -> Result<RedisConfig, ConfigError> {
        Ok(self)
    }
}

impl IntoRedisConfig for &RedisConfig {
    fn into_redis_config(self) -> Result<RedisConfig, ConfigError> {
        Ok(self.clone())
    }
}

impl IntoRedisConfig for &str {
    fn into_redis_config(self) -> Result<RedisConfig, ConfigError> {
        RedisConfig::from_url(self)
    }
}

impl IntoRedisConfig for String {
    fn into_redis_config(self) -> Result<RedisConfig, ConfigError> {
        RedisConfig::from_url(&self)
    }
}

impl IntoRedisConfig for &String {
    fn into_redis_config(self) -> Result<RedisConfig, ConfigError> {
        RedisConfig::from_url(self)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn single_node_urls() {
        let c = RedisConfig::from_url("redis://127.0.0.1:6379/3").unwrap();
        assert_eq!(c.topology(), &Topology::Single);
        assert_eq!(c.nodes(), &[("127.0.0.1".to_owned(), 6379)]);
        assert_eq!(c.db(), 3);
        assert!(!c.uses_tls());
        let c = RedisConfig::from_url("rediss://user:p%40ss@redis.example.com").unwrap();
        assert!(c.uses_tls());
        assert_eq!(c.username(), Some("user"));
        assert_eq!(c.password(), Some("p@ss"));
        assert_eq!(c.nodes()[0].1, 6379);
        assert_eq!(
            c.node_urls(true),
            ["rediss://user:p%40ss@redis.example.com:6379"]
        );
        let c = RedisConfig::from_url("redis://:pw@[::1]:7000").unwrap();
        assert_eq!(c.nodes(), &[("::1".to_owned(), 7000)]);
        assert_eq!(c.node_urls(true), ["redis://:pw@[::1]:7000"]);
        assert_eq!(c.to_string(), "redis://[::1]:7000");
    }

    #[test]
    fn sentinel_and_cluster_urls() {
        let c = RedisConfig::from_url("rediss+sentinel://:pw@s1,s2:26380/mymaster/2").unwrap();
        assert_eq!(
            c.topology(),
            &Topology::Sentinel {
                master: "mymaster".into()
            }
        );
        assert_eq!(
            c.nodes(),
            &[("s1".to_owned(), 26379), ("s2".to_owned(), 26380)]
        );
        assert_eq!(c.db(), 2);
        assert_eq!(
            c.to_string(),
            "rediss+sentinel://s1:26379,s2:26380/mymaster/2"
        );
        let c = RedisConfig::from_url("redis+cluster://n1:7000,n2:7001,n3").unwrap();
        assert_eq!(c.topology(), &Topology::Cluster);
        assert_eq!(c.nodes().len(), 3);
        assert_eq!(c.node_urls(false)[2], "redis://n3:6379");
        let c = RedisConfig::cluster(["redis://a:1", "redis://b:2"]).unwrap();
        assert_eq!(c.to_string(), "redis+cluster://a:1,b:2");
        let c = RedisConfig::sentinel("m", ["s1:26379", "redis://s2"], Some("redis://:pw@x/1"))
            .unwrap();
        assert_eq!(c.to_string(), "redis+sentinel://s1:26379,s2:26379/m/1");
        assert_eq!(c.password(), Some("pw"));
    }

    #[test]
    fn bad_urls_are_refused_with_a_reason_and_without_the_password() {
        for (url, why) in [
            ("http://x", "unknown scheme"),
            ("x", "not a Redis URL"),
            ("redis://", "no host"),
            ("redis://a,b", "several hosts"),
            ("redis://h:99999", "port"),
            ("redis://h/x", "database"),
            ("redis+sentinel://s1", "master name"),
            ("redis+sentinel://s1/bad name", "master name"),
            ("redis+cluster://a/2", "only database 0"),
            ("redis://h?ssl=1", "query strings"),
            ("redis://:secret%zz@h", "percent-encoding"),
            ("redis://:secret@h:x", "port"),
        ] {
            let err = RedisConfig::from_url(url).unwrap_err();
            assert_eq!(err.field, "redis_url");
            assert!(err.reason.contains(why), "{url}: {err}");
            assert!(!err.to_string().contains("secret"), "{err}");
        }
        let err = RedisConfig::cluster(["redis://a:1", "rediss://b:2"]).unwrap_err();
        assert_eq!(err.field, "cluster.seeds[1]");
        let err = RedisConfig::cluster(Vec::<String>::new()).unwrap_err();
        assert_eq!(err.field, "cluster.seeds");
    }

    #[test]
    fn environment_and_validation() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            Env::from_fn(move |k| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| (*v).to_owned())
            })
        };
        assert_eq!(RedisConfig::from_env_with(&env(&[])).unwrap(), None);
        let c = RedisConfig::from_env_with(&env(&[
            ("REDIS_URL", "rediss+sentinel://s1/m"),
            ("REDIS_SENTINEL_PASSWORD", "sp"),
            ("REDIS_TLS_CA_FILE", "/ca.pem"),
            ("REDIS_TLS_CERT_FILE", "/c.pem"),
            ("REDIS_TLS_KEY_FILE", "/k.pem"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(c.sentinel_password(), Some("sp"));
        assert_eq!(
            c.tls_options().ca_file.as_deref(),
            Some(std::path::Path::new("/ca.pem"))
        );
        assert!(!format!("{c:?}").contains("sp\""));

        let err = RedisConfig::from_env_with(&env(&[
            ("REDIS_URL", "redis://h"),
            ("REDIS_TLS_CA_FILE", "/ca.pem"),
        ]))
        .unwrap_err();
        assert_eq!(err.field, "REDIS_URL");
        assert!(err.reason.contains("not rediss"), "{err}");
        let err = RedisConfig::from_env_with(&env(&[
            ("REDIS_URL", "rediss://h"),
            ("REDIS_TLS_CERT_FILE", "/c.pem"),
        ]))
        .unwrap_err();
        assert_eq!(err.field, "REDIS_TLS_KEY_FILE");
        let err = RedisConfig::from_env_with(&env(&[
            ("REDIS_URL", "redis://h"),
            ("REDIS_SENTINEL_PASSWORD", "x"),
        ]))
        .unwrap_err();
        assert_eq!(err.field, "REDIS_SENTINEL_PASSWORD");
        let err = RedisConfig::from_env_with(&env(&[("REDIS_URL", "redis:/h")])).unwrap_err();
        assert_eq!(err.field, "REDIS_URL");
        let err = RedisConfig::from_env_with(&env(&[
            ("REDIS_URL", "rediss://h"),
            ("REDIS_TLS_INSECURE", "maybe"),
        ]))
        .unwrap_err();
        assert_eq!(err.field, "REDIS_TLS_INSECURE");
    }

    #[test]
    fn insecure_becomes_the_url_fragment_the_redis_crate_reads() {
        let c = RedisConfig::from_url("rediss://h:1")
            .unwrap()
            .tls(TlsOptions {
                insecure: true,
                ..TlsOptions::default()
            });
        assert_eq!(c.node_urls(true), ["rediss://h:1#insecure"]);
    }
}
