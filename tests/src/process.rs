//! `crm-host serve` as a real process, for tests that restart, kill or run several hosts.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Children that end with the test: a test process killed before its `Drop`s ran (a CI
/// timeout) leaves no host or database running.
pub trait DieWithParent {
    fn die_with_parent(&mut self) -> &mut Self;
}

impl DieWithParent for Command {
    fn die_with_parent(&mut self) -> &mut Self {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec here.
        // It runs after any uid change, which would clear it.
        unsafe {
            self.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
        }
    }
}

pub const ADMIN: &str = "process-admin-token";

/// A running `crm-host serve`; killed (SIGKILL) on drop. Its stderr goes to a file.
pub struct Proc {
    child: Child,
    pub url: String,
    log: PathBuf,
}

impl Proc {
    pub fn start(bin: &Path, data: &Path, extra: &[&str], env: &[(&str, &str)]) -> Proc {
        let log = data.with_file_name(format!(
            "{}-{}.log",
            data.file_name().unwrap().to_string_lossy(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
        ));
        let mut child = Command::new(bin)
            .args(["serve", "--listen", "127.0.0.1:0", "--upstream-only", "--admin-token", ADMIN])
            .arg("--data-dir")
            .arg(data)
            .args(extra)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
            .die_with_parent()
            .spawn()
            .expect("start crm-host");
        let (_, url) = crate::read_listen_url(child.stdout.take().unwrap()).expect("listen line");
        assert!(url.starts_with("http://127.0.0.1:"), "no listen line; log: {}", std::fs::read_to_string(&log).unwrap_or_default());
        Proc { child, url, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn kill9(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.logs()
    }

    pub async fn req(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> (u16, Value) {
        let mut r = reqwest::Client::new().request(method.parse().unwrap(), format!("{}{path}", self.url)).bearer_auth(ADMIN);
        if let Some(b) = body {
            r = r.body(b);
        }
        let resp = r.send().await.expect("host answers");
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    pub async fn active(&self, adapter: &str) -> Option<Value> {
        let (s, v) = self.req("GET", &format!("/v1/adapters/{adapter}/versions"), None).await;
        if s != 200 {
            return None;
        }
        v["versions"].as_array().unwrap().iter().find(|x| x["state"] == "active").cloned()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Polls `check` until it holds; panics after `timeout`, naming `what`.
pub async fn eventually(what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> bool) {
    let until = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
