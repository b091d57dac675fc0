//! The walled garden ([MP-WalledGarden]): the hosts an operator must
//! zero-rate so that a user without balance reaches the portal without
//! Wi-Fi. Microsoft's hosts as the docs list them (current list, not the
//! historical ones), plus this deployment's portal and GetBalance hosts.
//! "does not support IP ranges … Host names must be used for allowlisting."

use crate::config::Config;
use serde_json::{json, Value};

/// Microsoft's hosts and their protocols (http, https), as
/// `mobile-plans-walled-garden.md` lists them, spelling included.
pub const MICROSOFT_HOSTS: &[(&str, bool, bool)] = &[
    ("ctldl.windowsupdate.com", true, false),
    ("cdp1.public-trust.com", true, false),
    ("ocsp.omniroot.com", true, false),
    ("vassg142.ocsp.omniroot.com", true, false),
    ("vassg142.crl.omniroot.com", true, false),
    ("mscrl.microsoft.com", true, false),
    ("crl.microsoft.com", true, false),
    ("www.msftconnecttest.com", true, false),
    ("crl3.digicert.com", true, false),
    ("Ocsp.digicert.com", true, false),
    ("login.live.com", true, true),
    ("storagetos.datamart.windows.com", true, true),
    ("mps.datamart.windows.com", true, true),
    ("staging.datamart.windows.com", true, true),
    ("*smartscreen.microsoft.com", false, true),
];

/// One host to zero-rate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Host name (a leading `*` is a wildcard, as the docs write it).
    pub host: String,
    /// Over http.
    pub http: bool,
    /// Over https.
    pub https: bool,
    /// Why: `Microsoft`, `portal`, `GetBalance`.
    pub purposes: Vec<String>,
}

impl Entry {
    fn protocols(&self) -> Vec<&'static str> {
        let mut v = vec![];
        if self.http {
            v.push("http");
        }
        if self.https {
            v.push("https");
        }
        v
    }
}

/// The host name of a deployment URL, which must be `https://host[/path]`
/// with no port ([MP-Portal]: "https with no port") and a host name,
/// not an address.
pub fn host_of(url: &str, key: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| format!("{key} {url:?} must start with https://"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err(format!("{key} {url:?} must not carry credentials"));
    }
    if authority.contains(':') || authority.starts_with('[') {
        return Err(format!(
            "{key} {url:?}: Mobile Plans takes no port, and host names only"
        ));
    }
    let labels: Vec<&str> = authority.split('.').collect();
    let valid = !authority.is_empty()
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !valid {
        return Err(format!("{key} {url:?}: {authority:?} is not a host name"));
    }
    if authority.parse::<std::net::Ipv4Addr>().is_ok()
        || labels.iter().all(|l| l.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(format!(
            "{key} {url:?}: the walled garden takes host names, not IP addresses"
        ));
    }
    Ok(authority.to_owned())
}

/// The list for this deployment: Microsoft's hosts, then the portal's and
/// GetBalance's (https), merged when they share a host.
pub fn hosts(c: &Config) -> Result<Vec<Entry>, String> {
    let mut out: Vec<Entry> = MICROSOFT_HOSTS
        .iter()
        .map(|(host, http, https)| Entry {
            host: (*host).to_owned(),
            http: *http,
            https: *https,
            purposes: vec!["Microsoft".into()],
        })
        .collect();
    for (key, url, purpose) in [
        ("mobile_plans.portal_url", c.portal_url(), "portal"),
        (
            "mobile_plans.getbalance_url",
            c.getbalance_url(),
            "GetBalance",
        ),
    ] {
        let host = host_of(&url, key)?;
        match out.iter_mut().find(|e| e.host.eq_ignore_ascii_case(&host)) {
            Some(e) => {
                e.https = true;
                e.purposes.push(purpose.into());
            }
            None => out.push(Entry {
                host,
                http: false,
                https: true,
                purposes: vec![purpose.into()],
            }),
        }
    }
    Ok(out)
}

/// Text: one host a line, protocols first.
pub fn text(entries: &[Entry]) -> String {
    let mut s = String::from(
        "# Windows Mobile Plans walled garden: zero-rate these hosts (host names; IP ranges are not supported)\n",
    );
    s.push_str(&format!("# {:<10} {:<36} for\n", "protocols", "host"));
    for e in entries {
        s.push_str(&format!(
            "{:<12} {:<36} {}\n",
            e.protocols().join(","),
            e.host,
            e.purposes.join(", ")
        ));
    }
    s
}

/// JSON: `{"hosts": [{"host", "protocols", "for"}]}`.
pub fn json(entries: &[Entry]) -> Value {
    json!({"hosts": entries.iter().map(|e| json!({
        "host": e.host,
        "protocols": e.protocols(),
        "for": e.purposes,
    })).collect::<Vec<_>>()})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_urls_give_host_names_only() {
        assert_eq!(
            host_of("https://moportal.example.com/portal?x=1", "k").as_deref(),
            Ok("moportal.example.com")
        );
        assert_eq!(
            host_of("https://mo.example.com", "k").as_deref(),
            Ok("mo.example.com")
        );
        for bad in [
            "http://mo.example.com/",
            "https://mo.example.com:8445/portal",
            "https://10.0.0.1/portal",
            "https://[::1]/portal",
            "https://user@mo.example.com/",
            "https:///portal",
            "https://mo..example.com/",
        ] {
            assert!(host_of(bad, "k").is_err(), "{bad}");
        }
    }
}
