//! `palisade`: every runbook procedure of a Palisade service from a shell, without curl and jq.
//!
//! It talks to the admin API of one instance (`--url` or `PALISADE_ADMIN_URL`, default
//! `http://127.0.0.1:9090`) with the operator's token (`PALISADE_ADMIN_TOKEN`, or a file:
//! `--token-file`, `PALISADE_ADMIN_TOKEN_FILE`), and names the operator in the audit trail
//! (`--actor`, default `$USER`). Tables for people, `--json` for scripts, and exit codes that
//! say what happened: 0 done, 1 refused by the server, 2 usage, 3 unreachable, 4 auth.
//!
//! ```text
//! palisade status
//! palisade breakers reset weather
//! palisade dlq retry gateway-calls --state parked --operation weather_forecast
//! palisade fleet send breaker weather force-open --persist
//! ```

mod cli;
mod client;
mod commands;
mod confirm;
mod error;
mod output;
mod params;
mod sse;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::client::{Client, DEFAULT_URL, parse_base};
use crate::commands::Ctx;
use crate::error::{CliError, EXIT_USAGE};
use crate::output::Output;

/// The variable naming the admin API.
const URL_ENV: &str = "PALISADE_ADMIN_URL";
/// The variable holding the operator's token.
const TOKEN_ENV: &str = "PALISADE_ADMIN_TOKEN";
/// The variable naming a file that holds the token.
const TOKEN_FILE_ENV: &str = "PALISADE_ADMIN_TOKEN_FILE";

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout with 0; mistakes to stderr with 2.
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(EXIT_USAGE));
        }
    };
    let json = cli.json;
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report(&e, json);
            ExitCode::from(e.exit_code())
        }
    }
}

/// Tells the operator what went wrong (stderr); with `--json`, the server's error body goes to
/// stdout too, for scripts.
fn report(e: &CliError, json: bool) {
    if matches!(e, CliError::Closed) {
        return;
    }
    if let Some(body) = e.body().filter(|_| json) {
        let _ = Output::new(true, output::ColorChoice::Never).print_json(body);
    }
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let label = if colour {
        "\x1b[31merror:\x1b[0m"
    } else {
        "error:"
    };
    output::note(&format!("{label} {e}"));
}

/// An environment variable, if set to something other than blanks.
fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The token in the file at `path`, trimmed; the error names the file, never its contents.
fn read_token_file(path: &std::path::Path, source: &str) -> Result<String, CliError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        CliError::usage(format!(
            "cannot read the token file {} ({source}): {e}",
            path.display()
        ))
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(CliError::usage(format!(
            "the token file {} ({source}) is empty",
            path.display()
        )));
    }
    Ok(token.to_owned())
}

/// The token: `--token-file`, else `PALISADE_ADMIN_TOKEN`, else the file
/// `PALISADE_ADMIN_TOKEN_FILE` names, else none (the server then answers 401).
fn token(cli: &Cli) -> Result<Option<String>, CliError> {
    if let Some(path) = &cli.token_file {
        return read_token_file(path, "--token-file").map(Some);
    }
    if let Some(token) = env_var(TOKEN_ENV) {
        return Ok(Some(token.trim().to_owned()));
    }
    if let Some(path) = env_var(TOKEN_FILE_ENV) {
        return read_token_file(std::path::Path::new(path.trim()), TOKEN_FILE_ENV).map(Some);
    }
    Ok(None)
}

fn run(cli: Cli) -> Result<(), CliError> {
    if let Command::Completions(args) = &cli.command {
        return commands::completions::run(args);
    }
    let url = cli
        .url
        .clone()
        .or_else(|| env_var(URL_ENV))
        .unwrap_or_else(|| DEFAULT_URL.to_owned());
    let base = parse_base(&url)?;
    let token = token(&cli)?;
    let actor = cli
        .actor
        .clone()
        .or_else(|| env_var("USER"))
        .or_else(|| env_var("LOGNAME"));
    let client = Client::new(base, token.as_deref(), actor.as_deref(), cli.timeout)?;
    let ctx = Ctx {
        client,
        out: Output::new(cli.json, cli.color),
        yes: cli.yes,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(dispatch(&ctx, cli.command))
}

async fn dispatch(ctx: &Ctx, command: Command) -> Result<(), CliError> {
    match command {
        Command::Status => commands::status::run(ctx).await,
        Command::Breakers(args) => commands::breakers::run(ctx, args).await,
        Command::Bulkheads(args) => commands::bulkheads::run(ctx, args).await,
        Command::Limits(args) => commands::limits::run(ctx, args).await,
        Command::Dlq(args) => commands::dlq::run(ctx, args).await,
        Command::Health(args) => commands::health::run(ctx, args).await,
        Command::Events(args) => commands::events::run(ctx, args).await,
        Command::Fleet(args) => commands::fleet::run(ctx, args).await,
        Command::Faults(args) => commands::faults::run(ctx, args).await,
        Command::Show(args) => commands::component::show(ctx, args).await,
        Command::Send(args) => commands::component::send(ctx, args).await,
        Command::Completions(args) => commands::completions::run(&args),
    }
}
