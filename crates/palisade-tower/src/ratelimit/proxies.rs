//! Trusted proxies: the addresses whose `X-Forwarded-For` is believed.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

use palisade_core::{ConfigError, Env};

/// The environment variable [`TrustedProxies::from_env`] reads.
pub const TRUSTED_PROXIES: &str = "TRUSTED_PROXIES";

/// One address range: an address and a prefix length (a single address has the full length).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    #[inline]
    fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }

    fn parse(entry: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match entry.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (entry, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| {
            format!(
                "'{entry}' is not an IP address or CIDR range (expected e.g. 10.0.0.7, \
                 10.0.0.0/8 or fd00::/8)"
            )
        })?;
        // An IPv4-mapped IPv6 address is the IPv4 address: requests are matched that way too.
        let addr = addr.to_canonical();
        let max: u8 = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(p) if p <= max => p,
                _ => {
                    return Err(format!(
                        "'{entry}': the prefix length must be a number from 0 to {max} for an \
                         IPv{} address",
                        if addr.is_ipv4() { 4 } else { 6 }
                    ));
                }
            },
        };
        let cidr = Cidr { addr, prefix };
        let network = cidr.network();
        if network != addr {
            return Err(format!(
                "'{entry}' has bits set after the /{prefix} prefix; did you mean {network}/{prefix}?"
            ));
        }
        Ok(cidr)
    }

    /// The address with every bit after the prefix cleared.
    fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::from(std::net::Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::from(std::net::Ipv6Addr::from(u128::from(a) & mask))
            }
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let full = if self.addr.is_ipv4() { 32 } else { 128 };
        if self.prefix == full {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

/// The reverse proxies (load balancers, ingress) in front of the service, by address or CIDR
/// range: only a peer in this set is believed when it says, in `X-Forwarded-For`, whom it
/// forwards for. Cheap to clone.
///
/// Parsed from a comma-separated list (`TRUSTED_PROXIES=10.0.0.0/8, 192.168.1.7, fd00::/8`);
/// an invalid entry is refused with an error naming the variable and the entry. IPv4-mapped
/// IPv6 addresses (`::ffff:10.0.0.7`) count as the IPv4 address they carry.
///
/// ```
/// use palisade_core::Env;
/// use palisade_tower::ratelimit::TrustedProxies;
///
/// let env = Env::from_fn(|k| (k == "TRUSTED_PROXIES").then(|| "10.0.0.0/8, 192.168.1.7".to_string()));
/// let proxies = TrustedProxies::from_env_with(&env)?;
/// assert!(proxies.contains("10.1.2.3".parse()?));
/// assert!(proxies.contains("::ffff:10.1.2.3".parse()?));
/// assert!(!proxies.contains("192.168.1.8".parse()?));
///
/// let bad = Env::from_fn(|k| (k == "TRUSTED_PROXIES").then(|| "10.0.0.0/33".to_string()));
/// let err = TrustedProxies::from_env_with(&bad).unwrap_err();
/// assert_eq!(err.field, "TRUSTED_PROXIES");
/// assert!(err.reason.contains("'10.0.0.0/33'"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    ranges: Arc<[Cidr]>,
}

impl TrustedProxies {
    /// No trusted proxy: the peer address is always the client's.
    pub fn none() -> Self {
        Self::default()
    }

    /// Parses a comma-separated list of addresses and CIDR ranges (blank entries are skipped).
    /// The error's field is `trusted_proxies`.
    pub fn parse(list: &str) -> Result<Self, ConfigError> {
        let entries: Vec<&str> = list
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .collect();
        let total = entries.len();
        let ranges = entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                Cidr::parse(e).map_err(|reason| {
                    ConfigError::new(
                        "trusted_proxies",
                        format!("entry {} of {total}: {reason}", i + 1),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TrustedProxies {
            ranges: ranges.into(),
        })
    }

    /// From the `TRUSTED_PROXIES` environment variable (none when unset or blank).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_env_with(&Env::process())
    }

    /// From `TRUSTED_PROXIES` in `env`; errors name the variable.
    pub fn from_env_with<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        match env.get(TRUSTED_PROXIES) {
            None => Ok(Self::none()),
            Some(list) => {
                Self::parse(&list).map_err(|e| ConfigError::new(TRUSTED_PROXIES, e.reason))
            }
        }
    }

    /// Whether `ip` is a trusted proxy.
    #[inline]
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.ranges.iter().any(|r| r.contains(ip))
    }

    /// Whether no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}

impl FromStr for TrustedProxies {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, ConfigError> {
        Self::parse(s)
    }
}

impl fmt::Display for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TrustedProxies({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|_| panic!("bad test address {s}"))
    }

    #[test]
    fn ranges_match_their_addresses_only() {
        let p = TrustedProxies::parse("10.0.0.0/8, 192.168.1.7 ,fd00::/8,0.0.0.0/0").unwrap();
        assert!(p.contains(ip("10.255.0.1")));
        assert!(p.contains(ip("192.168.1.7")));
        assert!(p.contains(ip("fd12::1")));
        assert!(!p.contains(ip("fe80::1")));
        assert!(p.contains(ip("8.8.8.8")), "0.0.0.0/0 is every IPv4 address");
        let p = TrustedProxies::parse("10.0.0.0/8,").unwrap();
        assert!(!p.contains(ip("11.0.0.1")));
        assert!(p.contains(ip("::ffff:10.0.0.1")));
        assert_eq!(p.to_string(), "10.0.0.0/8");
        assert!(TrustedProxies::parse(" ").unwrap().is_empty());
    }

    #[test]
    fn errors_name_the_entry_and_what_is_wrong() {
        let reason = |s: &str| TrustedProxies::parse(s).unwrap_err().reason;
        assert_eq!(
            reason("10.0.0.1, 10.0.0.0/33"),
            "entry 2 of 2: '10.0.0.0/33': the prefix length must be a number from 0 to 32 for an IPv4 address"
        );
        assert!(reason("10.0.0.256").contains("'10.0.0.256' is not an IP address or CIDR range"));
        assert!(reason("proxy.internal").contains("not an IP address"));
        assert_eq!(
            reason("10.0.0.1/8"),
            "entry 1 of 1: '10.0.0.1/8' has bits set after the /8 prefix; did you mean 10.0.0.0/8?"
        );
        assert!(reason("fd00::/129").contains("0 to 128 for an IPv6 address"));
        assert!(reason("10.0.0.0/x").contains("prefix length"));
    }
}
