//! Client subcommands: each is one or two requests to a running host's HTTP API, printed for
//! people (or as the API's JSON with `--json`). Exit codes: 0 success, 1 the host refused or
//! could not be reached, 2 bad usage, 3 a call that ended on `on_failure`.

use clap::{Args, Subcommand};
use serde_json::{json, Value};
use std::path::PathBuf;

/// Where the host is and how to authenticate (shared by every client subcommand).
#[derive(Args, Debug, Clone)]
pub struct Conn {
    /// URL of the running host.
    #[arg(long, global = true, env = "CRM_HOST_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// Admin token or tenant API key.
    #[arg(long, global = true, env = "CRM_HOST_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the API's JSON answer instead of a summary.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Deploy (hot) a component; it becomes active unless --stage.
    Deploy {
        file: PathBuf,
        /// Adapter name (default: the file name up to its first '-' or '.').
        #[arg(long)]
        name: Option<String>,
        /// Store and compile it without activating it.
        #[arg(long)]
        stage: bool,
        /// Activate it even though it refuses the crmConfig of existing tenants.
        #[arg(long)]
        force: bool,
    },
    /// List the deployed adapters (active versions).
    Adapters,
    /// List an adapter's stored versions, newest first.
    Versions { name: String },
    /// Make a stored version the active one.
    Activate {
        name: String,
        digest: String,
        #[arg(long)]
        force: bool,
    },
    /// Re-activate the previously active version.
    Rollback { name: String },
    /// Re-run recorded calls of an adapter through a stored version, offline (the recordings
    /// answer its requests), and print how each compares.
    Replay {
        name: String,
        digest: String,
        /// Only this tenant's calls (repeatable).
        #[arg(long = "tenant")]
        tenants: Vec<String>,
        /// Only calls of this function (repeatable).
        #[arg(long = "function")]
        functions: Vec<String>,
        /// The newest calls up to this many (the host's default: 200; at most 5000).
        #[arg(long)]
        limit: Option<u32>,
        /// Only calls started at or after this time (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// Exit 1 when the verdict is `fail`, so that a deploy script can refuse.
        #[arg(long)]
        gate: bool,
    },
    /// Roll a stored version out to a share of the adapter's tenants, watch it, promote or stop it.
    #[command(subcommand)]
    Canary(CanaryCommand),
    /// Delete a stored version that is neither active nor pinned.
    DeleteVersion { name: String, digest: String },
    /// Create, show or delete a tenant.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Call an adapter function for a tenant.
    Invoke {
        tenant: String,
        func_id: String,
        /// The chat, as JSON or a file holding it.
        #[arg(long)]
        chat: Option<String>,
        /// The params, as JSON or a file holding it.
        #[arg(long)]
        params: Option<String>,
    },
    /// A tenant's recent calls, or one call's whole trace.
    Calls {
        tenant: String,
        #[arg(long)]
        id: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Issue or revoke a tenant's API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// The audit log: every change, oldest first.
    Audit {
        #[arg(long, default_value_t = 0)]
        after: i64,
    },
}

#[derive(Subcommand, Debug)]
pub enum TenantCommand {
    /// Create or replace a tenant.
    Put {
        tenant: String,
        #[arg(long)]
        adapter: String,
        /// crmConfig, as JSON or a file holding it.
        #[arg(long)]
        config: String,
        #[arg(long)]
        project: Option<String>,
        /// Stay on this version (digest) whatever is active.
        #[arg(long)]
        pin: Option<String>,
    },
    Get { tenant: String },
    Delete { tenant: String },
}

#[derive(Subcommand, Debug)]
pub enum CanaryCommand {
    /// Route a stable share of the adapter's unpinned tenants to a stored version; the host
    /// rolls it back by itself when those tenants fail more.
    Start {
        name: String,
        digest: String,
        /// Share of the unpinned tenants, 1-100.
        #[arg(long)]
        percent: u8,
        /// Roll back when the canary tenants' failure rate exceeds the others' by more than
        /// this fraction (0.05: five points).
        #[arg(long)]
        max_failure_rate_increase: Option<f64>,
        /// Canary calls before the failure rates are compared.
        #[arg(long)]
        min_calls: Option<u32>,
    },
    /// The adapter's canary: its share, its tenants, the calls and failures of both sides, its state.
    Status { name: String },
    /// Change a running canary's share (growing it keeps the tenants already in).
    Set {
        name: String,
        #[arg(long)]
        percent: u8,
    },
    /// Activate the candidate for every unpinned tenant.
    Promote {
        name: String,
        #[arg(long)]
        force: bool,
    },
    /// End the canary: its tenants go back to the active version.
    Stop { name: String },
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Issue an API key (shown once).
    Create { tenant: String },
    Revoke { tenant: String, key_id: String },
}

struct Failed(i32, String);

impl From<reqwest::Error> for Failed {
    fn from(e: reqwest::Error) -> Self {
        Failed(1, format!("cannot reach the host: {e}"))
    }
}

impl ClientCommand {
    pub async fn run(self, conn: Conn) -> i32 {
        match self.execute(&conn).await {
            Ok(()) => 0,
            Err(Failed(code, message)) => {
                eprintln!("crm-host: {message}");
                code
            }
        }
    }

    async fn execute(self, conn: &Conn) -> Result<(), Failed> {
        let c = Client { conn: conn.clone(), http: reqwest::Client::new() };
        match self {
            ClientCommand::Deploy { file, name, stage, force } => {
                let bytes = std::fs::read(&file).map_err(|e| Failed(2, format!("{}: {e}", file.display())))?;
                let name = name.unwrap_or_else(|| default_name(&file));
                let mut query = Vec::new();
                if stage {
                    query.push("stage=true");
                }
                if force {
                    query.push("force=true");
                }
                let q = if query.is_empty() { String::new() } else { format!("?{}", query.join("&")) };
                let v = c.send(reqwest::Method::PUT, &format!("/v1/adapters/{name}{q}"), Body::Bytes(bytes)).await?;
                c.print(&v, |v| {
                    let mut out = format!("{} {} {} ({})", v["name"].as_str().unwrap_or(""), s(&v["version"]), s(&v["digest"]), s(&v["state"]));
                    for t in v["invalidTenants"].as_array().into_iter().flatten() {
                        out.push_str(&format!("\n  tenant {} refused: {}", s(&t["tenant"]), s(&t["message"])));
                    }
                    out
                })
            }
            ClientCommand::Adapters => {
                let v = c.send(reqwest::Method::GET, "/v1/adapters", Body::None).await?;
                c.print(&v, |v| {
                    let rows: Vec<String> = v["adapters"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|a| format!("{:<16} {:<10} {}  {}", s(&a["name"]), s(&a["version"]), s(&a["digest"]), join(&a["operations"])))
                        .collect();
                    if rows.is_empty() { "no adapters deployed".into() } else { rows.join("\n") }
                })
            }
            ClientCommand::Versions { name } => {
                let v = c.send(reqwest::Method::GET, &format!("/v1/adapters/{name}/versions"), Body::None).await?;
                c.print(&v, |v| {
                    v["versions"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|x| {
                            let pins = join(&x["pinnedTenants"]);
                            format!(
                                "{:<8} {:<10} {}  {}  by {}{}",
                                s(&x["state"]),
                                s(&x["version"]),
                                s(&x["digest"]),
                                s(&x["deployedAt"]),
                                s(&x["deployedBy"]),
                                if pins.is_empty() { String::new() } else { format!("  pinned: {pins}") }
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("\n")
                })
            }
            ClientCommand::Activate { name, digest, force } => {
                let body = json!({"digest": digest, "force": force});
                let v = c.send(reqwest::Method::POST, &format!("/v1/adapters/{name}/activate"), Body::Json(body)).await?;
                c.print(&v, |v| format!("{} {} {} is active", s(&v["name"]), s(&v["version"]), s(&v["digest"])))
            }
            ClientCommand::Rollback { name } => {
                let v = c.send(reqwest::Method::POST, &format!("/v1/adapters/{name}/rollback"), Body::None).await?;
                c.print(&v, |v| format!("rolled back: {} {} {} is active", s(&v["name"]), s(&v["version"]), s(&v["digest"])))
            }
            ClientCommand::Replay { name, digest, tenants, functions, limit, since, gate } => {
                let mut body = json!({});
                if !tenants.is_empty() {
                    body["tenants"] = json!(tenants);
                }
                if !functions.is_empty() {
                    body["functions"] = json!(functions);
                }
                if let Some(n) = limit {
                    body["limit"] = json!(n);
                }
                if let Some(t) = since {
                    body["since"] = json!(t);
                }
                let path = format!("/v1/adapters/{name}/versions/{digest}/replay");
                let v = c.send(reqwest::Method::POST, &path, Body::Json(body)).await?;
                c.print(&v, replay_report)?;
                if gate && v["verdict"] != "pass" {
                    return Err(Failed(1, format!("replay {} failed: the candidate answers recorded calls differently", s(&v["id"]))));
                }
                Ok(())
            }
            ClientCommand::Canary(command) => {
                let (method, name, body) = match command {
                    CanaryCommand::Start { name, digest, percent, max_failure_rate_increase, min_calls } => {
                        let mut body = json!({"digest": digest, "percent": percent});
                        if let Some(x) = max_failure_rate_increase {
                            body["maxFailureRateIncrease"] = json!(x);
                        }
                        if let Some(n) = min_calls {
                            body["minCalls"] = json!(n);
                        }
                        (reqwest::Method::POST, name, Body::Json(body))
                    }
                    CanaryCommand::Status { name } => (reqwest::Method::GET, name, Body::None),
                    CanaryCommand::Set { name, percent } => (reqwest::Method::PATCH, name, Body::Json(json!({"percent": percent}))),
                    CanaryCommand::Promote { name, force } => {
                        let v = c.send(reqwest::Method::POST, &format!("/v1/adapters/{name}/canary/promote"), Body::Json(json!({"force": force}))).await?;
                        return c.print(&v, canary_status);
                    }
                    CanaryCommand::Stop { name } => (reqwest::Method::DELETE, name, Body::None),
                };
                let v = c.send(method, &format!("/v1/adapters/{name}/canary"), body).await?;
                c.print(&v, canary_status)
            }
            ClientCommand::DeleteVersion { name, digest } => {
                c.send(reqwest::Method::DELETE, &format!("/v1/adapters/{name}/versions/{digest}"), Body::None).await?;
                c.print(&Value::Null, |_| format!("deleted {name} {digest}"))
            }
            ClientCommand::Tenant(TenantCommand::Put { tenant, adapter, config, project, pin }) => {
                let mut body = json!({"adapter": adapter, "crmConfig": json_arg("--config", &config)?});
                if let Some(p) = project {
                    body["projectId"] = p.into();
                }
                if let Some(p) = pin {
                    body["pin"] = p.into();
                }
                let v = c.send(reqwest::Method::PUT, &format!("/v1/tenants/{tenant}"), Body::Json(body)).await?;
                c.print(&v, pretty)
            }
            ClientCommand::Tenant(TenantCommand::Get { tenant }) => {
                let v = c.send(reqwest::Method::GET, &format!("/v1/tenants/{tenant}"), Body::None).await?;
                c.print(&v, pretty)
            }
            ClientCommand::Tenant(TenantCommand::Delete { tenant }) => {
                c.send(reqwest::Method::DELETE, &format!("/v1/tenants/{tenant}"), Body::None).await?;
                c.print(&Value::Null, |_| format!("deleted tenant {tenant}"))
            }
            ClientCommand::Invoke { tenant, func_id, chat, params } => {
                let mut body = json!({"chat": match chat { Some(x) => json_arg("--chat", &x)?, None => json!({}) }});
                if let Some(p) = params {
                    body["params"] = json_arg("--params", &p)?;
                }
                let v = c.send(reqwest::Method::POST, &format!("/v1/tenants/{tenant}/crm/{func_id}"), Body::Json(body)).await?;
                c.print(&v, |v| match v["outcome"].as_str() {
                    Some("complete") => format!("complete\n{}", pretty(&v["crmData"])),
                    _ => format!("failure: {}: {}", s(&v["error"]["kind"]), s(&v["error"]["message"])),
                })?;
                if v["outcome"] == "failure" {
                    return Err(Failed(3, "the call ended on on_failure".into()));
                }
                Ok(())
            }
            ClientCommand::Calls { tenant, id: Some(id), .. } => {
                let v = c.send(reqwest::Method::GET, &format!("/v1/tenants/{tenant}/calls/{id}"), Body::None).await?;
                c.print(&v, pretty)
            }
            ClientCommand::Calls { tenant, id: None, limit } => {
                let v = c.send(reqwest::Method::GET, &format!("/v1/tenants/{tenant}/calls?limit={limit}"), Body::None).await?;
                c.print(&v, |v| {
                    v["calls"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|x| {
                            format!(
                                "{}  {}  {:<20} {:<8} {:>8.1} ms  {}@{} {}",
                                s(&x["callId"]),
                                s(&x["startedAt"]),
                                s(&x["funcId"]),
                                s(&x["outcome"]),
                                x["durationMs"].as_f64().unwrap_or(0.0),
                                s(&x["adapter"]),
                                s(&x["version"]),
                                s(&x["errorKind"])
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("\n")
                })
            }
            ClientCommand::Keys(KeysCommand::Create { tenant }) => {
                let v = c.send(reqwest::Method::POST, &format!("/v1/tenants/{tenant}/keys"), Body::None).await?;
                c.print(&v, |v| format!("key id: {}\nkey:    {}\n(the key is shown only now)", s(&v["keyId"]), s(&v["key"])))
            }
            ClientCommand::Keys(KeysCommand::Revoke { tenant, key_id }) => {
                c.send(reqwest::Method::DELETE, &format!("/v1/tenants/{tenant}/keys/{key_id}"), Body::None).await?;
                c.print(&Value::Null, |_| format!("revoked key {key_id} of tenant {tenant}"))
            }
            ClientCommand::Audit { after } => {
                let v = c.send(reqwest::Method::GET, &format!("/v1/audit?after={after}&limit=1000"), Body::None).await?;
                c.print(&v, |v| {
                    v["entries"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|e| {
                            format!(
                                "{:>5}  {}  {:<14} by {:<12} {} {} {}",
                                s(&e["cursor"]),
                                s(&e["at"]),
                                s(&e["action"]),
                                s(&e["actor"]),
                                s(&e["adapter"]),
                                s(&e["tenant"]),
                                s(&e["digest"])
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("\n")
                })
            }
        }
    }
}

enum Body {
    None,
    Json(Value),
    Bytes(Vec<u8>),
}

struct Client {
    conn: Conn,
    http: reqwest::Client,
}

impl Client {
    async fn send(&self, method: reqwest::Method, path: &str, body: Body) -> Result<Value, Failed> {
        let url = format!("{}{path}", self.conn.server.trim_end_matches('/'));
        let mut req = self.http.request(method, &url);
        if let Some(t) = &self.conn.token {
            req = req.bearer_auth(t);
        }
        req = match body {
            Body::None => req,
            Body::Json(v) => req.json(&v),
            Body::Bytes(b) => req.body(b),
        };
        let resp = req.send().await?;
        let status = resp.status();
        let call_id = resp.headers().get("x-call-id").and_then(|v| v.to_str().ok()).map(str::to_string);
        let bytes = resp.bytes().await?;
        let mut value: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).map_err(|_| Failed(1, format!("{status}: {}", String::from_utf8_lossy(&bytes))))?
        };
        if !status.is_success() {
            let e = &value["error"];
            return Err(Failed(1, format!("{} {}: {}", status.as_u16(), s(&e["kind"]), s(&e["message"]))));
        }
        if let (Some(id), Value::Object(m)) = (call_id, &mut value) {
            m.entry("callId").or_insert(id.into());
        }
        Ok(value)
    }

    fn print(&self, v: &Value, human: impl Fn(&Value) -> String) -> Result<(), Failed> {
        if self.conn.json {
            if !v.is_null() {
                println!("{v}");
            }
        } else {
            println!("{}", human(v));
        }
        Ok(())
    }
}

/// A canary's status for people.
fn canary_status(v: &Value) -> String {
    let side = |x: &Value| format!("{} calls, {} failed ({:.1}%)", s(&x["calls"]), s(&x["failures"]), x["failureRate"].as_f64().unwrap_or(0.0) * 100.0);
    let mut out = format!(
        "canary {} of {}: {} {} for {}% of tenants: {}{}\n",
        s(&v["id"]),
        s(&v["adapter"]),
        s(&v["version"]),
        s(&v["digest"]),
        s(&v["percent"]),
        s(&v["state"]),
        v["reason"].as_str().map(|r| format!(" ({r})")).unwrap_or_default(),
    );
    out.push_str(&format!("  tenants in it: {} {}\n", s(&v["tenants"]["count"]), join(&v["tenants"]["first"])));
    if !join(&v["excluded"]).is_empty() {
        out.push_str(&format!("  never selected (config refused): {}\n", join(&v["excluded"])));
    }
    out.push_str(&format!("  canary:   {}\n  baseline: {}", side(&v["canary"]), side(&v["baseline"])));
    out
}

/// A replay report for people: the verdict and counts, then a line per call with what
/// differs (`path: recorded → candidate`), what matched no recording, or why it was skipped.
fn replay_report(v: &Value) -> String {
    let sum = &v["summary"];
    let mut out = format!(
        "replay {}: {} {} against recordings of {} {}: {} calls, {}\n",
        s(&v["id"]),
        s(&v["candidate"]["version"]),
        s(&v["candidate"]["digest"]),
        s(&v["baseline"]["version"]),
        s(&v["baseline"]["digest"]),
        s(&v["calls"]),
        s(&v["verdict"]),
    );
    let counts: Vec<String> = ["same", "changed", "newFailure", "fixed", "unmatched", "noisy", "skipped"]
        .iter()
        .map(|k| format!("{k} {}", s(&sum[*k])))
        .collect();
    out.push_str(&format!("  {}\n", counts.join(", ")));
    for r in v["results"].as_array().into_iter().flatten() {
        out.push_str(&format!("  {:<10} {:<20} {:<16} {}\n", s(&r["status"]), s(&r["funcId"]), s(&r["tenant"]), s(&r["callId"])));
        for d in r["diff"].as_array().into_iter().flatten() {
            out.push_str(&format!("      {}: {} → {}\n", s(&d["path"]), d["recorded"], d["candidate"]));
        }
        for u in r["unmatched"].as_array().into_iter().flatten() {
            out.push_str(&format!("      unmatched {} {}: {}\n", s(&u["method"]), s(&u["url"]), s(&u["difference"])));
        }
        if let Some(reason) = r["reason"].as_str() {
            out.push_str(&format!("      {reason}\n"));
        }
    }
    out.trim_end().to_string()
}

fn s(v: &Value) -> String {
    match v {
        Value::String(x) => x.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn join(v: &Value) -> String {
    v.as_array().into_iter().flatten().map(s).collect::<Vec<_>>().join(",")
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// `plugins/plando-0.2.0.wasm` -> `plando`.
fn default_name(file: &std::path::Path) -> String {
    let stem = file.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    stem.split(['-', '.']).next().unwrap_or_default().to_string()
}

/// A JSON argument, inline (`{...}`) or the path of a file holding it.
fn json_arg(flag: &str, arg: &str) -> Result<Value, Failed> {
    let text = if arg.trim_start().starts_with(['{', '[']) {
        arg.to_string()
    } else {
        std::fs::read_to_string(arg).map_err(|e| Failed(2, format!("{flag} {arg}: neither JSON nor a readable file ({e})")))?
    };
    serde_json::from_str(&text).map_err(|e| Failed(2, format!("{flag}: invalid JSON: {e}")))
}
