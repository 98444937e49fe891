//! Rate limits of tool calls, and what their buckets are per (caller, address, tool, or a
//! combination).

use std::borrow::Cow;
use std::fmt;
use std::ops::BitOr;

use palisade_core::ConfigError;
use palisade_ratelimit::Limiter;
use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::caller::Caller;
use crate::refusal::Refusal;

/// One part of a rate-limit key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum KeyPart {
    /// The caller's identity when it has one, else its address ([`Caller::key`]).
    Identity,
    /// The caller's address (IPv6: its /64 network; [`Caller::ip_key`]).
    Ip,
    /// The tool called.
    Tool,
}

impl KeyPart {
    /// The config name (`identity`, `ip`, `tool`).
    pub fn as_str(self) -> &'static str {
        match self {
            KeyPart::Identity => "identity",
            KeyPart::Ip => "ip",
            KeyPart::Tool => "tool",
        }
    }

    fn of<'a>(self, caller: &'a Caller, tool: &'a str) -> &'a str {
        match self {
            KeyPart::Identity => &caller.key,
            KeyPart::Ip => &caller.ip_key,
            KeyPart::Tool => tool,
        }
    }
}

/// Longest combined key built without allocating.
const INLINE_KEY: usize = 160;
/// Most parts a key has (every [`KeyPart`] once).
const MAX_PARTS: usize = 4;

/// What a rate limit's buckets are per: one [`KeyPart`] or several, joined with `|` in order
/// (`identity|tool`: each caller has a quota per tool). Default: [`KeyBy::IDENTITY`].
///
/// In config, one name or a list: `key = "ip"`, `key = ["identity", "tool"]`.
///
/// ```
/// use palisade_mcp::{KeyBy, KeyPart};
///
/// let per_caller_and_tool = KeyPart::Identity | KeyPart::Tool;
/// assert_eq!(per_caller_and_tool.parts(), &[KeyPart::Identity, KeyPart::Tool]);
/// let parsed: KeyBy = serde_json::from_str(r#"["identity", "tool"]"#).unwrap();
/// assert_eq!(parsed, per_caller_and_tool);
/// assert_eq!(serde_json::from_str::<KeyBy>(r#""ip""#).unwrap(), KeyBy::IP);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyBy {
    parts: [KeyPart; MAX_PARTS],
    len: u8,
}

impl KeyBy {
    /// Per caller ([`KeyPart::Identity`]).
    pub const IDENTITY: KeyBy = KeyBy::one(KeyPart::Identity);
    /// Per address ([`KeyPart::Ip`]).
    pub const IP: KeyBy = KeyBy::one(KeyPart::Ip);
    /// Per tool ([`KeyPart::Tool`]): all callers share each tool's quota.
    pub const TOOL: KeyBy = KeyBy::one(KeyPart::Tool);

    const fn one(part: KeyPart) -> KeyBy {
        KeyBy {
            parts: [part; MAX_PARTS],
            len: 1,
        }
    }

    /// The parts in order; refused (naming the field `key`) when empty or when one repeats.
    pub fn new(parts: &[KeyPart]) -> Result<KeyBy, ConfigError> {
        let Some((&first, rest)) = parts.split_first() else {
            return Err(ConfigError::new(
                "key",
                "name at least one of identity, ip, tool",
            ));
        };
        let mut key = KeyBy::one(first);
        for &part in rest {
            if key.parts().contains(&part) {
                return Err(ConfigError::new(
                    "key",
                    format!("{} is named twice", part.as_str()),
                ));
            }
            key = key.then(part);
        }
        Ok(key)
    }

    /// The same key with `part` appended (unchanged when it has it already).
    #[must_use]
    pub fn then(mut self, part: KeyPart) -> KeyBy {
        let len = usize::from(self.len);
        if !self.parts().contains(&part) && len < MAX_PARTS {
            self.parts[len] = part;
            self.len += 1;
        }
        self
    }

    /// The parts, in order.
    pub fn parts(&self) -> &[KeyPart] {
        &self.parts[..usize::from(self.len)]
    }

    /// The key of a call of `tool` by `caller`: one part borrowed as is; several joined with
    /// `|` in `buf` (no allocation unless they are longer than it).
    fn key<'a>(
        &self,
        caller: &'a Caller,
        tool: &'a str,
        buf: &'a mut [u8; INLINE_KEY],
    ) -> Cow<'a, str> {
        let parts = self.parts();
        if let [one] = parts {
            return Cow::Borrowed(one.of(caller, tool));
        }
        let len = parts
            .iter()
            .map(|p| p.of(caller, tool).len() + 1)
            .sum::<usize>()
            - 1;
        if len > INLINE_KEY {
            let joined: Vec<&str> = parts.iter().map(|p| p.of(caller, tool)).collect();
            return Cow::Owned(joined.join("|"));
        }
        let mut at = 0;
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                buf[at] = b'|';
                at += 1;
            }
            let s = part.of(caller, tool).as_bytes();
            buf[at..at + s.len()].copy_from_slice(s);
            at += s.len();
        }
        // Whole UTF-8 strings joined by an ASCII byte are UTF-8.
        match std::str::from_utf8(&buf[..at]) {
            Ok(s) => Cow::Borrowed(s),
            Err(_) => Cow::Owned(String::from_utf8_lossy(&buf[..at]).into_owned()),
        }
    }
}

impl Default for KeyBy {
    fn default() -> Self {
        KeyBy::IDENTITY
    }
}

impl From<KeyPart> for KeyBy {
    fn from(part: KeyPart) -> Self {
        KeyBy::one(part)
    }
}

impl BitOr for KeyPart {
    type Output = KeyBy;

    fn bitor(self, rhs: KeyPart) -> KeyBy {
        KeyBy::one(self).then(rhs)
    }
}

impl BitOr<KeyPart> for KeyBy {
    type Output = KeyBy;

    fn bitor(self, rhs: KeyPart) -> KeyBy {
        self.then(rhs)
    }
}

impl fmt::Debug for KeyBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("KeyBy").field(&self.parts()).finish()
    }
}

impl fmt::Display for KeyBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, part) in self.parts().iter().enumerate() {
            if i > 0 {
                f.write_str("|")?;
            }
            f.write_str(part.as_str())?;
        }
        Ok(())
    }
}

impl Serialize for KeyBy {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.parts().serialize(s)
    }
}

impl<'de> Deserialize<'de> for KeyBy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;

        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = KeyBy;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("one of identity, ip, tool, or a list of them")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<KeyBy, E> {
                let part = KeyPart::deserialize(de::value::StrDeserializer::<E>::new(v))?;
                Ok(KeyBy::one(part))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<KeyBy, A::Error> {
                let mut parts = Vec::new();
                while let Some(part) = seq.next_element::<KeyPart>()? {
                    parts.push(part);
                }
                KeyBy::new(&parts).map_err(|e| de::Error::custom(e.reason))
            }
        }

        d.deserialize_any(KeyVisitor)
    }
}

/// A rate limit on tool calls: a [`Limiter`] and what its buckets are per.
///
/// ```
/// use palisade_mcp::{Caller, KeyPart, RateLimit};
/// use palisade_ratelimit::{Quota, RateLimitConfig};
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let limiter = RateLimitConfig { quota: Quota::per_minute(1), ..Default::default() }
///     .build("per-caller-and-tool")
///     .finish()?;
/// let limit = RateLimit::new(limiter).key_by(KeyPart::Identity | KeyPart::Tool);
/// let alice = Caller::new("10.0.0.1").with_identity("sub:alice");
/// assert!(limit.check("search", &alice).await.is_ok());
/// assert!(limit.check("fetch", &alice).await.is_ok()); // another tool, another bucket
/// let refused = limit.check("search", &alice).await.unwrap_err();
/// assert_eq!(refused.code(), "rate_limited");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct RateLimit {
    limiter: Limiter,
    key: KeyBy,
    rule: Option<String>,
}

impl RateLimit {
    /// A limit counted by `limiter`, per caller ([`KeyBy::IDENTITY`]).
    pub fn new(limiter: Limiter) -> RateLimit {
        RateLimit {
            limiter,
            key: KeyBy::IDENTITY,
            rule: None,
        }
    }

    /// Counts the limit per `key` instead.
    #[must_use]
    pub fn key_by(mut self, key: impl Into<KeyBy>) -> RateLimit {
        self.key = key.into();
        self
    }

    /// Names the limit in refusals as a quota rule (`Rate limited by the quota "per-tenant"`);
    /// unnamed, a refusal speaks of the client's quota.
    #[must_use]
    pub fn rule(mut self, name: impl Into<String>) -> RateLimit {
        self.rule = Some(name.into());
        self
    }

    /// The limiter.
    pub fn limiter(&self) -> &Limiter {
        &self.limiter
    }

    /// What its buckets are per.
    pub fn key(&self) -> KeyBy {
        self.key
    }

    /// The rule's name, if it has one.
    pub fn rule_name(&self) -> Option<&str> {
        self.rule.as_deref()
    }

    /// Admits one call of `tool` by `caller`, or refuses it with the time to wait. Allocates
    /// nothing when admitting, unless a combined key is longer than 160 bytes.
    pub async fn check(&self, tool: &str, caller: &Caller) -> Result<(), Refusal> {
        let mut buf = [0u8; INLINE_KEY];
        let key = self.key.key(caller, tool, &mut buf);
        match self.limiter.check(&key).await {
            Ok(_) => Ok(()),
            Err(limited) => {
                // A span event of the call's span, when it has one (see `invoke_classified`).
                tracing::event!(
                    target: crate::guard::TARGET,
                    tracing::Level::DEBUG,
                    palisade.rate_limit.name = self.limiter.name(),
                    palisade.rate_limit.rule = self.rule.as_deref(),
                    palisade.retry_after_ms = crate::refusal::millis(limited.retry_after),
                    "palisade.rate_limited"
                );
                Err(Refusal::RateLimited {
                    retry_after: limited.retry_after,
                    rule: self.rule.clone(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_join_their_parts_in_order() {
        let caller = Caller::new("10.0.0.1").with_identity("sub:alice");
        let mut buf = [0u8; INLINE_KEY];
        assert_eq!(KeyBy::IDENTITY.key(&caller, "t", &mut buf), "sub:alice");
        assert!(matches!(
            KeyBy::IP.key(&caller, "t", &mut buf),
            Cow::Borrowed("10.0.0.1")
        ));
        let both = KeyPart::Tool | KeyPart::Ip;
        assert!(matches!(
            both.key(&caller, "search", &mut buf),
            Cow::Borrowed("search|10.0.0.1")
        ));
        let all = KeyPart::Identity | KeyPart::Ip | KeyPart::Tool;
        assert_eq!(all.key(&caller, "t", &mut buf), "sub:alice|10.0.0.1|t");
        let long = Caller::new("a").with_identity("x".repeat(200));
        let key = (KeyPart::Identity | KeyPart::Tool).key(&long, "t", &mut buf);
        assert!(matches!(&key, Cow::Owned(k) if k.len() == 202));
    }

    #[test]
    fn key_specs_parse_and_refuse_repeats() {
        assert_eq!(KeyPart::Identity | KeyPart::Identity, KeyBy::IDENTITY);
        assert_eq!((KeyPart::Ip | KeyPart::Tool).to_string(), "ip|tool");
        assert_eq!(KeyBy::new(&[]).unwrap_err().field, "key");
        assert!(
            KeyBy::new(&[KeyPart::Ip, KeyPart::Ip])
                .unwrap_err()
                .reason
                .contains("twice")
        );
        let err = serde_json::from_str::<KeyBy>(r#"["ip", "ip"]"#).unwrap_err();
        assert!(err.to_string().contains("twice"), "{err}");
        let err = serde_json::from_str::<KeyBy>(r#""session""#).unwrap_err();
        assert!(err.to_string().contains("identity"), "{err}");
        let json = serde_json::to_string(&(KeyPart::Identity | KeyPart::Tool)).unwrap();
        assert_eq!(json, r#"["identity","tool"]"#);
    }
}
