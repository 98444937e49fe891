//! The names clients see: `{connector}{separator}{tool}`, always within
//! `^[a-zA-Z0-9_-]{1,64}$`, the pattern of LLM function-calling APIs (OpenAI's among them) that
//! many MCP clients hand tool names to. The MCP specification also allows `.`, which breaks
//! those clients, so the default separator is `_`.

use std::borrow::Cow;

/// The default separator between a connector's name and its tool's (`weather_forecast`).
pub const DEFAULT_SEPARATOR: &str = "_";

/// The separators `server.tool_separator` accepts. `.` keeps names MCP-valid but not
/// function-calling-valid; choose it only for clients that accept dots.
pub const SEPARATORS: [&str; 5] = ["_", "__", "-", "--", "."];

/// The longest served name.
pub const MAX_LEN: usize = 64;

/// Whether `name` matches `^[a-zA-Z0-9_-]{1,64}$`.
pub fn is_portable(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_LEN && name.bytes().all(portable_byte)
}

fn portable_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// An upstream tool name as clients see it: every character outside `[a-zA-Z0-9_-]` becomes
/// `_` (`get.forecast` → `get_forecast`, `search docs` → `search_docs`). Unchanged (borrowed)
/// when it is already portable.
pub fn sanitize(tool: &str) -> Cow<'_, str> {
    if tool.bytes().all(portable_byte) {
        return Cow::Borrowed(tool);
    }
    Cow::Owned(
        tool.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect(),
    )
}

/// The name clients see for `tool` of `connector`. Longer than 64 characters, it is cut and
/// ends with a hash of the full name (`…-1a2b3c4d`), stable across restarts and instances.
pub fn served(connector: &str, separator: &str, tool: &str) -> String {
    let full = format!("{connector}{separator}{}", sanitize(tool));
    if full.len() <= MAX_LEN {
        return full;
    }
    let hash = full.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let suffix = format!("-{:08x}", hash & 0xffff_ffff);
    // The name is ASCII after sanitizing (and the connector name is portable): any byte index
    // is a character boundary.
    format!("{}{suffix}", &full[..MAX_LEN - suffix.len()])
}

/// Whether a client's `served` name is `tool` of `connector` (no allocation unless the tool
/// name needed sanitizing or cutting).
pub fn is_served_as(served_name: &str, connector: &str, separator: &str, tool: &str) -> bool {
    let Some(rest) = served_name
        .strip_prefix(connector)
        .and_then(|r| r.strip_prefix(separator))
    else {
        return false;
    };
    if rest == tool {
        return true;
    }
    // A portable name that fits is served as it is: it matched above or not at all (no
    // allocation for the other tools of a connector on every call).
    if tool.bytes().all(portable_byte) && connector.len() + separator.len() + tool.len() <= MAX_LEN
    {
        return false;
    }
    served(connector, separator, tool) == served_name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_clients_accept() {
        assert_eq!(served("weather", "_", "forecast"), "weather_forecast");
        assert_eq!(served("weather", ".", "forecast"), "weather.forecast");
        assert_eq!(served("w", "__", "get.forecast"), "w__get_forecast");
        assert_eq!(served("w", "_", "search docs"), "w_search_docs");
        assert_eq!(served("w", "_", "météo"), "w_m_t_o");
        let long = served("connector", "_", &"x".repeat(100));
        assert_eq!(long.len(), 64);
        assert!(is_portable(&long), "{long}");
        assert_eq!(long, served("connector", "_", &"x".repeat(100)), "stable");
        assert_ne!(long, served("connector", "_", &"x".repeat(101)));
        for name in ["weather_forecast", "w__get_forecast", &long] {
            assert!(is_portable(name), "{name}");
        }
        assert!(!is_portable("weather.forecast"));
        assert!(!is_portable(""));
    }

    #[test]
    fn served_names_resolve_back() {
        assert!(is_served_as("weather_forecast", "weather", "_", "forecast"));
        assert!(is_served_as("w_get_forecast", "w", "_", "get.forecast"));
        assert!(!is_served_as("w_get_forecast", "w", "_", "get_forecastx"));
        assert!(!is_served_as(
            "weather.forecast",
            "weather",
            "_",
            "forecast"
        ));
        let long = "x".repeat(100);
        assert!(is_served_as(&served("c", "_", &long), "c", "_", &long));
    }
}
