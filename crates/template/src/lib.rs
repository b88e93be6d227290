//! Evaluates the subset of ARM deployment templates sandpool supports: JSON with `//`, `/* */`
//! and `#` comments, parameters, variables and the expressions listed in API.md.
//!
//! Pure: it turns a template and parameters into resources to apply; it applies nothing.

use serde_json::Value;

/// Where a deployment is evaluated: what `resourceGroup()` and `subscription()` return.
#[derive(Debug, Clone)]
pub struct Context {
    pub subscription_id: String,
    pub resource_group: String,
    pub resource_group_location: String,
    pub deployment_name: String,
}

/// One resource of the template after every expression in it has been evaluated.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateResource {
    /// As written, e.g. `Microsoft.App/sessionpools`.
    pub resource_type: String,
    pub name: String,
    pub api_version: Option<String>,
    pub location: Option<String>,
    /// The evaluated resource object without `type`, `name`, `apiVersion`, `dependsOn`
    /// (so: `location`, `tags`, `properties`, …): the body to PUT.
    pub body: Value,
}

/// Why a template cannot be deployed; the server answers it as a 400 with `code`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct TemplateError {
    /// `InvalidTemplate`, `InvalidTemplateExpression`, `MissingDeploymentParameter`, …
    pub code: &'static str,
    pub message: String,
    /// JSON path of the offending element when known, e.g. `resources[0].properties.x`.
    pub target: Option<String>,
}

/// Parses template (or parameters) text: JSON that may hold `//`, `/* */` and `#` comments.
pub fn parse(text: &str) -> Result<Value, TemplateError> {
    let _ = text;
    Err(TemplateError { code: "InvalidTemplate", message: "not implemented".into(), target: None })
}

/// Evaluates `template` with `parameters` (either `{"p":{"value":…}}` or `{"p":…}`).
pub fn evaluate(
    template: &Value,
    parameters: &Value,
    ctx: &Context,
) -> Result<Vec<TemplateResource>, TemplateError> {
    let _ = (template, parameters, ctx);
    Err(TemplateError { code: "InvalidTemplate", message: "not implemented".into(), target: None })
}
