//! The store: where and how to reach etcd (members, TLS, user and password), and the host
//! records read from it, each checked against the cluster's rules.
use std::{collections::BTreeMap, sync::atomic::Ordering, time::Duration};

use anyhow::{Context, Result, bail};
use dataplane::model::cluster::{self, HostRecord, RecordRules, Refusal};
use etcd_client::{Certificate, Client, ConnectOptions, GetOptions, Identity, TlsOptions};

/// Where and how to reach the store, and what its records must satisfy.
#[derive(Clone, Debug)]
pub struct Store {
    pub endpoints: Vec<String>,
    pub prefix: String,
    pub lease_ttl: i64,
    tls: Option<TlsOptions>,
    /// etcd's own authentication: user and password.
    user: Option<(String, String)>,
    /// None where records are only listed (`loader cluster`): then every parsable one is.
    rules: Option<RecordRules>,
}

/// Every host record at one revision: the valid ones by key, and the refused with why.
pub struct Records {
    pub valid: BTreeMap<String, HostRecord>,
    pub refused: Vec<(String, Refusal)>,
    pub revision: i64,
}

impl Store {
    /// The store the command line names; TLS files are read (and checked) here. `rules`: what
    /// the records must satisfy to become routes.
    pub fn new(
        args: &crate::cli::StoreArgs,
        lease_ttl: i64,
        rules: Option<RecordRules>,
    ) -> Result<Self> {
        let read = |path: &std::path::Path| {
            std::fs::read(path).with_context(|| format!("reading {}", path.display()))
        };
        let mut tls = None;
        if let Some(ca) = &args.etcd_ca {
            tls = Some(TlsOptions::new().ca_certificate(Certificate::from_pem(read(ca)?)));
        }
        if let (Some(cert), Some(key)) = (&args.etcd_cert, &args.etcd_key) {
            let identity = Identity::from_pem(read(cert)?, read(key)?);
            tls = Some(tls.unwrap_or_else(TlsOptions::new).identity(identity));
        }
        if tls.is_some() && args.endpoints.iter().any(|e| !e.starts_with("https://")) {
            bail!("--etcd-ca/--etcd-cert give TLS: the endpoints must be https:// URLs");
        }
        let user = match (&args.etcd_user, &args.etcd_password_file) {
            (Some(name), Some(file)) => {
                let text = String::from_utf8(read(file)?)
                    .with_context(|| format!("{}: not text", file.display()))?;
                let password = text.lines().next().unwrap_or_default().to_string();
                if password.is_empty() {
                    bail!("{}: no password on its first line", file.display());
                }
                Some((name.clone(), password))
            }
            _ => None,
        };
        Ok(Self {
            endpoints: args.endpoints.clone(),
            prefix: args.etcd_prefix.clone(),
            lease_ttl,
            tls,
            user,
            rules,
        })
    }

    /// Checks the record stored under `key` (value, lease), as the rules say.
    pub(super) fn check(&self, key: &str, value: &[u8], lease: i64) -> Result<HostRecord, Refusal> {
        match &self.rules {
            Some(rules) => rules.check(key, value, lease),
            None => serde_json::from_slice(value).map_err(|e| Refusal::Malformed(e.to_string())),
        }
    }

    /// A client of one member that answers. Members are tried one at a time, each checked
    /// with a status request: the client's own balancing over several endpoints keeps sending
    /// requests to a member that is down.
    pub async fn connect(&self) -> Result<Client> {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let mut options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2));
        if let Some(tls) = &self.tls {
            options = options.with_tls(tls.clone());
        }
        if let Some((name, password)) = &self.user {
            options = options.with_user(name.clone(), password.clone());
        }
        let start = NEXT.fetch_add(1, Ordering::Relaxed);
        let mut last = None;
        for i in 0..self.endpoints.len() {
            let endpoint = &self.endpoints[(start + i) % self.endpoints.len()];
            let attempt = async {
                let mut client = Client::connect([endpoint], Some(options.clone())).await?;
                client.status().await?;
                Ok::<_, etcd_client::Error>(client)
            };
            match attempt.await {
                Ok(client) => return Ok(client),
                Err(e) => last = Some(format!("{endpoint}: {e}")),
            }
        }
        bail!(
            "no etcd member answers ({})",
            last.unwrap_or_else(|| "no endpoints given".into())
        )
    }

    /// Every host record, checked, at one revision.
    pub async fn records(&self, client: &mut Client) -> Result<Records> {
        let dir = cluster::subnets_dir(&self.prefix);
        let resp = client
            .get(dir.clone(), Some(GetOptions::new().with_prefix()))
            .await
            .context("reading the host records")?;
        let mut records = Records {
            valid: BTreeMap::new(),
            refused: Vec::new(),
            revision: resp.header().map(|h| h.revision()).unwrap_or(0),
        };
        for kv in resp.kvs() {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            match self.check(&key, kv.value(), kv.lease()) {
                Ok(r) => {
                    records.valid.insert(key, r);
                }
                Err(why) => records.refused.push((key, why)),
            }
        }
        Ok(records)
    }
}
