//! The `mcp-load` program: see the library documentation ([`mcp_load`]).
#![allow(clippy::print_stdout)] // a command-line tool prints its report

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use http::{HeaderName, HeaderValue};
use mcp_load::{ArgsTemplate, LoadConfig, Stop};

/// A load generator for MCP servers over streamable HTTP.
///
/// Opens SESSIONS MCP sessions, keeps CONCURRENCY calls of TOOL in flight in each, and reports
/// calls per second, latency percentiles and failed calls by kind.
#[derive(Debug, Parser)]
#[command(name = "mcp-load", version)]
struct Cli {
    /// The MCP endpoint, e.g. http://127.0.0.1:8080/mcp.
    url: String,
    /// The tool to call (see --list-tools).
    #[arg(short, long, required_unless_present = "list_tools")]
    tool: Option<String>,
    /// The tool's arguments: a JSON object; `{i}` in its strings becomes the call number.
    #[arg(short, long, default_value = "{}")]
    args: String,
    /// MCP sessions to open.
    #[arg(short, long, default_value_t = 1)]
    sessions: usize,
    /// Calls in flight per session.
    #[arg(short, long, default_value_t = 1)]
    concurrency: usize,
    /// Measured calls (default 1000, unless --duration is given).
    #[arg(short = 'n', long, conflicts_with = "duration")]
    calls: Option<u64>,
    /// Call for this long instead of a count: 30s, 500ms, 2m.
    #[arg(short, long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Calls made before measuring starts, not reported.
    #[arg(long, default_value_t = 0)]
    warmup: u64,
    /// The longest one call may take before it counts as a timeout.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    timeout: Duration,
    /// An HTTP header on every request, "Name: value" (repeatable).
    #[arg(short = 'H', long = "header", value_parser = parse_header)]
    headers: Vec<(HeaderName, HeaderValue)>,
    /// Open a TCP connection per call, as rmcp's own client does (default: keep them alive).
    #[arg(long)]
    new_connection_per_call: bool,
    /// Threads of the load generator itself (one keeps its own overhead and jitter lowest;
    /// raise it when mcp-load saturates a core).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// List the server's tools and exit.
    #[arg(long)]
    list_tools: bool,
}

/// `30s`, `500ms`, `2m`, `1h` or a bare number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (30s, 500ms, 2m)"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("unknown unit {other:?} in {text:?} (ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

fn parse_header(text: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?} is not \"Name: value\""))?;
    let name = HeaderName::try_from(name.trim()).map_err(|e| format!("header name: {e}"))?;
    let value = HeaderValue::try_from(value.trim()).map_err(|e| format!("header value: {e}"))?;
    Ok((name, value))
}

fn config(cli: &Cli) -> Result<LoadConfig, mcp_load::LoadError> {
    let mut config = LoadConfig::new(cli.url.clone(), cli.tool.clone().unwrap_or_default());
    config.args = ArgsTemplate::parse(&cli.args)?;
    config.sessions = cli.sessions;
    config.concurrency = cli.concurrency;
    config.stop = match (cli.calls, cli.duration) {
        (_, Some(d)) => Stop::Duration(d),
        (Some(n), None) => Stop::Calls(n),
        (None, None) => Stop::Calls(1000),
    };
    config.warmup = cli.warmup;
    config.timeout = cli.timeout;
    config.headers = cli.headers.clone();
    config.keep_alive = !cli.new_connection_per_call;
    Ok(config)
}

async fn main_async(cli: Cli) -> Result<(), mcp_load::LoadError> {
    let config = config(&cli)?;
    if cli.list_tools {
        for (name, description) in mcp_load::list_tools(&config).await? {
            println!("{name}\t{description}");
        }
        return Ok(());
    }
    let report = mcp_load::run(&config).await?;
    if cli.json {
        match serde_json::to_string_pretty(&report) {
            Ok(json) => println!("{json}"),
            Err(e) => {
                return Err(mcp_load::LoadError::Config(format!(
                    "cannot write JSON: {e}"
                )));
            }
        }
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads.max(1))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mcp-load: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(main_async(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mcp-load: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_headers_parse_and_bad_ones_are_named() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("10x").unwrap_err().contains("unknown unit"));
        assert!(
            parse_duration("fast")
                .unwrap_err()
                .contains("not a duration")
        );
        let (name, value) = parse_header("Authorization:  Bearer abc").unwrap();
        assert_eq!(
            (name.as_str(), value.to_str().unwrap()),
            ("authorization", "Bearer abc")
        );
        assert!(
            parse_header("no colon")
                .unwrap_err()
                .contains("Name: value")
        );
    }

    #[test]
    fn flags_make_the_config() {
        let cli = Cli::parse_from([
            "mcp-load",
            "http://h/mcp",
            "-t",
            "x.y",
            "-s",
            "2",
            "-c",
            "8",
            "-d",
            "5s",
            "--args",
            r#"{"a": "{i}"}"#,
        ]);
        let config = config(&cli).unwrap();
        assert_eq!((config.sessions, config.concurrency), (2, 8));
        assert_eq!(config.stop, Stop::Duration(Duration::from_secs(5)));
        assert_eq!(config.args.render(3)["a"], 3);
        assert!(
            Cli::try_parse_from(["mcp-load", "http://h/mcp"]).is_err(),
            "a tool is needed"
        );
        assert!(
            Cli::try_parse_from(["mcp-load", "http://h/mcp", "-t", "x", "-n", "5", "-d", "1s"])
                .is_err(),
            "a count and a duration conflict"
        );
    }
}
