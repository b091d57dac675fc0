//! The deployment files against the code and the real binary: the example
//! configuration names every key the configuration accepts and starts the
//! server; every metric the Grafana dashboard and the Prometheus alerts use
//! is in a real `/metrics` scrape; the compose file (two nodes on
//! PostgreSQL behind haproxy), its node configurations, haproxy's, the
//! Dockerfile, the Prometheus and Grafana provisioning agree with each
//! other; the systemd unit is hardened, and its reload signal rotates the
//! master key; the `health` command follows `/readyz`.
//!
//! `promtool` and `systemd-analyze` check the PromQL, the alert rules and
//! the unit where they are installed; `SMDPPLUS_DEPLOY_TOOLS=require` (set
//! by CI) makes a missing one a failure instead of a skip. `haproxy -c`
//! checks deploy/haproxy.cfg where haproxy is installed, and skips where it
//! is not.

use crate::common::{status, Receiver, Server, EID};
use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};
use serde::Deserialize;
use serde_json::{json, Value as Json};
use serde_yaml::Value as Yaml;
use smdpplus::config::{Config, FileConfig, Overrides};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn yaml(path: &str) -> Yaml {
    serde_yaml::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `name` as a command when it is installed; a skip (or, with
/// `SMDPPLUS_DEPLOY_TOOLS=require`, a failure) when not.
fn tool(name: &str) -> Option<Command> {
    let installed = Command::new(name)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if installed {
        return Some(Command::new(name));
    }
    if std::env::var("SMDPPLUS_DEPLOY_TOOLS").as_deref() == Ok("require") {
        panic!("{name} is not installed and SMDPPLUS_DEPLOY_TOOLS=require");
    }
    eprintln!("skipped: {name} is not installed");
    None
}

/// Runs `cmd` and fails with its output unless it exits 0 and prints
/// nothing on stderr.
fn run_clean(mut cmd: Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "{what}: {}\n{stdout}\n{stderr}",
        out.status
    );
    stdout
}

// ---------------------------------------------------------------------------
// Every key the configuration accepts, from FileConfig's own Deserialize.

/// Drives a `Deserialize` implementation over its whole shape: a struct
/// is given each of its fields, a map one key `*`, a sequence one element,
/// an option `Some`, an enum its first variant. Every path that ends in a
/// plain value is recorded, dotted (`listeners.es9.max_headers`,
/// `profile_types.*.notifications.operations`).
struct Probe<'a> {
    path: String,
    out: &'a RefCell<BTreeSet<String>>,
}

type ProbeError = de::value::Error;

impl<'a> Probe<'a> {
    fn leaf(&self) {
        self.out.borrow_mut().insert(self.path.clone());
    }

    fn child(&self, key: &str) -> Probe<'a> {
        let path = if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        };
        Probe {
            path,
            out: self.out,
        }
    }
}

macro_rules! probe_leaf {
    ($($method:ident => $visit:ident($($value:expr)?)),* $(,)?) => {
        $(fn $method<V: Visitor<'de>>(self, v: V) -> Result<V::Value, ProbeError> {
            self.leaf();
            v.$visit($($value)?)
        })*
    };
}

impl<'de> de::Deserializer<'de> for Probe<'_> {
    type Error = ProbeError;

    probe_leaf! {
        deserialize_bool => visit_bool(false),
        deserialize_i8 => visit_u64(1),
        deserialize_i16 => visit_u64(1),
        deserialize_i32 => visit_u64(1),
        deserialize_i64 => visit_u64(1),
        deserialize_u8 => visit_u64(1),
        deserialize_u16 => visit_u64(1),
        deserialize_u32 => visit_u64(1),
        deserialize_u64 => visit_u64(1),
        deserialize_f32 => visit_f64(1.0),
        deserialize_f64 => visit_f64(1.0),
        deserialize_char => visit_char('x'),
        // A string that also parses as a socket address.
        deserialize_str => visit_str("127.0.0.1:1"),
        deserialize_string => visit_str("127.0.0.1:1"),
        deserialize_bytes => visit_bytes(b""),
        deserialize_byte_buf => visit_bytes(b""),
        deserialize_unit => visit_unit(),
        deserialize_any => visit_str("127.0.0.1:1"),
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        v: V,
    ) -> Result<V::Value, ProbeError> {
        self.leaf();
        v.visit_unit()
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, ProbeError> {
        v.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        v: V,
    ) -> Result<V::Value, ProbeError> {
        v.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, ProbeError> {
        v.visit_seq(OneElement(Some(self)))
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _: usize, v: V) -> Result<V::Value, ProbeError> {
        v.visit_seq(OneElement(Some(self)))
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: usize,
        v: V,
    ) -> Result<V::Value, ProbeError> {
        v.visit_seq(OneElement(Some(self)))
    }

    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, ProbeError> {
        v.visit_map(Fields {
            keys: ANY_KEY.iter().copied(),
            current: "",
            parent: self,
        })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, ProbeError> {
        v.visit_map(Fields {
            keys: fields.iter().copied(),
            current: "",
            parent: self,
        })
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, ProbeError> {
        self.leaf();
        let first = variants
            .first()
            .ok_or_else(|| de::Error::custom(format!("enum {name} without variants")))?;
        v.visit_enum(FirstVariant(first))
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, v: V) -> Result<V::Value, ProbeError> {
        v.visit_str("")
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, ProbeError> {
        v.visit_unit()
    }
}

struct OneElement<'a>(Option<Probe<'a>>);

impl<'de> de::SeqAccess<'de> for OneElement<'_> {
    type Error = ProbeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, ProbeError> {
        self.0.take().map(|p| seed.deserialize(p)).transpose()
    }
}

/// The one key a probed map gets.
const ANY_KEY: &[&str] = &["*"];

struct Fields<'a> {
    keys: std::iter::Copied<std::slice::Iter<'static, &'static str>>,
    current: &'static str,
    parent: Probe<'a>,
}

impl<'de> de::MapAccess<'de> for Fields<'_> {
    type Error = ProbeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, ProbeError> {
        let Some(key) = self.keys.next() else {
            return Ok(None);
        };
        self.current = key;
        seed.deserialize(key.into_deserializer()).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, ProbeError> {
        seed.deserialize(self.parent.child(self.current))
    }
}

struct FirstVariant(&'static str);

impl<'de> de::EnumAccess<'de> for FirstVariant {
    type Error = ProbeError;
    type Variant = UnitVariant;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, UnitVariant), ProbeError> {
        Ok((seed.deserialize(self.0.into_deserializer())?, UnitVariant))
    }
}

struct UnitVariant;

impl<'de> de::VariantAccess<'de> for UnitVariant {
    type Error = ProbeError;

    fn unit_variant(self) -> Result<(), ProbeError> {
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, _: T) -> Result<T::Value, ProbeError> {
        Err(de::Error::custom("the probe only takes unit variants"))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _: usize, _: V) -> Result<V::Value, ProbeError> {
        Err(de::Error::custom("the probe only takes unit variants"))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, ProbeError> {
        Err(de::Error::custom("the probe only takes unit variants"))
    }
}

/// Every key path `FileConfig` accepts (`*` for a map key of one's own
/// choosing, such as a profile type's name).
fn accepted_keys() -> BTreeSet<String> {
    let out = RefCell::new(BTreeSet::new());
    FileConfig::deserialize(Probe {
        path: String::new(),
        out: &out,
    })
    .expect("FileConfig takes the probe");
    out.into_inner()
}

/// The key paths a TOML document sets; tables in arrays add no segment.
fn toml_keys(prefix: &str, table: &toml::Table, out: &mut BTreeSet<String>) {
    for (k, v) in table {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(t) => toml_keys(&path, t, out),
            toml::Value::Array(a) if !a.is_empty() && a.iter().all(|e| e.is_table()) => {
                for e in a {
                    toml_keys(&path, e.as_table().expect("table"), out);
                }
            }
            _ => {
                out.insert(path);
            }
        }
    }
}

/// Whether a key path matches an accepted pattern (`*` matches one segment).
fn matches(pattern: &str, path: &str) -> bool {
    let (p, k): (Vec<_>, Vec<_>) = (pattern.split('.').collect(), path.split('.').collect());
    p.len() == k.len() && p.iter().zip(&k).all(|(p, k)| *p == "*" || p == k)
}

const EXAMPLE: &str = "deploy/smdpplus.example.toml";

/// The example with its `#: ` settings switched on.
fn example_full(text: &str) -> String {
    text.lines()
        .map(|l| l.strip_prefix("#: ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_probe_finds_nested_keys() {
    let keys = accepted_keys();
    for k in [
        "data_dir",
        "es9_listen",
        "es9.initiate_authentication_rate.burst",
        "listeners.getbalance.max_headers",
        "profile_types.*.notifications.operations",
        "profile_types.*.profile_class",
        "mobile_plans.plans.kind",
        "mobile_plans.confirmation",
        "getbalance.auth",
        "credentials.dppb_key",
        "operators.notification_ca",
    ] {
        assert!(keys.contains(k), "{k} not found by the probe: {keys:?}");
    }
    assert!(
        !keys.contains("profile_types.*.icon_data"),
        "skipped fields are not keys"
    );
    assert!(keys.len() > 90, "only {} keys: {keys:?}", keys.len());
}

#[test]
fn example_config_names_every_key_with_a_comment() {
    let text = read(EXAMPLE);
    let full = example_full(&text);
    // Both the active settings and all of them parse (unknown keys are
    // refused: FileConfig denies them).
    toml::from_str::<FileConfig>(&text).unwrap_or_else(|e| panic!("{EXAMPLE}: {e}"));
    toml::from_str::<FileConfig>(&full)
        .unwrap_or_else(|e| panic!("{EXAMPLE} with its #: lines: {e}"));
    let mut written = BTreeSet::new();
    toml_keys(
        "",
        &full.parse::<toml::Table>().expect("toml"),
        &mut written,
    );
    let accepted = accepted_keys();
    let missing: Vec<_> = accepted
        .iter()
        .filter(|p| !written.iter().any(|w| matches(p, w)))
        .collect();
    assert!(
        missing.is_empty(),
        "keys the configuration accepts that {EXAMPLE} does not show: {missing:?}"
    );
    let unknown: Vec<_> = written
        .iter()
        .filter(|w| !accepted.iter().any(|p| matches(p, w)))
        .collect();
    assert!(unknown.is_empty(), "unknown keys in {EXAMPLE}: {unknown:?}");

    // A one-line comment above each key the first time it is set.
    let mut commented = BTreeSet::new();
    let mut previous_is_comment = false;
    for (n, line) in text.lines().enumerate() {
        let setting = line.strip_prefix("#: ").unwrap_or(line);
        let is_comment = line.starts_with('#') && !line.starts_with("#: ");
        if let Some((key, _)) = setting.split_once('=') {
            let key = key.trim();
            if !key.starts_with('[') && !line.starts_with("# ") {
                assert!(
                    previous_is_comment || commented.contains(key),
                    "{EXAMPLE}:{}: `{key}` has no comment above it",
                    n + 1
                );
                commented.insert(key.to_owned());
            }
        }
        previous_is_comment = is_comment;
    }
}

#[test]
fn example_config_holds_the_defaults() {
    let text = read(EXAMPLE);
    let file: FileConfig = toml::from_str(&text).expect("example");
    let o = || Overrides {
        data_dir: Some("/srv/smdpplus".into()),
        ..Overrides::default()
    };
    let example = Config::resolve(file, o());
    let default = Config::resolve(FileConfig::default(), o());
    // Debug text of the resolved values that the example's active lines set.
    let view = |c: &Config| {
        format!(
            "{:#?}",
            (
                (
                    &c.es9_listen,
                    &c.es2_listen,
                    &c.ops_listen,
                    &c.operator_web_listen,
                    &c.getbalance_listen,
                ),
                (
                    c.max_body_bytes,
                    c.order_ttl,
                    c.expiry_sweep,
                    c.seed_demo_profiles,
                    &c.extra_smdp_addresses,
                    c.session_ttl,
                    c.max_download_attempts,
                    c.max_cc_attempts,
                    c.session_keys_only,
                    c.strict_order_matching,
                ),
                (&c.es9, &c.outbox, &c.operators, &c.profile_types),
                (&c.getbalance, &c.listeners),
            )
        )
    };
    let (a, b) = (view(&example), view(&default));
    let diff: Vec<_> = a
        .lines()
        .zip(b.lines())
        .filter(|(x, y)| x != y)
        .map(|(x, y)| format!("example {} / default {}", x.trim(), y.trim()))
        .collect();
    assert!(
        diff.is_empty() && a.lines().count() == b.lines().count(),
        "{EXAMPLE} differs from the built-in defaults: {diff:#?}"
    );
}

/// A `/metrics` scrape: each family's type by name.
fn families(scrape: &str) -> BTreeMap<String, String> {
    scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(n, t)| (n.to_owned(), t.to_owned()))
        .collect()
}

#[tokio::test]
async fn example_config_starts_the_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The harness points data_dir and every listener at the temporary
    // directory and port 0 with flags, which override the file.
    let server = Server::start(dir.path(), Some(&read(EXAMPLE)));
    let (status, body) = server.ops_get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    let (status, scrape) = server.ops_get("/metrics").await;
    assert_eq!(status, 200);
    // seed_demo_profiles = 100 for the [[operators]] and [profile_types.demo] given.
    assert!(
        scrape.contains(
            "smdpplus_available_profiles{operator=\"dev-operator\",profile_type=\"demo\"} 100"
        ),
        "{scrape}"
    );
}

// ---------------------------------------------------------------------------
// Dashboard and alerts against a real scrape.

/// `smdpplus_*` metric names in a PromQL expression.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = expr;
    while let Some(i) = rest.find("smdpplus_") {
        let boundary = rest[..i]
            .chars()
            .last()
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
        let name: String = rest[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[i + name.len()..];
        if boundary {
            out.insert(name);
        }
    }
    out
}

/// Every string under an `expr` key, and the templating queries.
fn dashboard_queries(v: &Json, out: &mut Vec<String>) {
    match v {
        Json::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr" | "definition", Json::String(s)) => out.push(s.clone()),
                    ("query", Json::Object(q)) => {
                        if let Some(Json::String(s)) = q.get("query") {
                            out.push(s.clone());
                        }
                    }
                    _ => dashboard_queries(v, out),
                }
            }
        }
        Json::Array(a) => a.iter().for_each(|v| dashboard_queries(v, out)),
        _ => {}
    }
}

/// The alerting rules: (name, expr, the whole rule).
fn alert_rules() -> Vec<(String, String, Yaml)> {
    let doc = yaml("deploy/prometheus/alerts.yml");
    let groups = doc["groups"].as_sequence().expect("groups");
    groups
        .iter()
        .flat_map(|g| g["rules"].as_sequence().expect("rules").clone())
        .map(|r| {
            (
                r["alert"].as_str().expect("alert name").to_owned(),
                r["expr"].as_str().expect("expr").to_owned(),
                r,
            )
        })
        .collect()
}

/// Names missing from the scrape; histogram series are matched by family.
fn unknown_metrics<'a>(
    names: impl IntoIterator<Item = &'a String>,
    families: &BTreeMap<String, String>,
) -> Vec<String> {
    names
        .into_iter()
        .filter(|n| {
            if families.contains_key(*n) {
                return false;
            }
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| n.strip_suffix(s));
            family.is_none_or(|f| families.get(f).map(String::as_str) != Some("histogram"))
        })
        .cloned()
        .collect()
}

fn dashboard() -> Json {
    serde_json::from_str(&read("deploy/grafana/smdpplus.json")).expect("dashboard JSON")
}

#[tokio::test]
async fn dashboard_and_alerts_use_only_exported_metrics() {
    let dashboard = dashboard();
    let mut queries = vec![];
    dashboard_queries(&dashboard, &mut queries);
    let dash_names: BTreeSet<String> = queries.iter().flat_map(|q| metric_names(q)).collect();
    let rules = alert_rules();
    let alert_names: BTreeSet<String> = rules.iter().flat_map(|r| metric_names(&r.1)).collect();

    // A server whose operator has a real notification endpoint, and one
    // notification delivered to it: the per-operator outbox series exist
    // from an operator's first notification on, the request counters and
    // the latency histogram from the first request.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rx = Receiver::start(&dir.path().join("receiver"), 0).await;
    let server = Server::start(&dir.path().join("data"), Some(&rx.config("")));
    let op = server.operator();
    let (_, v) = op
        .call("downloadOrder", json!({"profileType": "demo", "eid": EID}))
        .await;
    let iccid = v["iccid"].as_str().expect("iccid").to_owned();
    let (_, v) = op
        .call(
            "cancelOrder",
            json!({"iccid": iccid, "eid": EID, "finalProfileStatusIndicator": "Available"}),
        )
        .await;
    assert_eq!(status(&v), "Executed-Success", "{v}");
    rx.next(Duration::from_secs(30))
        .await
        .expect("notification delivered");
    let (code, scrape) = server.ops_get("/metrics").await;
    assert_eq!(code, 200);
    let families = families(&scrape);
    assert!(
        families
            .get("smdpplus_request_duration_seconds")
            .map(String::as_str)
            == Some("histogram"),
        "{scrape}"
    );
    let unknown = unknown_metrics(&dash_names, &families);
    assert!(
        unknown.is_empty(),
        "the dashboard uses metrics /metrics does not export: {unknown:?}"
    );
    let unknown = unknown_metrics(&alert_names, &families);
    assert!(
        unknown.is_empty(),
        "the alerts use metrics /metrics does not export: {unknown:?}"
    );

    // What the dashboard shows, and what is alerted on.
    let uses = |metric: &str, label: &str| {
        queries
            .iter()
            .any(|q| metric_names(q).contains(metric) && q.contains(label))
    };
    assert!(
        uses("smdpplus_requests_total", "api=\"es9plus\""),
        "downloads"
    );
    assert!(
        uses("smdpplus_requests_total", "by (endpoint, code)"),
        "failures by code"
    );
    assert!(
        uses(
            "smdpplus_request_duration_seconds_bucket",
            "api=\"es2plus\""
        ),
        "ES2+ latency"
    );
    assert!(
        uses("smdpplus_outbox_operator_depth", "operator"),
        "outbox depth"
    );
    assert!(
        uses("smdpplus_outbox_oldest_item_age_seconds", "operator"),
        "outbox age"
    );
    assert!(uses("smdpplus_available_profiles", "profile_type"), "pools");
    assert!(uses("smdpplus_rsp_sessions", "phase"), "sessions");
    let alerted = |metric: &str| rules.iter().any(|r| metric_names(&r.1).contains(metric));
    assert!(alerted("smdpplus_available_profiles"), "low pool alert");
    assert!(
        alerted("smdpplus_outbox_oldest_item_age_seconds"),
        "old outbox alert"
    );
    assert!(alerted("smdpplus_requests_total"), "error rate alert");
    for (name, _, rule) in &rules {
        assert!(rule["for"].as_str().is_some(), "{name}: no `for`");
        assert!(
            matches!(
                rule["labels"]["severity"].as_str(),
                Some("warning" | "critical")
            ),
            "{name}: severity"
        );
        assert!(
            rule["annotations"]["summary"].as_str().is_some(),
            "{name}: summary"
        );
        assert!(
            rule["annotations"]["description"].as_str().is_some(),
            "{name}: description"
        );
    }
}

#[test]
fn dashboard_is_well_formed() {
    let d = dashboard();
    assert_eq!(d["uid"], "smdpplus");
    assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()));
    let panels = d["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut graphs = 0;
    for p in panels {
        let id = p["id"].as_u64().expect("panel id");
        assert!(ids.insert(id), "panel id {id} twice");
        let g = &p["gridPos"];
        let (x, w) = (g["x"].as_u64().expect("x"), g["w"].as_u64().expect("w"));
        assert!(x + w <= 24 && g["h"].as_u64().is_some() && g["y"].as_u64().is_some());
        if p["type"] == "row" {
            continue;
        }
        graphs += 1;
        let title = p["title"].as_str().expect("title");
        assert!(p["description"].as_str().is_some(), "{title}: description");
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        for t in targets {
            assert!(t["refId"].as_str().is_some(), "{title}: refId");
            assert!(
                t["expr"].as_str().is_some_and(|e| e.contains("smdpplus_")),
                "{title}"
            );
        }
    }
    assert!(graphs >= 10, "{graphs} panels");
    // The data source variable defaults to the provisioned data source.
    let vars = d["templating"]["list"].as_array().expect("variables");
    let ds = vars
        .iter()
        .find(|v| v["name"] == "datasource")
        .expect("datasource variable");
    let provisioned = yaml("deploy/grafana/provisioning/datasources/smdpplus.yml");
    assert_eq!(
        ds["current"]["value"].as_str(),
        provisioned["datasources"][0]["uid"].as_str(),
        "dashboard default data source"
    );
}

/// The dashboard's queries as Prometheus recording rules, with Grafana's
/// variables given values, for `promtool check rules`.
fn dashboard_as_rules() -> String {
    let mut queries = vec![];
    dashboard_queries(&dashboard(), &mut queries);
    let rules: Vec<Yaml> = queries
        .iter()
        .filter(|q| !q.starts_with("label_values("))
        .enumerate()
        .map(|(i, q)| {
            let expr = q
                .replace("$__rate_interval", "1m")
                .replace("$instance", ".*");
            serde_yaml::from_str(&format!(
                "record: dashboard:query{i}\nexpr: {}",
                serde_json::to_string(&expr).expect("json")
            ))
            .expect("rule")
        })
        .collect();
    let doc = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
    serde_yaml::to_string(&doc).expect("yaml")
}

#[test]
fn promql_and_rules_pass_promtool() {
    let Some(mut check) = tool("promtool") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let dash_rules = dir.path().join("dashboard-rules.yml");
    std::fs::write(&dash_rules, dashboard_as_rules()).expect("write");
    check
        .args(["check", "rules"])
        .arg(&dash_rules)
        .arg(repo("deploy/prometheus/alerts.yml"));
    let out = run_clean(check, "promtool check rules");
    assert!(out.contains("SUCCESS"), "{out}");
    let mut config = Command::new("promtool");
    config
        .args(["check", "config"])
        .arg(repo("deploy/prometheus/prometheus.yml"));
    run_clean(config, "promtool check config");
    let mut unit = Command::new("promtool");
    unit.args(["test", "rules"])
        .arg(repo("deploy/prometheus/alerts.test.yml"));
    let out = run_clean(unit, "promtool test rules");
    assert!(out.contains("SUCCESS"), "{out}");
}

// ---------------------------------------------------------------------------
// The image, the compose file and their provisioning.

/// The Dockerfile's instructions (continuation lines joined, comments
/// dropped) of the final stage: (instruction, arguments).
fn dockerfile_final_stage() -> Vec<(String, String)> {
    let text = read("docker/Dockerfile");
    let mut joined = vec![];
    let mut current = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && current.is_empty()) {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(t);
                joined.push(std::mem::take(&mut current));
            }
        }
    }
    let last_from = joined
        .iter()
        .rposition(|l| l.starts_with("FROM "))
        .expect("FROM");
    joined[last_from..]
        .iter()
        .filter_map(|l| l.split_once(' '))
        .map(|(i, a)| (i.to_owned(), a.trim().to_owned()))
        .collect()
}

/// The `SMDPPLUS_*_LISTEN` variables `smdpplus serve` reads: one per
/// listener.
fn listener_env_vars() -> Vec<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_smdpplus"))
        .args(["serve", "--help"])
        .output()
        .expect("serve --help");
    let help = String::from_utf8_lossy(&out.stdout);
    let vars: Vec<String> = help
        .split("[env: ")
        .skip(1)
        .filter_map(|s| s.split_once('=').map(|(v, _)| v.to_owned()))
        .filter(|v| v.ends_with("_LISTEN"))
        .collect();
    assert!(vars.len() >= 5, "{help}");
    vars
}

/// The Dockerfile's `ENV` pairs.
fn dockerfile_env(stage: &[(String, String)]) -> BTreeMap<String, String> {
    stage
        .iter()
        .filter(|(i, _)| i == "ENV")
        .flat_map(|(_, a)| a.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        })
        .collect()
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {addr}"))
}

const OPS_ENV: &str = "SMDPPLUS_OPS_LISTEN";

#[test]
fn image_binds_exposes_and_health_checks_every_listener() {
    let stage = dockerfile_final_stage();
    let env = dockerfile_env(&stage);
    let exposed: BTreeSet<u16> = stage
        .iter()
        .filter(|(i, _)| i == "EXPOSE")
        .flat_map(|(_, a)| {
            a.split_whitespace()
                .map(|p| p.parse::<u16>().expect("port"))
                .collect::<Vec<_>>()
        })
        .collect();
    for var in listener_env_vars() {
        let addr = env
            .get(&var)
            .unwrap_or_else(|| panic!("the Dockerfile does not set {var}: {env:?}"));
        assert!(
            addr.starts_with("0.0.0.0:"),
            "{var}={addr} is not reachable from outside the container"
        );
        assert!(
            exposed.contains(&port_of(addr)),
            "{var}={addr} not in EXPOSE {exposed:?}"
        );
    }
    assert_eq!(
        env.get("SMDPPLUS_DATA_DIR").map(String::as_str),
        Some("/data")
    );
    let user = stage
        .iter()
        .rfind(|(i, _)| i == "USER")
        .expect("USER")
        .1
        .clone();
    assert!(
        user.split(':')
            .all(|p| p.parse::<u32>().is_ok_and(|id| id > 0)),
        "USER {user}: numeric and not root"
    );
    // The health check asks the operations listener's /readyz.
    let health = &stage
        .iter()
        .find(|(i, _)| i == "HEALTHCHECK")
        .expect("HEALTHCHECK")
        .1;
    let cmd = health.split_once("CMD ").expect("HEALTHCHECK CMD").1;
    let cmd: Vec<String> = serde_json::from_str(cmd).expect("exec form");
    let url = format!("http://127.0.0.1:{}/readyz", port_of(&env[OPS_ENV]));
    assert_eq!(cmd, ["smdpplus", "health", "--url", url.as_str()]);
}

fn compose() -> Yaml {
    yaml("docker/compose.yaml")
}

fn strings(v: &Yaml) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|e| e.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The smdpplus nodes of the compose file.
const NODES: [&str; 2] = ["smdpplus-a", "smdpplus-b"];

/// A service's mounts: (source, target, read-only).
fn mounts_of(service: &Yaml) -> Vec<(String, String, bool)> {
    strings(&service["volumes"])
        .iter()
        .map(|v| {
            let mut parts = v.split(':');
            let source = parts.next().expect("source").to_owned();
            let target = parts.next().expect("target").to_owned();
            (source, target, parts.next() == Some("ro"))
        })
        .collect()
}

/// A service's published ports: (host part, container port).
fn published(service: &Yaml) -> Vec<(String, u16)> {
    strings(&service["ports"])
        .iter()
        .map(|p| {
            let (host, container) = p.rsplit_once(':').expect("host:container");
            (host.to_owned(), container.parse().expect("container port"))
        })
        .collect()
}

/// The repository file a service mounts at `target`.
fn mounted_file(service: &Yaml, target: &str) -> PathBuf {
    let (source, _, _) = mounts_of(service)
        .into_iter()
        .find(|(_, t, _)| t == target)
        .unwrap_or_else(|| panic!("nothing mounted at {target}"));
    repo("docker").join(source)
}

/// The configuration file a node's `serve --config` reads, parsed.
fn node_config(node: &Yaml) -> (PathBuf, toml::Table) {
    let command = strings(&node["command"]);
    let at = command
        .iter()
        .position(|a| a == "--config")
        .expect("serve --config");
    let path = mounted_file(node, &command[at + 1]);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let table = text
        .parse::<toml::Table>()
        .unwrap_or_else(|e| panic!("{path:?}: {e}"));
    (path, table)
}

/// The secrets a service is given, by name.
fn secrets_of(service: &Yaml) -> BTreeSet<String> {
    service["secrets"]
        .as_sequence()
        .into_iter()
        .flatten()
        .map(|s| match s.as_str() {
            Some(name) => name.to_owned(),
            None => s["source"].as_str().expect("secret source").to_owned(),
        })
        .collect()
}

#[test]
fn compose_services_ports_health_checks_and_volumes() {
    let c = compose();
    let services = c["services"].as_mapping().expect("services");
    let names: BTreeSet<&str> = services.keys().filter_map(Yaml::as_str).collect();
    for s in NODES
        .iter()
        .copied()
        .chain(["postgres", "haproxy", "prometheus", "grafana"])
    {
        assert!(names.contains(s), "no {s} service: {names:?}");
    }
    let docker = repo("docker");
    let env = dockerfile_env(&dockerfile_final_stage());
    let ops_port = port_of(&env[OPS_ENV]);
    let public_ports: BTreeSet<u16> = listener_env_vars()
        .iter()
        .filter(|v| *v != OPS_ENV)
        .map(|v| port_of(&env[v]))
        .collect();

    // Every node built from this repository's Dockerfile, publishing only
    // its operations listener, on loopback; the same health check as the
    // image's.
    let image_check = dockerfile_final_stage()
        .into_iter()
        .find(|(i, _)| i == "HEALTHCHECK")
        .expect("HEALTHCHECK")
        .1;
    let image_cmd: Vec<String> =
        serde_json::from_str(image_check.split_once("CMD ").expect("CMD").1).expect("exec form");
    for node in NODES {
        let s = &c["services"][node];
        let context = docker.join(s["build"]["context"].as_str().expect("context"));
        assert_eq!(
            context.canonicalize().expect("context"),
            repo("").canonicalize().expect("repo"),
            "{node}"
        );
        assert!(context
            .join(s["build"]["dockerfile"].as_str().expect("dockerfile"))
            .is_file());
        let ports = published(s);
        assert_eq!(ports.len(), 1, "{node} publishes {ports:?}");
        assert_eq!(ports[0].1, ops_port, "{node} publishes {ports:?}");
        assert!(
            ports[0].0.starts_with("127.0.0.1:"),
            "{node}: operations published on {}",
            ports[0].0
        );
        assert_eq!(
            strings(&s["healthcheck"]["test"])[1..],
            image_cmd[..],
            "{node}"
        );
        assert_eq!(
            s["depends_on"]["postgres"]["condition"].as_str(),
            Some("service_healthy"),
            "{node} starts before the database is ready"
        );
    }
    // Node B starts when node A has created the files it shares.
    assert_eq!(
        c["services"]["smdpplus-b"]["depends_on"]["smdpplus-a"]["condition"].as_str(),
        Some("service_healthy")
    );
    for (name, s) in services {
        let test = strings(&s["healthcheck"]["test"]);
        assert!(
            test.first().is_some_and(|t| t == "CMD" || t == "CMD-SHELL") && test.len() > 1,
            "{name:?}: no health check"
        );
    }

    // Volumes: named ones declared (and each declared one used), bind
    // mounts of files that exist in the repository.
    let declared: BTreeSet<String> = c["volumes"]
        .as_mapping()
        .expect("volumes")
        .keys()
        .filter_map(|k| k.as_str().map(str::to_owned))
        .collect();
    let mut used = BTreeSet::new();
    let mut mounts = BTreeMap::new();
    for (name, s) in services {
        for (source, target, _) in mounts_of(s) {
            if source.starts_with('.') {
                let path = docker.join(&source);
                assert!(
                    path.exists(),
                    "{name:?} mounts {source}, which does not exist"
                );
                mounts.insert(target, path.canonicalize().expect("path"));
            } else {
                assert!(
                    declared.contains(&source),
                    "{name:?}: volume {source} not declared"
                );
                used.insert(source);
            }
        }
    }
    assert_eq!(used, declared, "declared volumes that no service uses");
    // Each node's data directory on a volume of its own.
    let data_volumes: Vec<String> = NODES
        .iter()
        .map(|node| {
            let (source, _, ro) = mounts_of(&c["services"][node])
                .into_iter()
                .find(|(_, t, _)| t == "/data")
                .unwrap_or_else(|| panic!("{node}: the data directory is not on a volume"));
            assert!(!ro, "{node}: read-only data directory");
            source
        })
        .collect();
    assert_ne!(data_volumes[0], data_volumes[1], "the nodes share /data");

    // Prometheus: its configuration and the alerts side by side (rule_files
    // is relative), scraping every node's operations port.
    let prom_config = mounts
        .get("/etc/prometheus/prometheus.yml")
        .expect("prometheus.yml mounted");
    let prom: Yaml = serde_yaml::from_str(&std::fs::read_to_string(prom_config).expect("read"))
        .expect("prometheus.yml");
    for rule_file in strings(&prom["rule_files"]) {
        let target = format!("/etc/prometheus/{rule_file}");
        assert_eq!(
            mounts.get(&target),
            Some(
                &repo("deploy/prometheus/alerts.yml")
                    .canonicalize()
                    .expect("alerts")
            ),
            "{rule_file}"
        );
    }
    let job = &prom["scrape_configs"][0];
    assert_eq!(
        job["job_name"].as_str(),
        Some("smdpplus"),
        "the alerts' job label"
    );
    let targets: Vec<String> = NODES.iter().map(|n| format!("{n}:{ops_port}")).collect();
    assert_eq!(strings(&job["static_configs"][0]["targets"]), targets);
    for node in NODES {
        assert!(
            c["services"]["prometheus"]["depends_on"][node]["condition"]
                .as_str()
                .is_some(),
            "Prometheus does not wait for {node}"
        );
    }

    // haproxy publishes every public listener on every address.
    let lb = &c["services"]["haproxy"];
    let lb_ports: BTreeMap<u16, String> = published(lb)
        .into_iter()
        .map(|(host, port)| (port, host))
        .collect();
    for port in &public_ports {
        let host = lb_ports
            .get(port)
            .unwrap_or_else(|| panic!("haproxy does not publish {port}: {lb_ports:?}"));
        assert_eq!(*host, port.to_string(), "port {port} published on {host}");
    }
    assert_eq!(
        mounts.get("/usr/local/etc/haproxy/haproxy.cfg"),
        Some(
            &repo("deploy/haproxy.cfg")
                .canonicalize()
                .expect("haproxy.cfg")
        )
    );

    // Grafana: the provisioned data source is the prometheus service, and
    // the dashboard lies where the provider looks.
    assert_eq!(
        mounts.get("/etc/grafana/provisioning"),
        Some(
            &repo("deploy/grafana/provisioning")
                .canonicalize()
                .expect("provisioning")
        )
    );
    let ds = yaml("deploy/grafana/provisioning/datasources/smdpplus.yml");
    assert_eq!(
        ds["datasources"][0]["url"].as_str(),
        Some("http://prometheus:9090")
    );
    let provider = yaml("deploy/grafana/provisioning/dashboards/smdpplus.yml");
    let dir = provider["providers"][0]["options"]["path"]
        .as_str()
        .expect("path");
    let dashboard = repo("deploy/grafana/smdpplus.json")
        .canonicalize()
        .expect("dashboard");
    assert!(
        mounts
            .iter()
            .any(|(t, s)| *s == dashboard && Path::new(t).parent() == Some(Path::new(dir))),
        "deploy/grafana/smdpplus.json is not mounted in {dir}"
    );
}

/// PostgreSQL and the nodes' store: the password and the URL are compose
/// secrets (files in the containers), in no environment variable or
/// command line; the database is not published and is health-checked with
/// pg_isready.
#[test]
fn compose_database_and_its_secrets() {
    let c = compose();
    let declared: BTreeSet<String> = c["secrets"]
        .as_mapping()
        .expect("secrets")
        .keys()
        .filter_map(|k| k.as_str().map(str::to_owned))
        .collect();
    let mut used = BTreeSet::new();
    for (name, s) in c["services"].as_mapping().expect("services") {
        for secret in secrets_of(s) {
            assert!(
                declared.contains(&secret),
                "{name:?}: secret {secret} not declared"
            );
            used.insert(secret);
        }
        // Nothing that looks like a password or a database URL inline.
        let text = serde_yaml::to_string(&s["environment"]).expect("yaml")
            + &serde_yaml::to_string(&s["command"]).expect("yaml");
        assert!(
            !text.contains("postgres://") && !text.contains("POSTGRES_PASSWORD:"),
            "{name:?}: a database secret inline: {text}"
        );
    }
    assert_eq!(used, declared, "declared secrets that no service uses");

    let pg = &c["services"]["postgres"];
    assert!(
        pg["image"]
            .as_str()
            .is_some_and(|i| i.starts_with("postgres:")),
        "the official image"
    );
    assert!(pg["ports"].is_null(), "PostgreSQL is published");
    let password_file = pg["environment"]["POSTGRES_PASSWORD_FILE"]
        .as_str()
        .expect("POSTGRES_PASSWORD_FILE");
    let secret = password_file
        .strip_prefix("/run/secrets/")
        .expect("a secret's file");
    assert!(secrets_of(pg).contains(secret), "{password_file}");
    let test = strings(&pg["healthcheck"]["test"]);
    assert_eq!(
        test.get(1).map(String::as_str),
        Some("pg_isready"),
        "{test:?}"
    );
    assert!(
        mounts_of(pg)
            .iter()
            .any(|(source, target, _)| !source.starts_with('.')
                && target == "/var/lib/postgresql/data"),
        "the database is not on a named volume"
    );

    // Each node reads the URL from its secret's file.
    for node in NODES {
        let s = &c["services"][node];
        let (path, table) = node_config(s);
        let store = &table["store"];
        assert_eq!(store["engine"].as_str(), Some("postgres"), "{path:?}");
        let url_file = store["url_file"].as_str().expect("url_file");
        let secret = url_file
            .strip_prefix("/run/secrets/")
            .expect("a secret's file");
        assert!(secrets_of(s).contains(secret), "{node}: {url_file}");
    }
}

/// Both node configurations are valid, and node B's is node A's plus the
/// keys that name node A's files, which lie in node A's data volume,
/// mounted read-only in node B.
#[test]
fn compose_nodes_share_one_configuration_and_node_a_files() {
    let c = compose();
    let (a_path, a) = node_config(&c["services"]["smdpplus-a"]);
    let (b_path, mut b) = node_config(&c["services"]["smdpplus-b"]);
    for path in [&a_path, &b_path] {
        let file = FileConfig::load(path).unwrap_or_else(|e| panic!("{e}"));
        let config = Config::resolve(file, Overrides::default());
        config
            .store
            .resolve(Some("postgres://smdpplus@postgres/smdpplus".into()))
            .unwrap_or_else(|e| panic!("{path:?}: {e}"));
    }

    // Node A's data volume, as node B sees it.
    let a_data = mounts_of(&c["services"]["smdpplus-a"])
        .into_iter()
        .find(|(_, t, _)| t == "/data")
        .expect("node A's /data")
        .0;
    let (_, cluster, ro) = mounts_of(&c["services"]["smdpplus-b"])
        .into_iter()
        .find(|(s, t, _)| *s == a_data && t != "/data")
        .expect("node A's data volume mounted in node B");
    assert!(ro, "node B may write node A's files");
    // Node A's files (its defaults under /data) and B's keys for them.
    let shared = [
        ("tls_cert", "pki/dptls.crt"),
        ("tls_key", "pki/dptls.key"),
        ("master_key_file", "master.key"),
    ];
    for (key, file) in shared {
        assert_eq!(
            b.remove(key).and_then(|v| v.as_str().map(str::to_owned)),
            Some(format!("{cluster}/{file}")),
            "node B's {key}"
        );
    }
    let ca = toml::Value::Array(vec![toml::Value::String(format!(
        "{cluster}/pki/operator-ca.crt"
    ))]);
    assert_eq!(
        b.remove("operator_ca"),
        Some(ca.clone()),
        "node B's operator_ca"
    );
    let section = |t: &mut toml::Table, name: &str| -> toml::Table {
        t.get_mut(name)
            .and_then(toml::Value::as_table_mut)
            .cloned()
            .unwrap_or_default()
    };
    let mut mp = section(&mut b, "mobile_plans");
    assert_eq!(
        mp.remove("capability_key_file")
            .and_then(|v| v.as_str().map(str::to_owned)),
        Some(format!("{cluster}/mobileplans.key")),
        "node B's capability key"
    );
    b.insert("mobile_plans".into(), toml::Value::Table(mp));
    let mut gb = section(&mut b, "getbalance");
    assert_eq!(gb.remove("client_ca"), Some(ca), "node B's GetBalance CA");
    if gb.is_empty() {
        b.remove("getbalance");
    } else {
        b.insert("getbalance".into(), toml::Value::Table(gb));
    }
    assert_eq!(
        a, b,
        "node B's configuration is not node A's plus the shared files"
    );
}

/// deploy/haproxy.cfg: each public listener balanced over every node's
/// same port, TLS passed through (TCP mode), each node checked on
/// `/readyz` of its operations port.
#[test]
fn haproxy_balances_every_public_listener_over_the_nodes() {
    let cfg = read("deploy/haproxy.cfg");
    let env = dockerfile_env(&dockerfile_final_stage());
    let ops_port = port_of(&env[OPS_ENV]);
    // Sections: header line, then their lines (comments dropped).
    let mut sections: Vec<(String, Vec<String>)> = vec![];
    for line in cfg.lines() {
        let t = line.split('#').next().unwrap_or_default().trim();
        if t.is_empty() {
            continue;
        }
        if line.starts_with(char::is_whitespace) {
            let (_, body) = sections.last_mut().expect("a line outside a section");
            body.push(t.to_owned());
        } else {
            sections.push((t.to_owned(), vec![]));
        }
    }
    let body = |header: &str| -> Vec<String> {
        sections
            .iter()
            .find(|(h, _)| h == header)
            .unwrap_or_else(|| panic!("no `{header}` in deploy/haproxy.cfg"))
            .1
            .clone()
    };
    let defaults = body("defaults");
    assert!(defaults.contains(&"mode tcp".to_owned()), "{defaults:?}");
    let server_defaults = defaults
        .iter()
        .find(|l| l.starts_with("default-server "))
        .expect("default-server");
    assert!(
        server_defaults.contains(&format!("check port {ops_port}")),
        "{server_defaults}"
    );
    for var in listener_env_vars().iter().filter(|v| *v != OPS_ENV) {
        let port = port_of(&env[var]);
        let frontend = sections
            .iter()
            .find(|(h, b)| h.starts_with("frontend ") && b.contains(&format!("bind :{port}")))
            .unwrap_or_else(|| panic!("no frontend binds {port} ({var})"));
        let backend = frontend
            .1
            .iter()
            .find_map(|l| l.strip_prefix("default_backend "))
            .expect("default_backend");
        let lines = body(&format!("backend {backend}"));
        assert!(
            !lines.iter().any(|l| l.starts_with("mode http")),
            "{backend}: TLS must pass through"
        );
        assert!(lines.contains(&"option httpchk".to_owned()), "{lines:?}");
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("http-check send meth GET uri /readyz")),
            "{lines:?}"
        );
        for node in NODES {
            assert!(
                lines.contains(&format!("server {node} {node}:{port}")),
                "{backend} does not reach {node}:{port}: {lines:?}"
            );
        }
    }
}

#[test]
fn container_files_pass_their_linters() {
    if let Some(mut hadolint) = tool("hadolint") {
        // .hadolint.yaml at the repository root: strict, no rule ignored.
        hadolint.current_dir(repo("")).arg("docker/Dockerfile");
        run_clean(hadolint, "hadolint docker/Dockerfile");
    }
    if let Some(mut schema) = tool("check-jsonschema") {
        schema
            .args(["--builtin-schema", "vendor.compose-spec"])
            .arg(repo("docker/compose.yaml"));
        run_clean(schema, "check-jsonschema compose-spec");
    }
}

/// `haproxy -c -f deploy/haproxy.cfg` where haproxy (Debian's `haproxy`
/// package) is installed; a skip with a message where it is not, whatever
/// `SMDPPLUS_DEPLOY_TOOLS` says. The servers' names resolve only on the
/// compose network: the warnings that they do not are the only ones allowed.
#[test]
fn haproxy_config_passes_haproxy_check() {
    let installed = Command::new("haproxy")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !installed {
        eprintln!("skipped: haproxy is not installed (apt-get install haproxy)");
        return;
    }
    let out = Command::new("haproxy")
        .args(["-c", "-f"])
        .arg(repo("deploy/haproxy.cfg"))
        .output()
        .expect("haproxy -c");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("Configuration file is valid"),
        "haproxy -c: {}\n{text}",
        out.status
    );
    let complaints: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("[WARNING]") || l.contains("[ALERT]"))
        .filter(|l| !l.contains("could not resolve address"))
        .collect();
    assert!(
        complaints.is_empty(),
        "haproxy -c:\n{}",
        complaints.join("\n")
    );
}

// ---------------------------------------------------------------------------
// The systemd unit.

/// The unit's `[Service]` settings, in order (a key may repeat).
fn service_settings() -> Vec<(String, String)> {
    let text = read("deploy/smdpplus.service");
    let mut section = String::new();
    let mut out = vec![];
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if line.starts_with('[') {
            section = line.to_owned();
        } else if section == "[Service]" {
            let (k, v) = line.split_once('=').expect("key=value");
            out.push((k.to_owned(), v.to_owned()));
        }
    }
    out
}

#[test]
fn systemd_unit_is_hardened() {
    let s = service_settings();
    let get = |k: &str| {
        s.iter()
            .rfind(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("{k} not set"))
    };
    for (k, v) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("CapabilityBoundingSet", ""),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("KillSignal", "SIGTERM"),
    ] {
        assert_eq!(get(k), v, "{k}");
    }
    // Not root: a dynamic or a dedicated user.
    assert!(
        s.iter().any(|(k, v)| k == "DynamicUser" && v == "yes")
            || s.iter()
                .any(|(k, v)| k == "User" && v != "root" && !v.is_empty()),
        "no user"
    );
    // The data directory is the state directory, the one writable place.
    let state = get("StateDirectory");
    let envs: Vec<&str> = s
        .iter()
        .filter(|(k, _)| k == "Environment")
        .map(|(_, v)| v.as_str())
        .collect();
    assert!(
        envs.contains(&format!("SMDPPLUS_DATA_DIR=/var/lib/{state}").as_str()),
        "{envs:?}"
    );
    assert!(get("ExecStart").ends_with(" serve"), "{}", get("ExecStart"));
    // Room for every listener's default connection cap plus the store.
    let limits = smdpplus::http::listener::Listeners::resolve(&Default::default());
    let nofile: u64 = get("LimitNOFILE").parse().expect("LimitNOFILE");
    assert!(
        nofile >= limits.total_connections() + 256,
        "LimitNOFILE={nofile} < {} + 256",
        limits.total_connections()
    );
    // The stop timeout covers the 30 s drain.
    let stop: u64 = get("TimeoutStopSec")
        .trim_end_matches('s')
        .parse()
        .expect("secs");
    assert!(stop > 30, "TimeoutStopSec={stop}");

    let Some(mut verify) = tool("systemd-analyze") else {
        return;
    };
    // systemd-analyze checks that ExecStart exists: the built binary stands
    // in for the installed one.
    let dir = tempfile::tempdir().expect("tempdir");
    let unit = dir.path().join("smdpplus.service");
    std::fs::write(
        &unit,
        read("deploy/smdpplus.service")
            .replace("/usr/local/bin/smdpplus", env!("CARGO_BIN_EXE_smdpplus")),
    )
    .expect("write unit");
    verify.arg("verify").arg(&unit);
    run_clean(verify, "systemd-analyze verify");
    // Exposure score at most 2.0 of 10 ("OK").
    let mut security = Command::new("systemd-analyze");
    security
        .args(["security", "--offline=true", "--threshold=20", "--no-pager"])
        .arg(&unit);
    let out = security.output().expect("systemd-analyze security");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test]
async fn systemd_reload_rotates_the_master_key_online() {
    use smdpplus::profile::protect::Keyring;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), None);
    let key_file = dir.path().join("master.key");
    let (mut ring, _) = Keyring::load_or_create(&key_file).expect("key file");
    let old = ring.current_id();
    let new = ring.rotate(&key_file).expect("add a key");
    assert_ne!(old, new);
    // What `systemctl reload` runs, with the server's pid as $MAINPID.
    let reload = service_settings()
        .into_iter()
        .rfind(|(k, _)| k == "ExecReload")
        .expect("ExecReload")
        .1;
    // The server writes its pid file just after it reports ready.
    let pid_file = dir.path().join("smdpplus.pid");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let pid = loop {
        match std::fs::read_to_string(&pid_file) {
            Ok(p) if !p.trim().is_empty() => break p,
            _ if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            other => panic!("pid file: {other:?}"),
        }
    };
    let status = Command::new("sh")
        .arg("-c")
        .arg(reload.replace("$MAINPID", pid.trim()))
        .status()
        .expect("reload");
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, scrape) = server.ops_get("/metrics").await;
        let retired = Keyring::load_or_create(&key_file)
            .map(|(r, _)| r.ids() == vec![new])
            .unwrap_or(false);
        if scrape.contains(&format!("\nsmdpplus_master_key_id {new}\n")) && retired {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no rotation to key {new}; log:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(server.ops_get("/readyz").await.0, 200);
}

#[tokio::test]
async fn health_command_follows_the_operations_listener() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(dir.path(), None);
    let health = |url: String| {
        Command::new(env!("CARGO_BIN_EXE_smdpplus"))
            .args(["health", "--url", &url, "--timeout-secs", "5"])
            .output()
            .expect("smdpplus health")
    };
    let ok = health(format!("http://{}/readyz", server.ops));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let missing = health(format!("http://{}/nowhere", server.ops));
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("HTTP 404"));
    let ops = server.ops;
    assert!(server.terminate().success());
    let gone = health(format!("http://{ops}/readyz"));
    assert!(!gone.status.success());
    assert!(!String::from_utf8_lossy(&gone.stderr).is_empty());
}
