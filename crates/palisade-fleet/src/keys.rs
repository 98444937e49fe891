//! The fleet's Redis keys. All share the fleet's hash tag (`palisade:fleet:{<fleet>}:`), so
//! they live in one Redis Cluster slot and every script and multi-key command is cluster-safe
//! (see the crate documentation for the table).

/// A key of a fleet, as the scripts declare it (the Lua local's name is [`Key::name`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Key {
    /// `instances`: sorted set, instance id → registration expiry (Redis ms).
    Instances,
    /// `info`: hash, instance id → details JSON.
    Info,
    /// `commands`: the command stream.
    Stream,
    /// `overrides`: hash, `<kind>/<name>/<slot>` → `<stream id> <override JSON>`.
    Overrides,
    /// `cursor:<this instance>`: the last stream id this instance handled.
    Cursor,
    /// `results:<stream id>`: hash, instance id → outcome JSON.
    Results,
    /// `snapshots`: hash, instance id → its components' snapshots (JSON), written by every
    /// heartbeat.
    Snapshots,
}

impl Key {
    /// The name scripts give the key (their first statement declares it under this name).
    #[cfg_attr(not(test), allow(dead_code))] // the scripts' header check
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Key::Instances => "instances",
            Key::Info => "info",
            Key::Stream => "stream",
            Key::Overrides => "overrides",
            Key::Cursor => "cursor",
            Key::Results => "results",
            Key::Snapshots => "snapshots",
        }
    }
}

/// The key names of one fleet, seen from one instance.
#[derive(Debug, Clone)]
pub(crate) struct FleetKeys {
    prefix: String,
    instances: String,
    info: String,
    stream: String,
    overrides: String,
    cursor: String,
    snapshots: String,
}

impl FleetKeys {
    /// The keys of fleet `fleet` for instance `instance` (names already validated: no `}`).
    pub(crate) fn new(fleet: &str, instance: &str) -> Self {
        let prefix = format!("palisade:fleet:{{{fleet}}}:");
        FleetKeys {
            instances: format!("{prefix}instances"),
            info: format!("{prefix}info"),
            stream: format!("{prefix}commands"),
            overrides: format!("{prefix}overrides"),
            cursor: format!("{prefix}cursor:{instance}"),
            snapshots: format!("{prefix}snapshots"),
            prefix,
        }
    }

    /// The hash of shared breaker `name` (a valid component name: no `}`).
    pub(crate) fn breaker(&self, name: &str) -> String {
        format!("{}breaker:{name}", self.prefix)
    }

    /// The command stream.
    pub(crate) fn stream(&self) -> &str {
        &self.stream
    }

    /// The results hash of command `id`.
    pub(crate) fn results(&self, id: &str) -> String {
        format!("{}results:{id}", self.prefix)
    }

    /// The name of `key`; `id` is the stream id [`Key::Results`] needs (unused otherwise).
    pub(crate) fn name(&self, key: Key, id: &str) -> String {
        match key {
            Key::Instances => self.instances.clone(),
            Key::Info => self.info.clone(),
            Key::Stream => self.stream.clone(),
            Key::Overrides => self.overrides.clone(),
            Key::Cursor => self.cursor.clone(),
            Key::Results => self.results(id),
            Key::Snapshots => self.snapshots.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_core::redis::key_slot;

    #[test]
    fn every_key_is_in_the_fleet_slot() {
        let keys = FleetKeys::new("mcp", "10.0.0.7:8080");
        let slot = key_slot(b"mcp");
        for key in [
            Key::Instances,
            Key::Info,
            Key::Stream,
            Key::Overrides,
            Key::Cursor,
            Key::Results,
            Key::Snapshots,
        ] {
            let name = keys.name(key, "1700000000000-0");
            assert!(name.starts_with("palisade:fleet:{mcp}:"), "{name}");
            assert_eq!(key_slot(name.as_bytes()), slot, "{name}");
        }
        assert_eq!(
            keys.name(Key::Cursor, ""),
            "palisade:fleet:{mcp}:cursor:10.0.0.7:8080"
        );
        assert_eq!(keys.results("17-3"), "palisade:fleet:{mcp}:results:17-3");
        let breaker = keys.breaker("weather.api:v2");
        assert_eq!(breaker, "palisade:fleet:{mcp}:breaker:weather.api:v2");
        assert_eq!(key_slot(breaker.as_bytes()), slot);
    }
}
