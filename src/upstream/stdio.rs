//! Reaching an upstream that is a child process speaking MCP on stdio.
//!
//! The child gets a clean environment: only `PATH`, `HOME` and `LANG` of the
//! gateway plus the server's configured `env`, never the gateway's own
//! variables (they hold secrets). It leads a process group of its own, so
//! stopping it ends everything it started (`npx`, `uvx` and shell wrappers
//! spawn grandchildren), and its stderr goes to our log.

use std::{collections::BTreeMap, process::Stdio, sync::Arc, time::Duration};

use parking_lot::Mutex;
use process_wrap::tokio::{CommandWrap, ProcessGroup};
use rmcp::transport::TokioChildProcess;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Variables of the gateway's environment a child may inherit.
const INHERITED_VARS: &[&str] = &["PATH", "HOME", "LANG"];

/// How many stderr lines of a server are kept for status pages.
const STDERR_TAIL_LINES: usize = 50;

/// The last lines a child wrote to stderr.
#[derive(Clone, Default)]
pub struct StderrTail(Arc<Mutex<std::collections::VecDeque<String>>>);

impl StderrTail {
    fn push(&self, line: String) {
        let mut lines = self.0.lock();
        if lines.len() == STDERR_TAIL_LINES {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    pub fn lines(&self) -> Vec<String> {
        self.0.lock().iter().cloned().collect()
    }
}

/// A spawned child: the MCP transport and its process group id.
pub struct Spawned {
    pub transport: TokioChildProcess,
    pub pgid: Option<i32>,
}

/// Spawns `command args` for server `server` with a clean environment.
pub fn spawn(
    server: &str,
    command: &str,
    args: &[String],
    env: &BTreeMap<String, String>,
    cwd: Option<&str>,
    tail: &StderrTail,
) -> std::io::Result<Spawned> {
    let mut cmd = tokio::process::Command::new(command);
    cmd.args(args).env_clear();
    for name in INHERITED_VARS {
        if let Ok(value) = std::env::var(name) {
            cmd.env(name, value);
        }
    }
    cmd.envs(env);
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    let mut wrapped = CommandWrap::from(cmd);
    wrapped.wrap(ProcessGroup::leader());
    let (transport, stderr) = TokioChildProcess::builder(wrapped)
        .stderr(Stdio::piped())
        .spawn()?;
    let pgid = transport.id().and_then(|pid| i32::try_from(pid).ok());
    if let Some(stderr) = stderr {
        let server = server.to_owned();
        let tail = tail.clone();
        let secrets = Redactor::of(env);
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let line = secrets.redact(line);
                tracing::info!(target: "metamcp::upstream::stderr", server = %server, "{line}");
                tail.push(line);
            }
        });
    }
    tracing::info!(server, command, pgid, "spawned stdio upstream");
    Ok(Spawned { transport, pgid })
}

/// Hides the values of a server's `env` in what it writes to stderr: they
/// are where its credentials live, and a server that prints its
/// configuration would otherwise put them into our log and status page.
/// Values shorter than 8 bytes (`TZ=UTC`, flags) are left alone: too common
/// to be secrets, and replacing them would garble every line.
struct Redactor(Vec<String>);

impl Redactor {
    const MIN_LEN: usize = 8;

    fn of(env: &BTreeMap<String, String>) -> Self {
        let mut values: Vec<String> = env
            .values()
            .filter(|v| v.len() >= Self::MIN_LEN)
            .cloned()
            .collect();
        // Longest first: a value containing another is hidden whole.
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        Self(values)
    }

    fn redact(&self, line: String) -> String {
        self.0.iter().fold(line, |line, secret| {
            if line.contains(secret.as_str()) {
                line.replace(secret.as_str(), "***")
            } else {
                line
            }
        })
    }
}

/// Ends a process group: SIGTERM, then SIGKILL to whatever is left after
/// `grace`. The group leader itself is reaped by its transport; this makes
/// sure its descendants do not outlive it.
pub async fn kill_group(pgid: i32, grace: Duration) {
    if pgid <= 1 {
        return;
    }
    // SAFETY: killpg only sends a signal; a stale group id fails with ESRCH.
    if unsafe { libc::killpg(pgid, libc::SIGTERM) } != 0 {
        return; // the group is already gone
    }
    let deadline = tokio::time::Instant::now() + grace;
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(25)).await;
        // Signal 0 probes for a live member of the group.
        if unsafe { libc::killpg(pgid, 0) } != 0 {
            return;
        }
    }
    unsafe {
        libc::killpg(pgid, libc::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_values_are_hidden_in_stderr_lines() {
        let env = BTreeMap::from([
            ("TZ".to_owned(), "UTC".to_owned()),
            ("API_KEY".to_owned(), "sk-0123456789".to_owned()),
            ("BOTH".to_owned(), "prefix-sk-0123456789".to_owned()),
        ]);
        let redactor = Redactor::of(&env);
        assert_eq!(
            redactor.redact("key sk-0123456789 in UTC".into()),
            "key *** in UTC"
        );
        assert_eq!(redactor.redact("prefix-sk-0123456789".into()), "***");
        assert_eq!(redactor.redact("nothing here".into()), "nothing here");
    }
}
