//! `metamcp user ...`: manage users straight in the database, for the
//! operator of the host (first setup, a forgotten admin password), without
//! a running gateway or a token.

use std::io::BufRead;

use clap::Subcommand;

use crate::{
    auth::{DEFAULT_TENANT, format_time, password, rbac, tokens},
    config::Settings,
    store::{Store, UserRow},
};

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user. Prints a generated password unless --password-stdin.
    Add {
        username: String,
        /// A role (repeatable): platform_admin, admin, operator, user,
        /// viewer or a custom role.
        #[arg(long = "role", default_value = "user")]
        roles: Vec<String>,
        #[arg(long, default_value = DEFAULT_TENANT)]
        tenant: String,
        /// Read the password from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set a user's password (and end their sessions).
    Passwd {
        username: String,
        #[arg(long, default_value = DEFAULT_TENANT)]
        tenant: String,
        /// Read the password from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List the users of a tenant.
    List {
        #[arg(long, default_value = DEFAULT_TENANT)]
        tenant: String,
    },
    /// Disable a user: no login, no tokens, no API keys.
    Disable {
        username: String,
        #[arg(long, default_value = DEFAULT_TENANT)]
        tenant: String,
    },
    /// Enable a disabled user again.
    Enable {
        username: String,
        #[arg(long, default_value = DEFAULT_TENANT)]
        tenant: String,
    },
}

/// A password from stdin, or a generated one (printed once).
fn new_password(from_stdin: bool) -> anyhow::Result<(String, bool)> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        let pw = line.trim_end_matches(['\r', '\n']).to_owned();
        password::check_strength(&pw).map_err(|e| anyhow::anyhow!(e))?;
        Ok((pw, false))
    } else {
        Ok((tokens::random_token(18), true))
    }
}

async fn find(store: &Store, tenant: &str, username: &str) -> anyhow::Result<UserRow> {
    store
        .user_by_name(tenant, username)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no user {username} in tenant {tenant}"))
}

pub async fn run(settings: &Settings, command: UserCommand) -> anyhow::Result<()> {
    let store = Store::connect_with(&settings.database_url, settings.database_pool_size).await?;
    store.ensure_tenant(DEFAULT_TENANT, "Default").await?;
    match command {
        UserCommand::Add {
            username,
            roles,
            tenant,
            password_stdin,
        } => {
            let roles = rbac::normalize_roles(&roles);
            let custom = store.list_roles(&tenant).await?;
            for role in &roles {
                if rbac::builtin_role(role).is_none() && !custom.iter().any(|r| &r.name == role) {
                    anyhow::bail!("unknown role {role:?}");
                }
            }
            if !store
                .list_tenants()
                .await?
                .iter()
                .any(|(id, _, _)| *id == tenant)
            {
                anyhow::bail!("no tenant {tenant}");
            }
            let (pw, generated) = new_password(password_stdin)?;
            let hash = password::hash(&pw).map_err(|e| anyhow::anyhow!(e))?;
            let now = format_time(tokens::now_secs());
            store
                .insert_user(&UserRow {
                    id: uuid::Uuid::now_v7().to_string(),
                    tenant_id: tenant.clone(),
                    username: username.clone(),
                    password_hash: hash,
                    roles,
                    clearance: None,
                    disabled: false,
                    sessions_valid_after: 0,
                    created_at: now.clone(),
                    updated_at: now,
                })
                .await
                .map_err(|e| match e {
                    crate::store::StoreError::Conflict => {
                        anyhow::anyhow!("user {username} already exists in tenant {tenant}")
                    }
                    other => other.into(),
                })?;
            println!("created user {username} in tenant {tenant}");
            if generated {
                println!("password: {pw}");
            }
        }
        UserCommand::Passwd {
            username,
            tenant,
            password_stdin,
        } => {
            let mut user = find(&store, &tenant, &username).await?;
            let (pw, generated) = new_password(password_stdin)?;
            user.password_hash = password::hash(&pw).map_err(|e| anyhow::anyhow!(e))?;
            user.sessions_valid_after = tokens::now_secs();
            store.update_user(&user).await?;
            store.revoke_user_refresh(&user.id).await?;
            println!("password of {username} changed; their sessions are ended");
            if generated {
                println!("password: {pw}");
            }
        }
        UserCommand::List { tenant } => {
            println!("{:<24} {:<30} {:<9} ID", "USERNAME", "ROLES", "STATUS");
            for u in store.list_users(&tenant).await? {
                println!(
                    "{:<24} {:<30} {:<9} {}",
                    u.username,
                    u.roles.join(","),
                    if u.disabled { "disabled" } else { "active" },
                    u.id
                );
            }
        }
        UserCommand::Disable { username, tenant } => {
            let mut user = find(&store, &tenant, &username).await?;
            user.disabled = true;
            user.sessions_valid_after = tokens::now_secs();
            store.update_user(&user).await?;
            store.revoke_user_refresh(&user.id).await?;
            println!("disabled {username}");
        }
        UserCommand::Enable { username, tenant } => {
            let mut user = find(&store, &tenant, &username).await?;
            user.disabled = false;
            store.update_user(&user).await?;
            println!("enabled {username}");
        }
    }
    store.close().await;
    Ok(())
}
