//! An adapter's description and its crmConfig fields. One list of fields yields the JSON
//! Schema the host publishes, the secret and endpoint lists, and the validation itself, so
//! they cannot drift apart.

use crate::values::{truthy, Values};
use crate::CrmError;
use serde_json::{json, Map, Value};

/// The kind of value a crmConfig field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// Text (numbers are accepted and read as text).
    String,
    /// `true`/`false`, also as text or 0/1.
    Boolean,
    /// A non-negative integer, also as a string of digits.
    Integer,
    /// A JSON object, also as JSON text.
    Object,
    /// Comma-separated text or an array of strings.
    List,
    /// An absolute http(s) URL.
    Url,
}

/// One crmConfig field an adapter declares: built with the `const` constructors below,
/// `ConfigField::string("token").required().secret()`.
#[derive(Debug, Clone, Copy)]
pub struct ConfigField {
    /// The field's name in crmConfig.
    pub name: &'static str,
    /// What it holds.
    pub kind: FieldKind,
    /// A tenant's crmConfig is refused without it.
    pub required: bool,
    /// Default as JSON text, shown in the schema.
    pub default: Option<&'static str>,
    /// Redacted whenever the host shows the tenant.
    pub secret: bool,
    /// A URL the adapter calls: its origin is allowed for egress for this tenant.
    pub endpoint: bool,
    /// One line for operators (the schema's description, the console's help).
    pub doc: &'static str,
}

impl ConfigField {
    /// A field of `kind`: optional, not secret, no default.
    pub const fn new(name: &'static str, kind: FieldKind) -> Self {
        ConfigField { name, kind, required: false, default: None, secret: false, endpoint: false, doc: "" }
    }
    /// A text field.
    pub const fn string(name: &'static str) -> Self {
        Self::new(name, FieldKind::String)
    }
    /// A flag.
    pub const fn boolean(name: &'static str) -> Self {
        Self::new(name, FieldKind::Boolean)
    }
    /// A non-negative integer.
    pub const fn integer(name: &'static str) -> Self {
        Self::new(name, FieldKind::Integer)
    }
    /// A JSON object.
    pub const fn object(name: &'static str) -> Self {
        Self::new(name, FieldKind::Object)
    }
    /// A list of strings.
    pub const fn list(name: &'static str) -> Self {
        Self::new(name, FieldKind::List)
    }
    /// A URL-valued field the adapter calls (implies an egress grant for its origin).
    pub const fn endpoint(name: &'static str) -> Self {
        let mut f = Self::new(name, FieldKind::Url);
        f.endpoint = true;
        f
    }
    /// Refuse a crmConfig without it.
    pub const fn required(mut self) -> Self {
        self.required = true;
        self
    }
    /// Redact it wherever the host records or shows the tenant.
    pub const fn secret(mut self) -> Self {
        self.secret = true;
        self
    }
    /// Its default, as JSON text (`"30"`, `"\"id\""`), shown in the schema; the adapter applies it.
    pub const fn default(mut self, json: &'static str) -> Self {
        self.default = Some(json);
        self
    }
    /// Its one-line description.
    pub const fn doc(mut self, doc: &'static str) -> Self {
        self.doc = doc;
        self
    }

    fn schema(&self) -> Value {
        let mut s = match self.kind {
            FieldKind::String => json!({"type": ["string", "number"]}),
            FieldKind::Boolean => json!({"anyOf": [
                {"type": "boolean"}, {"enum": ["true", "false", "1", "0", 1, 0]}]}),
            FieldKind::Integer => json!({"anyOf": [
                {"type": "integer", "minimum": 0}, {"type": "string", "pattern": "^[0-9]+$"}]}),
            FieldKind::Object => json!({"anyOf": [
                {"type": "object"}, {"type": "string", "contentMediaType": "application/json"}]}),
            FieldKind::List => json!({"anyOf": [
                {"type": "string"}, {"type": "array", "items": {"type": "string"}}]}),
            FieldKind::Url => json!({"type": "string", "format": "uri"}),
        };
        let o = s.as_object_mut().expect("schema literal is an object");
        if !self.doc.is_empty() {
            o.insert("description".into(), self.doc.into());
        }
        if let Some(d) = self.default {
            o.insert("default".into(), serde_json::from_str(d).expect("field default is valid JSON"));
        }
        if self.secret {
            o.insert("writeOnly".into(), true.into());
        }
        if self.endpoint {
            o.insert("x-egress".into(), true.into());
        }
        s
    }

    /// Checks presence and type of this field in `config`.
    fn check(&self, config: &Values) -> Result<(), CrmError> {
        let name = self.name;
        if self.required && is_blank(config.get(name)) {
            return Err(config.error(name, "is required"));
        }
        match self.kind {
            FieldKind::String => config.str(name).map(drop),
            FieldKind::Boolean => match config.get(name) {
                Some(v) if truthy(v).is_none() => {
                    Err(config.error(name, format!("must be a boolean (true/false), got {v}")))
                }
                _ => Ok(()),
            },
            FieldKind::Integer => config.uint(name, 0).map(drop),
            FieldKind::Object => config.object(name).map(drop),
            FieldKind::List => config.list(name).map(drop),
            FieldKind::Url => config.url(name).map(drop),
        }
    }
}

/// Missing, null or blank text. Any other value counts as present for `required`.
fn is_blank(v: Option<&Value>) -> bool {
    match v {
        None => true,
        Some(Value::String(s)) => s.trim().is_empty(),
        Some(_) => false,
    }
}

/// What an adapter declares about itself.
#[derive(Debug, Clone, Copy)]
pub struct AdapterSpec {
    /// Registry name, lowercase.
    pub name: &'static str,
    /// The adapter's version (semver), shown with each deployed version.
    pub version: &'static str,
    /// The functions it serves (`getCustomerDetails`, ...).
    pub operations: &'static [&'static str],
    /// Its crmConfig fields.
    pub config: &'static [ConfigField],
    /// Origins it calls: `https://host[:port]`, `https://*.example.com`.
    pub outbound_hosts: &'static [&'static str],
}

impl AdapterSpec {
    /// The crmConfig JSON Schema (draft 2020-12). Unknown fields are allowed: tenants' configs
    /// often carry fields for other tools.
    pub fn config_schema(&self) -> Value {
        let mut props = Map::new();
        for f in self.config {
            props.insert(f.name.to_string(), f.schema());
        }
        let required: Vec<&str> = self.config.iter().filter(|f| f.required).map(|f| f.name).collect();
        json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": format!("{} crmConfig", self.name),
            "type": "object",
            "properties": props,
            "required": required,
            "additionalProperties": true,
        })
    }

    /// The names of the fields declared `secret`.
    pub fn secret_fields(&self) -> Vec<String> {
        self.config.iter().filter(|f| f.secret).map(|f| f.name.to_string()).collect()
    }

    /// The names of the fields declared `endpoint`.
    pub fn endpoint_fields(&self) -> Vec<String> {
        self.config.iter().filter(|f| f.endpoint).map(|f| f.name.to_string()).collect()
    }

    /// Checks every declared field; the first problem wins, in declaration order.
    pub fn validate(&self, config: &Values) -> Result<(), CrmError> {
        self.config.iter().try_for_each(|f| f.check(config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::Origin;

    const FIELDS: &[ConfigField] = &[
        ConfigField::string("token").required().secret(),
        ConfigField::integer("max").default("30"),
        ConfigField::endpoint("lookupUrl"),
    ];
    const SPEC: AdapterSpec =
        AdapterSpec { name: "t", version: "1.0.0", operations: &["a"], config: FIELDS, outbound_hosts: &[] };

    fn cfg(v: Value) -> Values {
        Values::new(Origin::Config, v.as_object().unwrap().clone())
    }

    #[test]
    fn schema_marks_secrets_defaults_and_endpoints() {
        let s = SPEC.config_schema();
        assert_eq!(s["required"], json!(["token"]));
        assert_eq!(s["properties"]["token"]["writeOnly"], true);
        assert_eq!(s["properties"]["max"]["default"], 30);
        assert_eq!(s["properties"]["lookupUrl"]["x-egress"], true);
        assert_eq!(SPEC.secret_fields(), vec!["token"]);
        assert_eq!(SPEC.endpoint_fields(), vec!["lookupUrl"]);
    }

    #[test]
    fn validation_names_the_first_bad_field() {
        assert_eq!(SPEC.validate(&cfg(json!({}))), Err(CrmError::config("token", "is required")));
        assert!(matches!(
            SPEC.validate(&cfg(json!({"token": "k", "max": "lots"}))),
            Err(CrmError::Config { field, .. }) if field == "max"
        ));
        assert!(matches!(
            SPEC.validate(&cfg(json!({"token": "k", "lookupUrl": "ftp://x"}))),
            Err(CrmError::Config { field, .. }) if field == "lookupUrl"
        ));
        assert!(SPEC.validate(&cfg(json!({"token": "k", "max": 3, "lookupUrl": "https://a.test/x"}))).is_ok());
    }
}
