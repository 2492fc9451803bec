//! A real PostgreSQL server for tests: `initdb` into a temporary directory, `postgres` on
//! 127.0.0.1 at a free port, removed on drop. PostgreSQL refuses to run as root, so under
//! root both run as the `postgres` system user (Debian's package creates it).
//!
//! The binaries come from `CRM_PG_BIN` (set by `cargo xtask test`, which installs Debian's
//! `postgresql` when missing) or `/usr/lib/postgresql/*/bin`. Without them the tests fail
//! and say how to get them: they are never skipped.

use crate::process::DieWithParent;
use crate::TempDir;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const USER: &str = "crm";
pub const PASSWORD: &str = "crm-test-password";

pub struct Postgres {
    bin: PathBuf,
    dir: TempDir,
    port: u16,
    server: Option<Child>,
    /// (uid, gid) to run as, when the tests run as root.
    run_as: Option<(u32, u32)>,
}

fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CRM_PG_BIN") {
        return PathBuf::from(d);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, b): &(u32, PathBuf)| b.join("initdb").is_file())
        .collect();
    found.sort();
    found.pop().map(|(_, b)| b).unwrap_or_else(|| {
        panic!("no PostgreSQL server binaries: run the tests with `cargo xtask test` (it installs Debian's postgresql), or set CRM_PG_BIN")
    })
}

/// `id ARGS`, as a number.
fn id(args: &[&str]) -> Option<u32> {
    let out = Command::new("id").args(args).output().ok()?;
    String::from_utf8(out.stdout).ok()?.trim().parse().ok()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Postgres {
    /// A fresh, empty server, ready to take connections.
    pub fn start() -> Postgres {
        let bin = bin_dir();
        let dir = TempDir::new("pg");
        let run_as = if id(&["-u"]) == Some(0) {
            let uid = id(&["-u", "postgres"]).expect("running as root, and there is no `postgres` user to run PostgreSQL as");
            Some((uid, id(&["-g", "postgres"]).unwrap()))
        } else {
            None
        };
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        }
        let pwfile = dir.path().join("pwfile");
        std::fs::write(&pwfile, PASSWORD).unwrap();
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid)).unwrap();
        }
        let data = dir.path().join("data");
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", USER, "-E", "UTF8", "--locale=C", "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync"])
            .arg(format!("--pwfile={}", pwfile.display()));
        let mut pg = Postgres { bin, dir, port: free_port(), server: None, run_as };
        let out = pg.as_user(&mut initdb).output().expect("run initdb");
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        pg.resume();
        pg
    }

    fn as_user<'a>(&self, c: &'a mut Command) -> &'a mut Command {
        if let Some((uid, gid)) = self.run_as {
            c.uid(uid).gid(gid);
        }
        // Killed with the test process (SIGKILL: it cannot clean up then anyway).
        c.die_with_parent();
        c
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts the server (again, after [`Postgres::kill`]) on the same port and waits until
    /// it takes connections.
    pub fn resume(&mut self) {
        assert!(self.server.is_none(), "already running");
        let log = std::fs::File::create(self.dir.path().join(format!("server-{}.log", self.port))).unwrap();
        let mut cmd = Command::new(self.bin.join("postgres"));
        cmd.arg("-D")
            .arg(self.data())
            .args(["-p", &self.port.to_string(), "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=300"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", self.dir.path().display()))
            // Test data lives in a temp dir; losing it on power loss is fine.
            .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
            .stdout(Stdio::null())
            .stderr(log);
        self.server = Some(self.as_user(&mut cmd).spawn().expect("start postgres"));
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            if let Some(status) = self.server.as_mut().unwrap().try_wait().unwrap() {
                panic!("postgres exited ({status}): {}", self.server_log());
            }
            assert!(Instant::now() < until, "postgres did not come up: {}", self.server_log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("server-{}.log", self.port))).unwrap_or_default()
    }

    /// Stops the server the hard way (immediate shutdown: every connection drops, no
    /// checkpoint), as when its machine goes away.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = Command::new("kill").args(["-QUIT", &child.id().to_string()]).status();
            let _ = child.wait();
        }
    }

    /// Creates a database; returns its URL.
    pub fn database(&self, name: &str) -> String {
        let out = self
            .as_user(Command::new(self.bin.join("createdb")).args(["-h", &self.dir.path().display().to_string(), "-p", &self.port.to_string(), "-U", USER, name]))
            .output()
            .expect("run createdb");
        assert!(out.status.success(), "createdb {name}: {}", String::from_utf8_lossy(&out.stderr));
        self.url(name)
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{db}", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(mut child) = self.server.take() {
            // Fast shutdown: disconnects clients, then exits.
            let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
            let _ = child.wait();
        }
    }
}
