//! Every Redis operation of the fleet, on one multiplexed connection (plus the blocking stream
//! read, which takes a connection of its own).

use std::time::Duration;

use palisade_core::redis::RedisConnection;
use redis::Value;

use crate::config::millis;
use crate::error::FleetError;
use crate::keys::FleetKeys;
use crate::reply::{StreamEntry, int, items, text, xread};
use crate::scripts::{LuaScript, SCRIPTS};

/// Commands kept in the stream (`XADD ... MAXLEN ~`): an instance stopped while more were sent
/// misses the oldest.
pub const STREAM_MAX_LEN: u64 = 10_000;

/// Entries read per `XREAD`.
const READ_COUNT: u64 = 100;

/// What [`Store::sync`] read.
#[derive(Debug)]
pub(crate) struct Sync {
    /// Redis time, ms.
    pub(crate) now_ms: u64,
    /// Where to read from: the cursor, or the stream's last id for a new instance.
    pub(crate) start: String,
    /// Whether the instance had a cursor (it ran before and catches up).
    pub(crate) resumed: bool,
    /// Every override, field and value.
    pub(crate) overrides: Vec<(String, String)>,
}

/// The fleet's Redis operations for one instance.
#[derive(Debug, Clone)]
pub(crate) struct Store {
    conn: RedisConnection,
    keys: FleetKeys,
    fleet: String,
    instance: String,
}

impl Store {
    pub(crate) fn new(conn: RedisConnection, fleet: &str, instance: &str) -> Self {
        Store {
            conn,
            keys: FleetKeys::new(fleet, instance),
            fleet: fleet.to_owned(),
            instance: instance.to_owned(),
        }
    }

    fn unavailable(&self, operation: &'static str, e: impl std::fmt::Display) -> FleetError {
        FleetError::unavailable(&self.fleet, operation, e)
    }

    fn shape(&self, script: &str) -> FleetError {
        FleetError::corrupt(
            format!("reply of {script} on fleet {}", self.fleet),
            "unexpected shape (a foreign key of the same name?)",
        )
    }

    /// One exchange of shared breakers ([`crate::scripts::BREAKERS`]): for each breaker, its
    /// name and `[window ms, calls, failures, open on its own, closed]`; a report holds for
    /// `hold`. Returns Redis time (ms) and, per breaker in order, `[calls, failures,
    /// instances, open]`.
    pub(crate) async fn exchange_breakers(
        &self,
        hold: Duration,
        breakers: &[(String, [u64; 5])],
    ) -> Result<(u64, Vec<[u64; 4]>), FleetError> {
        let mut inv = crate::scripts::BREAKERS.prepare_invoke();
        inv.arg(&self.instance).arg(millis(hold));
        for (name, args) in breakers {
            inv.key(self.keys.breaker(name));
            for a in args {
                inv.arg(*a);
            }
        }
        let mut conn = self.conn.clone();
        let reply: Value = inv
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.unavailable("share breakers", e))?;
        let mut items = items(reply)
            .ok_or_else(|| self.shape("breakers"))?
            .into_iter();
        let now = items
            .next()
            .as_ref()
            .and_then(int)
            .ok_or_else(|| self.shape("breakers"))?;
        let mut out = Vec::with_capacity(breakers.len());
        for item in items {
            let nums: Vec<u64> = crate::reply::items(item)
                .ok_or_else(|| self.shape("breakers"))?
                .iter()
                .map(int)
                .collect::<Option<_>>()
                .ok_or_else(|| self.shape("breakers"))?;
            let four: [u64; 4] = nums.try_into().map_err(|_| self.shape("breakers"))?;
            out.push(four);
        }
        if out.len() != breakers.len() {
            return Err(self.shape("breakers"));
        }
        Ok((now, out))
    }

    async fn run(
        &self,
        operation: &'static str,
        script: &LuaScript,
        id: &str,
        args: &[&str],
    ) -> Result<Value, FleetError> {
        let mut inv = script.prepare(&self.keys, id);
        for a in args {
            inv.arg(*a);
        }
        let mut conn = self.conn.clone();
        inv.invoke_async(&mut conn)
            .await
            .map_err(|e| self.unavailable(operation, e))
    }

    /// Registers (or refreshes) this instance until Redis time + `ttl`; returns Redis time.
    pub(crate) async fn heartbeat(
        &self,
        details: &str,
        ttl: Duration,
        retention: Duration,
        snapshots: &str,
    ) -> Result<u64, FleetError> {
        let (ttl, keep) = (millis(ttl).to_string(), millis(retention).to_string());
        let s = &SCRIPTS.heartbeat;
        let reply = self
            .run(
                "heartbeat",
                s,
                "",
                &[&self.instance, details, &ttl, &keep, snapshots],
            )
            .await?;
        int(&reply).ok_or_else(|| self.shape(s.name))
    }

    /// Every instance's last published snapshots (instance id → JSON text).
    pub(crate) async fn snapshots(&self) -> Result<Vec<(String, String)>, FleetError> {
        let mut conn = self.conn.clone();
        redis::cmd("HGETALL")
            .arg(self.keys.name(crate::keys::Key::Snapshots, ""))
            .query_async(&mut conn)
            .await
            .map_err(|e| self.unavailable("snapshots", e))
    }

    /// Removes this instance from the fleet; `true` if it was registered.
    pub(crate) async fn leave(&self) -> Result<bool, FleetError> {
        let reply = self
            .run("leave", &SCRIPTS.leave, "", &[&self.instance])
            .await?;
        Ok(int(&reply) == Some(1))
    }

    /// Redis time and the live instances: id, registration expiry (ms) and details JSON.
    pub(crate) async fn list(&self) -> Result<(u64, Vec<(String, u64, String)>), FleetError> {
        let s = &SCRIPTS.list;
        let reply = self.run("instances", s, "", &[]).await?;
        let list = items(reply).ok_or_else(|| self.shape(s.name))?;
        let mut it = list.iter();
        let now = it.next().and_then(int).ok_or_else(|| self.shape(s.name))?;
        let mut out = Vec::new();
        while let Some(id) = it.next() {
            let (Some(id), Some(expiry), Some(details)) = (
                text(id),
                it.next().and_then(|v| text(v)?.parse::<f64>().ok()),
                it.next().and_then(text),
            ) else {
                return Err(self.shape(s.name));
            };
            // Scores are written as integers; the cast keeps them.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            out.push((id, expiry as u64, details));
        }
        Ok((now, out))
    }

    /// Appends `payload` to the stream and stores (`Some((field, json, false))`) or removes
    /// (`Some((field, _, true))`) an override; returns the command's id and the instances
    /// live at that moment.
    pub(crate) async fn send(
        &self,
        payload: &str,
        over: Option<(&str, &str, bool)>,
    ) -> Result<(String, Vec<String>), FleetError> {
        let s = &SCRIPTS.send;
        let cap = STREAM_MAX_LEN.to_string();
        let (field, value, remove) = over.unwrap_or(("", "", false));
        let remove = if remove { "1" } else { "0" };
        let reply = self
            .run("send", s, "", &[payload, &cap, field, value, remove])
            .await?;
        let mut parts = items(reply).ok_or_else(|| self.shape(s.name))?.into_iter();
        let id = parts.next().as_ref().and_then(text);
        let live = parts
            .next()
            .and_then(items)
            .map(|l| l.iter().map(text).collect::<Option<Vec<_>>>());
        match (id, live) {
            (Some(id), Some(Some(live))) => Ok((id, live)),
            _ => Err(self.shape(s.name)),
        }
    }

    /// Where this instance starts reading, and every override (see `sync.lua`).
    pub(crate) async fn sync(&self, retention: Duration) -> Result<Sync, FleetError> {
        let s = &SCRIPTS.sync;
        let keep = millis(retention).to_string();
        let reply = self.run("sync", s, "", &[&keep]).await?;
        let list = items(reply).ok_or_else(|| self.shape(s.name))?;
        let mut it = list.iter();
        let (Some(now_ms), Some(start), Some(resumed)) = (
            it.next().and_then(int),
            it.next().and_then(text),
            it.next().and_then(int),
        ) else {
            return Err(self.shape(s.name));
        };
        let mut overrides = Vec::new();
        while let Some(field) = it.next() {
            match (text(field), it.next().and_then(text)) {
                (Some(f), Some(v)) => overrides.push((f, v)),
                _ => return Err(self.shape(s.name)),
            }
        }
        Ok(Sync {
            now_ms,
            start,
            resumed: resumed == 1,
            overrides,
        })
    }

    /// Records this instance's `outcome` of command `id` (none for a skipped command) and moves
    /// its cursor to `id`.
    pub(crate) async fn record(
        &self,
        id: &str,
        outcome: Option<&str>,
        results_ttl: Duration,
        retention: Duration,
    ) -> Result<(), FleetError> {
        let ttl = millis(results_ttl).to_string();
        let keep = millis(retention).to_string();
        self.run(
            "record",
            &SCRIPTS.record,
            id,
            &[&self.instance, outcome.unwrap_or(""), &ttl, id, &keep],
        )
        .await
        .map(drop)
    }

    /// Removes the overrides whose field starts with `prefix` (all for `""`); returns how many.
    pub(crate) async fn clear(&self, prefix: &str) -> Result<u64, FleetError> {
        let s = &SCRIPTS.clear;
        let reply = self.run("clear_overrides", s, "", &[prefix]).await?;
        int(&reply).ok_or_else(|| self.shape(s.name))
    }

    /// Every field and value of a hash.
    async fn hgetall(
        &self,
        operation: &'static str,
        key: &str,
    ) -> Result<Vec<(String, String)>, FleetError> {
        let mut conn = self.conn.clone();
        let reply: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.unavailable(operation, e))?;
        Ok(reply)
    }

    /// The outcomes recorded for command `id`: instance id → outcome JSON.
    pub(crate) async fn results(&self, id: &str) -> Result<Vec<(String, String)>, FleetError> {
        self.hgetall("results", &self.keys.results(id)).await
    }

    /// Every override: field → value.
    pub(crate) async fn overrides(&self) -> Result<Vec<(String, String)>, FleetError> {
        self.hgetall(
            "overrides",
            &self.keys.name(crate::keys::Key::Overrides, ""),
        )
        .await
    }

    /// Redis time, ms.
    pub(crate) async fn time_ms(&self) -> Result<u64, FleetError> {
        let mut conn = self.conn.clone();
        let (s, us): (u64, u64) = redis::cmd("TIME")
            .query_async(&mut conn)
            .await
            .map_err(|e| self.unavailable("time", e))?;
        Ok(s.saturating_mul(1000).saturating_add(us / 1000))
    }

    /// Up to 100 commands after `after`, waiting up to `block` for one (not at all for
    /// `None`). A blocking read must go through a connection of its own (`conn`): it holds
    /// the connection until it returns.
    pub(crate) async fn read(
        &self,
        conn: &RedisConnection,
        after: &str,
        block: Option<Duration>,
    ) -> Result<Vec<StreamEntry>, FleetError> {
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT").arg(READ_COUNT);
        if let Some(block) = block {
            cmd.arg("BLOCK").arg(millis(block));
        }
        cmd.arg("STREAMS").arg(self.keys.stream()).arg(after);
        let mut conn = conn.clone();
        let reply: Value = cmd
            .query_async(&mut conn)
            .await
            .map_err(|e| self.unavailable("read commands", e))?;
        xread(reply).ok_or_else(|| self.shape("XREAD"))
    }
}
