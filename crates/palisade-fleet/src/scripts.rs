//! The Lua scripts of the fleet (`src/lua/`, one file each).
//!
//! Each file's header comment lists its KEYS, ARGV and reply, and its first statement names
//! its keys (`local instances, info = KEYS[1], KEYS[2]`). No script builds a key name: every
//! key it touches is declared in KEYS, as Redis Cluster's scripting contract requires. The
//! keys a call passes come from the script's [`LuaScript::keys`], in that order, through
//! [`LuaScript::prepare`] (the only way to invoke one); a unit test checks every list against
//! its script's header and every `redis.call` against the declared names.

use std::sync::LazyLock;

use redis::{Script, ScriptInvocation};

use crate::keys::{FleetKeys, Key};

/// One script: its file, the keys it takes, and the loaded [`Script`].
pub(crate) struct LuaScript {
    /// The file's name without `.lua`, for errors.
    pub(crate) name: &'static str,
    /// The keys, in the order of the script's KEYS.
    pub(crate) keys: &'static [Key],
    /// The source.
    #[cfg_attr(not(test), allow(dead_code))] // the header check
    pub(crate) body: &'static str,
    script: Script,
}

impl LuaScript {
    fn new(name: &'static str, body: &'static str, keys: &'static [Key]) -> Self {
        LuaScript {
            name,
            keys,
            body,
            script: Script::new(body),
        }
    }

    /// An invocation with the script's keys declared (`id` names the results key of a
    /// command, for the script that takes it); the caller adds ARGV.
    pub(crate) fn prepare(&self, keys: &FleetKeys, id: &str) -> ScriptInvocation<'_> {
        let mut inv = self.script.prepare_invoke();
        for &k in self.keys {
            inv.key(keys.name(k, id));
        }
        inv
    }
}

macro_rules! script {
    ($name:literal, $keys:expr) => {
        LuaScript::new($name, include_str!(concat!("lua/", $name, ".lua")), $keys)
    };
}

/// Every script.
pub(crate) struct Scripts {
    pub(crate) heartbeat: LuaScript,
    pub(crate) leave: LuaScript,
    pub(crate) list: LuaScript,
    pub(crate) send: LuaScript,
    pub(crate) sync: LuaScript,
    pub(crate) record: LuaScript,
    pub(crate) clear: LuaScript,
}

impl Scripts {
    /// All of them, for the tests.
    #[cfg(test)]
    pub(crate) fn all(&self) -> [&LuaScript; 7] {
        [
            &self.heartbeat,
            &self.leave,
            &self.list,
            &self.send,
            &self.sync,
            &self.record,
            &self.clear,
        ]
    }
}

/// The shared breakers' exchange (`lua/breakers.lua`): it takes any number of keys, one per
/// breaker, so it is invoked with [`FleetKeys::breaker`] names rather than a fixed list.
pub(crate) static BREAKERS: LazyLock<Script> = LazyLock::new(|| Script::new(BREAKERS_BODY));

/// The source of [`BREAKERS`].
pub(crate) const BREAKERS_BODY: &str = include_str!("lua/breakers.lua");

/// The scripts, built once per process.
pub(crate) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    heartbeat: script!(
        "heartbeat",
        &[Key::Instances, Key::Info, Key::Cursor, Key::Snapshots]
    ),
    leave: script!("leave", &[Key::Instances, Key::Info, Key::Snapshots]),
    list: script!("list", &[Key::Instances, Key::Info]),
    send: script!("send", &[Key::Stream, Key::Overrides, Key::Instances]),
    sync: script!("sync", &[Key::Stream, Key::Overrides, Key::Cursor]),
    record: script!("record", &[Key::Results, Key::Cursor]),
    clear: script!("clear", &[Key::Overrides]),
});

#[cfg(test)]
mod tests {
    use super::*;

    /// The first statement that is not a comment: `local a, b = KEYS[1], KEYS[2]`.
    fn header(body: &str) -> (Vec<String>, Vec<String>) {
        let line = body
            .lines()
            .find(|l| !l.trim_start().starts_with("--") && !l.trim().is_empty())
            .unwrap_or_default();
        let rest = line.strip_prefix("local ").unwrap_or_default();
        let (names, values) = rest.split_once('=').unwrap_or_default();
        let split = |s: &str| {
            s.split(',')
                .map(|p| p.trim().to_owned())
                .filter(|p| !p.is_empty())
                .collect::<Vec<_>>()
        };
        (split(names), split(values))
    }

    #[test]
    fn every_script_compiles_as_lua_5_1() {
        for s in SCRIPTS.all() {
            palisade_testkit::assert_lua_compiles(&format!("src/lua/{}.lua", s.name), s.body);
        }
    }

    #[test]
    fn the_breakers_script_compiles_and_touches_only_the_keys_it_is_given() {
        palisade_testkit::assert_lua_compiles("src/lua/breakers.lua", BREAKERS_BODY);
        let code: String = BREAKERS_BODY
            .lines()
            .map(|l| l.split("--").next().unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(
            code.matches("KEYS").count(),
            1,
            "KEYS read once, in the loop"
        );
        assert!(code.contains("for i, key in ipairs(KEYS) do"));
        for call in code.split("redis.call(").skip(1) {
            let args: Vec<&str> = call.split([',', ')']).map(str::trim).collect();
            if args[0] == "'TIME'" {
                continue;
            }
            assert_eq!(
                args.get(1).copied(),
                Some("key"),
                "{} on another key",
                args[0]
            );
        }
        assert!(!BREAKERS_BODY.contains("palisade:"), "builds a key");
    }

    #[test]
    fn every_script_declares_its_keys_first_and_uses_no_other() {
        for s in SCRIPTS.all() {
            let (names, values) = header(s.body);
            let expected: Vec<String> = s.keys.iter().map(|k| k.name().to_owned()).collect();
            assert_eq!(names, expected, "{}: key names", s.name);
            let indexes: Vec<String> = (1..=s.keys.len()).map(|i| format!("KEYS[{i}]")).collect();
            assert_eq!(values, indexes, "{}: KEYS order", s.name);
            // KEYS appears in the header only (comments aside).
            let code: String = s
                .body
                .lines()
                .map(|l| l.split("--").next().unwrap_or_default())
                .collect::<Vec<_>>()
                .join("\n");
            assert_eq!(
                code.matches("KEYS[").count(),
                s.keys.len(),
                "{}: KEYS used outside the header",
                s.name
            );
            // Every keyed call names a declared key as its first argument.
            for call in s.body.split("redis.call(").skip(1) {
                let args: Vec<&str> = call.split([',', ')']).map(str::trim).collect();
                let command = args[0].trim_matches('\'');
                if command == "TIME" {
                    continue;
                }
                let key = args.get(1).copied().unwrap_or_default();
                assert!(
                    expected.iter().any(|k| k == key),
                    "{}: {command} on {key:?}, which is not a declared key",
                    s.name
                );
            }
            // No key fragment is built in Lua.
            assert!(!s.body.contains("palisade:"), "{}: builds a key", s.name);
        }
    }
}
