//! Evaluates the subset of ARM deployment templates sandpool supports: JSON with `//`, `/* */`
//! and `#` comments, parameters, variables and the expressions listed in API.md.
//!
//! Pure: it turns a template and parameters into resources to apply; it applies nothing.
//! It owns no wire types and does no I/O; the server maps [`TemplateError`] onto its error body.

mod eval;
mod expr;
mod parse;

use serde_json::Value;

pub use parse::parse;

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

impl TemplateError {
    pub(crate) fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            target: None,
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(INVALID_TEMPLATE, message)
    }

    pub(crate) fn expression(message: impl Into<String>) -> Self {
        Self::new(INVALID_EXPRESSION, message)
    }

    /// Sets the target unless a more precise one was already set deeper down.
    pub(crate) fn at(mut self, target: &str) -> Self {
        if self.target.is_none() && !target.is_empty() {
            self.target = Some(target.to_string());
        }
        self
    }
}

pub(crate) const INVALID_TEMPLATE: &str = "InvalidTemplate";
pub(crate) const INVALID_EXPRESSION: &str = "InvalidTemplateExpression";
pub(crate) const MISSING_PARAMETER: &str = "MissingDeploymentParameter";
pub(crate) const INVALID_PARAMETER: &str = "InvalidDeploymentParameterValue";

/// A template evaluated for a deployment: what to apply and what the deployment answers.
#[derive(Debug, Clone, PartialEq)]
pub struct Deployment {
    pub resources: Vec<TemplateResource>,
    /// Every declared parameter as ARM answers it, `{"name":{"type":"String","value":…}}`;
    /// `secureString`/`secureObject` parameters carry their type only, never their value.
    pub parameters: Value,
    /// The template's `outputs`, evaluated, in the same shape. Outputs of a secure type carry
    /// their type only; as in ARM, an output of a plain type is answered whatever it holds
    /// (a string output built from a secure parameter shows it: declare it secureString).
    pub outputs: Value,
}

/// Evaluates `template` with `parameters` (either `{"p":{"value":…}}` or `{"p":…}`).
///
/// A whole parameters file (`{"$schema":…,"contentVersion":…,"parameters":{…}}`) is accepted
/// too, because that is what users pass after `--parameters @file.json`.
pub fn evaluate(
    template: &Value,
    parameters: &Value,
    ctx: &Context,
) -> Result<Vec<TemplateResource>, TemplateError> {
    eval::evaluate(template, parameters, ctx).map(|d| d.resources)
}

/// [`evaluate`] plus the deployment's parameter record and outputs.
pub fn evaluate_deployment(
    template: &Value,
    parameters: &Value,
    ctx: &Context,
) -> Result<Deployment, TemplateError> {
    eval::evaluate(template, parameters, ctx)
}
