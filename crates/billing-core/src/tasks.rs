//! Asynchronous tasks: records, the state machine and the rules that need no I/O.
//!
//! A task moves `queued → running → succeeded | failed | canceled`, and `running → queued`
//! again when a worker's lease runs out and attempts remain. Its credits are held when it is
//! created; success captures (at most the hold), failure and cancel void. Every move is one
//! conditional store transaction together with its ledger operation
//! ([`TaskChange`](crate::ports::TaskChange)), so two movers (a cancel racing a completion,
//! two workers after a lease ran out) cannot both win, and the ledger moves with the winner.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::ids::{AccountId, HoldId, TaskId};
use crate::ledger::Credits;

/// The state of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Waiting for a worker.
    Queued,
    /// A worker holds its lease.
    Running,
    /// Finished; its hold was captured.
    Succeeded,
    /// Failed (by the worker, its timeout or its attempts running out); its hold was voided.
    Failed,
    /// Cancelled by its owner; its hold was voided.
    Canceled,
}

impl TaskStatus {
    /// The stored and displayed name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
        }
    }

    /// Whether nothing can change it any more.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Canceled)
    }
}

/// An asynchronous task whose credits are held until it finishes. Who claimed it and when
/// are in its history ([`TaskEvent`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// Its id.
    pub id: TaskId,
    /// The account paying for it.
    pub account: AccountId,
    /// Its type (a key of the catalog's `tasks`).
    pub kind: String,
    /// Where it stands.
    pub status: TaskStatus,
    /// The client's input (a JSON object).
    pub input: serde_json::Value,
    /// The result, once succeeded.
    pub output: Option<serde_json::Value>,
    /// Why it failed.
    pub error: Option<String>,
    /// The hold paying for it.
    pub hold: Option<HoldId>,
    /// Credits held when it was created.
    pub reserved: Credits,
    /// Credits charged in the end (0 when failed or cancelled).
    pub credits_charged: Option<Credits>,
    /// Claims so far (the current claim's number while running).
    pub attempts: u32,
    /// The most claims it gets.
    pub max_attempts: u32,
    /// Until when that worker's lease lasts.
    pub lease_until: Option<OffsetDateTime>,
    /// When it fails if not finished by then.
    pub deadline: OffsetDateTime,
    /// When it was created.
    pub created_at: OffsetDateTime,
    /// When it reached a final state.
    pub finished_at: Option<OffsetDateTime>,
}

/// One move of a task, kept as its history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskEvent {
    /// The task.
    pub task: TaskId,
    /// When.
    pub at: OffsetDateTime,
    /// The state it moved to.
    pub status: TaskStatus,
    /// The claim it happened in (0 before the first).
    pub attempt: u32,
    /// Who moved it: `user`, `worker:{id}`, `system`.
    pub actor: String,
    /// Why, in a few words (`lease expired`, `timed out`, a worker's error).
    pub note: Option<String>,
}

/// Where an outbound webhook delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Not delivered yet; tried again at `next_attempt_at`.
    Pending,
    /// The endpoint answered 2xx.
    Delivered,
    /// Every attempt failed; no more will be made.
    Failed,
}

impl DeliveryStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }
}

/// A webhook telling the product that a task finished.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// Its id (`dlv_…`), also the event's id the receiver deduplicates by.
    pub id: String,
    /// The task.
    pub task: TaskId,
    /// `task.succeeded`, `task.failed` or `task.canceled`.
    pub event: String,
    /// The body sent (the event, with the task as it finished).
    pub payload: serde_json::Value,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// Attempts made.
    pub attempts: u32,
    /// When the next attempt is due (while pending).
    pub next_attempt_at: OffsetDateTime,
    /// The HTTP status of the last attempt, if one answered.
    pub last_status: Option<u16>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When it was created.
    pub created_at: OffsetDateTime,
    /// When it was delivered.
    pub delivered_at: Option<OffsetDateTime>,
}

/// Which of an account's tasks to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskFilter {
    /// Only in this state.
    pub status: Option<TaskStatus>,
    /// Only of this type.
    pub kind: Option<String>,
}

/// The event name of a final state.
pub fn event_name(status: TaskStatus) -> &'static str {
    match status {
        TaskStatus::Succeeded => "task.succeeded",
        TaskStatus::Canceled => "task.canceled",
        _ => "task.failed",
    }
}

/// When the `attempt`-th failed delivery is tried again: 10 s, doubling, at most an hour.
pub fn delivery_backoff(attempt: u32) -> time::Duration {
    let seconds = 10_i64.saturating_mul(1_i64 << attempt.saturating_sub(1).min(16));
    time::Duration::seconds(seconds.min(3_600))
}

/// Fills a prompt template: `{{name}}` becomes the input's field `name` (a string as is,
/// anything else as JSON), `{{input}}` the whole input as JSON. A field the input lacks is
/// an error naming it, so a task that cannot be run is refused when it is created.
pub fn render_prompt(template: &str, input: &serde_json::Value) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let name = after[..end].trim();
        if name == "input" {
            out.push_str(&input.to_string());
        } else {
            match input.get(name) {
                Some(serde_json::Value::String(text)) => out.push_str(text),
                Some(value) => out.push_str(&value.to_string()),
                None => return Err(format!("the input has no field `{name}`")),
            }
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The input fields a prompt template takes (`{{name}}`, not `{{input}}`), in order, once
/// each: what a task's input must hold.
pub fn prompt_fields(template: &str) -> Vec<String> {
    let mut fields: Vec<String> = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        let name = after[..end].trim();
        if name != "input" && !fields.iter().any(|f| f == name) {
            fields.push(name.to_owned());
        }
        rest = &after[end + 2..];
    }
    fields
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_template_takes_fields_and_the_whole_input() {
        let input = json!({"text": "hi there", "n": 3});
        assert_eq!(
            render_prompt("Analyse: {{text}} ({{ n }})", &input).unwrap(),
            "Analyse: hi there (3)"
        );
        assert_eq!(
            render_prompt("{{input}}", &input).unwrap(),
            input.to_string()
        );
        assert_eq!(
            render_prompt("{{missing}}", &input).unwrap_err(),
            "the input has no field `missing`"
        );
        assert_eq!(
            render_prompt("open {{ only", &input).unwrap(),
            "open {{ only"
        );
    }

    #[test]
    fn a_template_names_the_fields_it_needs() {
        assert_eq!(
            prompt_fields("{{a}} and {{ b }}, {{a}} again, {{input}}"),
            ["a", "b"]
        );
        assert!(prompt_fields("no fields").is_empty());
    }

    #[test]
    fn deliveries_back_off_to_an_hour() {
        assert_eq!(delivery_backoff(1), time::Duration::seconds(10));
        assert_eq!(delivery_backoff(2), time::Duration::seconds(20));
        assert_eq!(delivery_backoff(4), time::Duration::seconds(80));
        assert_eq!(delivery_backoff(30), time::Duration::hours(1));
    }

    #[test]
    fn final_states_are_final() {
        assert!(!TaskStatus::Queued.is_final());
        assert!(!TaskStatus::Running.is_final());
        for s in [
            TaskStatus::Succeeded,
            TaskStatus::Failed,
            TaskStatus::Canceled,
        ] {
            assert!(s.is_final());
            assert_eq!(
                serde_json::to_value(s).unwrap(),
                serde_json::Value::String(s.as_str().into())
            );
        }
    }
}
