//! Evaluation of a parsed template: parameters, variables, expressions and resources.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::expr::{parse_expression, Expr};
use crate::{
    Context, Deployment, TemplateError, TemplateResource, INVALID_EXPRESSION, INVALID_PARAMETER,
    MISSING_PARAMETER,
};

/// Properties of a resource that steer the deployment and are not part of the PUT body.
const NOT_IN_BODY: &[&str] = &[
    "type",
    "name",
    "apiVersion",
    "dependsOn",
    "condition",
    "comments",
];

/// Lazily resolved symbol (parameter or variable). `Resolving` marks a definition being
/// evaluated so that a reference back to it is reported as a cycle, not a stack overflow.
enum Slot {
    Pending(Value),
    Resolving,
    Done(Value),
}

struct Symbols {
    kind: &'static str,
    /// Keyed by lower-cased name: ARM names are case-insensitive.
    slots: HashMap<String, (String, Slot)>,
    /// Names currently being resolved, in order, for the cycle message.
    stack: Vec<String>,
}

impl Symbols {
    fn new(kind: &'static str) -> Self {
        Self {
            kind,
            slots: HashMap::new(),
            stack: Vec::new(),
        }
    }
}

struct Evaluator<'a> {
    ctx: &'a Context,
    /// Parameter definitions from the template (lower-cased name → definition).
    param_defs: HashMap<String, Value>,
    /// Supplied parameter values (lower-cased name → value).
    supplied: HashMap<String, Value>,
    params: Symbols,
    vars: Symbols,
}

pub(crate) fn evaluate(
    template: &Value,
    parameters: &Value,
    ctx: &Context,
) -> Result<Deployment, TemplateError> {
    let template = template
        .as_object()
        .ok_or_else(|| TemplateError::invalid("the template must be a JSON object"))?;
    let mut ev = Evaluator {
        ctx,
        param_defs: HashMap::new(),
        supplied: supplied_parameters(parameters)?,
        params: Symbols::new("parameter"),
        vars: Symbols::new("variable"),
    };

    let param_defs = section(template, "parameters")?;
    for (name, def) in &param_defs {
        if !def.is_object() {
            return Err(
                TemplateError::invalid(format!("parameter '{name}' must be an object"))
                    .at(&format!("parameters.{name}")),
            );
        }
        ev.param_defs.insert(name.to_lowercase(), def.clone());
        let slot = Slot::Pending(def.clone());
        ev.params
            .slots
            .insert(name.to_lowercase(), (name.clone(), slot));
    }
    let mut undeclared: Vec<&String> = ev
        .supplied
        .keys()
        .filter(|k| !ev.param_defs.contains_key(*k))
        .collect();
    undeclared.sort();
    if let Some(name) = undeclared.first() {
        return Err(TemplateError::invalid(format!(
            "parameter '{name}' was supplied but the template does not declare it"
        ))
        .at(&format!("parameters.{name}")));
    }
    for (name, def) in section(template, "variables")? {
        if name.eq_ignore_ascii_case("copy") {
            return Err(
                TemplateError::invalid("'copy' loops in variables are not supported")
                    .at("variables.copy"),
            );
        }
        ev.vars
            .slots
            .insert(name.to_lowercase(), (name.clone(), Slot::Pending(def)));
    }

    // Every parameter is resolved up front so a missing one is reported even when unused.
    let mut names: Vec<String> = param_defs.keys().cloned().collect();
    names.sort();
    for name in names {
        ev.parameter(&name)?;
    }

    let resources = match template.get("resources") {
        Some(Value::Array(r)) => r,
        Some(_) => {
            return Err(TemplateError::invalid("'resources' must be an array").at("resources"))
        }
        None => {
            return Err(TemplateError::invalid(
                "the template has no 'resources' array",
            ))
        }
    };
    let mut out = Vec::new();
    for (i, r) in resources.iter().enumerate() {
        let path = format!("resources[{i}]");
        if let Some(res) = ev.resource(r, &path)? {
            out.push(res);
        }
    }
    let mut names: Vec<String> = param_defs.keys().cloned().collect();
    names.sort();
    let mut parameters = Map::new();
    for name in names {
        let value = ev.parameter(&name)?;
        let ty = declared_type(&param_defs[&name]);
        parameters.insert(name, record(&ty, value));
    }
    let mut outputs = Map::new();
    for (name, def) in section(template, "outputs")? {
        let path = format!("outputs.{name}");
        if let Some(v) = ev.output(&def, &path)? {
            outputs.insert(name, v);
        }
    }
    Ok(Deployment {
        resources: out,
        parameters: Value::Object(parameters),
        outputs: Value::Object(outputs),
    })
}

/// A parameter's or output's declared type, lower-cased (`securestring`).
fn declared_type(def: &Value) -> String {
    def.get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_ascii_lowercase()
}

fn is_secure(ty: &str) -> bool {
    ty == "securestring" || ty == "secureobject"
}

/// `{"type":"String","value":…}` as a deployment answers it; a secure type's value is never
/// part of it (`{"type":"SecureString"}`), as ARM does.
fn record(ty: &str, value: Value) -> Value {
    let display = match ty {
        "string" => "String",
        "securestring" => "SecureString",
        "int" => "Int",
        "bool" => "Bool",
        "object" => "Object",
        "secureobject" => "SecureObject",
        "array" => "Array",
        _ => "String",
    };
    if is_secure(ty) {
        serde_json::json!({ "type": display })
    } else {
        serde_json::json!({ "type": display, "value": value })
    }
}

/// A template section that must be an object when present (`parameters`, `variables`).
fn section(template: &Map<String, Value>, key: &str) -> Result<Map<String, Value>, TemplateError> {
    match template.get(key) {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m.clone()),
        Some(_) => Err(TemplateError::invalid(format!("'{key}' must be an object")).at(key)),
    }
}

fn supplied_parameters(parameters: &Value) -> Result<HashMap<String, Value>, TemplateError> {
    let obj = match parameters {
        Value::Null => return Ok(HashMap::new()),
        Value::Object(o) => o,
        _ => {
            return Err(TemplateError::invalid(
                "deployment parameters must be a JSON object",
            ))
        }
    };
    // A whole parameters file rather than just its `parameters` section.
    let obj = match obj.get("parameters") {
        Some(Value::Object(inner))
            if obj.contains_key("$schema") || obj.contains_key("contentVersion") =>
        {
            inner
        }
        _ => obj,
    };
    let mut out = HashMap::new();
    for (name, v) in obj {
        let value = match v {
            Value::Object(m) if m.contains_key("reference") => {
                return Err(TemplateError::new(
                    INVALID_PARAMETER,
                    format!("parameter '{name}': Key Vault references are not supported"),
                )
                .at(&format!("parameters.{name}")))
            }
            Value::Object(m)
                if m.contains_key("value") && m.keys().all(|k| k == "value" || k == "metadata") =>
            {
                m.get("value").cloned().unwrap_or(Value::Null)
            }
            other => other.clone(),
        };
        out.insert(name.to_lowercase(), value);
    }
    Ok(out)
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

impl Evaluator<'_> {
    fn parameter(&mut self, name: &str) -> Result<Value, TemplateError> {
        self.symbol(true, name)
    }

    fn variable(&mut self, name: &str) -> Result<Value, TemplateError> {
        self.symbol(false, name)
    }

    fn symbols(&mut self, is_param: bool) -> &mut Symbols {
        if is_param {
            &mut self.params
        } else {
            &mut self.vars
        }
    }

    fn symbol(&mut self, is_param: bool, name: &str) -> Result<Value, TemplateError> {
        let key = name.to_lowercase();
        let syms = self.symbols(is_param);
        let kind = syms.kind;
        let Some((declared, slot)) = syms.slots.get_mut(&key) else {
            return Err(TemplateError::invalid(format!(
                "the template {kind} '{name}' is not declared"
            )));
        };
        let declared = declared.clone();
        let def = match std::mem::replace(slot, Slot::Resolving) {
            Slot::Done(v) => {
                *slot = Slot::Done(v.clone());
                return Ok(v);
            }
            Slot::Resolving => {
                let mut chain = syms.stack.clone();
                chain.push(declared);
                return Err(TemplateError::invalid(format!(
                    "circular reference among {kind}s: {}",
                    chain.join(" -> ")
                )));
            }
            Slot::Pending(def) => def,
        };
        syms.stack.push(declared.clone());
        let result = if is_param {
            self.resolve_parameter(&declared, &def)
        } else {
            self.value(&def, &format!("variables.{declared}"))
        };
        let syms = self.symbols(is_param);
        syms.stack.pop();
        let value = result?;
        if let Some((_, slot)) = syms.slots.get_mut(&key) {
            *slot = Slot::Done(value.clone());
        }
        Ok(value)
    }

    fn resolve_parameter(&mut self, name: &str, def: &Value) -> Result<Value, TemplateError> {
        let path = format!("parameters.{name}");
        let ty = def
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                TemplateError::invalid(format!("parameter '{name}' has no 'type'")).at(&path)
            })?
            .to_ascii_lowercase();
        let value = match self.supplied.get(&name.to_lowercase()).cloned() {
            Some(v) => v,
            None => match def.get("defaultValue") {
                Some(d) => self.value(d, &format!("{path}.defaultValue"))?,
                None => {
                    return Err(TemplateError::new(
                        MISSING_PARAMETER,
                        format!("the value of deployment parameter '{name}' is null; it has no default, so supply it"),
                    )
                    .at(&path))
                }
            },
        };
        let value = coerce(name, &ty, value).map_err(|e| e.at(&path))?;
        check_constraints(name, def, &value, is_secure(&ty)).map_err(|e| e.at(&path))?;
        Ok(value)
    }

    /// One entry of `outputs`: `{"type","value"[,"condition"]}` evaluated, or `None` when its
    /// condition is false. A secure output answers its type only.
    fn output(&mut self, def: &Value, path: &str) -> Result<Option<Value>, TemplateError> {
        let obj = def
            .as_object()
            .ok_or_else(|| TemplateError::invalid("each output must be an object").at(path))?;
        if obj.contains_key("copy") {
            return Err(
                TemplateError::invalid("'copy' loops in outputs are not supported")
                    .at(&format!("{path}.copy")),
            );
        }
        let ty = declared_type(def);
        if !matches!(
            ty.as_str(),
            "string" | "securestring" | "int" | "bool" | "object" | "secureobject" | "array"
        ) {
            return Err(TemplateError::invalid(
                "an output's 'type' must be string, securestring, int, bool, object, secureObject or array",
            )
            .at(&format!("{path}.type")));
        }
        if let Some(c) = obj.get("condition") {
            match self.value(c, &format!("{path}.condition"))? {
                Value::Bool(false) => return Ok(None),
                Value::Bool(true) => {}
                _ => {
                    return Err(
                        TemplateError::invalid("an output's 'condition' must be a bool")
                            .at(&format!("{path}.condition")),
                    )
                }
            }
        }
        let value = match obj.get("value") {
            Some(v) => self.value(v, &format!("{path}.value"))?,
            None => return Err(TemplateError::invalid("an output needs a 'value'").at(path)),
        };
        Ok(Some(record(&ty, value)))
    }

    fn resource(
        &mut self,
        r: &Value,
        path: &str,
    ) -> Result<Option<TemplateResource>, TemplateError> {
        let obj = r
            .as_object()
            .ok_or_else(|| TemplateError::invalid("each resource must be an object").at(path))?;
        if obj.contains_key("copy") {
            return Err(
                TemplateError::invalid("'copy' loops in resources are not supported")
                    .at(&format!("{path}.copy")),
            );
        }
        if obj
            .get("resources")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
        {
            return Err(TemplateError::invalid(
                "nested child resources are not supported; list them in the top-level 'resources' array",
            )
            .at(&format!("{path}.resources")));
        }
        if let Some(cond) = obj.get("condition") {
            let cpath = format!("{path}.condition");
            match self.value(cond, &cpath)? {
                Value::Bool(true) => {}
                Value::Bool(false) => return Ok(None),
                other => {
                    return Err(TemplateError::invalid(format!(
                        "'condition' must be a bool, not {}",
                        type_name(&other)
                    ))
                    .at(&cpath))
                }
            }
        }
        let mut body = Map::new();
        let mut fields: HashMap<String, Value> = HashMap::new();
        for (k, v) in obj {
            if k == "dependsOn" || k == "condition" {
                continue; // ordering is the array's; dependsOn is not needed to apply in order
            }
            let v = self.value(v, &format!("{path}.{k}"))?;
            if NOT_IN_BODY.contains(&k.as_str()) {
                fields.insert(k.clone(), v);
            } else {
                body.insert(k.clone(), v);
            }
        }
        let required = |key: &str,
                        fields: &HashMap<String, Value>|
         -> Result<String, TemplateError> {
            match fields.get(key) {
                Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
                Some(other) => Err(TemplateError::invalid(format!(
                    "resource '{key}' must be a non-empty string, not {}",
                    type_name(other)
                ))
                .at(&format!("{path}.{key}"))),
                None => Err(TemplateError::invalid(format!("resource has no '{key}'")).at(path)),
            }
        };
        let resource_type = required("type", &fields)?;
        let name = required("name", &fields)?;
        let api_version = match fields.get("apiVersion") {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                return Err(TemplateError::invalid("'apiVersion' must be a string")
                    .at(&format!("{path}.apiVersion")))
            }
        };
        let location = match body.get("location") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                return Err(TemplateError::invalid("'location' must be a string")
                    .at(&format!("{path}.location")))
            }
        };
        Ok(Some(TemplateResource {
            resource_type,
            name,
            api_version,
            location,
            body: Value::Object(body),
        }))
    }

    /// Evaluates every expression string inside `v`, at any depth.
    fn value(&mut self, v: &Value, path: &str) -> Result<Value, TemplateError> {
        match v {
            Value::String(s) => self.string(s).map_err(|e| e.at(path)),
            Value::Array(a) => {
                let mut out = Vec::with_capacity(a.len());
                for (i, item) in a.iter().enumerate() {
                    out.push(self.value(item, &format!("{path}[{i}]"))?);
                }
                Ok(Value::Array(out))
            }
            Value::Object(m) => {
                let mut out = Map::new();
                for (k, item) in m {
                    out.insert(k.clone(), self.value(item, &format!("{path}.{k}"))?);
                }
                Ok(Value::Object(out))
            }
            other => Ok(other.clone()),
        }
    }

    fn string(&mut self, s: &str) -> Result<Value, TemplateError> {
        if s.len() >= 2 && s.starts_with('[') && s.ends_with(']') {
            if s.starts_with("[[") {
                return Ok(Value::String(s[1..].to_string()));
            }
            let expr = parse_expression(&s[1..s.len() - 1])?;
            return self.eval(&expr);
        }
        Ok(Value::String(s.to_string()))
    }

    fn eval(&mut self, e: &Expr) -> Result<Value, TemplateError> {
        match e {
            Expr::Str(s) => Ok(Value::String(s.clone())),
            Expr::Int(i) => Ok(Value::from(*i)),
            Expr::Call { name, args } => self.call(name, args),
            Expr::Property(target, prop) => {
                let v = self.eval(target)?;
                property(&v, prop)
            }
            Expr::Index(target, index) => {
                let v = self.eval(target)?;
                let i = self.eval(index)?;
                match (&v, &i) {
                    (Value::Array(a), Value::Number(n)) => {
                        let idx = n.as_u64().and_then(|n| usize::try_from(n).ok());
                        idx.and_then(|idx| a.get(idx)).cloned().ok_or_else(|| {
                            TemplateError::expression(format!(
                                "index {n} is out of range for an array of {} elements",
                                a.len()
                            ))
                        })
                    }
                    (Value::Object(_), Value::String(k)) => property(&v, k),
                    _ => Err(TemplateError::expression(format!(
                        "cannot index {} with {}",
                        type_name(&v),
                        type_name(&i)
                    ))),
                }
            }
        }
    }

    fn call(&mut self, name: &str, args: &[Expr]) -> Result<Value, TemplateError> {
        let lower = name.to_ascii_lowercase();
        let mut values = Vec::with_capacity(args.len());
        for a in args {
            values.push(self.eval(a)?);
        }
        let arity = |n: usize| -> Result<(), TemplateError> {
            if values.len() == n {
                Ok(())
            } else {
                Err(TemplateError::expression(format!(
                    "function '{name}' takes {n} argument(s), got {}",
                    values.len()
                )))
            }
        };
        let ctx = self.ctx;
        let rg_id = format!(
            "/subscriptions/{}/resourceGroups/{}",
            ctx.subscription_id, ctx.resource_group
        );
        match lower.as_str() {
            "parameters" | "variables" => {
                arity(1)?;
                let Value::String(symbol) = &values[0] else {
                    return Err(TemplateError::expression(format!(
                        "function '{name}' expects a string name"
                    )));
                };
                if lower == "parameters" {
                    self.parameter(symbol)
                } else {
                    self.variable(symbol)
                }
            }
            "resourcegroup" => {
                arity(0)?;
                Ok(serde_json::json!({
                    "id": rg_id,
                    "name": ctx.resource_group,
                    "type": "Microsoft.Resources/resourceGroups",
                    "location": ctx.resource_group_location,
                    "properties": {"provisioningState": "Succeeded"},
                }))
            }
            "subscription" => {
                arity(0)?;
                Ok(serde_json::json!({
                    "id": format!("/subscriptions/{}", ctx.subscription_id),
                    "subscriptionId": ctx.subscription_id,
                }))
            }
            "deployment" => {
                arity(0)?;
                Ok(serde_json::json!({
                    "name": ctx.deployment_name,
                    "id": format!("{rg_id}/providers/Microsoft.Resources/deployments/{}", ctx.deployment_name),
                }))
            }
            "true" | "false" => {
                arity(0)?;
                Ok(Value::Bool(lower == "true"))
            }
            "concat" => concat(values),
            "format" => format_fn(&values),
            "resourceid" => resource_id(ctx, &values),
            _ => Err(TemplateError::new(
                INVALID_EXPRESSION,
                format!(
                    "the template function '{name}' is not supported; supported: parameters, variables, \
                     resourceGroup, subscription, deployment, concat, format, resourceId, true, false"
                ),
            )),
        }
    }
}

fn property(v: &Value, prop: &str) -> Result<Value, TemplateError> {
    match v {
        Value::Object(m) => m
            .get(prop)
            .or_else(|| {
                m.iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(prop))
                    .map(|(_, v)| v)
            })
            .cloned()
            .ok_or_else(|| {
                TemplateError::expression(format!("the object has no property '{prop}'"))
            }),
        other => Err(TemplateError::expression(format!(
            "cannot read property '{prop}' of {}",
            type_name(other)
        ))),
    }
}

/// Converts a supplied value to the declared type; strings from the command line
/// (`--parameters count=3`) are turned into the int or bool the template declares.
fn coerce(name: &str, ty: &str, value: Value) -> Result<Value, TemplateError> {
    let mismatch = |v: &Value| {
        TemplateError::new(
            INVALID_PARAMETER,
            format!(
                "parameter '{name}' must be of type {ty}, not {}",
                type_name(v)
            ),
        )
    };
    match (ty, value) {
        ("string" | "securestring", v @ Value::String(_)) => Ok(v),
        ("int", v @ Value::Number(_)) if v.is_i64() => Ok(v),
        ("int", Value::String(s)) => s.trim().parse::<i64>().map(Value::from).map_err(|_| mismatch(&Value::String(s))),
        ("bool", v @ Value::Bool(_)) => Ok(v),
        ("bool", Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(Value::Bool(true)),
        ("bool", Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(Value::Bool(false)),
        ("object" | "secureobject", v @ Value::Object(_)) => Ok(v),
        ("array", v @ Value::Array(_)) => Ok(v),
        ("string" | "securestring" | "int" | "bool" | "object" | "secureobject" | "array", v) => Err(mismatch(&v)),
        (other, _) => Err(TemplateError::invalid(format!(
            "parameter '{name}' has unknown type '{other}'; expected string, securestring, int, bool, object, secureObject or array"
        ))),
    }
}

/// `secure`: the value is a secret and never goes into the error's text.
fn check_constraints(
    name: &str,
    def: &Value,
    value: &Value,
    secure: bool,
) -> Result<(), TemplateError> {
    let bad = |msg: String| Err(TemplateError::new(INVALID_PARAMETER, msg));
    if let Some(allowed) = def.get("allowedValues") {
        let Some(allowed) = allowed.as_array() else {
            return Err(TemplateError::invalid(format!(
                "'allowedValues' of parameter '{name}' must be an array"
            )));
        };
        if !allowed.contains(value) {
            if secure {
                return bad(format!(
                    "parameter '{name}' is not one of its allowed values"
                ));
            }
            let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
            return bad(format!(
                "parameter '{name}' is {value}; allowed values are {}",
                list.join(", ")
            ));
        }
    }
    if let Some(n) = value.as_i64() {
        if let Some(min) = def.get("minValue").and_then(Value::as_i64) {
            if n < min {
                return bad(format!(
                    "parameter '{name}' is {n}, below its minValue {min}"
                ));
            }
        }
        if let Some(max) = def.get("maxValue").and_then(Value::as_i64) {
            if n > max {
                return bad(format!(
                    "parameter '{name}' is {n}, above its maxValue {max}"
                ));
            }
        }
    }
    let len = match value {
        Value::String(s) => Some(s.chars().count()),
        Value::Array(a) => Some(a.len()),
        _ => None,
    };
    if let Some(len) = len.and_then(|l| i64::try_from(l).ok()) {
        if let Some(min) = def.get("minLength").and_then(Value::as_i64) {
            if len < min {
                return bad(format!(
                    "parameter '{name}' has length {len}, below its minLength {min}"
                ));
            }
        }
        if let Some(max) = def.get("maxLength").and_then(Value::as_i64) {
            if len > max {
                return bad(format!(
                    "parameter '{name}' has length {len}, above its maxLength {max}"
                ));
            }
        }
    }
    Ok(())
}

fn scalar_text(v: &Value, func: &str) -> Result<String, TemplateError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        // .NET's rendering, which is what ARM produces.
        Value::Bool(true) => Ok("True".into()),
        Value::Bool(false) => Ok("False".into()),
        other => Err(TemplateError::expression(format!(
            "function '{func}' cannot use a value of type {} here",
            type_name(other)
        ))),
    }
}

fn concat(values: Vec<Value>) -> Result<Value, TemplateError> {
    if values.is_empty() {
        return Err(TemplateError::expression(
            "function 'concat' needs at least one argument",
        ));
    }
    if values.iter().all(Value::is_array) {
        let mut out = Vec::new();
        for v in values {
            if let Value::Array(a) = v {
                out.extend(a);
            }
        }
        return Ok(Value::Array(out));
    }
    if values.iter().any(Value::is_array) {
        return Err(TemplateError::expression(
            "function 'concat' takes either all arrays or all strings, not a mix",
        ));
    }
    let mut s = String::new();
    for v in &values {
        s.push_str(&scalar_text(v, "concat")?);
    }
    Ok(Value::String(s))
}

/// `format('{0}-{1}', a, b)` with .NET composite formatting: `{{`/`}}` escape braces.
fn format_fn(values: &[Value]) -> Result<Value, TemplateError> {
    let Some(Value::String(fmt)) = values.first() else {
        return Err(TemplateError::expression(
            "function 'format' needs a format string first",
        ));
    };
    let args = &values[1..];
    let mut out = String::new();
    let mut chars = fmt.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                out.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                out.push('}');
            }
            '{' => {
                let mut spec = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(ch) => spec.push(ch),
                        None => {
                            return Err(TemplateError::expression(format!(
                                "format string '{fmt}' has an unclosed '{{'"
                            )))
                        }
                    }
                }
                let index: usize = spec.trim().parse().map_err(|_| {
                    TemplateError::expression(format!(
                        "format item '{{{spec}}}' is not supported; use '{{N}}' with an argument number"
                    ))
                })?;
                let arg = args.get(index).ok_or_else(|| {
                    TemplateError::expression(format!(
                        "format item '{{{index}}}' has no argument ({} given)",
                        args.len()
                    ))
                })?;
                out.push_str(&scalar_text(arg, "format")?);
            }
            '}' => {
                return Err(TemplateError::expression(format!(
                    "format string '{fmt}' has an unmatched '}}'; write '}}}}' for a literal brace"
                )))
            }
            c => out.push(c),
        }
    }
    Ok(Value::String(out))
}

/// `resourceId([subscriptionId], [resourceGroupName], 'Namespace/type[/child]', 'name', …)`.
fn resource_id(ctx: &Context, values: &[Value]) -> Result<Value, TemplateError> {
    let mut strings = Vec::with_capacity(values.len());
    for v in values {
        match v {
            Value::String(s) => strings.push(s.as_str()),
            other => {
                return Err(TemplateError::expression(format!(
                    "function 'resourceId' takes strings, not {}",
                    type_name(other)
                )))
            }
        }
    }
    let type_at = strings
        .iter()
        .position(|s| s.contains('/'))
        .ok_or_else(|| {
            TemplateError::expression(
                "function 'resourceId' needs a resource type such as 'Microsoft.App/sessionPools'",
            )
        })?;
    let (sub, rg) = match &strings[..type_at] {
        [] => (ctx.subscription_id.as_str(), ctx.resource_group.as_str()),
        [rg] => (ctx.subscription_id.as_str(), *rg),
        [sub, rg] => (*sub, *rg),
        _ => {
            return Err(TemplateError::expression(
                "function 'resourceId' takes at most a subscription id and a resource group before the type",
            ))
        }
    };
    let segments: Vec<&str> = strings[type_at].split('/').collect();
    let names = &strings[type_at + 1..];
    if segments.len() < 2 || segments.iter().any(|s| s.is_empty()) {
        return Err(TemplateError::expression(format!(
            "'{}' is not a resource type of the form 'Namespace/type'",
            strings[type_at]
        )));
    }
    if names.len() != segments.len() - 1 {
        return Err(TemplateError::expression(format!(
            "resource type '{}' needs {} name(s) in resourceId, got {}",
            strings[type_at],
            segments.len() - 1,
            names.len()
        )));
    }
    let mut id = format!(
        "/subscriptions/{sub}/resourceGroups/{rg}/providers/{}",
        segments[0]
    );
    for (ty, name) in segments[1..].iter().zip(names) {
        id.push('/');
        id.push_str(ty);
        id.push('/');
        id.push_str(name);
    }
    Ok(Value::String(id))
}
