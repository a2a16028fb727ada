//! The harness the end-to-end tests share: the real `flowstate serve`
//! binary on loopback, and small HTTP helpers around it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct Server {
    pub child: Child,
    pub base: String,
    /// What the server printed on stderr after its address, as it comes.
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// `flowstate serve --listen 127.0.0.1:0 <args>`, once it listens.
    pub fn spawn(args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_flowstate"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let base = loop {
            let line = lines
                .next()
                .expect("the server prints its address")
                .unwrap();
            if let Some(rest) = line.strip_prefix("flowstate listening on ") {
                break rest.split_whitespace().next().unwrap().to_string();
            }
        };
        // Keep draining stderr so the server never blocks on it.
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = log.clone();
        let reader = std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Server {
            child,
            base,
            log,
            reader: Some(reader),
        }
    }

    /// Everything the server printed, once it has exited.
    pub fn finish_log(&mut self) -> Vec<String> {
        if let Some(r) = self.reader.take() {
            r.join().unwrap();
        }
        self.log.lock().unwrap().clone()
    }

    /// A server on the SQLite file `db`.
    pub fn start(db: &Path, extra: &[&str]) -> Server {
        let mut args = vec!["--db", db.to_str().unwrap()];
        args.extend_from_slice(extra);
        Self::spawn(&args)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn kill(mut self) {
        // SAFETY: sends a signal to our own child process.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGKILL) };
        self.child.wait().unwrap();
    }

    pub fn stop(mut self) -> std::process::ExitStatus {
        // SAFETY: sends a signal to our own child process.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().unwrap()
    }
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// (status, JSON body) of a request; `None` if the connection failed.
pub fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Option<(u16, Value)> {
    let agent = agent();
    let mut resp = match (method, body) {
        ("GET", _) => {
            let mut r = agent.get(url);
            for (k, v) in headers {
                r = r.header(*k, *v);
            }
            r.call()
        }
        ("DELETE", _) => {
            let mut r = agent.delete(url);
            for (k, v) in headers {
                r = r.header(*k, *v);
            }
            r.call()
        }
        (m, body) => {
            let mut r = match m {
                "PUT" => agent.put(url),
                _ => agent.post(url),
            };
            for (k, v) in headers {
                r = r.header(*k, *v);
            }
            match body {
                Some(b) => r.send(b),
                None => r.send_empty(),
            }
        }
    }
    .ok()?;
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    Some((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

pub fn must(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> (u16, Value) {
    request(method, url, headers, body).unwrap_or_else(|| panic!("{method} {url}: no answer"))
}

pub fn get_text(url: &str) -> String {
    agent()
        .get(url)
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap()
}

pub fn wait_for_run(server: &Server, run: &str, token: &[(&str, &str)]) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, doc) = must("GET", &server.url(&format!("/api/runs/{run}")), token, None);
        assert_eq!(status, 200, "{doc}");
        if doc["summary"]["finished_at"].is_string() {
            return doc;
        }
        assert!(Instant::now() < deadline, "run {run} did not finish: {doc}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn cli(server: &Server, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_flowstate"))
        .args(args)
        .env("FLOWSTATE_SERVER", &server.base)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
        .output()
        .unwrap()
}

/// Reads a request's path and headers (names in lower case); the body, if
/// any, is left unread.
fn read_request(stream: &std::net::TcpStream) -> Option<(String, serde_json::Map<String, Value>)> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut headers = serde_json::Map::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.trim_end().split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().into());
        }
    }
    Some((path, headers))
}

/// A loopback file server for workflows to fetch from: `routes` maps a
/// path to (status line, content type, body); anything else is a 404.
pub fn file_server(routes: Vec<(&'static str, &'static str, &'static str, Vec<u8>)>) -> String {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let routes = std::sync::Arc::new(routes);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let routes = routes.clone();
            std::thread::spawn(move || {
                let Some((path, _)) = read_request(&stream) else {
                    return;
                };
                let found = routes.iter().find(|r| r.0 == path);
                let (status, ctype, body): (&str, &str, &[u8]) = match found {
                    Some((_, status, ctype, body)) => (status, ctype, body),
                    None => ("404 Not Found", "text/plain", b"no such file"),
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(body);
            });
        }
    });
    format!("http://{addr}")
}

/// A loopback server that answers every request with its path and headers
/// as JSON: `{"path": ..., "headers": {name: value}}`.
pub fn echo_server() -> String {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let Some((path, headers)) = read_request(&stream) else {
                    return;
                };
                let body = serde_json::json!({ "path": path, "headers": headers }).to_string();
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(body.as_bytes());
            });
        }
    });
    format!("http://{addr}")
}

/// A new, empty database on the test cluster (`scripts/test` starts it), or
/// `None` outside CI when there is none.
pub fn fresh_postgres() -> Option<String> {
    let Ok(admin) = std::env::var("FLOWSTATE_TEST_DATABASE_URL") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "FLOWSTATE_TEST_DATABASE_URL is not set: run scripts/test"
        );
        eprintln!("skipped: no PostgreSQL (run scripts/test to include this test)");
        return None;
    };
    let name = format!(
        "flowstate_e2e_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
    });
    Some(format!("{}/{name}", admin.rsplit_once('/').unwrap().0))
}
