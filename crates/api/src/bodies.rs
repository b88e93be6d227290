//! Validation of request bodies: turns what a client sent into the canonical properties, with
//! defaults filled in, or an error that names the offending property.

use crate::types::*;
use crate::ApiError;
use serde_json::{Map, Value};

/// Default `maxConcurrentSessions` when a pool does not say.
pub const DEFAULT_MAX_CONCURRENT_SESSIONS: u32 = 10;
/// Default cooldown of a Timed pool.
pub const DEFAULT_COOLDOWN_SECONDS: u32 = 300;
/// Default lifetime cap of an OnContainerExit pool.
pub const DEFAULT_MAX_ALIVE_SECONDS: u32 = 3600;
/// Default per-command timeout of a managed cluster.
pub const DEFAULT_COMMAND_TIMEOUT_SECONDS: u32 = 300;

fn wrong_type(path: &str, expected: &str) -> ApiError {
    ApiError::invalid_request_content(format!("'{path}' must be {expected}.")).with_target(path)
}

/// The `properties` object of a body; absent (`null`) counts as empty.
fn properties_object(input: &Value) -> Result<Map<String, Value>, ApiError> {
    if input.is_null() {
        Ok(Map::new())
    } else {
        as_object(input, "properties").cloned()
    }
}

fn as_object<'a>(v: &'a Value, path: &str) -> Result<&'a Map<String, Value>, ApiError> {
    v.as_object().ok_or_else(|| wrong_type(path, "an object"))
}

/// Looks a key up case-insensitively: ARM property names are not case-sensitive.
fn field<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key)
        .or_else(|| {
            obj.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v)
        })
        .filter(|v| !v.is_null())
}

fn opt_u32(obj: &Map<String, Value>, key: &str, path: &str) -> Result<Option<u32>, ApiError> {
    let path = format!("{path}.{key}");
    match field(obj, key) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| wrong_type(&path, "a non-negative integer")),
    }
}

fn opt_str<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<&'a str>, ApiError> {
    match field(obj, key) {
        None => Ok(None),
        Some(v) => v
            .as_str()
            .map(Some)
            .ok_or_else(|| wrong_type(&format!("{path}.{key}"), "a string")),
    }
}

/// Matches `value` case-insensitively against `allowed` and returns the canonical spelling.
fn enum_value(value: &str, allowed: &[&'static str], path: &str) -> Result<&'static str, ApiError> {
    allowed
        .iter()
        .find(|a| a.eq_ignore_ascii_case(value))
        .copied()
        .ok_or_else(|| {
            ApiError::invalid_request_content(format!(
                "'{path}' has the unknown value '{value}'; allowed values: {}.",
                allowed.join(", ")
            ))
            .with_target(path)
        })
}

/// Removes the keys sandpool interprets, leaving what it keeps untouched.
fn extras(obj: &Map<String, Value>, known: &[&str]) -> Map<String, Value> {
    obj.iter()
        .filter(|(k, _)| !known.iter().any(|n| n.eq_ignore_ascii_case(k)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

const POOL_KNOWN: &[&str] = &[
    "poolManagementType",
    "containerType",
    "scaleConfiguration",
    "dynamicPoolConfiguration",
    "sessionNetworkConfiguration",
    "customContainerTemplate",
    "poolManagementEndpoint",
    "provisioningState",
];

/// Validates session pool `properties` (a PUT body's, or the merge of a PATCH into the stored
/// ones). Read-only properties in the input are ignored; the caller sets them.
pub fn session_pool_properties(input: &Value) -> Result<SessionPoolProperties, ApiError> {
    const P: &str = "properties";
    let obj = &properties_object(input)?;

    let pool_management_type = match opt_str(obj, "poolManagementType", P)? {
        None => "Dynamic",
        Some(v) if v.eq_ignore_ascii_case("Dynamic") => "Dynamic",
        Some(v) if v.eq_ignore_ascii_case("Manual") => return Err(ApiError::unsupported_pool_management_type(v)),
        Some(v) => {
            return Err(ApiError::invalid_request_content(format!(
                "'properties.poolManagementType' has the unknown value '{v}'; only 'Dynamic' is supported."
            ))
            .with_target("properties.poolManagementType"))
        }
    };
    let container_type = match opt_str(obj, "containerType", P)? {
        None => "Shell",
        Some(v) if v.eq_ignore_ascii_case("Shell") => "Shell",
        Some(v) => return Err(ApiError::unsupported_container_type(v)),
    };

    let scale = match field(obj, "scaleConfiguration") {
        None => Map::new(),
        Some(v) => as_object(v, "properties.scaleConfiguration")?.clone(),
    };
    let sp = "properties.scaleConfiguration";
    let max =
        opt_u32(&scale, "maxConcurrentSessions", sp)?.unwrap_or(DEFAULT_MAX_CONCURRENT_SESSIONS);
    if max < 1 {
        return Err(ApiError::invalid_parameter(
            "properties.scaleConfiguration.maxConcurrentSessions",
            "maxConcurrentSessions must be at least 1.",
        ));
    }
    let ready = opt_u32(&scale, "readySessionInstances", sp)?.unwrap_or(max.min(1));
    if ready > max {
        return Err(ApiError::invalid_parameter(
            "properties.scaleConfiguration.readySessionInstances",
            format!(
                "readySessionInstances ({ready}) must not exceed maxConcurrentSessions ({max})."
            ),
        ));
    }

    let dynamic_pool_configuration =
        dynamic_pool_configuration(field(obj, "dynamicPoolConfiguration"))?;

    let status = match field(obj, "sessionNetworkConfiguration") {
        None => "EgressDisabled",
        Some(v) => {
            let net = as_object(v, "properties.sessionNetworkConfiguration")?;
            match opt_str(net, "status", "properties.sessionNetworkConfiguration")? {
                None => "EgressDisabled",
                Some(s) => enum_value(
                    s,
                    &["EgressEnabled", "EgressDisabled"],
                    "properties.sessionNetworkConfiguration.status",
                )?,
            }
        }
    };

    let custom_container_template = match field(obj, "customContainerTemplate") {
        None => None,
        Some(v) => {
            validate_container_template(v)?;
            Some(v.clone())
        }
    };

    Ok(SessionPoolProperties {
        pool_management_type: pool_management_type.into(),
        container_type: container_type.into(),
        scale_configuration: ScaleConfiguration {
            max_concurrent_sessions: max,
            ready_session_instances: ready,
        },
        dynamic_pool_configuration,
        session_network_configuration: SessionNetworkConfiguration {
            status: status.into(),
        },
        custom_container_template,
        pool_management_endpoint: None,
        provisioning_state: None,
        extra: extras(obj, POOL_KNOWN),
    })
}

fn dynamic_pool_configuration(v: Option<&Value>) -> Result<DynamicPoolConfiguration, ApiError> {
    let dp = "properties.dynamicPoolConfiguration";
    let timed_default = LifecycleConfiguration::Timed {
        cooldown_period_in_seconds: DEFAULT_COOLDOWN_SECONDS,
    };
    let Some(v) = v else {
        return Ok(with_legacy_echo(timed_default));
    };
    let obj = as_object(v, dp)?;
    let lifecycle = if let Some(lc) = field(obj, "lifecycleConfiguration") {
        let lp = "properties.dynamicPoolConfiguration.lifecycleConfiguration";
        let lc = as_object(lc, lp)?;
        let kind = opt_str(lc, "lifecycleType", lp)?.unwrap_or("Timed");
        match enum_value(
            kind,
            &["Timed", "OnContainerExit"],
            &format!("{lp}.lifecycleType"),
        )? {
            "Timed" => LifecycleConfiguration::Timed {
                cooldown_period_in_seconds: positive(lc, "cooldownPeriodInSeconds", lp)?
                    .unwrap_or(DEFAULT_COOLDOWN_SECONDS),
            },
            _ => LifecycleConfiguration::OnContainerExit {
                max_alive_period_in_seconds: positive(lc, "maxAlivePeriodInSeconds", lp)?
                    .unwrap_or(DEFAULT_MAX_ALIVE_SECONDS),
            },
        }
    } else {
        // The older shape: executionType + cooldownPeriodInSeconds directly in the object.
        if let Some(kind) = opt_str(obj, "executionType", dp)? {
            enum_value(kind, &["Timed"], &format!("{dp}.executionType"))?;
        }
        LifecycleConfiguration::Timed {
            cooldown_period_in_seconds: positive(obj, "cooldownPeriodInSeconds", dp)?
                .unwrap_or(DEFAULT_COOLDOWN_SECONDS),
        }
    };
    Ok(with_legacy_echo(lifecycle))
}

fn positive(obj: &Map<String, Value>, key: &str, path: &str) -> Result<Option<u32>, ApiError> {
    match opt_u32(obj, key, path)? {
        Some(0) => Err(ApiError::invalid_parameter(
            &format!("{path}.{key}"),
            format!("{key} must be at least 1."),
        )),
        other => Ok(other),
    }
}

fn with_legacy_echo(lifecycle: LifecycleConfiguration) -> DynamicPoolConfiguration {
    let (execution_type, cooldown) = match lifecycle {
        LifecycleConfiguration::Timed {
            cooldown_period_in_seconds,
        } => (Some("Timed".to_string()), Some(cooldown_period_in_seconds)),
        LifecycleConfiguration::OnContainerExit { .. } => (None, None),
    };
    DynamicPoolConfiguration {
        lifecycle_configuration: lifecycle,
        execution_type,
        cooldown_period_in_seconds: cooldown,
    }
}

fn validate_container_template(v: &Value) -> Result<(), ApiError> {
    let tp = "properties.customContainerTemplate";
    let obj = as_object(v, tp)?;
    let Some(containers) = field(obj, "containers") else {
        return Ok(());
    };
    let containers = containers
        .as_array()
        .ok_or_else(|| wrong_type(&format!("{tp}.containers"), "an array"))?;
    for (i, c) in containers.iter().enumerate() {
        let cp = format!("{tp}.containers[{i}]");
        let c = as_object(c, &cp)?;
        opt_str(c, "image", &cp)?;
        let Some(res) = field(c, "resources") else {
            continue;
        };
        let rp = format!("{cp}.resources");
        let res = as_object(res, &rp)?;
        if let Some(cpu) = field(res, "cpu") {
            match cpu.as_f64() {
                Some(x) if x > 0.0 && x <= 1024.0 => {}
                _ => {
                    return Err(wrong_type(
                        &format!("{rp}.cpu"),
                        "a positive number of cores",
                    ))
                }
            }
        }
        if let Some(mem) = opt_str(res, "memory", &rp)? {
            if memory_bytes(mem).is_none() {
                return Err(ApiError::invalid_parameter(
                    &format!("{rp}.memory"),
                    format!("memory '{mem}' is not a quantity such as '512Mi' or '1Gi'."),
                ));
            }
        }
    }
    Ok(())
}

/// Parses a Kubernetes-style memory quantity (`1Gi`, `512Mi`, `1G`, `1000000`) into bytes.
pub fn memory_bytes(q: &str) -> Option<u64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(q.len());
    let (num, unit) = q.split_at(split);
    let num: f64 = num.parse().ok()?;
    let mult: u64 = match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "k" | "K" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        _ => return None,
    };
    let bytes = num * mult as f64;
    (bytes.is_finite() && bytes >= 1.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

const CLUSTER_KNOWN: &[&str] = &[
    "limits",
    "egress",
    "commandTimeoutInSeconds",
    "kubeconfig",
    "hasKubeconfig",
    "provisioningState",
];

/// Validates managed cluster `properties`. `kubeconfig` is kept in the result so the caller can
/// store it apart; the caller must strip it before answering.
pub fn managed_cluster_properties(input: &Value) -> Result<ManagedClusterProperties, ApiError> {
    const P: &str = "properties";
    let obj = &properties_object(input)?;
    let lp = "properties.limits";
    let limits = match field(obj, "limits") {
        None => Map::new(),
        Some(v) => as_object(v, lp)?.clone(),
    };
    let cpu = match field(&limits, "cpu") {
        None => 1.0,
        Some(v) => match v.as_f64() {
            Some(x) if x > 0.0 && x <= 1024.0 => x,
            _ => {
                return Err(wrong_type(
                    "properties.limits.cpu",
                    "a positive number of cores",
                ))
            }
        },
    };
    let memory = opt_str(&limits, "memory", lp)?.unwrap_or("1Gi");
    if memory_bytes(memory).is_none() {
        return Err(ApiError::invalid_parameter(
            "properties.limits.memory",
            format!("memory '{memory}' is not a quantity such as '512Mi' or '1Gi'."),
        ));
    }
    let pids = positive(&limits, "pids", lp)?.unwrap_or(512);
    let egress = match opt_str(obj, "egress", P)? {
        None => "Disabled",
        Some(v) => enum_value(v, &["Enabled", "Disabled"], "properties.egress")?,
    };
    let timeout =
        positive(obj, "commandTimeoutInSeconds", P)?.unwrap_or(DEFAULT_COMMAND_TIMEOUT_SECONDS);
    let kubeconfig = opt_str(obj, "kubeconfig", P)?.map(str::to_owned);
    Ok(ManagedClusterProperties {
        limits: ClusterLimits {
            cpu,
            memory: memory.to_owned(),
            pids,
        },
        egress: egress.into(),
        command_timeout_in_seconds: timeout,
        has_kubeconfig: kubeconfig.is_some(),
        kubeconfig,
        provisioning_state: None,
        extra: extras(obj, CLUSTER_KNOWN),
    })
}

/// Applies a JSON merge patch (RFC 7386): objects merge key by key, `null` removes, anything else
/// replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in patch {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pool_defaults() {
        let p = session_pool_properties(&json!({})).unwrap();
        assert_eq!(p.container_type, "Shell");
        assert_eq!(p.scale_configuration.max_concurrent_sessions, 10);
        assert_eq!(p.session_network_configuration.status, "EgressDisabled");
        assert_eq!(
            p.dynamic_pool_configuration.lifecycle_configuration,
            LifecycleConfiguration::Timed {
                cooldown_period_in_seconds: 300
            }
        );
    }

    #[test]
    fn pool_lifecycle_shapes() {
        let old = json!({"dynamicPoolConfiguration":{"executionType":"Timed","cooldownPeriodInSeconds":60}});
        let p = session_pool_properties(&old).unwrap();
        assert_eq!(
            p.dynamic_pool_configuration.lifecycle_configuration,
            LifecycleConfiguration::Timed {
                cooldown_period_in_seconds: 60
            }
        );
        let new = json!({"dynamicPoolConfiguration":{"lifecycleConfiguration":{"lifecycleType":"onContainerExit","maxAlivePeriodInSeconds":99}}});
        let p = session_pool_properties(&new).unwrap();
        assert_eq!(
            p.dynamic_pool_configuration.lifecycle_configuration,
            LifecycleConfiguration::OnContainerExit {
                max_alive_period_in_seconds: 99
            }
        );
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(
            v["dynamicPoolConfiguration"]["lifecycleConfiguration"]["lifecycleType"],
            "OnContainerExit"
        );
    }

    #[test]
    fn pool_errors() {
        let cases = [
            (
                json!({"poolManagementType":"Manual"}),
                "UnsupportedPoolManagementType",
            ),
            (
                json!({"containerType":"PythonLTS"}),
                "UnsupportedContainerType",
            ),
            (
                json!({"scaleConfiguration":{"maxConcurrentSessions":"5"}}),
                "InvalidRequestContent",
            ),
            (
                json!({"scaleConfiguration":{"maxConcurrentSessions":0}}),
                "InvalidParameter",
            ),
            (
                json!({"scaleConfiguration":{"maxConcurrentSessions":2,"readySessionInstances":3}}),
                "InvalidParameter",
            ),
            (
                json!({"sessionNetworkConfiguration":{"status":"Open"}}),
                "InvalidRequestContent",
            ),
            (
                json!({"dynamicPoolConfiguration":{"lifecycleConfiguration":{"lifecycleType":"Forever"}}}),
                "InvalidRequestContent",
            ),
            (
                json!({"customContainerTemplate":{"containers":[{"resources":{"memory":"lots"}}]}}),
                "InvalidParameter",
            ),
            (json!([1]), "InvalidRequestContent"),
        ];
        for (input, code) in cases {
            let err = session_pool_properties(&input).unwrap_err();
            assert_eq!(err.code, code, "{input}");
            assert_eq!(err.status, 400);
        }
    }

    #[test]
    fn memory_quantities() {
        assert_eq!(memory_bytes("1Gi"), Some(1 << 30));
        assert_eq!(memory_bytes("512Mi"), Some(512 << 20));
        assert_eq!(memory_bytes("0.5Gi"), Some(1 << 29));
        assert_eq!(memory_bytes("1000"), Some(1000));
        assert_eq!(memory_bytes("1Xi"), None);
        assert_eq!(memory_bytes(""), None);
    }

    #[test]
    fn cluster_properties() {
        let c =
            managed_cluster_properties(&json!({"kubeconfig":"x","limits":{"pids":10}})).unwrap();
        assert!(c.has_kubeconfig);
        assert_eq!(c.limits.pids, 10);
        assert_eq!(c.command_timeout_in_seconds, 300);
        assert_eq!(
            managed_cluster_properties(&json!({"egress":"maybe"}))
                .unwrap_err()
                .code,
            "InvalidRequestContent"
        );
    }

    #[test]
    fn merge() {
        let mut t = json!({"a":{"b":1,"c":2},"d":3});
        merge_patch(&mut t, &json!({"a":{"b":5,"c":null},"e":1}));
        assert_eq!(t, json!({"a":{"b":5},"d":3,"e":1}));
    }
}
