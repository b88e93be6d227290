//! Run Command: submit a command (with a zip context) to a managed cluster, read and await its
//! result (`202` while it runs, then `200` with exit code and logs).

use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::header::RETRY_AFTER;
use reqwest::Method;
use serde_json::{json, Value};

use crate::{ids, Client, ClientError};

/// A command's result as the server reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandResult {
    pub id: String,
    /// `Running`, `Succeeded` or `Failed`.
    pub provisioning_state: String,
    /// Set when the command ran to its end (`Succeeded`), zero or not.
    pub exit_code: Option<i32>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub logs: String,
    /// Why a `Failed` command did not run or was stopped.
    pub reason: Option<String>,
}

impl CommandResult {
    pub fn is_finished(&self) -> bool {
        self.provisioning_state != "Running"
    }

    fn from_body(url: &str, status: u16, body: Option<Value>) -> Result<Self, ClientError> {
        let invalid = |message: &str| ClientError::InvalidResponse {
            url: url.to_string(),
            status,
            message: message.to_string(),
        };
        let body = body.ok_or_else(|| invalid("a command result has no body"))?;
        let p = &body["properties"];
        let text = |v: &Value| v.as_str().map(str::to_string);
        Ok(CommandResult {
            id: text(&body["id"]).ok_or_else(|| invalid("a command result has no id"))?,
            provisioning_state: text(&p["provisioningState"])
                .ok_or_else(|| invalid("a command result has no provisioningState"))?,
            exit_code: p["exitCode"].as_i64().and_then(|c| i32::try_from(c).ok()),
            started_at: text(&p["startedAt"]),
            finished_at: text(&p["finishedAt"]),
            logs: text(&p["logs"]).unwrap_or_default(),
            reason: text(&p["reason"]),
        })
    }
}

/// The id in a `…/commandResults/{id}?…` URL.
pub fn command_id_from_location(location: &str) -> Option<String> {
    let (_, rest) = location.rsplit_once("/commandResults/")?;
    let id = rest.split(['?', '#']).next()?;
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric())).then(|| id.to_string())
}

impl Client {
    /// Submits `command` with `context` (the bytes of a zip, may be empty) and answers the
    /// command id.
    pub async fn run_command(
        &self,
        rg: &str,
        cluster: &str,
        command: &str,
        context: &[u8],
    ) -> Result<String, ClientError> {
        let path = format!(
            "{}/runCommand",
            ids::managed_cluster(self.subscription(), rg, cluster)
        );
        let body = json!({
            "command": command,
            "context": base64::engine::general_purpose::STANDARD.encode(context),
            "clusterToken": "",
        });
        let r = self.request(Method::POST, &path, &[], Some(&body)).await?;
        let location = r.header("location").unwrap_or_default();
        command_id_from_location(location).ok_or_else(|| ClientError::InvalidResponse {
            url: path.clone(),
            status: r.status,
            message: format!("the answer has no command result Location (got '{location}')"),
        })
    }

    /// The result of a command as it stands (`Running` while it runs).
    pub async fn command_result(
        &self,
        rg: &str,
        cluster: &str,
        id: &str,
    ) -> Result<CommandResult, ClientError> {
        self.command_result_with_retry(rg, cluster, id)
            .await
            .map(|(r, _)| r)
    }

    async fn command_result_with_retry(
        &self,
        rg: &str,
        cluster: &str,
        id: &str,
    ) -> Result<(CommandResult, Option<Duration>), ClientError> {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(ClientError::InvalidArgument(format!(
                "'{id}' is not a command id (letters and digits)"
            )));
        }
        let path = format!(
            "{}/commandResults/{id}",
            ids::managed_cluster(self.subscription(), rg, cluster)
        );
        let r = self.request(Method::GET, &path, &[], None).await?;
        let retry = r
            .headers
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        Ok((CommandResult::from_body(&path, r.status, r.body)?, retry))
    }

    /// Polls until the command is finished; `on_poll` runs after every poll that found it
    /// still running (a CLI ticks its spinner there). Gives up after the client's poll timeout.
    pub async fn wait_command(
        &self,
        rg: &str,
        cluster: &str,
        id: &str,
        mut on_poll: impl FnMut(&CommandResult),
    ) -> Result<CommandResult, ClientError> {
        let deadline = Instant::now() + self.poll_timeout;
        loop {
            let (r, retry) = self.command_result_with_retry(rg, cluster, id).await?;
            if r.is_finished() {
                return Ok(r);
            }
            on_poll(&r);
            if Instant::now() >= deadline {
                return Err(ClientError::Timeout {
                    url: id.to_string(),
                });
            }
            let wait = retry
                .unwrap_or(self.poll_interval)
                .min(self.poll_interval)
                .max(Duration::from_millis(100));
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_from_locations() {
        assert_eq!(
            command_id_from_location(
                "http://h/subscriptions/s/resourceGroups/r/providers/Microsoft.ContainerService/managedClusters/c/commandResults/ab12?api-version=1"
            ),
            Some("ab12".into())
        );
        assert_eq!(command_id_from_location("http://h/commandResults/"), None);
        assert_eq!(
            command_id_from_location("http://h/commandResults/a-b"),
            None
        );
        assert_eq!(command_id_from_location(""), None);
    }

    #[test]
    fn result_bodies() {
        let r = CommandResult::from_body(
            "u",
            200,
            Some(json!({"id":"x1","properties":{"provisioningState":"Succeeded","exitCode":3,"logs":"hi"}})),
        )
        .expect("parsed");
        assert_eq!(r.exit_code, Some(3));
        assert!(r.is_finished());
        assert!(CommandResult::from_body("u", 200, Some(json!({"id":"x"}))).is_err());
        assert!(CommandResult::from_body("u", 200, None).is_err());
    }
}
