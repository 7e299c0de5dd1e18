//! The `store` setting: where the server keeps its durable state.

use std::fmt;

use crate::store::postgres::redacted_url;

/// Where durable state lives.
///
/// Written in the file, `--store` or `CONCLAVE_STORE` as `redb` (the default: an
/// embedded database file `conclave.redb` in `data_dir`, for one node) or as a
/// PostgreSQL URL, `postgres://user:password@host:port/database?sslmode=require`
/// (shared by the nodes of a cluster). `Debug` and `Display` never show a password.
#[derive(Clone, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(try_from = "String", into = "String")]
#[non_exhaustive]
pub enum StoreSetting {
    /// The embedded redb file under `data_dir`.
    #[default]
    Redb,
    /// PostgreSQL at this URL.
    Postgres(String),
}

impl StoreSetting {
    /// Parses `redb` or a `postgres://` / `postgresql://` URL.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("redb") {
            return Ok(StoreSetting::Redb);
        }
        let lower = s.get(..13).unwrap_or(s).to_ascii_lowercase();
        if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            return Ok(StoreSetting::Postgres(s.to_string()));
        }
        Err(format!(
            "store must be `redb` or a postgres://user:password@host:port/database URL, \
             not {:?}",
            redacted_url(s)
        ))
    }
}

impl TryFrom<String> for StoreSetting {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        StoreSetting::parse(&s)
    }
}

/// The setting as the config file writes it (for the environment overlay's type
/// template only; the password is masked).
impl From<StoreSetting> for String {
    fn from(setting: StoreSetting) -> String {
        setting.to_string()
    }
}

impl fmt::Display for StoreSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreSetting::Redb => f.write_str("redb"),
            StoreSetting::Postgres(url) => f.write_str(&redacted_url(url)),
        }
    }
}

impl fmt::Debug for StoreSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreSetting({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redb_and_postgres_urls_parse_and_anything_else_is_refused() {
        assert_eq!(StoreSetting::parse("redb"), Ok(StoreSetting::Redb));
        let url = "postgres://conclave:pw@db:5432/conclave";
        assert_eq!(
            StoreSetting::parse(url),
            Ok(StoreSetting::Postgres(url.into()))
        );
        assert!(StoreSetting::parse("PostgreSQL://db/c").is_ok());
        let err = StoreSetting::parse("mysql://root:hunter2@db/c").unwrap_err();
        assert!(err.contains("store must be"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn the_config_file_selects_postgres_and_checks_its_settings() {
        use crate::config::Config;
        let config = Config::from_toml_str(
            "store = \"postgres://conclave@db/c?sslmode=require\"\nstore_pool_size = 8\n\
             store_ca_file = \"/etc/conclave/pg-ca.pem\"",
        )
        .unwrap();
        assert_eq!(
            config.store,
            StoreSetting::Postgres("postgres://conclave@db/c?sslmode=require".into())
        );
        assert_eq!(config.store_pool_size, 8);
        config.validate().unwrap();
        let err = Config::from_toml_str("store = \"sqlite://x\"").unwrap_err();
        assert!(err.to_string().contains("store must be"), "{err}");
        let err = Config::from_toml_str("store_ca_file = \"/ca.pem\"")
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("store_ca_file"), "{err}");
    }

    #[test]
    fn store_threads_default_to_redbs_two_or_the_pool_spread_over_the_shards() {
        use crate::config::{Config, DEFAULT_STORE_CACHE_MIB, REDB_STORE_THREADS};
        let redb = Config::default();
        assert_eq!(redb.store_threads_per_shard(1), REDB_STORE_THREADS);
        assert_eq!(redb.store_threads_per_shard(16), REDB_STORE_THREADS);
        assert_eq!(
            redb.store_cache_bytes(),
            DEFAULT_STORE_CACHE_MIB * 1024 * 1024
        );

        let pg =
            Config::from_toml_str("store = \"postgres://db/c\"\nstore_pool_size = 16").unwrap();
        assert_eq!(pg.store_threads_per_shard(1), 16);
        assert_eq!(pg.store_threads_per_shard(3), 6, "16 ÷ 3, rounded up");
        assert_eq!(pg.store_threads_per_shard(64), 2, "at least two");

        let set = Config::from_toml_str("store_threads = 5\nstore_cache_mib = 8").unwrap();
        set.validate().unwrap();
        assert_eq!(set.store_threads_per_shard(4), 5);
        assert_eq!(set.store_cache_bytes(), 8 * 1024 * 1024);

        for (text, named) in [
            ("store_threads = 1025", "store_threads"),
            ("store_cache_mib = 0", "store_cache_mib"),
            ("store_cache_mib = 65537", "store_cache_mib"),
        ] {
            let err = Config::from_toml_str(text).unwrap().validate().unwrap_err();
            assert!(err.to_string().contains(named), "{text}: {err}");
        }

        let vars = [
            ("CONCLAVE_STORE_THREADS".to_owned(), "3".to_owned()),
            ("CONCLAVE_STORE_CACHE_MIB".to_owned(), "16".to_owned()),
        ];
        let env = Config::load_layered(None, vars).unwrap();
        assert_eq!((env.store_threads, env.store_cache_mib), (3, 16));
    }

    #[test]
    fn the_cluster_defaults_are_the_lease_keepers_defaults() {
        let config = crate::config::Config::from_toml_str("[cluster]\nnode_id = \"n1\"\n").unwrap();
        let cluster = config.cluster.expect("a cluster section");
        assert_eq!(cluster.lease(), crate::cluster::LeaseConfig::default());
    }

    #[test]
    fn the_password_never_shows() {
        let setting = StoreSetting::parse("postgres://conclave:s3cret@db/c").unwrap();
        let shown = format!("{setting} {setting:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("conclave:***@db"), "{shown}");
    }
}

/// The `[cluster]` section: this node's part in a cluster (absent: a single node).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ClusterConfig {
    /// This node's id, unique in the cluster: 1 to 64 of `[A-Za-z0-9._-]`.
    pub node_id: String,
    /// Where clients are redirected to for rooms this node owns: `host:port`, the host
    /// an IP address or a DNS name clients resolve (default: `listen`, which must then
    /// be a specific address, not 0.0.0.0 or ::).
    #[serde(default)]
    pub advertise: Option<String>,
    /// The TLS server name clients verify this node as; every node's certificate must
    /// pass the clients' one trust setting.
    #[serde(default = "default_server_name")]
    pub server_name: String,
    /// How long the store keeps this node's lease after a heartbeat, ms. This bounds
    /// failover: a dead node's rooms can be claimed by another node once its lease has
    /// run out. It also bounds the PostgreSQL outage a node rides out: a node that
    /// cannot renew tells its clients to move shortly before it runs out. Every node of
    /// a cluster uses the same value.
    #[serde(default = "default_lease_ms")]
    pub lease_ms: u64,
    /// How often the node renews its lease, ms.
    #[serde(default = "default_renew_ms")]
    pub renew_ms: u64,
}

fn default_server_name() -> String {
    "localhost".to_string()
}

const fn default_lease_ms() -> u64 {
    2_500
}

const fn default_renew_ms() -> u64 {
    500
}

impl ClusterConfig {
    /// Checks the section against the rest of the configuration.
    pub(super) fn validate(&self, config: &super::Config) -> Result<(), String> {
        crate::store::NodeId::new(self.node_id.clone())?;
        if let Some(advertise) = &self.advertise {
            crate::store::NodeAddress::new(advertise.clone())
                .map_err(|e| format!("[cluster] advertise: {e}"))?;
        }
        if !matches!(config.store, StoreSetting::Postgres(_)) {
            return Err("[cluster] needs a PostgreSQL store (store = \"postgres://…\")".into());
        }
        if self.advertise.is_none() && config.listen.ip().is_unspecified() {
            return Err(format!(
                "[cluster] advertise must be set: listen ({}) is not an address clients \
                 can be sent to",
                config.listen
            ));
        }
        if self.server_name.is_empty() {
            return Err("[cluster] server_name must not be empty".into());
        }
        if self.renew_ms == 0 || self.lease_ms < 3 * self.renew_ms {
            return Err(format!(
                "[cluster] lease_ms ({}) must be at least 3 × renew_ms ({}) so that a failed \
                 renewal can be retried before the lease runs out",
                self.lease_ms, self.renew_ms
            ));
        }
        Ok(())
    }

    /// The lease timing: retries every quarter renewal period, and a margin of a tenth
    /// of the lease (at least 100 ms) for clock drift and scheduling delay.
    #[must_use]
    pub fn lease(&self) -> crate::cluster::LeaseConfig {
        let ms = std::time::Duration::from_millis;
        crate::cluster::LeaseConfig {
            lease: ms(self.lease_ms),
            renew_every: ms(self.renew_ms),
            retry_every: ms((self.renew_ms / 4).max(50)),
            margin: ms((self.lease_ms / 10).max(100)),
        }
    }

    /// This node as clients reach it.
    pub fn node_info(
        &self,
        listen: std::net::SocketAddr,
    ) -> Result<crate::store::NodeInfo, String> {
        Ok(crate::store::NodeInfo {
            node_id: crate::store::NodeId::new(self.node_id.clone())?,
            quic_addr: match &self.advertise {
                Some(advertise) => crate::store::NodeAddress::new(advertise.clone())?,
                None => listen.into(),
            },
            server_name: self.server_name.clone(),
        })
    }
}
