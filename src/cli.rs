//! The command-line client of a running gateway: `metamcp servers|tools|
//! profiles ...`. It speaks the REST API; tables for people by default,
//! `--json` for scripts.

use std::{collections::BTreeMap, fmt::Write as _, process::ExitCode};

use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};

/// Where the gateway is and how to talk to it.
#[derive(Debug, Clone, Args)]
pub struct Connection {
    /// The gateway's base URL.
    #[arg(
        long,
        global = true,
        env = "META_MCP_URL",
        default_value = "http://127.0.0.1:8000"
    )]
    pub url: String,
    /// A bearer token sent with every request.
    #[arg(long, global = true, env = "META_MCP_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the API's JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ServersCommand {
    /// List servers with their status.
    List,
    /// Add a server: a stdio command, or a remote URL.
    Add {
        name: String,
        /// Command of a stdio server (creating one needs META_MCP_ALLOW_STDIO_API on the gateway).
        #[arg(long, conflicts_with_all = ["http", "sse"])]
        command: Option<String>,
        /// Argument of the command (repeat for several).
        #[arg(long = "arg", allow_hyphen_values = true)]
        args: Vec<String>,
        /// Environment variable of the command, KEY=VALUE (repeatable).
        #[arg(long = "env")]
        env: Vec<String>,
        /// Working directory of the command.
        #[arg(long)]
        cwd: Option<String>,
        /// URL of a remote Streamable HTTP server.
        #[arg(long, value_name = "URL", conflicts_with = "sse")]
        http: Option<String>,
        /// URL of a remote server on the legacy HTTP+SSE transport.
        #[arg(long, value_name = "URL")]
        sse: Option<String>,
        /// HTTP header of a remote server, "Name: value" (repeatable).
        #[arg(long = "header")]
        headers: Vec<String>,
    },
    /// Remove a server (and stop its process).
    Remove { name: String },
    /// Status of one server (with its stderr tail), or of all.
    Status { name: Option<String> },
}

#[derive(Debug, Subcommand)]
pub enum ToolsCommand {
    /// List tools.
    List {
        #[arg(long)]
        server: Option<String>,
        #[arg(long)]
        category: Option<String>,
        #[arg(long)]
        tag: Option<String>,
        #[arg(long)]
        profile: Option<String>,
    },
    /// Show one tool with its schema.
    Show { name: String },
    /// Search tools by what they do.
    Search {
        query: String,
        /// keyword, semantic or hybrid (the gateway's default: hybrid).
        #[arg(long = "type")]
        search_type: Option<String>,
        #[arg(long)]
        max: Option<usize>,
        /// Least semantic similarity (0..1) of a hit.
        #[arg(long)]
        threshold: Option<f64>,
        #[arg(long)]
        server: Option<String>,
        #[arg(long)]
        category: Option<String>,
        /// Comma-separated tags a tool must all carry.
        #[arg(long)]
        tags: Option<String>,
    },
    /// Call a tool through the gateway's pipeline.
    Call {
        name: String,
        /// Arguments as one JSON object.
        #[arg(long, conflicts_with = "arg")]
        args: Option<String>,
        /// One argument, key=value (value parsed as JSON when it is JSON).
        #[arg(long, short)]
        arg: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProfilesCommand {
    /// List profiles.
    List,
    /// Show one profile and the tools it selects.
    Show { name: String },
    /// Create a profile from its JSON definition.
    Add {
        /// The definition, e.g. '{"name": "ops", "servers": ["fs"]}'.
        definition: String,
    },
    /// Remove a profile.
    Remove { name: String },
}

/// Why a command failed.
#[derive(Debug)]
struct Failure(String);

type Outcome = Result<(), Failure>;

struct Client {
    conn: Connection,
    http: reqwest::blocking::Client,
}

impl Client {
    fn new(conn: Connection) -> Self {
        let http = reqwest::blocking::Client::builder()
            .timeout(std::time::Duration::from_secs(120))
            .build()
            .expect("HTTP client builds");
        Self { conn, http }
    }

    fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, Failure> {
        let base = self.conn.url.trim_end_matches('/');
        let url = format!("{base}/api/v1{path}");
        let mut req = self.http.request(method, &url);
        if let Some(token) = &self.conn.token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().map_err(|e| {
            let why = if e.is_connect() {
                "connection refused; is `metamcp serve` running there? (set --url or META_MCP_URL)"
                    .to_owned()
            } else if e.is_timeout() {
                "no answer in time".to_owned()
            } else {
                e.to_string()
            };
            Failure(format!("cannot reach the gateway at {base}: {why}"))
        })?;
        let status = resp.status();
        let text = resp.text().unwrap_or_default();
        let value: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if status.is_success() {
            Ok(value)
        } else {
            let detail = value["detail"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| value.to_string());
            let title = value["title"]
                .as_str()
                .unwrap_or(status.canonical_reason().unwrap_or("error"));
            Err(Failure(format!("{title} ({}): {detail}", status.as_u16())))
        }
    }

    fn get(&self, path: &str) -> Result<Value, Failure> {
        self.request(reqwest::Method::GET, path, None)
    }
}

fn encode(segment: &str) -> String {
    url::form_urlencoded::byte_serialize(segment.as_bytes()).collect()
}

/// Runs one client command; prints its output; returns the exit code.
pub fn run_servers(conn: Connection, cmd: ServersCommand) -> ExitCode {
    finish(servers(&Client::new(conn), cmd))
}

pub fn run_tools(conn: Connection, cmd: ToolsCommand) -> ExitCode {
    finish(tools(&Client::new(conn), cmd))
}

pub fn run_profiles(conn: Connection, cmd: ProfilesCommand) -> ExitCode {
    finish(profiles(&Client::new(conn), cmd))
}

fn finish(outcome: Outcome) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(message)) => {
            eprintln!("metamcp: {message}");
            ExitCode::FAILURE
        }
    }
}

fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

fn servers(client: &Client, cmd: ServersCommand) -> Outcome {
    let json_out = client.conn.json;
    match cmd {
        ServersCommand::List => {
            let body = client.get("/servers")?;
            if json_out {
                print_json(&body);
                return Ok(());
            }
            let rows = rows(&body["servers"], |s| {
                vec![
                    text(&s["name"]),
                    text(&s["status"]["status"]),
                    text(&s["type"]),
                    text(&s["tools"]),
                    text(&s["source"]),
                    text(&s["status"]["last_error"]),
                ]
            });
            print!(
                "{}",
                table(
                    &[
                        "NAME",
                        "STATUS",
                        "TRANSPORT",
                        "TOOLS",
                        "SOURCE",
                        "LAST ERROR"
                    ],
                    &rows
                )
            );
        }
        ServersCommand::Add {
            name,
            command,
            args,
            env,
            cwd,
            http,
            sse,
            headers,
        } => {
            let (url, transport) = match (http, sse) {
                (Some(u), _) => (Some(u), "http"),
                (None, Some(u)) => (Some(u), "sse"),
                (None, None) => (None, "http"),
            };
            let mut spec = Map::new();
            spec.insert("name".into(), json!(name));
            match (command, url) {
                (Some(command), None) => {
                    spec.insert("command".into(), json!(command));
                    spec.insert("args".into(), json!(args));
                    spec.insert("env".into(), json!(pairs(&env, '=', "--env")?));
                    if let Some(cwd) = cwd {
                        spec.insert("cwd".into(), json!(cwd));
                    }
                }
                (None, Some(url)) => {
                    spec.insert("url".into(), json!(url));
                    spec.insert("type".into(), json!(transport));
                    spec.insert("headers".into(), json!(pairs(&headers, ':', "--header")?));
                }
                _ => {
                    return Err(Failure(
                        "give --command (stdio server), --http URL or --sse URL (remote server)"
                            .into(),
                    ));
                }
            }
            let body =
                client.request(reqwest::Method::POST, "/servers", Some(Value::Object(spec)))?;
            if json_out {
                print_json(&body);
            } else {
                println!(
                    "added server {} ({})",
                    text(&body["name"]),
                    text(&body["status"]["status"])
                );
            }
        }
        ServersCommand::Remove { name } => {
            client.request(
                reqwest::Method::DELETE,
                &format!("/servers/{}", encode(&name)),
                None,
            )?;
            if json_out {
                print_json(&json!({"removed": name}));
            } else {
                println!("removed server {name}");
            }
        }
        ServersCommand::Status { name: Some(name) } => {
            let body = client.get(&format!("/servers/{}", encode(&name)))?;
            if json_out {
                print_json(&body);
                return Ok(());
            }
            let status = &body["status"];
            let mut out = String::new();
            for (label, value) in [
                ("name", &body["name"]),
                ("status", &status["status"]),
                ("transport", &body["type"]),
                ("source", &body["source"]),
                ("tools", &body["tools"]),
                ("protocol", &status["protocol_version"]),
                ("latency ms", &status["latency_ms"]),
                ("attempts", &status["attempts"]),
                ("last error", &status["last_error"]),
            ] {
                let _ = writeln!(out, "{label:<11} {}", text(value));
            }
            if let Some(conflicts) = body["conflicts"].as_array().filter(|c| !c.is_empty()) {
                let _ = writeln!(out, "conflicts:");
                for c in conflicts {
                    let _ = writeln!(out, "  {}", text(c));
                }
            }
            if let Some(lines) = body["stderr_tail"].as_array().filter(|l| !l.is_empty()) {
                let _ = writeln!(out, "stderr:");
                for l in lines {
                    let _ = writeln!(out, "  {}", text(l));
                }
            }
            print!("{out}");
        }
        ServersCommand::Status { name: None } => {
            let body = client.get("/health/detailed")?;
            if json_out {
                print_json(&body);
                return Ok(());
            }
            println!(
                "gateway: {} (store: {})",
                text(&body["status"]),
                text(&body["store"]["status"])
            );
            let rows = rows(&body["upstreams"], |u| {
                vec![
                    text(&u["name"]),
                    text(&u["status"]),
                    u["latency_ms"]
                        .as_f64()
                        .map(|l| format!("{l:.1}"))
                        .unwrap_or_default(),
                    text(&u["tools"]),
                    text(&u["last_error"]),
                ]
            });
            print!(
                "{}",
                table(
                    &["NAME", "STATUS", "LATENCY MS", "TOOLS", "LAST ERROR"],
                    &rows
                )
            );
        }
    }
    Ok(())
}

fn tools(client: &Client, cmd: ToolsCommand) -> Outcome {
    let json_out = client.conn.json;
    match cmd {
        ToolsCommand::List {
            server,
            category,
            tag,
            profile,
        } => {
            let mut query = vec![("limit".to_owned(), "1000".to_owned())];
            for (k, v) in [
                ("server", server),
                ("category", category),
                ("tag", tag),
                ("profile", profile),
            ] {
                if let Some(v) = v {
                    query.push((k.to_owned(), v));
                }
            }
            let qs: String = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(query)
                .finish();
            let body = client.get(&format!("/tools?{qs}"))?;
            if json_out {
                print_json(&body);
                return Ok(());
            }
            let rows = rows(&body["tools"], |t| {
                vec![
                    text(&t["name"]),
                    text(&t["server"]),
                    if t["enabled"] == false {
                        "no".into()
                    } else {
                        "yes".into()
                    },
                    truncate(&text(&t["description"]), 70),
                ]
            });
            print!(
                "{}",
                table(&["NAME", "SERVER", "ENABLED", "DESCRIPTION"], &rows)
            );
        }
        ToolsCommand::Search {
            query,
            search_type,
            max,
            threshold,
            server,
            category,
            tags,
        } => {
            let mut params = vec![("q".to_owned(), query)];
            for (k, v) in [
                ("search_type", search_type),
                ("max_results", max.map(|m| m.to_string())),
                ("similarity_threshold", threshold.map(|t| t.to_string())),
                ("server", server),
                ("category", category),
                ("tags", tags),
            ] {
                if let Some(v) = v {
                    params.push((k.to_owned(), v));
                }
            }
            let qs: String = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(params)
                .finish();
            let body = client.get(&format!("/tools/search?{qs}"))?;
            if json_out {
                print_json(&body);
                return Ok(());
            }
            if let Some(note) = body["note"].as_str() {
                eprintln!("note: {note}");
            }
            let rows = rows(&body["results"], |r| {
                vec![
                    text(&r["tool"]["name"]),
                    r["score"]
                        .as_f64()
                        .map(|s| format!("{s:.2}"))
                        .unwrap_or_default(),
                    text(&r["matched"]),
                    truncate(&text(&r["tool"]["description"]), 60),
                ]
            });
            print!(
                "{}",
                table(&["NAME", "SCORE", "MATCHED", "DESCRIPTION"], &rows)
            );
        }
        ToolsCommand::Show { name } => {
            let body = client.get(&format!("/tools/{}", encode(&name)))?;
            if json_out {
                print_json(&body);
                return Ok(());
            }
            let mut out = String::new();
            for key in [
                "name",
                "description",
                "server",
                "original_name",
                "source",
                "enabled",
                "category",
                "tags",
                "security_level",
                "endpoint",
                "quarantine",
            ] {
                let value = &body[key];
                if !value.is_null() && value.as_array().is_none_or(|a| !a.is_empty()) {
                    let _ = writeln!(out, "{key:<15} {}", text(value));
                }
            }
            let _ = writeln!(
                out,
                "input schema:\n{}",
                serde_json::to_string_pretty(&body["input_schema"]).unwrap_or_default()
            );
            print!("{out}");
        }
        ToolsCommand::Call { name, args, arg } => {
            let arguments = match args {
                Some(raw) => serde_json::from_str::<Value>(&raw)
                    .ok()
                    .filter(Value::is_object)
                    .ok_or_else(|| Failure("--args must be a JSON object".into()))?,
                None => {
                    let mut map = Map::new();
                    for pair in &arg {
                        let (k, v) = pair
                            .split_once('=')
                            .ok_or_else(|| Failure(format!("--arg {pair:?} is not key=value")))?;
                        let value =
                            serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_owned()));
                        map.insert(k.to_owned(), value);
                    }
                    Value::Object(map)
                }
            };
            let body = client.request(
                reqwest::Method::POST,
                &format!("/tools/{}/execute", encode(&name)),
                Some(json!({"arguments": arguments})),
            )?;
            let result = &body["result"];
            if json_out {
                print_json(&body);
            } else {
                for item in result["content"].as_array().into_iter().flatten() {
                    match item["type"].as_str() {
                        Some("text") => println!("{}", text(&item["text"])),
                        Some(other) => println!("[{other} content]"),
                        None => println!("{item}"),
                    }
                }
                if !result["structuredContent"].is_null()
                    && result["content"].as_array().is_none_or(Vec::is_empty)
                {
                    print_json(&result["structuredContent"]);
                }
            }
            if result["isError"] == true {
                return Err(Failure(format!("tool {name} reported an error")));
            }
        }
    }
    Ok(())
}

fn profiles(client: &Client, cmd: ProfilesCommand) -> Outcome {
    let json_out = client.conn.json;
    match cmd {
        ProfilesCommand::List => {
            let body = client.get("/profiles")?;
            if json_out {
                print_json(&body);
                return Ok(());
            }
            let rows = rows(&body["profiles"], |p| {
                vec![
                    text(&p["name"]),
                    p["tool_names"]
                        .as_array()
                        .map(|t| t.len().to_string())
                        .unwrap_or_default(),
                    text(&p["source"]),
                    text(&p["endpoint"]),
                ]
            });
            print!("{}", table(&["NAME", "TOOLS", "SOURCE", "ENDPOINT"], &rows));
        }
        ProfilesCommand::Show { name } => {
            let body = client.get(&format!("/profiles/{}", encode(&name)))?;
            if json_out {
                print_json(&body);
                return Ok(());
            }
            println!("name      {}", text(&body["name"]));
            println!("endpoint  {}", text(&body["endpoint"]));
            println!("source    {}", text(&body["source"]));
            println!("tools:");
            for t in body["tool_names"].as_array().into_iter().flatten() {
                println!("  {}", text(t));
            }
        }
        ProfilesCommand::Add { definition } => {
            let def: Value = serde_json::from_str(&definition)
                .map_err(|e| Failure(format!("the definition is not JSON: {e}")))?;
            let body = client.request(reqwest::Method::POST, "/profiles", Some(def))?;
            if json_out {
                print_json(&body);
            } else {
                println!(
                    "added profile {} at {}",
                    text(&body["name"]),
                    text(&body["endpoint"])
                );
            }
        }
        ProfilesCommand::Remove { name } => {
            client.request(
                reqwest::Method::DELETE,
                &format!("/profiles/{}", encode(&name)),
                None,
            )?;
            if json_out {
                print_json(&json!({"removed": name}));
            } else {
                println!("removed profile {name}");
            }
        }
    }
    Ok(())
}

fn pairs(items: &[String], sep: char, flag: &str) -> Result<BTreeMap<String, String>, Failure> {
    items
        .iter()
        .map(|item| {
            item.split_once(sep)
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .ok_or_else(|| Failure(format!("{flag} {item:?} must be KEY{sep}VALUE")))
        })
        .collect()
}

/// A JSON value as table text: strings bare, null empty.
fn text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

fn truncate(s: &str, max: usize) -> String {
    let first_line = s.lines().next().unwrap_or_default();
    if first_line.chars().count() <= max {
        first_line.to_owned()
    } else {
        let cut: String = first_line.chars().take(max - 1).collect();
        format!("{cut}…")
    }
}

fn rows(list: &Value, f: impl Fn(&Value) -> Vec<String>) -> Vec<Vec<String>> {
    list.as_array().into_iter().flatten().map(f).collect()
}

/// Left-aligned columns separated by two spaces.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let mut l = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                let pad = widths[i] - cell.chars().count();
                l.push_str(cell);
                l.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(headers.to_vec(), &mut out);
    for row in rows {
        line(row.iter().map(String::as_str).collect(), &mut out);
    }
    if rows.is_empty() {
        out.push_str("(none)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["A", "LONGER"],
            &[
                vec!["x".into(), "y".into()],
                vec!["wide".into(), "z".into()],
            ],
        );
        assert_eq!(t, "A     LONGER\nx     y\nwide  z\n");
        assert_eq!(table(&["A"], &[]), "A\n(none)\n");
        assert_eq!(truncate("abcdef", 4), "abc…");
    }
}
