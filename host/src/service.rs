//! The host's operations, independent of HTTP: deploy, tenants, calls. The data flow of a
//! call is: tenant (registry) -> active compiled adapter -> fresh instance (runtime) ->
//! wasi-http requests (egress policy, upstream routing) -> crmData or a typed failure.

use crate::chat::{parse_json, CallRequest};
use crate::error::HostError;
use crate::registry::{AdapterRecord, Registry, Tenant};
use crate::runtime::{Compiled, Runtime};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

/// Shown instead of a secret crmConfig value.
pub const REDACTED: &str = "[redacted]";

pub struct Host {
    runtime: Runtime,
    registry: Registry,
    /// Active compiled version per adapter name. Swapped atomically by a deploy; calls in
    /// flight keep the version they started with.
    active: RwLock<HashMap<String, Arc<Compiled>>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TenantBody {
    adapter: String,
    #[serde(default)]
    crm_config: Option<Map<String, Value>>,
    #[serde(default)]
    project_id: Option<String>,
}

impl Host {
    pub fn new(runtime: Runtime, registry: Registry) -> Self {
        Host { runtime, registry, active: RwLock::default() }
    }

    /// Compiles, checks and activates a component under `name`. Hot: no restart, no pause
    /// for calls of other adapters or of this one.
    pub async fn deploy(&self, name: &str, bytes: Bytes) -> Result<Value, HostError> {
        check_id("adapter name", name)?;
        let compiled = self.runtime.load(bytes.clone()).await?;
        if compiled.description.name != name {
            return Err(HostError::NameMismatch(format!(
                "the component describes itself as '{}', but was uploaded as '{name}'",
                compiled.description.name
            )));
        }
        Ok(self.activate(compiled, bytes))
    }

    fn activate(&self, compiled: Arc<Compiled>, bytes: Bytes) -> Value {
        let d = &compiled.description;
        let record = AdapterRecord {
            name: d.name.clone(),
            version: d.version.clone(),
            digest: compiled.digest.clone(),
            operations: d.operations.clone(),
            deployed_at_ms: now_ms(),
            component: bytes,
        };
        self.registry.add_adapter_version(record.clone());
        self.active.write().expect("active lock").insert(record.name.clone(), compiled);
        tracing::info!(adapter = %record.name, version = %record.version, digest = %record.digest, "deployed");
        adapter_summary(&record)
    }

    /// Deploys every `*.wasm` in `dir` under the name its component declares. Returns what
    /// failed; a broken file does not stop the others (or the host).
    pub async fn deploy_dir(&self, dir: &Path) -> anyhow::Result<Vec<(String, HostError)>> {
        let mut failures = Vec::new();
        let mut paths: Vec<_> = std::fs::read_dir(dir)?.filter_map(Result::ok).map(|e| e.path()).collect();
        paths.sort();
        for path in paths.into_iter().filter(|p| p.extension().is_some_and(|e| e == "wasm")) {
            let bytes = Bytes::from(std::fs::read(&path)?);
            match self.runtime.load(bytes.clone()).await {
                Ok(compiled) => drop(self.activate(compiled, bytes)),
                Err(e) => failures.push((path.display().to_string(), e)),
            }
        }
        Ok(failures)
    }

    fn compiled(&self, name: &str) -> Result<Arc<Compiled>, HostError> {
        self.active
            .read()
            .expect("active lock")
            .get(name)
            .cloned()
            .ok_or_else(|| HostError::UnknownAdapter(name.to_string()))
    }

    pub fn list_adapters(&self) -> Value {
        let list: Vec<Value> = self.registry.active_adapters().iter().map(adapter_summary).collect();
        json!({ "adapters": list })
    }

    pub fn adapter(&self, name: &str) -> Result<Value, HostError> {
        let compiled = self.compiled(name)?;
        let record = self.registry.active_adapter(name).ok_or_else(|| HostError::UnknownAdapter(name.into()))?;
        let d = &compiled.description;
        let mut v = adapter_summary(&record);
        v["sizeBytes"] = record.component.len().into();
        v["configSchema"] = d.config_schema.clone();
        v["secretFields"] = json!(d.secret_fields);
        v["endpointFields"] = json!(d.endpoint_fields);
        v["outboundHosts"] = json!(d.outbound_hosts);
        v["history"] = self
            .registry
            .adapter_history(name)
            .iter()
            .map(|r| json!({"version": r.version, "digest": r.digest, "deployedAtMs": r.deployed_at_ms}))
            .collect();
        Ok(v)
    }

    /// Creates or replaces a tenant after the adapter has validated its crmConfig.
    pub async fn put_tenant(&self, id: &str, body: &[u8]) -> Result<Value, HostError> {
        check_id("tenant id", id)?;
        let body: TenantBody = parse_json("tenant body", body).map_err(HostError::BadRequest)?;
        let compiled = self.compiled(&body.adapter)?;
        let crm_config = body.crm_config.unwrap_or_default();
        self.runtime.validate_config(&compiled, &crm_config).await?;
        // Egress to endpoint fields depends on them being usable URLs.
        for field in &compiled.description.endpoint_fields {
            if let Some(v) = crm_config.get(field).filter(|v| !v.is_null()) {
                let ok = v.as_str().and_then(|s| url::Url::parse(s.trim()).ok()).is_some_and(|u| {
                    matches!(u.scheme(), "http" | "https") && u.host_str().is_some()
                });
                if !ok {
                    return Err(HostError::InvalidConfig {
                        field: Some(field.clone()),
                        message: format!("crmConfig.{field}: must be an http(s) URL"),
                    });
                }
            }
        }
        let tenant = Tenant {
            id: id.to_string(),
            adapter: body.adapter,
            project_id: body.project_id.unwrap_or_default(),
            crm_config,
        };
        self.registry.put_tenant(tenant.clone());
        Ok(self.tenant_view(&tenant))
    }

    pub fn get_tenant(&self, id: &str) -> Result<Value, HostError> {
        let tenant = self.registry.tenant(id).ok_or_else(|| HostError::UnknownTenant(id.to_string()))?;
        Ok(self.tenant_view(&tenant))
    }

    pub fn delete_tenant(&self, id: &str) -> Result<(), HostError> {
        if self.registry.delete_tenant(id) {
            Ok(())
        } else {
            Err(HostError::UnknownTenant(id.to_string()))
        }
    }

    /// A tenant as the API shows it: secret crmConfig fields redacted.
    fn tenant_view(&self, t: &Tenant) -> Value {
        let secrets = self.compiled(&t.adapter).map(|c| c.description.secret_fields.clone()).unwrap_or_default();
        let mut config = t.crm_config.clone();
        for f in &secrets {
            if let Some(v) = config.get_mut(f) {
                if !v.is_null() {
                    *v = REDACTED.into();
                }
            }
        }
        json!({"tenant": t.id, "adapter": t.adapter, "projectId": t.project_id, "crmConfig": config})
    }

    /// Runs `func_id` for a tenant. Adapter failures are outcomes (`Ok` with
    /// `outcome: failure`); only bad requests and unknown tenants are errors.
    pub async fn call(&self, tenant_id: &str, func_id: &str, body: &[u8]) -> Result<Value, HostError> {
        let tenant = self.registry.tenant(tenant_id).ok_or_else(|| HostError::UnknownTenant(tenant_id.to_string()))?;
        let request = CallRequest::parse(body).map_err(HostError::BadRequest)?;
        let compiled = self.compiled(&tenant.adapter)?;
        let ctx = request.into_wit(&tenant.project_id, &tenant.crm_config);
        let started = std::time::Instant::now();
        let result = self.runtime.invoke(&compiled, &tenant.crm_config, func_id, ctx).await;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        Ok(match result {
            Ok(data) => {
                tracing::info!(tenant = tenant_id, func_id, adapter = %tenant.adapter, ms, "complete");
                json!({"outcome": "complete", "crmData": data})
            }
            Err(failure) => {
                tracing::info!(tenant = tenant_id, func_id, adapter = %tenant.adapter, ms, kind = %failure.kind, "failure: {}", failure.message);
                json!({"outcome": "failure", "error": failure})
            }
        })
    }
}

fn adapter_summary(r: &AdapterRecord) -> Value {
    json!({"name": r.name, "version": r.version, "digest": r.digest, "operations": r.operations})
}

/// Names that appear in URL paths: letters, digits, `.`, `_`, `-`; 1-128 chars.
fn check_id(what: &str, id: &str) -> Result<(), HostError> {
    let ok = !id.is_empty() && id.len() <= 128 && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(HostError::BadRequest(format!("{what} '{id}' must be 1-128 characters of A-Z, a-z, 0-9, '.', '_', '-'")))
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
