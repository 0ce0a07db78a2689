//! The `status` command: reports on a running instance from outside it.

use std::time::SystemTime;

use crate::config::Config;
use crate::state::state_file_path;
use crate::state::status::{Status, read};

/// Exit status: the instance runs.
const RUNNING: i32 = 0;
/// Exit status (LSB): the instance is not running.
const STOPPED: i32 = 3;
/// Exit status (LSB): the status is unknown.
const UNKNOWN: i32 = 4;

/// Prints the status of `config`'s instance, Skitai's way (`name
/// [running:pid]` or `name [stopped]`) then the details, or as JSON;
/// returns the exit status.
pub(crate) fn print(config: &Config, json: bool) -> i32 {
    let path = state_file_path(config);
    let name = &config.name;
    let now = SystemTime::now();
    let (code, text, value) = match read(&path) {
        Status::Stopped => (
            STOPPED,
            format!("{name} [stopped]\n  (no state file at {})\n", path.display()),
            serde_json::json!({"name": name, "running": false}),
        ),
        Status::Stale(s) => (
            STOPPED,
            format!(
                "{name} [stopped] (stale state file {} of pid {}; it is replaced at the next start)\n",
                path.display(),
                s.pid
            ),
            serde_json::json!({"name": name, "running": false, "stale_pid": s.pid}),
        ),
        Status::Running(s) => (
            RUNNING,
            format!("{name} [running:{}]\n  state file  {}\n{}", s.pid, path.display(), s.to_text(now)),
            s.to_json(true, now),
        ),
        Status::Unreadable(why) => (
            UNKNOWN,
            format!("{name} [unknown]: {why}\n"),
            serde_json::json!({"name": name, "running": null, "error": why}),
        ),
    };
    if json {
        println!("{value}");
    } else {
        print!("{text}");
    }
    code
}
