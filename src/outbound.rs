//! The one guard for requests the gateway makes to URLs a user supplied
//! (remote upstreams, HTTP tools, and later webhooks, JWKS and embedding
//! endpoints).
//!
//! Every such request goes through the [`reqwest::Client`] built here. The
//! guard checks the address a name resolves to (not just the name, so DNS
//! cannot smuggle in a metadata address), re-checks every redirect, applies
//! timeouts, and [`read_limited`] bounds response sizes.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
};

use futures::StreamExt;

use crate::config::OutboundSettings;

#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum OutboundError {
    #[error("address {0} is refused by the outbound policy ({1})")]
    Refused(IpAddr, &'static str),
    #[error("invalid URL: {0}")]
    BadUrl(String),
    #[error("cannot resolve {0}")]
    Unresolvable(String),
    #[error("response larger than {0} bytes")]
    TooLarge(usize),
}

/// Which address ranges outbound requests may reach.
#[derive(Debug, Clone)]
pub struct OutboundPolicy {
    pub allow_loopback: bool,
    pub allow_private: bool,
    pub allow_link_local: bool,
}

impl OutboundPolicy {
    pub fn from_settings(s: &OutboundSettings) -> Self {
        Self {
            allow_loopback: s.allow_loopback,
            allow_private: s.allow_private,
            allow_link_local: s.allow_link_local,
        }
    }

    /// Decides whether one resolved address may be contacted.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), OutboundError> {
        let ip = match ip {
            // An IPv4-mapped IPv6 address reaches the IPv4 host: judge that.
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        };
        if is_metadata(ip) || is_link_local(ip) {
            return if self.allow_link_local {
                Ok(())
            } else {
                Err(OutboundError::Refused(
                    ip,
                    "link-local or cloud metadata address",
                ))
            };
        }
        if ip.is_unspecified() || ip.is_multicast() || is_broadcast(ip) {
            return Err(OutboundError::Refused(
                ip,
                "unspecified, multicast or broadcast address",
            ));
        }
        if ip.is_loopback() {
            return if self.allow_loopback {
                Ok(())
            } else {
                Err(OutboundError::Refused(ip, "loopback address"))
            };
        }
        if is_private(ip) && !self.allow_private {
            return Err(OutboundError::Refused(ip, "private address"));
        }
        Ok(())
    }

    /// Checks a URL before use: scheme, and the host when it is a literal IP
    /// (literal addresses never reach the resolver, so they are judged here).
    pub fn check_url(&self, raw: &str) -> Result<url::Url, OutboundError> {
        let url = url::Url::parse(raw).map_err(|e| OutboundError::BadUrl(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(OutboundError::BadUrl(format!(
                "scheme {} not allowed",
                url.scheme()
            )));
        }
        match url.host() {
            Some(url::Host::Ipv4(ip)) => self.check_ip(IpAddr::V4(ip))?,
            Some(url::Host::Ipv6(ip)) => self.check_ip(IpAddr::V6(ip))?,
            Some(url::Host::Domain(d)) => {
                // Names that are metadata endpoints by convention, whatever
                // they resolve to here.
                let d = d.trim_end_matches('.').to_ascii_lowercase();
                if (d == "metadata.google.internal" || d == "metadata") && !self.allow_link_local {
                    return Err(OutboundError::Refused(
                        IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)),
                        "cloud metadata host name",
                    ));
                }
            }
            None => return Err(OutboundError::BadUrl("URL has no host".into())),
        }
        Ok(url)
    }

    /// Resolves a host and checks every address, for callers that connect
    /// themselves.
    pub async fn check_resolved(&self, url: &url::Url) -> Result<(), OutboundError> {
        let Some(host) = url.host_str() else {
            return Err(OutboundError::BadUrl("URL has no host".into()));
        };
        let port = url.port_or_known_default().unwrap_or(80);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|_| OutboundError::Unresolvable(host.to_owned()))?
            .collect();
        if addrs.is_empty() {
            return Err(OutboundError::Unresolvable(host.to_owned()));
        }
        for addr in addrs {
            self.check_ip(addr.ip())?;
        }
        Ok(())
    }
}

fn is_metadata(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4 == Ipv4Addr::new(169, 254, 169, 254)
                || v4 == Ipv4Addr::new(169, 254, 170, 2) // ECS task metadata
                || v4 == Ipv4Addr::new(100, 100, 100, 200) // Alibaba Cloud
        }
        IpAddr::V6(v6) => v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254),
    }
}

fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

fn is_broadcast(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if v4.is_broadcast())
}

fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_private()
                // Carrier-grade NAT 100.64.0.0/10.
                || (v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64)
        }
        IpAddr::V6(v6) => (v6.segments()[0] & 0xfe00) == 0xfc00,
    }
}

/// A resolver that refuses names resolving to addresses the policy forbids,
/// so the check applies to the address actually connected to.
struct GuardedResolver {
    policy: OutboundPolicy,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut allowed = Vec::with_capacity(addrs.len());
            let mut last_err = None;
            for addr in addrs {
                match policy.check_ip(addr.ip()) {
                    Ok(()) => allowed.push(addr),
                    Err(e) => last_err = Some(e),
                }
            }
            if allowed.is_empty() {
                let err: Box<dyn std::error::Error + Send + Sync> = match last_err {
                    Some(e) => Box::new(e),
                    None => Box::new(OutboundError::Unresolvable(host)),
                };
                return Err(err);
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Builds the guarded HTTP client every outbound request uses.
pub fn client(settings: &OutboundSettings) -> reqwest::Client {
    let redirect_policy = OutboundPolicy::from_settings(settings);
    guarded(settings)
        .redirect(reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= 5 {
                return attempt.error("too many redirects");
            }
            // Names are re-checked by the resolver; literal IPs here.
            match redirect_policy.check_url(attempt.url().as_str()) {
                Ok(_) => attempt.follow(),
                Err(e) => attempt.error(e),
            }
        }))
        .build()
        .expect("reqwest client with rustls builds")
}

/// Like [`client`], but follows no redirect: for webhook deliveries, where a
/// redirect would turn a signed POST into a request somewhere else (a
/// receiver that moved is registered again).
pub fn client_without_redirects(settings: &OutboundSettings) -> reqwest::Client {
    guarded(settings)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("reqwest client with rustls builds")
}

/// The guarded resolver, timeouts and identity both clients share.
fn guarded(settings: &OutboundSettings) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .dns_resolver(Arc::new(GuardedResolver {
            policy: OutboundPolicy::from_settings(settings),
        }))
        .connect_timeout(settings.connect_timeout)
        .no_proxy()
        .user_agent(concat!("metamcp/", env!("CARGO_PKG_VERSION")))
}

/// Reads a response body, refusing one larger than `limit` bytes.
pub async fn read_limited(resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, OutboundError> {
    if resp.content_length().is_some_and(|n| n as usize > limit) {
        return Err(OutboundError::TooLarge(limit));
    }
    let mut body = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| OutboundError::BadUrl(e.to_string()))?;
        if body.len() + chunk.len() > limit {
            return Err(OutboundError::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Hides the password of a URL (`scheme://user:****@host`) for logs and APIs.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some("****"));
            url.to_string()
        }
        Ok(url) => url.to_string(),
        Err(_) => raw.split('@').next_back().unwrap_or_default().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_policy() -> OutboundPolicy {
        OutboundPolicy {
            allow_loopback: true,
            allow_private: true,
            allow_link_local: false,
        }
    }

    #[test]
    fn refuses_metadata_and_link_local_by_default() {
        let p = default_policy();
        assert!(
            p.check_url("http://169.254.169.254/latest/meta-data")
                .is_err()
        );
        assert!(p.check_url("http://[fe80::1]/").is_err());
        assert!(p.check_url("http://[::ffff:169.254.169.254]/").is_err());
        assert!(p.check_url("http://metadata.google.internal/").is_err());
        assert!(p.check_url("http://0.0.0.0/").is_err());
        assert!(p.check_url("http://127.0.0.1:8080/mcp").is_ok());
        assert!(p.check_url("file:///etc/passwd").is_err());
    }

    #[test]
    fn loopback_and_private_can_be_refused() {
        let p = OutboundPolicy {
            allow_loopback: false,
            allow_private: false,
            allow_link_local: false,
        };
        assert!(p.check_url("http://127.0.0.1/").is_err());
        assert!(p.check_url("http://[::1]/").is_err());
        assert!(p.check_url("http://10.1.2.3/").is_err());
        assert!(p.check_url("http://100.64.0.1/").is_err());
        assert!(p.check_url("http://8.8.8.8/").is_ok());
    }

    #[tokio::test]
    async fn resolved_names_are_checked() {
        let p = OutboundPolicy {
            allow_loopback: false,
            ..default_policy()
        };
        let url = url::Url::parse("http://localhost:1/").unwrap();
        assert!(p.check_resolved(&url).await.is_err());
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact_url("postgres://u:pw@h/db"), "postgres://u:****@h/db");
        assert_eq!(redact_url("http://h/x"), "http://h/x");
        assert_eq!(redact_url("redis://:pw@h:6379/0"), "redis://:****@h:6379/0");
        assert_eq!(
            redact_url("rediss://user:s3cret@cache.example:6380"),
            "rediss://user:****@cache.example:6380"
        );
        assert_eq!(
            redact_url("postgresql://u:p%40ss@db/x?sslmode=require"),
            "postgresql://u:****@db/x?sslmode=require"
        );
        assert!(!redact_url("not a url://u:pw@h").contains("pw"));
    }
}
