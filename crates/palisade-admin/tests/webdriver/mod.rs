//! Just enough of the W3C WebDriver protocol to drive headless Chromium through `chromedriver`:
//! a tiny HTTP/1.1 JSON client (tokio `TcpStream` + `serde_json`), and a guard that ends the
//! browser session and kills `chromedriver` when dropped, even when the test panics.
#![allow(dead_code)] // each test file uses part of it

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream as StdTcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a wait polls before it fails.
pub const WAIT: Duration = Duration::from_secs(20);
/// Between two polls of a wait.
const POLL: Duration = Duration::from_millis(100);
/// How long one WebDriver command may take (creating a session starts the browser).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// The key of an element reference in WebDriver answers.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Chromium's flags: headless, no sandbox (the tests run as root in containers), fixed size.
const CHROMIUM_ARGS: [&str; 5] = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
];

/// `name` on `PATH`, else in `/usr/bin`.
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// `target/test-artifacts` of the workspace (or of `CARGO_TARGET_DIR`), created.
pub fn artifacts_dir() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let workspace = manifest
        .ancestors()
        .nth(2)
        .unwrap_or(manifest)
        .canonicalize()
        .unwrap_or_else(|_| manifest.join("../.."));
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace.join(dir)
            }
        }
        _ => workspace.join("target"),
    };
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

/// A free loopback port (bound, read, released; chromedriver binds it right after).
fn spare_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

/// A parsed HTTP answer.
struct Answer {
    status: u16,
    json: Value,
}

/// How a response's body ends.
enum Framing {
    Length(usize),
    Chunked,
    /// Until the connection closes.
    Close,
}

/// The end of the headers, the status and the framing, once the headers are complete.
fn parse_head(raw: &[u8]) -> Option<Result<(usize, u16, Framing), String>> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.lines();
    let Some(status) = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse::<u16>().ok())
    else {
        return Some(Err(format!("bad status line in {head:?}")));
    };
    let mut framing = Framing::Close;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        if name == "transfer-encoding" && value.to_ascii_lowercase().contains("chunked") {
            framing = Framing::Chunked;
        } else if name == "content-length" {
            match value.parse() {
                Ok(n) => framing = Framing::Length(n),
                Err(e) => return Some(Err(format!("bad Content-Length {value:?}: {e}"))),
            }
        }
    }
    Some(Ok((split + 4, status, framing)))
}

/// Whether `raw` holds a whole response (chromedriver keeps connections open).
fn response_complete(raw: &[u8]) -> bool {
    match parse_head(raw) {
        None => false,
        Some(Err(_)) => true, // let the parser report it
        Some(Ok((start, _, Framing::Length(n)))) => raw.len() - start >= n,
        Some(Ok((start, _, Framing::Chunked))) => dechunk(&raw[start..]).is_ok(),
        Some(Ok((_, _, Framing::Close))) => false,
    }
}

/// Splits a raw HTTP/1.1 response into status and JSON body (Content-Length or chunked).
fn parse_response(raw: &[u8]) -> Result<Answer, String> {
    let (start, status, framing) = parse_head(raw)
        .ok_or_else(|| format!("no end of headers in {:?}", String::from_utf8_lossy(raw)))??;
    let rest = &raw[start..];
    let body = match framing {
        Framing::Length(n) => rest.get(..n).ok_or("truncated body")?.to_vec(),
        Framing::Chunked => dechunk(rest)?,
        Framing::Close => rest.to_vec(),
    };
    let json = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            format!(
                "HTTP {status}: body is not JSON ({e}): {}",
                String::from_utf8_lossy(&body)
            )
        })?
    };
    Ok(Answer { status, json })
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunk size")?;
        let size_text = String::from_utf8_lossy(&rest[..eol]);
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|e| format!("bad chunk size {size_text:?}: {e}"))?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = rest.get(..size).ok_or("truncated chunk")?;
        out.extend_from_slice(chunk);
        rest = rest.get(size + 2..).ok_or("truncated chunk end")?;
    }
}

/// Standard base64 (screenshots), padding and whitespace tolerated.
fn base64_decode(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' | b'\r' | b'\n' | b' ' => continue,
            _ => return Err(format!("not base64: byte {c}")),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((acc >> bits) & 0xff).unwrap_or(0));
        }
    }
    Ok(out)
}

fn missing_browser() -> ! {
    panic!(
        "the dashboard browser test needs Chromium and chromedriver (Debian packages `chromium` \
         and `chromium-driver`: /usr/bin/chromium, /usr/bin/chromedriver), and they are not \
         installed. scripts/test installs them; or run `apt-get install -y chromium \
         chromium-driver`. This test fails rather than skips so the dashboard is never left \
         untested."
    )
}

/// A headless Chromium session through a `chromedriver` child process. Dropping it deletes
/// the session (closing the browser) and kills chromedriver and its process group.
pub struct Browser {
    port: u16,
    session: Option<String>,
    child: Option<Child>,
    log: PathBuf,
}

impl Browser {
    /// Starts chromedriver on a spare port and opens a headless Chromium session.
    pub async fn start() -> Browser {
        let (Some(chromium), Some(chromedriver)) =
            (find_program("chromium"), find_program("chromedriver"))
        else {
            missing_browser()
        };
        let log = artifacts_dir().join("chromedriver.log");
        let out =
            File::create(&log).unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
        let err = out.try_clone().expect("cannot share the chromedriver log");
        let port = spare_port();
        let child = {
            use std::os::unix::process::CommandExt;
            Command::new(&chromedriver)
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                // Its own process group, so the guard can kill chromedriver and any browser
                // process left in it at once.
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromedriver.display()))
        };
        // From here on the guard owns the process: a panic below still kills it.
        let mut browser = Browser {
            port,
            session: None,
            child: Some(child),
            log,
        };
        browser.wait_ready().await;
        let caps = json!({"capabilities": {"alwaysMatch": {
            "goog:chromeOptions": {
                "binary": chromium.to_string_lossy(),
                "args": CHROMIUM_ARGS,
            },
        }}});
        let session = browser
            .command("POST", "/session", Some(&caps))
            .await
            .unwrap_or_else(|e| {
                panic!("cannot open a Chromium session: {e}{}", browser.log_tail())
            });
        let id = session["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no sessionId in {session}"))
            .to_owned();
        browser.session = Some(id);
        browser
    }

    /// Polls chromedriver's `/status` until it is ready.
    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(status) = self.command("GET", "/status", None).await {
                if status["ready"] == true {
                    return;
                }
            }
            if let Some(Ok(Some(exit))) = self.child.as_mut().map(Child::try_wait) {
                panic!("chromedriver exited at start ({exit}){}", self.log_tail());
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not answer on port {} within {WAIT:?}{}",
                self.port,
                self.log_tail()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!(
            "\n--- {} (last lines) ---\n{}",
            self.log.display(),
            tail.join("\n")
        )
    }

    /// One WebDriver command: `value` of the answer, or the WebDriver error as text.
    async fn command(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, String> {
        let body = body.map(Value::to_string).unwrap_or_default();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: application/json\r\n\
             Content-Type: application/json; charset=utf-8\r\nContent-Length: {len}\r\n\
             Connection: close\r\n\r\n{body}",
            port = self.port,
            len = body.len(),
        );
        let exchange = async {
            let mut conn = TcpStream::connect(("127.0.0.1", self.port)).await?;
            conn.write_all(request.as_bytes()).await?;
            let mut raw = Vec::new();
            let mut buf = [0u8; 16 * 1024];
            loop {
                let n = conn.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                raw.extend_from_slice(&buf[..n]);
                if response_complete(&raw) {
                    break;
                }
            }
            Ok::<_, std::io::Error>(raw)
        };
        let raw = tokio::time::timeout(COMMAND_TIMEOUT, exchange)
            .await
            .map_err(|_| format!("{method} {path}: no answer within {COMMAND_TIMEOUT:?}"))?
            .map_err(|e| format!("{method} {path}: {e}"))?;
        let answer = parse_response(&raw).map_err(|e| format!("{method} {path}: {e}"))?;
        let value = answer.json.get("value").cloned().unwrap_or(Value::Null);
        if answer.status == 200 {
            Ok(value)
        } else {
            Err(format!(
                "{method} {path}: HTTP {}: {}: {}",
                answer.status,
                value["error"].as_str().unwrap_or("?"),
                value["message"].as_str().unwrap_or(""),
            ))
        }
    }

    fn session_path(&self, rest: &str) -> String {
        let id = self.session.as_deref().expect("no browser session");
        format!("/session/{id}{rest}")
    }

    async fn session_command(&self, method: &str, rest: &str, body: Option<&Value>) -> Value {
        let path = self.session_path(rest);
        self.command(method, &path, body)
            .await
            .unwrap_or_else(|e| panic!("WebDriver: {e}"))
    }

    /// Loads `url` (returns once the page has loaded).
    pub async fn goto(&self, url: &str) {
        self.session_command("POST", "/url", Some(&json!({ "url": url })))
            .await;
    }

    /// Runs `script` (a function body: `return ...`) in the page.
    pub async fn try_execute(&self, script: &str) -> Result<Value, String> {
        let path = self.session_path("/execute/sync");
        self.command("POST", &path, Some(&json!({"script": script, "args": []})))
            .await
    }

    /// Runs `script` in the page; panics on a WebDriver or script error.
    pub async fn execute(&self, script: &str) -> Value {
        self.try_execute(script)
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\nscript: {script}"))
    }

    /// The element matching the CSS `selector` (waits for it to exist).
    pub async fn find(&self, selector: &str) -> String {
        let path = self.session_path("/element");
        let query = json!({"using": "css selector", "value": selector});
        let deadline = Instant::now() + WAIT;
        loop {
            match self.command("POST", &path, Some(&query)).await {
                Ok(found) => {
                    return found[ELEMENT_KEY]
                        .as_str()
                        .unwrap_or_else(|| panic!("no element reference in {found}"))
                        .to_owned();
                }
                Err(e) if Instant::now() >= deadline => {
                    panic!("no element matches {selector} after {WAIT:?}: {e}")
                }
                Err(_) => tokio::time::sleep(POLL).await,
            }
        }
    }

    /// Clicks an element, as a user would (scrolled into view; fails if covered).
    pub async fn click(&self, element: &str) {
        self.session_command(
            "POST",
            &format!("/element/{element}/click"),
            Some(&json!({})),
        )
        .await;
    }

    /// Types `text` into an element.
    pub async fn type_text(&self, element: &str, text: &str) {
        self.session_command(
            "POST",
            &format!("/element/{element}/value"),
            Some(&json!({ "text": text })),
        )
        .await;
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&self) -> Vec<u8> {
        let data = self.session_command("GET", "/screenshot", None).await;
        base64_decode(data.as_str().expect("the screenshot is not a string"))
            .unwrap_or_else(|e| panic!("bad screenshot data: {e}"))
    }

    /// A PNG of the whole page: the window is first made as tall as the page (at most 4000
    /// pixels), keeping its width.
    pub async fn screenshot_full_page(&self) -> Vec<u8> {
        let size = self
            .execute(
                "return [window.outerWidth, document.documentElement.scrollHeight + \
                 window.outerHeight - window.innerHeight];",
            )
            .await;
        let width = size[0].as_u64().unwrap_or(1280);
        let height = size[1].as_u64().unwrap_or(900).min(4000);
        self.session_command(
            "POST",
            "/window/rect",
            Some(&json!({"width": width, "height": height})),
        )
        .await;
        self.screenshot().await
    }

    /// Polls `script` until `done` holds for its value; panics after [`WAIT`] with what it
    /// saw last and what the page shows (connection, error banner, newest log lines).
    pub async fn wait_for(&self, what: &str, script: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let last = match self.try_execute(script).await {
                Ok(v) if done(&v) => return v,
                Ok(v) => v.to_string(),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                let page = self
                    .try_execute(
                        "return {connection: document.body.dataset.connection, \
                         banner: document.getElementById('banner').hidden ? null : \
                         document.getElementById('banner').textContent, \
                         log: Array.from(document.querySelectorAll('#log li')).slice(0, 8)\
                         .map(li => li.textContent)};",
                    )
                    .await
                    .map_or_else(|e| e, |v| v.to_string());
                panic!(
                    "timed out after {WAIT:?} waiting for {what}; last value: {last}; page: {page}"
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Ends the session and chromedriver now (the guard would do it anyway).
    pub fn close(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(id) = self.session.take() {
            // Blocking on purpose: this also runs from `Drop`, during a panic.
            let _ = delete_session(self.port, &id);
        }
        if let Some(mut child) = self.child.take() {
            // The whole process group: chromedriver and any browser process still in it.
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// `DELETE /session/{id}` over a blocking socket with short timeouts: closes the browser.
fn delete_session(port: u16, id: &str) -> std::io::Result<()> {
    let mut conn = StdTcpStream::connect(("127.0.0.1", port))?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    conn.set_write_timeout(Some(Duration::from_secs(5)))?;
    write!(
        conn,
        "DELETE /session/{id} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\n\
         Connection: close\r\n\r\n"
    )?;
    let (mut raw, mut buf) = (Vec::new(), [0u8; 4096]);
    loop {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        raw.extend_from_slice(&buf[..n]);
        if response_complete(&raw) {
            return Ok(());
        }
    }
}

#[test]
fn base64_and_chunked_bodies_decode() {
    assert_eq!(base64_decode("iVBORw0KGgo=").unwrap(), b"\x89PNG\r\n\x1a\n");
    assert_eq!(base64_decode("YWJj\nZA==").unwrap(), b"abcd");
    assert!(base64_decode("a*b").is_err());
    let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"va\r\n8\r\nlue\": 1}\r\n0\r\n\r\n";
    assert!(response_complete(raw));
    assert!(!response_complete(&raw[..raw.len() - 3]));
    let answer = parse_response(raw).unwrap();
    assert_eq!((answer.status, answer.json), (200, json!({"value": 1})));
    let raw = b"HTTP/1.1 404 Not Found\r\nContent-Length:12\r\n\r\n{\"value\": 2}";
    assert!(response_complete(raw));
    assert_eq!(parse_response(raw).unwrap().status, 404);
}
