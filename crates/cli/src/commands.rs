//! The client commands: each maps its arguments onto `sandpool-client` calls and answers the
//! JSON to print (or nothing).

use std::path::Path;

use anyhow::{anyhow, bail, Context};
use sandpool_client::{ids, Client, PoolSpec, Resource};
use serde_json::{json, Map, Value};

use crate::args::{
    AssignmentCmd, ClusterCmd, Command, CredentialCmd, DefinitionCmd, DeploymentCmd, Egress,
    GroupCmd, IdentityCmd, PoolCmd, PoolSettings, ResourceCmd, RoleCmd,
};

fn out(r: Resource) -> anyhow::Result<Option<Value>> {
    Ok(Some(serde_json::to_value(r)?))
}

fn out_list(r: Vec<Resource>) -> anyhow::Result<Option<Value>> {
    Ok(Some(serde_json::to_value(r)?))
}

/// Runs one client command.
pub async fn run(client: &Client, command: Command) -> anyhow::Result<Option<Value>> {
    match command {
        Command::Group(c) => group(client, c).await,
        Command::Pool(c) => pool(client, c).await,
        Command::Deployment(c) => deployment(client, c).await,
        Command::Identity(c) => identity(client, c).await,
        Command::Cluster(c) => cluster(client, c).await,
        Command::Role(c) => role(client, c).await,
        Command::Resource(c) => resource(client, c).await,
        Command::Serve(_) | Command::Doctor => bail!("not a client command"),
        // Needs the global options; main.rs runs it (crate::auth::token_command).
        Command::Token(_) => bail!("not a resource command"),
        Command::Sessions(c) => crate::sessions::run(client, c).await,
    }
}

async fn group(client: &Client, c: GroupCmd) -> anyhow::Result<Option<Value>> {
    match c {
        GroupCmd::Create { name, location } => {
            out(client.create_group(&name.name, &location, None).await?)
        }
        GroupCmd::Show { name } => out(client.get_group(&name.name).await?),
        GroupCmd::List => out_list(client.list_groups().await?),
        GroupCmd::Delete { name, yes: _ } => {
            client.delete_group(&name.name).await?;
            Ok(None)
        }
    }
}

/// The location of a new resource: as given, else its group's (which also checks the group).
async fn location_or_group(
    client: &Client,
    given: Option<String>,
    rg: &str,
) -> anyhow::Result<String> {
    match given {
        Some(l) => Ok(l),
        None => Ok(client
            .get_group(rg)
            .await?
            .location
            .unwrap_or_else(|| "local".to_string())),
    }
}

fn spec(s: PoolSettings) -> PoolSpec {
    PoolSpec {
        location: s.location,
        container_type: s.container_type,
        max_sessions: s.max_sessions,
        ready_sessions: s.ready_sessions,
        cooldown_seconds: s.cooldown_period,
        network_status: s.network_status.map(|n| n.as_str().to_string()),
        cpu: s.cpu,
        memory: s.memory,
    }
}

async fn pool(client: &Client, c: PoolCmd) -> anyhow::Result<Option<Value>> {
    match c {
        PoolCmd::Create { target, settings } => {
            let spec = spec(settings);
            let location =
                location_or_group(client, spec.location.clone(), &target.resource_group).await?;
            let body = spec.create_body(&location);
            out(client
                .create_pool(&target.resource_group, &target.name, &body)
                .await?)
        }
        PoolCmd::Show { target } => out(client
            .get_pool(&target.resource_group, &target.name)
            .await?),
        PoolCmd::List { scope } => {
            out_list(client.list_pools(scope.resource_group.as_deref()).await?)
        }
        PoolCmd::Update { target, settings } => {
            let spec = spec(settings);
            if spec == PoolSpec::default() {
                bail!("nothing to update: give at least one setting (e.g. --max-sessions 10)");
            }
            out(client
                .update_pool(&target.resource_group, &target.name, &spec.patch_body())
                .await?)
        }
        PoolCmd::Delete { target } => {
            client
                .delete_pool(&target.resource_group, &target.name)
                .await?;
            Ok(None)
        }
    }
}

async fn identity(client: &Client, c: IdentityCmd) -> anyhow::Result<Option<Value>> {
    match c {
        IdentityCmd::Create { target, location } => {
            let location = location_or_group(client, location, &target.resource_group).await?;
            out(client
                .create_identity(&target.resource_group, &target.name, &location)
                .await?)
        }
        IdentityCmd::Show { target } => out(client
            .get_identity(&target.resource_group, &target.name)
            .await?),
        IdentityCmd::List { scope } => out_list(
            client
                .list_identities(scope.resource_group.as_deref())
                .await?,
        ),
        IdentityCmd::Delete { target } => {
            client
                .delete_identity(&target.resource_group, &target.name)
                .await?;
            Ok(None)
        }
        IdentityCmd::Credential(CredentialCmd::Reset { target }) => Ok(Some(
            client
                .reset_identity_secret(&target.resource_group, &target.name)
                .await?,
        )),
    }
}

async fn cluster(client: &Client, c: ClusterCmd) -> anyhow::Result<Option<Value>> {
    match c {
        ClusterCmd::Create {
            target,
            location,
            cpu,
            memory,
            pids,
            egress,
            command_timeout,
            kubeconfig,
        } => {
            let location = location_or_group(client, location, &target.resource_group).await?;
            let mut props = Map::new();
            let mut limits = Map::new();
            if let Some(c) = cpu {
                limits.insert("cpu".into(), json!(c));
            }
            if let Some(m) = memory {
                limits.insert("memory".into(), json!(m));
            }
            if let Some(p) = pids {
                limits.insert("pids".into(), json!(p));
            }
            if !limits.is_empty() {
                props.insert("limits".into(), Value::Object(limits));
            }
            if let Some(e) = egress {
                props.insert(
                    "egress".into(),
                    json!(if e == Egress::Enabled {
                        "Enabled"
                    } else {
                        "Disabled"
                    }),
                );
            }
            if let Some(t) = command_timeout {
                props.insert("commandTimeoutInSeconds".into(), json!(t));
            }
            if let Some(path) = kubeconfig {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading kubeconfig {}", path.display()))?;
                props.insert("kubeconfig".into(), json!(text));
            }
            let body = json!({"location": location, "properties": Value::Object(props)});
            out(client
                .create_cluster(&target.resource_group, &target.name, &body)
                .await?)
        }
        ClusterCmd::Show { target } => out(client
            .get_cluster(&target.resource_group, &target.name)
            .await?),
        ClusterCmd::List { scope } => out_list(
            client
                .list_clusters(scope.resource_group.as_deref())
                .await?,
        ),
        ClusterCmd::Delete { target } => {
            client
                .delete_cluster(&target.resource_group, &target.name)
                .await?;
            Ok(None)
        }
        ClusterCmd::Command(c) => crate::runcommand::run(client, c).await,
    }
}

fn read_json_file(path: &Path, what: &str) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading {what} {}", path.display()))?;
    sandpool_template::parse(&text).map_err(|e| anyhow!("{what} {}: {}", path.display(), e.message))
}

/// Merges `--parameters` arguments: `name=value`, `@file.json` (a parameters file or a bare
/// object) or inline JSON. Later arguments override earlier ones, as with `az`.
pub fn parameters(args: &[String]) -> anyhow::Result<Option<Value>> {
    let mut merged = Map::new();
    let mut add_object = |v: Value, from: &str| -> anyhow::Result<()> {
        let v = match v {
            Value::Object(mut m)
                if m.contains_key("$schema") || m.contains_key("contentVersion") =>
            {
                m.remove("parameters").unwrap_or(Value::Object(Map::new()))
            }
            other => other,
        };
        let Value::Object(m) = v else {
            bail!("parameters from {from} must be a JSON object")
        };
        for (k, v) in m {
            let wrapped = match v {
                Value::Object(inner)
                    if inner.contains_key("value") || inner.contains_key("reference") =>
                {
                    Value::Object(inner)
                }
                other => json!({"value": other}),
            };
            merged.insert(k, wrapped);
        }
        Ok(())
    };
    for arg in args {
        if let Some(path) = arg.strip_prefix('@') {
            add_object(read_json_file(Path::new(path), "parameters file")?, arg)?;
        } else if arg.trim_start().starts_with('{') {
            let v = sandpool_template::parse(arg)
                .map_err(|e| anyhow!("--parameters: {}", e.message))?;
            add_object(v, "the command line")?;
        } else {
            let (k, v) = arg.split_once('=').ok_or_else(|| {
                anyhow!("--parameters '{arg}': expected name=value, @file.json or a JSON object")
            })?;
            if k.trim().is_empty() {
                bail!("--parameters '{arg}': the parameter name is empty");
            }
            // Objects and arrays can be given as JSON; everything else stays a string and the
            // server converts it to the type the template declares.
            let value = match v.trim_start().chars().next() {
                Some('{' | '[') => serde_json::from_str(v).unwrap_or_else(|_| json!(v)),
                _ => json!(v),
            };
            add_object(json!({ k.trim(): value }), "the command line")?;
        }
    }
    Ok(if merged.is_empty() {
        None
    } else {
        Some(Value::Object(merged))
    })
}

async fn deployment(client: &Client, c: DeploymentCmd) -> anyhow::Result<Option<Value>> {
    match c {
        DeploymentCmd::Create {
            resource_group,
            name,
            template_file,
            parameters: params,
        } => {
            let template = read_json_file(&template_file, "template file")?;
            let name = match name {
                Some(n) => n,
                None => template_file
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .ok_or_else(|| {
                        anyhow!("cannot derive a deployment name from the file name; pass -n")
                    })?,
            };
            let params = parameters(&params)?;
            Ok(Some(
                client
                    .create_deployment(&resource_group, &name, template, params)
                    .await?,
            ))
        }
        DeploymentCmd::Show { target } => Ok(Some(
            client
                .get_deployment(&target.resource_group, &target.name)
                .await?,
        )),
    }
}

fn is_uuid(s: &str) -> bool {
    uuid::Uuid::parse_str(s).is_ok()
}

async fn role(client: &Client, c: RoleCmd) -> anyhow::Result<Option<Value>> {
    let sub_scope = ids::subscription(client.subscription());
    match c {
        RoleCmd::Assignment(AssignmentCmd::Create {
            assignee,
            role,
            scope,
        }) => {
            let role_id = if role.starts_with('/') {
                role
            } else if is_uuid(&role) {
                format!("{sub_scope}/providers/{}/{role}", ids::ROLE_DEFINITIONS)
            } else {
                let found = client.list_role_definitions(&scope, Some(&role)).await?;
                let id = found
                    .iter()
                    .find(|d| {
                        d.pointer("/properties/roleName")
                            .and_then(Value::as_str)
                            .is_some_and(|n| n.eq_ignore_ascii_case(&role))
                    })
                    .and_then(|d| d.get("id").and_then(Value::as_str))
                    .ok_or_else(|| anyhow!("no role named '{role}' at scope {scope}"))?;
                id.to_string()
            };
            let name = uuid::Uuid::new_v4().to_string();
            Ok(Some(
                client
                    .create_role_assignment(&scope, &name, &role_id, &assignee)
                    .await?,
            ))
        }
        RoleCmd::Assignment(AssignmentCmd::List { scope, assignee }) => {
            let scope = scope.unwrap_or(sub_scope);
            Ok(Some(Value::Array(
                client
                    .list_role_assignments(&scope, assignee.as_deref())
                    .await?,
            )))
        }
        RoleCmd::Assignment(AssignmentCmd::Delete { ids }) => {
            for id in ids {
                client.delete(&id).await?;
            }
            Ok(None)
        }
        RoleCmd::Definition(DefinitionCmd::List { scope, name }) => {
            let scope = scope.unwrap_or(sub_scope);
            Ok(Some(Value::Array(
                client
                    .list_role_definitions(&scope, name.as_deref())
                    .await?,
            )))
        }
    }
}

async fn resource(client: &Client, c: ResourceCmd) -> anyhow::Result<Option<Value>> {
    match c {
        ResourceCmd::Show { ids } => {
            let mut found = Vec::with_capacity(ids.len());
            for id in &ids {
                found.push(client.get(id).await?);
            }
            Ok(Some(if found.len() == 1 {
                found.remove(0)
            } else {
                Value::Array(found)
            }))
        }
        ResourceCmd::Delete { ids } => {
            for id in &ids {
                client.delete(id).await?;
            }
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parameters_from_pairs_json_and_later_wins() {
        let p = parameters(&strings(&[
            "a=1",
            "b=x=y",
            r#"{"c": {"value": [1]}, "a": 2}"#,
            "o={\"k\":1}",
        ]))
        .unwrap();
        assert_eq!(
            p,
            Some(
                json!({"a": {"value": 2}, "b": {"value": "x=y"}, "c": {"value": [1]}, "o": {"value": {"k": 1}}})
            )
        );
        assert_eq!(parameters(&[]).unwrap(), None);
    }

    #[test]
    fn parameters_file_with_comments_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("p.json");
        std::fs::write(&f, "{ # a parameters file\n \"$schema\": \"x#\", \"parameters\": {\"n\": {\"value\": \"v\"}}}").unwrap();
        let p = parameters(&[format!("@{}", f.display())]).unwrap();
        assert_eq!(p, Some(json!({"n": {"value": "v"}})));
    }

    #[test]
    fn bad_parameters_are_clear_errors() {
        assert!(parameters(&strings(&["novalue"]))
            .unwrap_err()
            .to_string()
            .contains("name=value"));
        assert!(parameters(&strings(&["=v"])).is_err());
        assert!(parameters(&strings(&["@/nonexistent/p.json"])).is_err());
        assert!(parameters(&strings(&["{broken"])).is_err());
    }
}
