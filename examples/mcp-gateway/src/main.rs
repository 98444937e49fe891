//! The `mcp-gateway` program: see the library documentation ([`mcp_gateway`]).
#![allow(clippy::print_stdout)] // a server program tells its user where it listens

use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;

use mcp_gateway::telemetry::{LogFormat, LogOptions};
use mcp_gateway::{GatewayConfig, StartOptions};

/// mimalloc instead of the system allocator: a call through the gateway makes a few hundred
/// small allocations (JSON values, headers, futures), and glibc's malloc took about a fifth of
/// the gateway's CPU time under load (docs/benchmarks.md, "Gateway").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "\
usage: mcp-gateway [--config FILE] [--log-format text|json]
                                            serve (default: the embedded demo configuration)
       mcp-gateway --print-demo-config      print the demo configuration, to start your own
       mcp-gateway flaky-upstream [FLAGS]   run the demo upstream (see flaky-upstream --help)

logs (stderr): RUST_LOG (a filter: info, warn,mcp_gateway=debug, palisade::fleet=trace; default
info; LOG_LEVEL is a plain level used when RUST_LOG is unset), LOG_FORMAT or --log-format
(text, the default, or json: one JSON object a line).

traces (OpenTelemetry, off unless an endpoint is set): OTEL_EXPORTER_OTLP_ENDPOINT
(http://collector:4318; spans go to /v1/traces) or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (the
full URL), OTLP/HTTP with protobuf over plain http; OTEL_SERVICE_NAME (default mcp-gateway),
OTEL_RESOURCE_ATTRIBUTES, OTEL_EXPORTER_OTLP_HEADERS, OTEL_EXPORTER_OTLP_TIMEOUT,
OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG, OTEL_BSP_SCHEDULE_DELAY and the other OTEL_BSP_*,
OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none to switch them off. Each tool call is a span
(tools/call <tool>) whose trace context (traceparent) reaches the upstreams; a traceparent sent
by the client (params._meta, or the /mcp request's header) is its parent.


environment: MCP_GATEWAY_CONFIG (a config file), RATE_LIMIT_BACKEND=memory|redis,
REDIS_URL (redis://, rediss://, redis+sentinel://host:port,…/master, redis+cluster://host:port,…),
REDIS_SENTINEL_USERNAME / REDIS_SENTINEL_PASSWORD, REDIS_TLS_CA_FILE, REDIS_TLS_CERT_FILE /
REDIS_TLS_KEY_FILE (mutual TLS), REDIS_TLS_INSECURE (tests only),
PALISADE_ADMIN_TOKEN or PALISADE_ADMIN_TOKEN_FILE (operator; generated and printed when unset),
PALISADE_VIEWER_TOKEN or PALISADE_VIEWER_TOKEN_FILE (admin reads only), HEALTH_MONITOR_AUTO_RESTART,
MCP_GATEWAY_DLQ_QUEUE, PALISADE_INSTANCE_ID / PALISADE_FLEET (with Redis: fleet commands), TRUSTED_PROXIES (proxies whose X-Forwarded-For names the client),
CLIENT_IPV6_PREFIX / CLIENT_IPV4_PREFIX (how much of an address keys its rate limit: 64 / 32)";

fn env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.trim().is_empty())
}

/// Writes a generated token to a new file only this user can read (0600), in
/// `$XDG_RUNTIME_DIR` or the temporary directory; its path.
fn write_token_file(token: &str) -> Result<std::path::PathBuf, String> {
    let dir = env("XDG_RUNTIME_DIR").map_or_else(std::env::temp_dir, std::path::PathBuf::from);
    let path = dir.join(format!("mcp-gateway-admin-token-{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&path)
        .map_err(|e| format!("cannot write the admin token to {}: {e}", path.display()))?;
    writeln!(file, "{token}")
        .map_err(|e| format!("cannot write the admin token to {}: {e}", path.display()))?;
    Ok(path)
}

/// A random admin token for a session without `PALISADE_ADMIN_TOKEN`.
fn generate_token() -> Result<String, String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| format!("cannot read /dev/urandom for an admin token: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Takes `--log-format VALUE` (or `--log-format=VALUE`) out of `args`; the log options with
/// `LOG_FORMAT`, `RUST_LOG` and `LOG_LEVEL`. A bad format is refused, naming where it came
/// from, with the exit status: 64 (EX_USAGE) for the flag, 78 (EX_CONFIG) for the variable.
fn log_options(args: &mut Vec<String>) -> Result<LogOptions, (u8, String)> {
    let mut flag = None;
    let mut i = 0;
    while i < args.len() {
        if args[i] == "--log-format" {
            if i + 1 >= args.len() {
                return Err((64, "--log-format needs a value: text or json".to_owned()));
            }
            flag = Some(args.remove(i + 1));
            args.remove(i);
        } else if let Some(value) = args[i].strip_prefix("--log-format=") {
            flag = Some(value.to_owned());
            args.remove(i);
        } else {
            i += 1;
        }
    }
    let format = match (flag, env("LOG_FORMAT")) {
        (Some(f), _) => f
            .parse()
            .map_err(|e| (64, format!("--log-format: {e}\n{USAGE}")))?,
        (None, Some(f)) => f
            .parse()
            .map_err(|e| (78, format!("invalid environment: LOG_FORMAT: {e}")))?,
        (None, None) => LogFormat::Text,
    };
    Ok(LogOptions {
        format,
        filter: env("RUST_LOG"),
        level: env("LOG_LEVEL"),
    })
}

fn load_config(args: &[String]) -> Result<GatewayConfig, String> {
    let path = match args {
        [] => env("MCP_GATEWAY_CONFIG"),
        [flag, path] if flag == "--config" => Some(path.clone()),
        _ => return Err(format!("unexpected arguments {args:?}\n{USAGE}")),
    };
    let mut config = match &path {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read the config file {path}: {e}"))?;
            GatewayConfig::from_toml(&text).map_err(|e| format!("{path}: {e}"))?
        }
        None => GatewayConfig::demo().map_err(|e| format!("the demo config: {e}"))?,
    };
    config
        .apply_env(env)
        .map_err(|e| format!("invalid environment: {e}"))?;
    Ok(config)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("flaky-upstream") {
        return flaky_upstream::main_with_args(args.into_iter().skip(1));
    }
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    if args.iter().any(|a| a == "--print-demo-config") {
        print!("{}", mcp_gateway::DEMO_CONFIG);
        return ExitCode::SUCCESS;
    }
    let mut args = args;
    let logs = match log_options(&mut args) {
        Ok(options) => options,
        Err((status, e)) => {
            eprintln!("mcp-gateway: {e}");
            return ExitCode::from(status);
        }
    };
    let config = match load_config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mcp-gateway: {e}");
            return ExitCode::from(78); // EX_CONFIG
        }
    };
    let workers = match config.server.worker_threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mcp-gateway: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Logs, and traces when OTEL_* asks for them: the exporter sends from this runtime.
    let telemetry = match mcp_gateway::telemetry::init(&logs, &env, runtime.handle()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("mcp-gateway: invalid environment: {e}");
            return ExitCode::from(78); // EX_CONFIG
        }
    };
    let traces = telemetry.traces_endpoint().map(str::to_owned);
    let served = runtime.block_on(serve(config, traces));
    // The spans still buffered, exported while the runtime still runs their requests.
    telemetry.shutdown();
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mcp-gateway: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: GatewayConfig, traces: Option<String>) -> Result<(), String> {
    let (admin_token, generated) = match (
        env("PALISADE_ADMIN_TOKEN"),
        env("PALISADE_ADMIN_TOKEN_FILE"),
    ) {
        (Some(t), _) => (t, false),
        (None, Some(path)) => {
            let token = std::fs::read_to_string(&path)
                .map_err(|e| format!("PALISADE_ADMIN_TOKEN_FILE: cannot read {path}: {e}"))?;
            let token = token.trim().to_owned();
            if token.is_empty() {
                return Err(format!("PALISADE_ADMIN_TOKEN_FILE: {path} is empty"));
            }
            (token, false)
        }
        (None, None) => (generate_token()?, true),
    };
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| tracing::warn!(error = %e, "metrics disabled"))
        .ok();
    let options = StartOptions {
        redis: palisade::core::redis::RedisConfig::from_env()
            .map_err(|e| format!("invalid environment: {e}"))?,
        admin_token: Some(admin_token.clone()),
        prometheus,
        dlq_queue: env("MCP_GATEWAY_DLQ_QUEUE"),
        instance_id: env("PALISADE_INSTANCE_ID"),
        fleet: env("PALISADE_FLEET"),
        client_ip: Some(
            palisade::tower::ratelimit::ClientIp::from_env()
                .map_err(|e| format!("invalid environment: {e}"))?,
        ),
    };
    let backend = config.rate_limit.backend;
    let auth = config.auth.clone();
    let running = mcp_gateway::start(config, options)
        .await
        .map_err(|e| e.to_string())?;
    let admin = running.admin_addr;
    println!("mcp-gateway ready");
    println!("  MCP endpoint: http://{}/mcp", running.mcp_addr);
    match &auth {
        Some(mcp_gateway::config::AuthConfig::Jwt(jwt)) => {
            println!(
                "  auth:         bearer JWTs from {} for {}",
                jwt.issuer, jwt.resource
            );
        }
        _ => println!("  auth:         none: any MCP client is let in ([auth] mode = \"none\")"),
    }
    println!("  admin API:    http://{admin}/admin");
    if let Some(probes) = running.probes_addr {
        println!("  probes:       http://{probes}/readyz (/livez, /health, /metrics; no token)");
    }
    // A generated token is shown only to a person at a terminal: a log collecting stdout
    // gets the path of a file only its owner can read.
    let shown = generated && std::io::stdout().is_terminal();
    if shown {
        // The token rides in the URL fragment: the browser never sends it to the server nor
        // keeps it in the history (the page moves it to session storage and drops it).
        println!("  dashboard:    http://{admin}/admin/dashboard#token={admin_token}");
    } else {
        println!("  dashboard:    http://{admin}/admin/dashboard");
    }
    let dlq_backend = if env("REDIS_URL").is_some() {
        "redis"
    } else {
        "memory"
    };
    let backend = format!("{backend:?}").to_lowercase();
    if let Some(traces) = &traces {
        println!("  traces:       OTLP/HTTP to {traces}");
    }
    println!("  backends:     rate limit {backend}, dead-letter queue {dlq_backend}");
    if shown {
        println!(
            "  admin token:  {admin_token}  (generated; set PALISADE_ADMIN_TOKEN to choose one)"
        );
    } else if generated {
        let path = write_token_file(&admin_token)?;
        println!(
            "  admin token:  in {}  (generated, readable by this user only; set PALISADE_ADMIN_TOKEN to choose one)",
            path.display()
        );
    }
    shutdown_signal().await;
    // New calls are refused from here on, before anyone is told.
    running.gateway.drain();
    // stdout may be closed by now (a supervisor that stopped reading): never panic on it.
    let _ = writeln!(std::io::stdout(), "mcp-gateway: shutting down");
    running.shutdown().await;
    Ok(())
}
