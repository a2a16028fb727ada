//! `fetch` for workflow code: a blocking HTTP client on the step's worker
//! thread, bounded by a per-request timeout, the step's remaining wall time
//! and a response size cap, and refused for denied destinations. Every
//! address a host resolves to is checked against the deny-list, and
//! redirects are followed here so that each hop is checked too. (A host
//! that resolves differently between the check and the connection, DNS
//! rebinding, is not caught; the deny-list is a guard, not a firewall.)

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use base64::Engine as _;
use ipnet::IpNet;
use serde_json::json;

/// Where workflow code may not send requests.
#[derive(Clone, Debug)]
pub enum DenyRule {
    /// Any address in this network.
    Net(IpNet),
    /// Paths under `path` on this address (the server's own admin API).
    Endpoint { addr: SocketAddr, path: String },
}

/// How `fetch` behaves; one per sandbox.
#[derive(Clone, Debug)]
pub struct FetchPolicy {
    /// Longest a request may take (the step's remaining wall time may cut it shorter).
    pub timeout: Duration,
    /// Largest response body read.
    pub max_response_bytes: u64,
    pub deny: Vec<DenyRule>,
}

/// Link-local addresses, where clouds serve instance metadata and credentials.
pub const DEFAULT_DENY: &[&str] = &["169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128"];

/// Redirects followed before giving up.
const MAX_REDIRECTS: u32 = 5;

impl Default for FetchPolicy {
    fn default() -> Self {
        FetchPolicy {
            timeout: Duration::from_secs(30),
            max_response_bytes: 10 * 1024 * 1024,
            deny: DEFAULT_DENY
                .iter()
                .map(|n| DenyRule::Net(n.parse().expect("the defaults are CIDRs")))
                .collect(),
        }
    }
}

impl FetchPolicy {
    /// Adds networks to deny, given as CIDRs (`10.0.0.0/8`) or addresses.
    pub fn deny_networks(&mut self, specs: &[String]) -> Result<(), String> {
        for spec in specs {
            let net: IpNet = spec
                .parse()
                .or_else(|_| spec.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    format!(
                        "'{spec}' is not a network: write a CIDR such as 10.0.0.0/8 or an address"
                    )
                })?;
            self.deny.push(DenyRule::Net(net));
        }
        Ok(())
    }

    fn check(&self, url: &url::Url) -> Result<(), String> {
        let host = url
            .host_str()
            .ok_or_else(|| format!("fetch: '{url}' has no host"))?;
        let port = url.port_or_known_default().unwrap_or(80);
        let addrs: Vec<SocketAddr> = (host.trim_start_matches('[').trim_end_matches(']'), port)
            .to_socket_addrs()
            .map_err(|e| format!("fetch: cannot resolve {host}: {e}"))?
            .collect();
        for addr in addrs {
            for rule in &self.deny {
                let hit = match rule {
                    DenyRule::Net(net) => net.contains(&addr.ip()),
                    DenyRule::Endpoint { addr: a, path } => {
                        same_endpoint(*a, addr) && url.path().starts_with(path.as_str())
                    }
                };
                if hit {
                    return Err(format!(
                        "fetch to {url} is denied: {} is on the outbound deny-list ({}); link-local and cloud metadata addresses and this server's own admin API are refused",
                        addr.ip(),
                        match rule {
                            DenyRule::Net(n) => n.to_string(),
                            DenyRule::Endpoint { addr, path } => format!("{addr}{path}"),
                        }
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Same port and same address, counting an unspecified listen address
/// (0.0.0.0) as every local one.
fn same_endpoint(listen: SocketAddr, target: SocketAddr) -> bool {
    listen.port() == target.port()
        && (listen.ip() == target.ip()
            || listen.ip().is_unspecified()
            || target.ip().is_loopback() && listen.ip().is_loopback())
}

pub struct FetchRequest {
    pub url: String,
    pub method: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
}

/// Performs a request; returns the response as JSON text for the prelude:
/// `{status, statusText, url, redirected, headers, text | base64}`.
pub fn perform(
    policy: &FetchPolicy,
    remaining: Duration,
    req: FetchRequest,
) -> Result<String, String> {
    let Opened {
        url,
        redirected,
        mut response,
    } = open(policy, remaining, req, "fetch")?;
    let status = response.status();
    let headers: Vec<(String, String)> = response
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let bytes = response
        .body_mut()
        .with_config()
        .limit(policy.max_response_bytes)
        .read_to_vec()
        .map_err(|e| match e {
            ureq::Error::BodyExceedsLimit(_) => format!(
                "the response from {url} is over the fetch limit of {}; ask for less (pages, fields)",
                flowstate_core::json::human_bytes(policy.max_response_bytes as usize)
            ),
            other => format!("fetch to {url} failed reading the body: {other}"),
        })?;
    let mut out = json!({
        "status": status.as_u16(),
        "statusText": status.canonical_reason().unwrap_or(""),
        "url": url.as_str(),
        "redirected": redirected,
        "headers": headers,
    });
    match String::from_utf8(bytes) {
        Ok(text) => out["text"] = text.into(),
        Err(e) => {
            out["base64"] = base64::engine::general_purpose::STANDARD
                .encode(e.into_bytes())
                .into()
        }
    }
    Ok(out.to_string())
}

/// Adds the store's Admin API token to a request for
/// `https://<store>/admin/...`, unless the code set one itself.
pub fn add_shopify_token(
    shop: &flowstate_core::executor::ShopifyAccess,
    url: &str,
    headers: &mut Vec<(String, String)>,
) {
    let Ok(u) = url::Url::parse(url) else { return };
    let host = match (u.host_str(), u.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        _ => return,
    };
    if host.eq_ignore_ascii_case(&shop.store)
        && u.path().starts_with("/admin/")
        && !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case(SHOPIFY_TOKEN_HEADER))
    {
        headers.push((SHOPIFY_TOKEN_HEADER.into(), shop.token.clone()));
    }
}

const SHOPIFY_TOKEN_HEADER: &str = "x-shopify-access-token";

/// Headers that must not follow a redirect to another origin.
fn is_credential(name: &str) -> bool {
    name.eq_ignore_ascii_case("authorization")
        || name.eq_ignore_ascii_case("cookie")
        || name.eq_ignore_ascii_case(SHOPIFY_TOKEN_HEADER)
}

/// A response whose headers have arrived, after any redirects.
pub struct Opened {
    /// Where it came from, after redirects.
    pub url: url::Url,
    pub redirected: bool,
    pub response: ureq::http::Response<ureq::Body>,
}

/// Sends a request, following redirects by hand so that every hop is
/// checked against the deny-list; `what` names the caller in errors.
pub fn open(
    policy: &FetchPolicy,
    remaining: Duration,
    req: FetchRequest,
    what: &str,
) -> Result<Opened, String> {
    let timeout = policy.timeout.min(remaining);
    if timeout.is_zero() {
        return Err(format!(
            "{what}: the step has no wall time left for a request"
        ));
    }
    let mut url = url::Url::parse(&req.url)
        .map_err(|e| format!("{what}: '{}' is not a URL: {e}", req.url))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "{what}: only http and https URLs can be fetched, not '{}'",
            url.scheme()
        ));
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(timeout))
        .build()
        .into();
    let (mut method, mut body) = (req.method.to_ascii_uppercase(), req.body);
    let origin = url.origin();
    for hop in 0..=MAX_REDIRECTS {
        policy.check(&url)?;
        let mut builder = ureq::http::Request::builder()
            .method(method.as_str())
            .uri(url.as_str());
        let same_origin = url.origin() == origin;
        for (k, v) in &req.headers {
            // Credentials go only where the code sent them, not where a
            // redirect points.
            if same_origin || !is_credential(k) {
                builder = builder.header(k.as_str(), v.as_str());
            }
        }
        let request = builder
            .body(body.clone().unwrap_or_default())
            .map_err(|e| format!("{what}: bad request to {url}: {e}"))?;
        let resp = agent.run(request).map_err(|e| match e {
            ureq::Error::Timeout(_) => format!(
                "{what} to {url} timed out after {}",
                flowstate_core::delay::format_duration(timeout)
            ),
            other => format!("{what} to {url} failed: {other}"),
        })?;
        let status = resp.status();
        if status.is_redirection()
            && let Some(next) = resp.headers().get("location").and_then(|l| l.to_str().ok())
        {
            if hop == MAX_REDIRECTS {
                return Err(format!(
                    "{what} to {} was redirected more than {MAX_REDIRECTS} times",
                    req.url
                ));
            }
            url = url
                .join(next)
                .map_err(|e| format!("{what}: bad redirect from {url}: {e}"))?;
            if status == 303 || ((status == 301 || status == 302) && method == "POST") {
                method = "GET".into();
                body = None;
            }
            continue;
        }
        return Ok(Opened {
            url,
            redirected: hop > 0,
            response: resp,
        });
    }
    unreachable!("the loop returns by its last hop")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_deny_list_refuses_metadata_addresses() {
        let p = FetchPolicy::default();
        let err = p
            .check(&url::Url::parse("http://169.254.169.254/latest/meta-data/").unwrap())
            .unwrap_err();
        assert!(err.contains("169.254.0.0/16"), "{err}");
        assert!(
            p.check(&url::Url::parse("http://127.0.0.1:9/").unwrap())
                .is_ok()
        );
        let mut q = FetchPolicy::default();
        assert!(
            q.deny_networks(&["10.0.0.0/8".into(), "192.0.2.7".into()])
                .is_ok()
        );
        assert!(
            q.check(&url::Url::parse("http://10.1.2.3/").unwrap())
                .is_err()
        );
        assert!(
            q.deny_networks(&["nope".into()])
                .unwrap_err()
                .contains("CIDR")
        );
    }

    #[test]
    fn the_admin_api_endpoint_is_refused_but_not_its_webhooks() {
        let mut p = FetchPolicy::default();
        p.deny.push(DenyRule::Endpoint {
            addr: "0.0.0.0:8080".parse().unwrap(),
            path: "/api".into(),
        });
        assert!(
            p.check(&url::Url::parse("http://127.0.0.1:8080/api/workflows").unwrap())
                .is_err()
        );
        assert!(
            p.check(&url::Url::parse("http://127.0.0.1:8080/hooks/orders").unwrap())
                .is_ok()
        );
        assert!(
            p.check(&url::Url::parse("http://127.0.0.1:8081/api/workflows").unwrap())
                .is_ok()
        );
    }
}
