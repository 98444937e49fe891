//! The queue's keys and the Lua scripts that change them.
//!
//! Each script is a file of `src/lua/` whose header comment lists its KEYS, ARGV and reply, and
//! whose first statement names its keys (`local due, entries = KEYS[1], KEYS[2]`). No script
//! builds a key name: every key it touches is declared in KEYS, as Redis Cluster's scripting
//! contract (and Dragonfly by default) requires. The keys a call passes come from the script's
//! [`LuaScript::keys`] list, in that order, through [`LuaScript::prepare`] (the only way to
//! invoke one), so call sites cannot pass a different set; a unit test checks every list against
//! its script's header.
//!
//! Helpers shared by several scripts live in `src/lua/lib/`, one function a file, and are put
//! in front of the scripts that use them when the scripts are first needed: each script carries
//! only the helpers it calls (defining Lua functions costs time on every call).

use std::sync::LazyLock;

use redis::{Script, ScriptInvocation};

/// A key of a queue. All share the queue's hash tag `{q}`: one Cluster slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Key {
    /// `entries`: hash, zero-padded id → entry.
    Entries,
    /// `due`: sorted set, scheduled entries by next attempt, leased ones by lease end.
    Due,
    /// `leases`: hash, leased id → `<token> <kind>`.
    Leases,
    /// `parked`: sorted set by id.
    Parked,
    /// `quarantined`: sorted set by id.
    Quarantined,
    /// `all`: sorted set by id, every entry.
    All,
    /// `dlv`: hash, id → deliveries since the last outcome.
    Dlv,
    /// `seq`: the last id.
    Seq,
    /// `tok`: the last fencing token.
    Tok,
    /// `stats`: lifetime counters.
    Stats,
    /// `kinds`: failure kind → entries of that kind now.
    Kinds,
}

impl Key {
    /// Every key, in [`QueueKeys`] order.
    pub(super) const ALL: [Key; 11] = [
        Key::Entries,
        Key::Due,
        Key::Leases,
        Key::Parked,
        Key::Quarantined,
        Key::All,
        Key::Dlv,
        Key::Seq,
        Key::Tok,
        Key::Stats,
        Key::Kinds,
    ];

    /// The key's name after the queue's prefix, also the Lua local that holds it.
    pub(super) const fn name(self) -> &'static str {
        match self {
            Key::Entries => "entries",
            Key::Due => "due",
            Key::Leases => "leases",
            Key::Parked => "parked",
            Key::Quarantined => "quarantined",
            Key::All => "all",
            Key::Dlv => "dlv",
            Key::Seq => "seq",
            Key::Tok => "tok",
            Key::Stats => "stats",
            Key::Kinds => "kinds",
        }
    }
}

/// The key names of one queue, built once per store.
#[derive(Debug)]
pub(super) struct QueueKeys {
    /// `palisade:dlq:{q}:`.
    prefix: String,
    /// By [`Key`] (its discriminant).
    names: [String; 11],
}

impl QueueKeys {
    /// The keys of queue `queue`.
    pub(super) fn new(queue: &str) -> Self {
        let prefix = format!("palisade:dlq:{{{queue}}}:");
        let names = Key::ALL.map(|k| format!("{prefix}{}", k.name()));
        QueueKeys { prefix, names }
    }

    /// The name of `key`.
    pub(super) fn get(&self, key: Key) -> &str {
        &self.names[key as usize]
    }

    /// The key of entry `field` (zero-padded id) in the layout before `entries`: one string
    /// key per entry, `palisade:dlq:{q}:e:<id>`. Only the migration reads it.
    pub(super) fn old_entry(&self, field: &str) -> String {
        format!("{}e:{field}", self.prefix)
    }
}

/// A Lua function shared by several scripts (`src/lua/lib/<name>.lua`).
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(test), allow(dead_code))] // `name` is for the tests' checks
pub(super) struct Helper {
    /// The function's name.
    pub(super) name: &'static str,
    /// Its definition.
    pub(super) source: &'static str,
}

macro_rules! helper {
    ($name:literal) => {
        Helper {
            name: $name,
            source: include_str!(concat!("../lua/lib/", $name, ".lua")),
        }
    };
}

/// `now_ms()`: Redis `TIME` in ms.
const NOW_MS: Helper = helper!("now_ms");
/// `n2s(n)`: an integral number as a decimal string.
const N2S: Helper = helper!("n2s");
/// `kind_add(kinds, k, d)`: adjusts a kind's count.
const KIND_ADD: Helper = helper!("kind_add");
/// `enc(v)`: a status value as JSON again.
const ENC: Helper = helper!("enc");
/// `status(s, state, att, nxt, err)`: a new status line. Needs `enc`.
const STATUS: Helper = helper!("status");
/// `remove_many(K, ms)`: removes a batch of entries. Needs `kind_add`.
const REMOVE_MANY: Helper = helper!("remove_many");

/// One script: its source file, the keys it takes and the helpers it needs.
#[cfg_attr(not(test), allow(dead_code))] // `extra_keys`, `body`, `helpers`: for the tests' checks
pub(super) struct LuaScript {
    /// The file's name without `.lua`, for errors.
    pub(super) name: &'static str,
    /// The keys, in the order of the script's KEYS.
    pub(super) keys: &'static [Key],
    /// Whether the call adds keys after [`LuaScript::keys`] (the migration's old entry keys).
    pub(super) extra_keys: bool,
    /// The script as written in its file.
    pub(super) body: &'static str,
    /// The helpers put in front of it, in order.
    pub(super) helpers: &'static [Helper],
    script: Script,
}

impl LuaScript {
    fn new(
        name: &'static str,
        body: &'static str,
        keys: &'static [Key],
        helpers: &'static [Helper],
    ) -> Self {
        let mut source = String::new();
        for h in helpers {
            source.push_str(h.source);
        }
        source.push_str(body);
        LuaScript {
            name,
            keys,
            extra_keys: false,
            body,
            helpers,
            script: Script::new(&source),
        }
    }

    /// The source Redis runs: the helpers, then the body.
    #[cfg(test)]
    pub(super) fn source(&self) -> String {
        self.helpers.iter().map(|h| h.source).collect::<String>() + self.body
    }

    /// An invocation with the script's keys of queue `keys` declared; the caller adds ARGV
    /// (and, for a script with [`LuaScript::extra_keys`], its further keys).
    pub(super) fn prepare(&self, keys: &QueueKeys) -> ScriptInvocation<'_> {
        let mut inv = self.script.prepare_invoke();
        for &k in self.keys {
            inv.key(keys.get(k));
        }
        inv
    }
}

/// Every script of the store.
pub(super) struct Scripts {
    pub(super) enqueue: LuaScript,
    pub(super) claim: LuaScript,
    pub(super) ack: LuaScript,
    pub(super) extend: LuaScript,
    pub(super) fail: LuaScript,
    pub(super) quarantine: LuaScript,
    pub(super) get: LuaScript,
    pub(super) list: LuaScript,
    pub(super) retry: LuaScript,
    pub(super) discard: LuaScript,
    pub(super) trim: LuaScript,
    pub(super) purge: LuaScript,
    pub(super) stats: LuaScript,
    pub(super) pending: LuaScript,
    pub(super) migrate: LuaScript,
}

impl Scripts {
    /// All of them.
    #[cfg(test)]
    pub(super) fn all(&self) -> [&LuaScript; 15] {
        [
            &self.enqueue,
            &self.claim,
            &self.ack,
            &self.extend,
            &self.fail,
            &self.quarantine,
            &self.get,
            &self.list,
            &self.retry,
            &self.discard,
            &self.trim,
            &self.purge,
            &self.stats,
            &self.pending,
            &self.migrate,
        ]
    }
}

/// The keys of the scripts that may remove entries (`remove_many`), stats last.
const REMOVING: &[Key] = &[
    Key::Entries,
    Key::Due,
    Key::Parked,
    Key::Quarantined,
    Key::All,
    Key::Leases,
    Key::Dlv,
    Key::Kinds,
    Key::Stats,
];

macro_rules! script {
    ($name:literal, [$($key:ident),* $(,)?], [$($helper:ident),* $(,)?]) => {
        LuaScript::new(
            $name,
            include_str!(concat!("../lua/", $name, ".lua")),
            &[$(Key::$key),*],
            &[$($helper),*],
        )
    };
    ($name:literal, $keys:expr, [$($helper:ident),* $(,)?]) => {
        LuaScript::new(
            $name,
            include_str!(concat!("../lua/", $name, ".lua")),
            $keys,
            &[$($helper),*],
        )
    };
}

/// The scripts, assembled on first use.
pub(super) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    enqueue: script!(
        "enqueue",
        [
            Entries,
            Due,
            Parked,
            Quarantined,
            All,
            Leases,
            Dlv,
            Kinds,
            Seq,
            Stats
        ],
        [NOW_MS, N2S, KIND_ADD, REMOVE_MANY]
    ),
    claim: script!(
        "claim",
        [Due, Entries, Leases, Dlv, All, Tok],
        [NOW_MS, N2S]
    ),
    ack: script!("ack", [Leases, Entries, Due, All, Dlv, Stats, Kinds], []),
    extend: script!("extend", [Due, Leases], [NOW_MS, N2S]),
    fail: script!(
        "fail",
        [Leases, Entries, Dlv, Due, Parked, Stats, Kinds],
        [NOW_MS, N2S, KIND_ADD, ENC]
    ),
    quarantine: script!(
        "quarantine",
        [Entries, Leases, Dlv, Due, Parked, Quarantined, Stats],
        [ENC, STATUS]
    ),
    get: script!("get", [Entries, Leases, Due], [N2S]),
    list: script!(
        "list",
        [All, Parked, Quarantined, Entries, Leases, Due],
        [N2S]
    ),
    retry: script!(
        "retry",
        [Entries, Leases, Due, Parked, Dlv, Stats],
        [NOW_MS, N2S, ENC, STATUS]
    ),
    discard: script!("discard", REMOVING, [KIND_ADD, REMOVE_MANY]),
    trim: script!("trim", REMOVING, [NOW_MS, N2S, KIND_ADD, REMOVE_MANY]),
    purge: script!("purge", REMOVING, [KIND_ADD, REMOVE_MANY]),
    stats: script!(
        "stats",
        [
            All,
            Entries,
            Due,
            Leases,
            Parked,
            Quarantined,
            Kinds,
            Stats,
            Seq
        ],
        [NOW_MS, N2S]
    ),
    pending: script!("pending", [All, Entries], []),
    migrate: LuaScript {
        extra_keys: true,
        ..script!("migrate", [Entries], [])
    },
});

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis_store::lua_lint;

    /// Every helper file.
    const HELPERS: [Helper; 6] = [NOW_MS, N2S, KIND_ADD, ENC, STATUS, REMOVE_MANY];

    #[test]
    fn every_script_declares_every_key_it_touches() {
        let names: Vec<&str> = Key::ALL.iter().map(|k| k.name()).collect();
        for s in SCRIPTS.all() {
            let keys: Vec<&str> = s.keys.iter().map(|k| k.name()).collect();
            lua_lint::check_script(s.body, &keys, s.extra_keys, &names)
                .unwrap_or_else(|e| panic!("src/lua/{}.lua: {e}", s.name));
        }
        for h in HELPERS {
            lua_lint::check_helper(h.source, &names)
                .unwrap_or_else(|e| panic!("src/lua/lib/{}.lua: {e}", h.name));
        }
    }

    #[test]
    fn every_call_passes_as_many_keys_as_its_script_uses() {
        for s in SCRIPTS.all() {
            let highest = lua_lint::highest_key_index(s.body)
                .unwrap_or_else(|e| panic!("src/lua/{}.lua: {e}", s.name));
            assert_eq!(
                highest,
                s.keys.len(),
                "src/lua/{}.lua uses KEYS[{highest}], the store passes {} keys",
                s.name,
                s.keys.len()
            );
        }
    }

    #[test]
    fn every_script_carries_exactly_the_helpers_it_calls() {
        let all: Vec<(&str, &str)> = HELPERS.iter().map(|h| (h.name, h.source)).collect();
        for s in SCRIPTS.all() {
            let given: Vec<&str> = s.helpers.iter().map(|h| h.name).collect();
            lua_lint::check_helpers(s.body, &given, &all)
                .unwrap_or_else(|e| panic!("src/lua/{}.lua: {e}", s.name));
        }
    }

    #[test]
    fn keys_share_the_queue_hash_tag() {
        let keys = QueueKeys::new("tool-calls");
        for k in Key::ALL {
            assert_eq!(
                keys.get(k),
                format!("palisade:dlq:{{tool-calls}}:{}", k.name())
            );
        }
        assert_eq!(
            keys.old_entry("00000000000000000007"),
            "palisade:dlq:{tool-calls}:e:00000000000000000007"
        );
    }

    /// `luac -p` on every script as Redis receives it (helpers included). Needs `luac5.1` (the
    /// Lua of Redis) or `luac` on the PATH: `apt-get install -y lua5.1`. Fails when neither is
    /// there, so that a machine without it does not pass silently.
    #[test]
    fn every_script_compiles() {
        for s in SCRIPTS.all() {
            palisade_testkit::assert_lua_compiles(&format!("src/lua/{}.lua", s.name), &s.source());
        }
    }
}
