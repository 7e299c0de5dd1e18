//! Settings from the environment: `CONCLAVE_<KEY>` for a top-level key and
//! `CONCLAVE_<SECTION>__<KEY>` for a key of a section (`CONCLAVE_LISTEN`,
//! `CONCLAVE_TIMING__DRAIN_GRACE_SECS`, `CONCLAVE_CLUSTER__NODE_ID`, ...), laid over the
//! file before the configuration is read, so that precedence is defaults < file <
//! environment (< flags, applied by the binary).
//!
//! Each value is taken as the type the key has (a whole number, `true`/`false`, or
//! text), and an error names the variable. A variable whose section exists but whose
//! key does not is an error (a typo must not fall back to a default); a `CONCLAVE_`
//! variable that names no setting at all is left alone (other tools use the prefix;
//! the binary's own flags read `CONCLAVE_STORE`, `CONCLAVE_STORE_CA_FILE`,
//! `CONCLAVE_CONFIG`, `CONCLAVE_LOG`, `CONCLAVE_LOG_FORMAT` and
//! `CONCLAVE_WORKER_THREADS`).

use std::path::{Path, PathBuf};

use super::{ClusterConfig, Config, ConfigError};

/// The prefix of every setting's variable.
const PREFIX: &str = "CONCLAVE_";

/// Keys that the binary's flags read from the environment themselves (so that a
/// refused PostgreSQL URL is never echoed).
const FLAG_KEYS: [&str; 2] = ["store", "store_ca_file"];

/// One setting from the environment, typed.
struct Override {
    var: String,
    path: Vec<String>,
    value: toml::Value,
}

impl Config {
    /// The configuration from the defaults, then the TOML file at `file` (if any),
    /// then the `CONCLAVE_…` variables among `vars`. Not validated (flags come next).
    pub fn load_layered(
        file: Option<&Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let (table, source) = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
                    path: path.to_path_buf(),
                    source,
                })?;
                let table: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Parse {
                    path: path.to_path_buf(),
                    message: e.to_string().trim_end().to_owned(),
                })?;
                (table, path.to_path_buf())
            }
            None => (toml::Table::new(), PathBuf::from("<defaults>")),
        };
        let overrides = overrides(vars)?;
        if overrides.is_empty() {
            return read(&table, &source);
        }
        let layered = |skip: Option<usize>| {
            let mut t = table.clone();
            for (i, o) in overrides.iter().enumerate() {
                if Some(i) != skip {
                    set(&mut t, &o.path, o.value.clone());
                }
            }
            t
        };
        let environment = PathBuf::from("<environment>");
        match read(&layered(None), &environment) {
            Ok(config) => Ok(config),
            Err(error) => {
                // Name the variable without which the rest reads; else the file, if it
                // is wrong by itself (a file may leave a required key, such as
                // [cluster] node_id, to the environment).
                let message = match &error {
                    ConfigError::Parse { message, .. } => message.clone(),
                    other => other.to_string(),
                };
                let culprit = (0..overrides.len())
                    .find(|i| read(&layered(Some(*i)), &environment).is_ok())
                    .and_then(|i| overrides.get(i));
                if let Some(o) = culprit {
                    return Err(ConfigError::Invalid(format!(
                        "environment variable {}: {message}",
                        o.var
                    )));
                }
                read(&table, &source)?;
                Err(ConfigError::Invalid(format!(
                    "settings from the environment: {message}"
                )))
            }
        }
    }
}

/// Variables the binary's flags read (`--store`, `--store-ca-file`, `--config`, `--log`,
/// `--log-format`, `--worker-threads`).
pub const FLAG_VARIABLES: [&str; 6] = [
    "CONCLAVE_STORE",
    "CONCLAVE_STORE_CA_FILE",
    "CONCLAVE_CONFIG",
    "CONCLAVE_LOG",
    "CONCLAVE_LOG_FORMAT",
    "CONCLAVE_WORKER_THREADS",
];

/// Whether the server reads `var`: a setting's variable or a flag's.
#[must_use]
pub fn is_known_variable(var: &str) -> bool {
    if FLAG_VARIABLES.contains(&var) {
        return true;
    }
    matches!(setting(&template(), var), Ok(Some(_)))
}

/// The setting `var` names in `template`: its path and a value of its type. `None`:
/// not a setting (another tool's variable, or a flag's); an error: a section's variable
/// that names no key of it.
fn setting<'t>(
    template: &'t toml::Table,
    var: &str,
) -> Result<Option<(Vec<String>, &'t toml::Value)>, ConfigError> {
    let Some(name) = var.strip_prefix(PREFIX) else {
        return Ok(None);
    };
    let path: Vec<String> = name.split("__").map(str::to_ascii_lowercase).collect();
    let Some(first) = path.first() else {
        return Ok(None);
    };
    if FLAG_KEYS.contains(&first.as_str()) && path.len() == 1 {
        return Ok(None);
    }
    let kind = match (template.get(first), path.get(1), path.len()) {
        (None, _, _) => return Ok(None),
        (Some(toml::Value::Table(section)), Some(key), 2) => match section.get(key) {
            Some(kind) => kind,
            None => {
                return Err(ConfigError::Invalid(format!(
                    "environment variable {var}: [{first}] has no setting {key:?}"
                )));
            }
        },
        (Some(toml::Value::Table(_)), _, _) => {
            return Err(ConfigError::Invalid(format!(
                "environment variable {var}: name one key of [{first}], as CONCLAVE_{}__<KEY>",
                first.to_ascii_uppercase()
            )));
        }
        (Some(kind), None, 1) => kind,
        (Some(_), _, _) => {
            return Err(ConfigError::Invalid(format!(
                "environment variable {var}: {first} is not a section"
            )));
        }
    };
    Ok(Some((path, kind)))
}

impl Config {
    /// After `finish` (the flags, then validation) refused the configuration of
    /// [`Config::load_layered`]`(file, vars)`: the variable among `vars` without which
    /// it passes, if exactly that one is to blame.
    pub fn blame_environment(
        file: Option<&Path>,
        vars: &[(String, String)],
        finish: impl Fn(Config) -> Result<(), ConfigError>,
    ) -> Option<String> {
        let settings: Vec<&(String, String)> = vars
            .iter()
            .filter(|(var, _)| matches!(setting(&template(), var), Ok(Some(_))))
            .collect();
        settings.iter().find_map(|(var, _)| {
            let rest = vars.iter().filter(|(v, _)| v != var).cloned();
            let passes = Config::load_layered(file, rest).is_ok_and(|c| finish(c).is_ok());
            passes.then(|| var.clone())
        })
    }
}

fn read(table: &toml::Table, source: &Path) -> Result<Config, ConfigError> {
    Config::deserialize(table.clone()).map_err(|e| ConfigError::Parse {
        path: source.to_path_buf(),
        message: e.to_string().trim_end().to_owned(),
    })
}

use serde::Deserialize as _;

/// Every setting's type, as a table: the defaults with every optional key present.
fn template() -> toml::Table {
    let config = Config {
        cert: Some(PathBuf::new()),
        key: Some(PathBuf::new()),
        store_ca_file: Some(PathBuf::new()),
        cluster: Some(ClusterConfig {
            node_id: String::new(),
            advertise: Some(String::new()),
            server_name: String::new(),
            lease_ms: 0,
            renew_ms: 0,
        }),
        push: Some(super::PushConfig {
            ca_file: Some(PathBuf::new()),
            proxy: Some(String::new()),
            ..super::PushConfig::default()
        }),
        ..Config::default()
    };
    toml::Table::try_from(&config).expect("the configuration serializes to a TOML table")
}

/// The settings among `vars`, sorted by variable name, each typed like its key.
fn overrides(
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<Override>, ConfigError> {
    let template = template();
    let mut found = Vec::new();
    for (var, raw) in vars {
        let Some((path, kind)) = setting(&template, &var)? else {
            continue;
        };
        let value = typed(kind, &raw).map_err(|expected| {
            ConfigError::Invalid(format!(
                "environment variable {var}: expected {expected}, got {raw:?}"
            ))
        })?;
        found.push(Override { var, path, value });
    }
    found.sort_by(|a, b| a.var.cmp(&b.var));
    Ok(found)
}

/// `raw` as the type of `kind`, or what was expected.
fn typed(kind: &toml::Value, raw: &str) -> Result<toml::Value, &'static str> {
    let raw = raw.trim();
    match kind {
        toml::Value::Integer(_) => raw
            .parse::<i64>()
            .map(toml::Value::Integer)
            .map_err(|_| "a whole number"),
        toml::Value::Boolean(_) => match raw.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Ok(toml::Value::Boolean(true)),
            "false" | "0" | "no" => Ok(toml::Value::Boolean(false)),
            _ => Err("true or false"),
        },
        toml::Value::Float(_) => raw
            .parse::<f64>()
            .map(toml::Value::Float)
            .map_err(|_| "a number"),
        // Lists (`push.allowed_hosts`): comma-separated.
        toml::Value::Array(_) => Ok(toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(|item| toml::Value::String(item.to_owned()))
                .collect(),
        )),
        _ => Ok(toml::Value::String(raw.to_owned())),
    }
}

/// Sets `path` in `table`, creating its section.
fn set(table: &mut toml::Table, path: &[String], value: toml::Value) {
    match path {
        [key] => {
            table.insert(key.clone(), value);
        }
        [section, key] => {
            let entry = table
                .entry(section.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if let toml::Value::Table(t) = entry {
                t.insert(key.clone(), value);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_environment_overrides_the_file_and_the_defaults() {
        let dir = std::env::temp_dir().join(format!("conclave-env-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:1\"\n[limits]\nmax_connections = 7\nmax_members_per_room = 9\n",
        )
        .unwrap();
        let config = Config::load_layered(
            Some(&file),
            env(&[
                ("CONCLAVE_LIMITS__MAX_CONNECTIONS", "11"),
                ("CONCLAVE_TIMING__DRAIN_GRACE_SECS", "3"),
                ("CONCLAVE_METRICS_LISTEN", "off"),
                ("CONCLAVE_CLUSTER__NODE_ID", "1"),
                ("CONCLAVE_CLUSTER__ADVERTISE", "sfu-1.example.com:4433"),
                ("CONCLAVE_TEST_POSTGRES", "not a setting, left alone"),
                ("CONCLAVE_STORE", "read by the --store flag instead"),
                ("PATH", "/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:1");
        assert_eq!(config.limits.max_connections, 11);
        assert_eq!(config.limits.max_members_per_room, 9);
        assert_eq!(config.timing.drain_grace_secs, 3);
        assert_eq!(config.metrics_listen, None);
        let cluster = config.cluster.unwrap();
        assert_eq!(cluster.node_id, "1");
        assert_eq!(cluster.advertise.as_deref(), Some("sfu-1.example.com:4433"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn push_settings_and_their_allow_list_come_from_the_environment() {
        let config = Config::load_layered(
            None,
            env(&[
                ("CONCLAVE_PUSH__CONTACT", "mailto:ops@example.com"),
                (
                    "CONCLAVE_PUSH__ALLOWED_HOSTS",
                    "fcm.googleapis.com, *.push.apple.com,",
                ),
                ("CONCLAVE_PUSH__MIN_INTERVAL_SECS", "30"),
            ]),
        )
        .unwrap();
        let push = config.push.clone().unwrap();
        assert_eq!(
            push.allowed_hosts,
            ["fcm.googleapis.com", "*.push.apple.com"]
        );
        assert_eq!(push.min_interval_secs, 30);
        assert_eq!(push.ttl_secs, crate::config::PushConfig::default().ttl_secs);
        config.validate().unwrap();
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        let cases = [
            ("CONCLAVE_LIMITS__MAX_CONNECTIONS", "many", "a whole number"),
            ("CONCLAVE_LISTEN", "nowhere", "CONCLAVE_LISTEN"),
            ("CONCLAVE_LIMITS__MAX_CONECTIONS", "5", "has no setting"),
            ("CONCLAVE_LIMITS", "5", "name one key"),
        ];
        for (var, value, expected) in cases {
            let err = Config::load_layered(None, env(&[(var, value)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(var), "{err}");
            assert!(err.contains(expected), "{var}: {err}");
        }
    }

    #[test]
    fn a_file_may_leave_the_node_id_to_the_environment() {
        let dir = std::env::temp_dir().join(format!("conclave-env-id-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(&file, "[cluster]\nserver_name = \"sfu.example.com\"\n").unwrap();
        let config = Config::load_layered(
            Some(&file),
            env(&[("CONCLAVE_CLUSTER__NODE_ID", "conclave-sfu-0")]),
        )
        .unwrap();
        assert_eq!(config.cluster.unwrap().node_id, "conclave-sfu-0");
        let err = Config::load_layered(Some(&file), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("node_id"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_value_that_reads_but_is_out_of_range_is_blamed_on_its_variable() {
        let vars = env(&[
            ("CONCLAVE_TIMING__DRAIN_GRACE_SECS", "0"),
            ("CONCLAVE_LIMITS__MAX_CONNECTIONS", "5"),
        ]);
        let config = Config::load_layered(None, vars.clone()).unwrap();
        assert!(config.validate().is_err());
        let blamed = Config::blame_environment(None, &vars, |c| c.validate());
        assert_eq!(blamed.as_deref(), Some("CONCLAVE_TIMING__DRAIN_GRACE_SECS"));
    }

    #[test]
    fn a_bad_file_is_named_before_the_environment() {
        let dir = std::env::temp_dir().join(format!("conclave-env-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(&file, "[limits]\nmax_connections = \"x\"\n").unwrap();
        let err = Config::load_layered(Some(&file), env(&[("CONCLAVE_LISTEN", "127.0.0.1:2")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("c.toml"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
