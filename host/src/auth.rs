//! Who is calling. An admin token (`--admin-token` / `CRM_HOST_ADMIN_TOKEN`) may do
//! everything; a tenant's API key may call that tenant's functions (and read its events).
//! Keys are random, shown once and stored as SHA-256 hashes; every comparison is constant
//! time. Without an admin token the host runs open (and only on loopback; see `cli`).

use crate::error::HostError;
use crate::store::KeyRecord;
use base64::Engine as _;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The shortest admin token `crm-host serve` starts with.
pub const MIN_ADMIN_TOKEN_CHARS: usize = 16;

/// Prefix of every API key: `crmk_<keyId>_<secret>`.
const KEY_PREFIX: &str = "crmk_";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No admin token is configured: everything is allowed.
    Open,
    Admin,
    /// An API key of this tenant.
    Tenant { tenant: String, key_id: String },
    /// No credentials, or credentials that match nothing.
    Nobody,
}

impl Caller {
    /// Recorded as the actor of changes.
    pub fn actor(&self) -> String {
        match self {
            Caller::Open => "anonymous".into(),
            Caller::Admin => "admin".into(),
            Caller::Tenant { key_id, .. } => format!("key:{key_id}"),
            Caller::Nobody => "nobody".into(),
        }
    }

    pub fn require_admin(&self) -> Result<(), HostError> {
        match self {
            Caller::Open | Caller::Admin => Ok(()),
            Caller::Tenant { .. } => Err(HostError::Forbidden("this endpoint needs the admin token, not a tenant API key".into())),
            Caller::Nobody => Err(unauthorized()),
        }
    }

    /// The admin, or an API key of `tenant`.
    pub fn require_tenant(&self, tenant: &str) -> Result<(), HostError> {
        match self {
            Caller::Open | Caller::Admin => Ok(()),
            Caller::Tenant { tenant: t, .. } if t == tenant => Ok(()),
            Caller::Tenant { .. } => Err(HostError::Forbidden(format!("this API key belongs to another tenant than '{tenant}'"))),
            Caller::Nobody => Err(unauthorized()),
        }
    }
}

fn unauthorized() -> HostError {
    HostError::Unauthorized(
        "missing or invalid credentials: send `Authorization: Bearer <admin token or tenant API key>`".into(),
    )
}

pub struct Auth {
    admin_hash: Option<[u8; 32]>,
}

pub fn sha256(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

impl Auth {
    pub fn new(admin_token: Option<&str>) -> Self {
        Auth { admin_hash: admin_token.filter(|t| !t.is_empty()).map(sha256) }
    }

    pub fn is_open(&self) -> bool {
        self.admin_hash.is_none()
    }

    /// Identifies the bearer of `authorization` (the header's value). `key` looks a key up
    /// by its id.
    pub fn identify(&self, authorization: Option<&str>, key: impl Fn(&str) -> Option<KeyRecord>) -> Caller {
        let Some(admin) = &self.admin_hash else { return Caller::Open };
        let Some(token) = authorization.and_then(|h| h.strip_prefix("Bearer ")).map(str::trim) else {
            return Caller::Nobody;
        };
        let presented = sha256(token);
        if bool::from(presented.ct_eq(admin)) {
            return Caller::Admin;
        }
        let Some(key_id) = token.strip_prefix(KEY_PREFIX).and_then(|rest| rest.split_once('_')).map(|(id, _)| id) else {
            return Caller::Nobody;
        };
        match key(key_id) {
            Some(k) if bool::from(hex(&presented).as_bytes().ct_eq(k.key_hash.as_bytes())) => {
                Caller::Tenant { tenant: k.tenant, key_id: k.key_id }
            }
            _ => Caller::Nobody,
        }
    }
}

/// A new API key: `(key_id, key, hash of key)`.
pub fn new_key() -> (String, String, String) {
    let mut id = [0u8; 8];
    let mut secret = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut id);
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let key_id = hex(&id);
    let key = format!("{KEY_PREFIX}{key_id}_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret));
    let hash = hex(&sha256(&key));
    (key_id, key, hash)
}

/// Lower-case hex. One allocation: a `format!` per byte was one each, and every call's id
/// is made here.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        text.push(DIGITS[usize::from(b >> 4)] as char);
        text.push(DIGITS[usize::from(b & 15)] as char);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_keys_and_strangers() {
        let auth = Auth::new(Some("root"));
        let (key_id, key, key_hash) = new_key();
        let record = KeyRecord { key_id: key_id.clone(), tenant: "acme".into(), key_hash, created_at_ms: 0, created_by: "t".into() };
        let lookup = |id: &str| (id == key_id).then(|| record.clone());
        assert_eq!(auth.identify(Some("Bearer root"), lookup), Caller::Admin);
        assert_eq!(auth.identify(Some(&format!("Bearer {key}")), lookup), Caller::Tenant { tenant: "acme".into(), key_id: key_id.clone() });
        let forged = format!("{}x", &key[..key.len() - 1]);
        assert_eq!(auth.identify(Some(&format!("Bearer {forged}")), lookup), Caller::Nobody);
        assert_eq!(auth.identify(Some("Bearer nope"), lookup), Caller::Nobody);
        assert_eq!(auth.identify(None, lookup), Caller::Nobody);
        assert_eq!(Auth::new(None).identify(None, lookup), Caller::Open);
        let tenant = Caller::Tenant { tenant: "acme".into(), key_id };
        assert!(tenant.require_tenant("acme").is_ok());
        assert_eq!(tenant.require_tenant("other").unwrap_err().status(), 403);
        assert_eq!(tenant.require_admin().unwrap_err().status(), 403);
        assert_eq!(Caller::Nobody.require_tenant("acme").unwrap_err().status(), 401);
    }

    #[test]
    fn hex_is_what_stored_key_hashes_were_written_with() {
        let every: Vec<u8> = (0..=255).collect();
        assert_eq!(hex(&every), every.iter().map(|b| format!("{b:02x}")).collect::<String>());
        assert_eq!(hex(&[]), "");
    }
}
