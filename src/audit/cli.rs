//! `metamcp audit verify|export`: read the audit trail straight from the
//! database named by the settings (no running gateway needed), with the
//! key from the settings.

use std::io::Write;

use crate::{
    config::Settings,
    store::{AuditFilter, Backend, Store},
};

use super::AuditKeys;

#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Check every chain of the audit trail: exit 0 when all are intact,
    /// 1 naming each record where a chain breaks.
    Verify {
        /// A chain head copied from the gateway's log ("audit chain head"
        /// lines), as CHAIN:SEQ:MAC; the chain must still hold that record.
        /// Catches a chain cut short together with its head. Repeatable.
        #[arg(long = "head", value_name = "CHAIN:SEQ:MAC")]
        heads: Vec<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print records as JSON lines, oldest first.
    Export {
        #[arg(long)]
        tenant: Option<String>,
        /// User id or username.
        #[arg(long)]
        actor: Option<String>,
        /// admin, tool_call or auth.
        #[arg(long)]
        kind: Option<String>,
        #[arg(long)]
        tool: Option<String>,
        #[arg(long)]
        server: Option<String>,
        #[arg(long)]
        outcome: Option<String>,
        /// RFC 3339 time or date: records at or after it.
        #[arg(long)]
        since: Option<String>,
        /// RFC 3339 time or date: records before it.
        #[arg(long)]
        until: Option<String>,
    },
}

/// The audit keys the gateway with these settings uses, without creating
/// any key: `META_MCP_AUDIT_KEY`, else `META_MCP_SECRET_KEY`, else the
/// generated `DATA_DIR/secret.key` of an embedded database.
pub fn keys_for(settings: &Settings) -> anyhow::Result<AuditKeys> {
    if settings.audit.key.is_some() {
        return Ok(super::keys(&settings.audit, &[]));
    }
    let backend = crate::store::validate_database_url(&settings.database_url)
        .map_err(|e| anyhow::anyhow!("META_MCP_DATABASE_URL: {e}"))?;
    let generated = settings.data_dir.join("secret.key");
    if settings.auth.secret_key.is_none() && (backend == Backend::Postgres || !generated.exists()) {
        anyhow::bail!(
            "no audit key: set META_MCP_AUDIT_KEY or META_MCP_SECRET_KEY as the gateway has it{}",
            if backend == Backend::Sqlite {
                format!(
                    " (or point META_MCP_DATA_DIR at the folder with its secret.key; {} does not exist)",
                    generated.display()
                )
            } else {
                String::new()
            }
        );
    }
    let secret = crate::auth::bootstrap::secret_key(settings, backend)?;
    Ok(super::keys(&settings.audit, &secret))
}

fn parse_head(text: &str) -> anyhow::Result<(String, i64, String)> {
    let mut parts = text.rsplitn(3, ':');
    let (Some(mac), Some(seq), Some(chain)) = (parts.next(), parts.next(), parts.next()) else {
        anyhow::bail!("--head {text:?}: expected CHAIN:SEQ:MAC");
    };
    let seq = seq
        .parse()
        .map_err(|_| anyhow::anyhow!("--head {text:?}: SEQ is not a number"))?;
    Ok((chain.to_owned(), seq, mac.to_owned()))
}

/// Runs the command; `Ok(false)` when verification found a break.
pub async fn run(settings: &Settings, command: AuditCommand) -> anyhow::Result<bool> {
    let keys = keys_for(settings)?;
    let store = Store::connect(&settings.database_url).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot open the database {}: {e}",
            crate::outbound::redact_url(&settings.database_url)
        )
    })?;
    let result = match command {
        AuditCommand::Verify { heads, json } => {
            let logged = heads
                .iter()
                .map(|h| parse_head(h))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let reports = super::verify(&store, &keys, &logged).await?;
            let ok = reports.iter().all(|r| r.breaks.is_empty());
            let mut out = std::io::stdout().lock();
            if json {
                writeln!(out, "{}", serde_json::json!({"ok": ok, "chains": reports}))?;
            } else {
                for r in &reports {
                    if r.breaks.is_empty() {
                        writeln!(
                            out,
                            "chain {}: {} records, intact (head seq {})",
                            r.chain_id,
                            r.records,
                            r.head_seq.unwrap_or(0)
                        )?;
                    } else {
                        writeln!(out, "chain {}: BROKEN", r.chain_id)?;
                        for b in &r.breaks {
                            writeln!(out, "  {b}")?;
                        }
                    }
                }
                let total: u64 = reports.iter().map(|r| r.records).sum();
                writeln!(
                    out,
                    "{}: {total} records in {} chains",
                    if ok {
                        "audit trail intact"
                    } else {
                        "AUDIT TRAIL BROKEN"
                    },
                    reports.len()
                )?;
            }
            Ok(ok)
        }
        AuditCommand::Export {
            tenant,
            actor,
            kind,
            tool,
            server,
            outcome,
            since,
            until,
        } => {
            let time = |v: Option<String>, name: &str| -> anyhow::Result<String> {
                match v {
                    None => Ok(String::new()),
                    Some(v) => super::parse_time(&v).ok_or_else(|| {
                        anyhow::anyhow!("--{name} {v:?}: expected an RFC 3339 time or a date")
                    }),
                }
            };
            let filter = AuditFilter {
                tenant: tenant.unwrap_or_default(),
                actor: actor.unwrap_or_default(),
                kind: kind.unwrap_or_default(),
                tool: tool.unwrap_or_default(),
                server: server.unwrap_or_default(),
                outcome: outcome.unwrap_or_default(),
                since: time(since, "since")?,
                until: time(until, "until")?,
            };
            let mut after = String::new();
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            loop {
                let page = store.audit_export_page(&filter, &after, 1000).await?;
                for row in &page {
                    serde_json::to_writer(&mut out, row)?;
                    out.write_all(b"\n")?;
                }
                match page.last() {
                    Some(last) if page.len() == 1000 => after = last.id.clone(),
                    _ => break,
                }
            }
            out.flush()?;
            Ok(true)
        }
    };
    store.close().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_parse_from_the_log_form() {
        assert_eq!(
            parse_head("main:42:abcd").unwrap(),
            ("main".to_owned(), 42, "abcd".to_owned())
        );
        assert!(parse_head("main:x:abcd").is_err());
        assert!(parse_head("abcd").is_err());
    }
}
