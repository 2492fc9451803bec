//! Tenants (their adapter, crmConfig, pin and limits) and their API keys. A tenant is stored
//! only after the version it will run validated its crmConfig; what the API shows of it has
//! its secret fields redacted.

use super::canary::Canary;
use super::{audit, check_id, now_ms, Host};
use crate::auth;
use crate::chat::parse_json;
use crate::egress;
use crate::error::HostError;
use crate::limits::TenantLimits;
use crate::redact::REDACTED;
use crate::runtime::Compiled;
use crate::store::{AuditAction, KeyRecord, TenantRecord};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// The body of `PUT /v1/tenants/{id}`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct TenantBody {
    pub(crate) adapter: String,
    #[serde(default)]
    pub(crate) crm_config: Option<Map<String, Value>>,
    #[serde(default)]
    pub(crate) project_id: Option<String>,
    /// A digest to stay on, or null / absent to follow the active version.
    #[serde(default)]
    pub(crate) pin: Option<String>,
    /// Overrides of the host's limits; absent: the host's defaults.
    #[serde(default)]
    pub(crate) limits: Option<TenantLimits>,
}

/// A tenant as the API shows it: its record, and its crmConfig with secrets redacted.
pub struct RedactedTenant {
    pub record: Arc<TenantRecord>,
    pub crm_config: Map<String, Value>,
}

impl Host {
    /// Creates or replaces a tenant after the version it will run has validated its
    /// crmConfig.
    pub async fn put_tenant(&self, id: &str, body: &[u8], actor: &str) -> Result<RedactedTenant, HostError> {
        check_id("tenant id", id)?;
        let body: TenantBody = parse_json("tenant body", body).map_err(HostError::BadRequest)?;
        let limits = body.limits.unwrap_or_default();
        limits.check(self.runtime.fuel_metering()).map_err(HostError::InvalidLimits)?;
        if let Some(pin) = &body.pin {
            if self.read().version(&body.adapter, pin).is_none() {
                let of_adapter =
                    self.read().versions.iter().find(|(_, v)| v.iter().any(|v| &v.digest == pin)).map(|(a, _)| a.clone());
                return Err(HostError::InvalidPin { adapter: body.adapter.clone(), pin: pin.clone(), of_adapter });
            }
        }
        let compiled = match &body.pin {
            Some(pin) => self.compiled_version(&body.adapter, pin).await?,
            None => self.adapter(&body.adapter)?.0,
        };
        let mut crm_config = body.crm_config.unwrap_or_default();
        self.keep_redacted_secrets(id, &body.adapter, &compiled, &mut crm_config)?;
        self.validate_tenant_config(&compiled, &crm_config).await?;
        let record = TenantRecord {
            id: id.to_string(),
            adapter: body.adapter,
            project_id: body.project_id.unwrap_or_default(),
            crm_config,
            pin: body.pin,
            limits,
            updated_at_ms: now_ms(),
            redactor: Default::default(),
            config_digest: Default::default(),
        };
        let _w = self.writes.lock().await;
        let old_pin = self.read().tenants.get(id).and_then(|t| t.pin.clone());
        let (action, detail) = if old_pin != record.pin {
            (AuditAction::Pin, json!({"adapter": record.adapter, "from": old_pin, "to": record.pin}))
        } else {
            (AuditAction::TenantPut, json!({"adapter": record.adapter}))
        };
        let audit = audit(actor, action, Some(&record.adapter), Some(id), record.pin.as_deref(), Some(detail));
        self.store.put_tenant(&record, &audit).await?;
        let record = Arc::new(record);
        let mut registry = self.write();
        if let Some(pin) = &record.pin {
            registry.compiled.insert(pin.clone(), compiled.clone());
        }
        registry.tenants.insert(id.to_string(), record.clone());
        registry.prune();
        drop(registry);
        Ok(redacted(record, &compiled))
    }

    /// A secret field sent back as `[redacted]` (what `GET` shows of it) keeps the value stored
    /// for the tenant: a client may read a tenant, change other fields and put it back without
    /// ever knowing its secrets (the console's form does so).
    fn keep_redacted_secrets(&self, id: &str, adapter: &str, compiled: &Compiled, config: &mut Map<String, Value>) -> Result<(), HostError> {
        let stored = self.read().tenants.get(id).filter(|t| t.adapter == adapter).cloned();
        for field in &compiled.description.secret_fields {
            if config.get(field).and_then(Value::as_str) != Some(REDACTED) {
                continue;
            }
            match stored.as_ref().and_then(|t| t.crm_config.get(field)) {
                Some(v) => config.insert(field.clone(), v.clone()),
                None => {
                    return Err(HostError::InvalidConfig {
                        field: Some(field.clone()),
                        message: format!("crmConfig.{field}: {REDACTED} stands for the stored value, and the tenant has none"),
                    })
                }
            };
        }
        Ok(())
    }

    /// The adapter's own crmConfig validation, plus: endpoint fields must be usable URLs
    /// (egress is derived from them).
    pub(super) async fn validate_tenant_config(&self, compiled: &Compiled, crm_config: &Map<String, Value>) -> Result<(), HostError> {
        self.runtime.validate_config(compiled, crm_config).await?;
        egress::check_endpoint_fields(&compiled.description.endpoint_fields, crm_config)
            .map_err(|e| HostError::InvalidConfig { field: Some(e.field), message: e.message })
    }

    pub fn get_tenant(&self, id: &str) -> Result<RedactedTenant, HostError> {
        let (record, compiled) = self.tenant_and_version(id)?;
        Ok(redacted(record, &compiled))
    }

    /// A tenant and the compiled version its calls run.
    pub(super) fn tenant_and_version(&self, id: &str) -> Result<(Arc<TenantRecord>, Arc<Compiled>), HostError> {
        self.route(id).map(|(t, c, _)| (t, c))
    }

    /// A tenant, the version its calls run, and the canary they count for (`true`: inside).
    pub(super) fn route(&self, id: &str) -> Result<(Arc<TenantRecord>, Arc<Compiled>, Option<(Arc<Canary>, bool)>), HostError> {
        let registry = self.read();
        let t = registry.tenants.get(id).cloned().ok_or_else(|| HostError::UnknownTenant(id.to_string()))?;
        let (digest, canary) = registry.route(&t);
        let compiled =
            digest.and_then(|d| registry.compiled.get(&d).cloned()).ok_or_else(|| HostError::UnknownAdapter(t.adapter.clone()))?;
        Ok((t, compiled, canary))
    }

    pub async fn delete_tenant(&self, id: &str, actor: &str) -> Result<(), HostError> {
        let _w = self.writes.lock().await;
        let adapter = self.read().tenants.get(id).map(|t| t.adapter.clone());
        let audit = audit(actor, AuditAction::TenantDelete, adapter.as_deref(), Some(id), None, None);
        if !self.store.delete_tenant(id, &audit).await? {
            return Err(HostError::UnknownTenant(id.to_string()));
        }
        let mut registry = self.write();
        registry.replace_tenant(id, None, Vec::new());
        registry.prune();
        self.stats.remove(id);
        Ok(())
    }

    /// Issues an API key for a tenant: `(key_id, key)`. Only its hash is kept.
    pub async fn create_key(&self, tenant: &str, actor: &str) -> Result<(String, String), HostError> {
        let _w = self.writes.lock().await;
        if !self.read().tenants.contains_key(tenant) {
            return Err(HostError::UnknownTenant(tenant.to_string()));
        }
        let (key_id, key, key_hash) = auth::new_key();
        let record = KeyRecord { key_id: key_id.clone(), tenant: tenant.to_string(), key_hash, created_at_ms: now_ms(), created_by: actor.to_string() };
        let audit = audit(actor, AuditAction::KeyIssued, None, Some(tenant), None, Some(json!({"keyId": key_id})));
        self.store.put_key(&record, &audit).await?;
        self.write().keys.insert(key_id.clone(), record);
        Ok((key_id, key))
    }

    pub async fn revoke_key(&self, tenant: &str, key_id: &str, actor: &str) -> Result<(), HostError> {
        let _w = self.writes.lock().await;
        let audit = audit(actor, AuditAction::KeyRevoked, None, Some(tenant), None, Some(json!({"keyId": key_id})));
        if !self.store.delete_key(tenant, key_id, &audit).await? {
            return Err(HostError::UnknownKey { tenant: tenant.into(), key_id: key_id.into() });
        }
        self.write().keys.remove(key_id);
        Ok(())
    }
}

fn redacted(record: Arc<TenantRecord>, compiled: &Compiled) -> RedactedTenant {
    let mut crm_config = record.crm_config.clone();
    for f in &compiled.description.secret_fields {
        if let Some(v) = crm_config.get_mut(f).filter(|v| !v.is_null()) {
            *v = REDACTED.into();
        }
    }
    RedactedTenant { record, crm_config }
}
