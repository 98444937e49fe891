//! Which failed calls the gateway replays by itself, and the idempotency key every attempt of
//! one call carries: [`palisade_mcp`]'s, so that the gateway and any rmcp server guarded by
//! `palisade-mcp` follow one rule.
//!
//! A failed call's outcome is often unknown (a timeout may have run the tool), so replaying
//! `send_email` could send it twice. Each tool therefore has a [`ReplayPolicy`]: from the
//! config (`replay` for all of a connector's tools, `tool_replay` or `tool_settings.<tool>.replay`
//! per tool), or else from the tool's MCP annotations ([`ReplayPolicy::from_annotations`]).
//!
//! ```
//! use mcp_gateway::replay::ReplayPolicy;
//! use rmcp::model::ToolAnnotations;
//!
//! let read_only = ToolAnnotations::new().read_only(true);
//! assert_eq!(ReplayPolicy::from_annotations(Some(&read_only)), ReplayPolicy::Never);
//! assert_eq!(ReplayPolicy::from_annotations(None), ReplayPolicy::Park);
//! ```

pub use palisade::mcp::{
    IDEMPOTENCY_HEADER, IDEMPOTENCY_META, PolicySource, ReplayPolicy, idempotency_key,
};
