//! `kms`: app owners and developers manage apps and encrypt secrets; enclaves fetch keys and
//! decrypt. Every command takes `--json`. Exit codes: 0 success, 1 error (usage, I/O, network),
//! 2 verification failed (descriptor, envelope), 3 not enough key shares, 4 refused by nodes.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::{Args, Parser, Subcommand, ValueEnum};
use ed25519_dalek::SigningKey;
use rand_core::OsRng;
use serde_json::json;

use kms_client::provider::{ConfidentialSpace, DevIssuer, TdxConfigfs, TokenType};
use kms_client::{fetch, secrets, AttestationProvider, Cluster, FetchError, FetchOptions, Pin};
use kms_proto::app::{
    AppId, AppName, EnvPolicy, ImageDigest, Label, Manifest, Policy, SignedManifest, TdxMeasurement,
};
use kms_proto::codec::{decode_json, encode_json};
use kms_proto::HexBytes;

#[derive(Parser)]
#[command(name = "kms", version, about = "Threshold KMS client")]
struct Cli {
    /// Print machine-readable JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create and manage apps (owner side).
    #[command(subcommand)]
    App(AppCmd),
    /// Encrypt a file to an app, offline (needs only the cluster descriptor). With `--app-dir`
    /// the envelope is signed with the app's owner key; with `--app` it is unsigned.
    Encrypt {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// The app directory (owner.key, manifest.json): sign the envelope as the app's owner.
        #[arg(long, conflicts_with = "app", required_unless_present = "app")]
        app_dir: Option<PathBuf>,
        /// App id (hex), for an unsigned envelope (`kms decrypt` refuses it unless told
        /// `--allow-unsigned`).
        #[arg(long)]
        app: Option<String>,
        /// Key label.
        #[arg(long, default_value = "root")]
        label: String,
        /// Plaintext file.
        #[arg(long = "in")]
        input: PathBuf,
        /// Envelope file to write.
        #[arg(long = "out")]
        output: PathBuf,
    },
    /// Decrypt an envelope inside an enclave: fetch the key, then decrypt.
    Decrypt {
        #[command(flatten)]
        cluster: ClusterArgs,
        #[command(flatten)]
        provider: ProviderArgs,
        /// Envelope file.
        #[arg(long = "in")]
        input: PathBuf,
        /// Plaintext file to write (mode 0600).
        #[arg(long = "out")]
        output: PathBuf,
        /// Also accept an envelope its app's owner did not sign (anyone holding the cluster's
        /// public MPK can make one).
        #[arg(long)]
        allow_unsigned: bool,
    },
    /// Fetch an app key inside an enclave and print its fingerprint (or write the root secret).
    FetchKey {
        #[command(flatten)]
        cluster: ClusterArgs,
        #[command(flatten)]
        provider: ProviderArgs,
        /// App id (hex).
        #[arg(long)]
        app: String,
        /// Key label.
        #[arg(long, default_value = "root")]
        label: String,
        /// Write the 32-byte app root secret here (mode 0600).
        #[arg(long)]
        out_root_secret: Option<PathBuf>,
        /// Then prove each node's release in its transparency log, in a checkpoint co-signed by
        /// this many other members (default `f + 1`, at most `n - 1`); exit 5 if one is not.
        #[arg(long, num_args = 0..=1, default_missing_value = "default")]
        prove_release: Option<String>,
    },
    /// Fetch, show and verify cluster descriptors.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Check every node's transparency log for an app: each release of its key proven in the
    /// node's signed log, each log proven to extend what was seen before. Exit 5 on any finding.
    Audit {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// App id (hex).
        #[arg(long)]
        app: String,
        /// A workload the owner allows (`sha256:…` or `mrtd:…`), repeatable: a release to any
        /// other is a finding. None given: any.
        #[arg(long = "allow-image")]
        allowed: Vec<String>,
        /// Where the checkpoints seen are kept between runs (created if missing).
        #[arg(long, default_value = "kms-audit.json")]
        state: PathBuf,
        /// Check again every SECONDS, printing each round; stops at the first finding (exit 5).
        #[arg(long)]
        watch: Option<u64>,
    },
}

#[derive(Subcommand)]
enum AppCmd {
    /// Create an app: an owner key (0600) and its app id, in a directory.
    Create {
        /// App name.
        #[arg(long)]
        name: String,
        /// Directory for owner.key and manifest.json.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Allow workloads: adds to the policy, bumps seq, signs manifest.json.
    Allow {
        /// The app directory.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Image digest to allow (`sha256:…`), repeatable.
        #[arg(long = "image")]
        images: Vec<String>,
        /// TDX MRTD to allow (96 hex chars), repeatable.
        #[arg(long = "tdx-mrtd")]
        mrtds: Vec<String>,
        /// Hardware model to allow (e.g. GCP_INTEL_TDX), repeatable. When an image is allowed and
        /// no model was ever named: GCP_AMD_SEV and GCP_INTEL_TDX.
        #[arg(long = "hwmodel")]
        hwmodels: Vec<String>,
        /// Allow debug images (never in production).
        #[arg(long)]
        debug: Option<bool>,
        /// Environment overrides: `deny`, `any`, or a comma-separated list of names.
        #[arg(long)]
        env: Option<String>,
        /// Allow command overrides.
        #[arg(long)]
        cmd_override: Option<bool>,
        /// Require the STABLE support attribute.
        #[arg(long)]
        require_stable: Option<bool>,
        /// Lowest Confidential Space software version.
        #[arg(long)]
        min_swversion: Option<u64>,
        /// Revoke the app (all key requests refused).
        #[arg(long)]
        revoke: bool,
        /// How many instances may hold the key at once: `any`, or `single:<lease seconds>` (key
        /// requests then need a lease; `docs/api.md` §2.2).
        #[arg(long)]
        instances: Option<String>,
    },
    /// Publish manifest.json to every node of the cluster.
    Publish {
        /// The app directory.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Show the manifest each node holds for an app.
    Show {
        /// App id (hex).
        #[arg(long)]
        app: String,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
}

#[derive(Subcommand)]
enum ClusterCmd {
    /// Download a node's signed descriptor.
    Fetch {
        /// Node base URL.
        #[arg(long)]
        node: String,
        /// Where to write it.
        #[arg(long = "out")]
        output: PathBuf,
        /// Pinned group key (hex) to check it against.
        #[arg(long)]
        pin_group_key: Option<String>,
    },
    /// Print a descriptor.
    Show {
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Verify a descriptor's FROST signature (exit 2 if it does not verify); with
    /// `--node-policy`, also ask every node for its evidence about itself and check it, node by
    /// node (exit 2 if any node's does not pass).
    Verify {
        #[command(flatten)]
        cluster: ClusterArgs,
        #[command(flatten)]
        nodes: NodeTrustArgs,
    },
}

#[derive(Args)]
struct NodeTrustArgs {
    /// The allowed node images: a policy document (JSON, as an app manifest's `policy`).
    #[arg(long)]
    node_policy: Option<PathBuf>,
    /// The cluster's attestation audience (nodes' tokens are issued for it); also `KMS_AUDIENCE`.
    #[arg(long, env = "KMS_AUDIENCE", default_value = "")]
    audience: String,
    /// The token issuer (`iss`).
    #[arg(long, default_value = kms_proto::attestation::confidential_space::DEFAULT_ISSUER)]
    issuer: String,
    /// The issuer's keys for OIDC tokens (a JWKS file).
    #[arg(long)]
    jwks: Option<PathBuf>,
    /// The pinned root for PKI tokens (PEM).
    #[arg(long)]
    pki_root: Option<PathBuf>,
    /// DCAP collateral for TDX quotes (JSON).
    #[arg(long)]
    tdx_collateral: Option<PathBuf>,
    /// TDX TCB statuses accepted (the nodes' default: UpToDate, SWHardeningNeeded).
    #[arg(long, value_delimiter = ',', default_values_t = kms_proto::attestation::DEFAULT_ACCEPTABLE_TCB_STATUSES.iter().map(|s| s.to_string()))]
    tdx_tcb_statuses: Vec<String>,
    /// Oldest node evidence accepted, seconds (the nodes' default `attestation.max_age_secs`).
    #[arg(long, default_value_t = kms_proto::attestation::confidential_space::DEFAULT_MAX_AGE_SECS)]
    max_age_secs: u64,
}

#[derive(Args)]
struct ClusterArgs {
    /// Signed cluster descriptor (JSON).
    #[arg(long = "cluster", default_value = "cluster.json")]
    path: PathBuf,
    /// Pinned Ed25519 group key (hex); also `KMS_PIN_GROUP_KEY`.
    #[arg(long, env = "KMS_PIN_GROUP_KEY")]
    pin_group_key: Option<String>,
    /// Pinned master public key (hex); also `KMS_PIN_MPK`.
    #[arg(long, env = "KMS_PIN_MPK")]
    pin_mpk: Option<String>,
    /// Accept the descriptor without a pin (trust on first use): only to look at a cluster,
    /// never inside an enclave. Without a pin and without this, commands refuse (exit 2).
    #[arg(long)]
    tofu: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum ProviderKind {
    /// The Confidential Space launcher socket.
    ConfidentialSpace,
    /// Linux configfs-tsm TDX quotes.
    Tdx,
    /// The local development issuer (simnet; never in production).
    Dev,
}

#[derive(Args)]
struct ProviderArgs {
    /// Where the evidence comes from.
    #[arg(long, value_enum, default_value = "confidential-space")]
    provider: ProviderKind,
    /// The cluster's audience (Confidential Space and dev).
    #[arg(long, default_value = "")]
    audience: String,
    /// PKI instead of OIDC tokens (Confidential Space).
    #[arg(long)]
    pki: bool,
    /// Launcher socket (Confidential Space).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// configfs-tsm report directory (TDX).
    #[arg(long)]
    configfs: Option<PathBuf>,
    /// Dev issuer RSA key (PEM).
    #[arg(long)]
    dev_key: Option<PathBuf>,
    /// Dev issuer key id.
    #[arg(long, default_value = "kms-dev-1")]
    dev_kid: String,
    /// Image digest the dev issuer claims.
    #[arg(long, default_value = "")]
    image: String,
    /// Dev issuer claims a debug image.
    #[arg(long)]
    dev_debug: bool,
    /// Per-node timeout, milliseconds.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
    /// For an app that allows a single instance: acquire a lease (a new instance key bound into
    /// the evidence), fetch under it, release it.
    #[arg(long)]
    lease: bool,
}

/// The hardware models Confidential Space runs on: `kms app allow` allows these when an image is
/// allowed and no `--hwmodel` was ever given.
const DEFAULT_HWMODELS: &[&str] = &["GCP_AMD_SEV", "GCP_INTEL_TDX"];

/// An error with an exit code.
struct Exit(u8, anyhow::Error);

impl<E: Into<anyhow::Error>> From<E> for Exit {
    fn from(e: E) -> Self {
        Exit(1, e.into())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kms: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Exit(code, e)) => {
            eprintln!("kms: {e:#}");
            ExitCode::from(code)
        }
    }
}

/// The text form of an audit report: one line per release, per node's log, per finding.
fn audit_text(r: &kms_client::audit::Report) -> String {
    let mut lines: Vec<String> = r
        .releases
        .iter()
        .map(|x| {
            format!(
                "node {} #{} {} label {} to {} (instance {}){}",
                x.node,
                x.index,
                x.time,
                x.label,
                x.workload.as_deref().unwrap_or("?"),
                x.instance.as_deref().unwrap_or("-"),
                if x.proven { "" } else { " (after the checkpoint, not yet proven)" }
            )
        })
        .collect();
    lines.extend(r.sizes.iter().map(|(n, size)| format!("node {n}: log of {size} entries verified")));
    lines.extend(
        r.findings.iter().map(|f| format!("FINDING {}", serde_json::to_string(f).unwrap_or_default())),
    );
    lines.push(format!(
        "{} releases, {} refusals, {} findings",
        r.releases.len(),
        r.refusals,
        r.findings.len()
    ));
    lines.join("\n")
}

fn out(json_mode: bool, value: serde_json::Value, text: String) {
    if json_mode {
        print_line(&value.to_string());
    } else {
        print_line(&text);
    }
}

/// One line on stdout. A reader that went away (`kms … | head`) ends the output quietly
/// instead of a panic.
fn print_line(line: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("kms: writing the output: {e}");
        }
    }
}

/// Writes a secret output (owner key, plaintext, root secret): mode 0600 from creation,
/// replacing an existing file atomically, durable before the command reports success.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    kms_proto::secret_file::write(path, bytes, kms_proto::secret_file::Existing::Replace)
        .with_context(|| format!("writing {}", path.display()))
}

fn hex_array<const N: usize>(s: &str, what: &str) -> anyhow::Result<[u8; N]> {
    let v = hex::decode(s.trim()).with_context(|| format!("{what}: not hex"))?;
    v.try_into().map_err(|_| anyhow!("{what}: expected {N} bytes"))
}

fn load_cluster(args: &ClusterArgs) -> Result<Cluster, Exit> {
    let bytes = std::fs::read(&args.path).with_context(|| format!("reading {}", args.path.display()))?;
    // An empty value (`KMS_PIN_GROUP_KEY=` in the environment) is no pin.
    let set = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
    let pin = match (&set(&args.pin_group_key), &set(&args.pin_mpk)) {
        (Some(k), _) => Pin::GroupKey(hex_array(k, "--pin-group-key")?),
        (None, Some(m)) => Pin::Mpk(hex_array(m, "--pin-mpk")?),
        (None, None) if args.tofu => Pin::None,
        (None, None) => {
            return Err(Exit(
                2,
                anyhow!(
                    "{} is not pinned: pass --pin-group-key HEX (or set KMS_PIN_GROUP_KEY; `kms cluster fetch` prints the group key) or --pin-mpk HEX; --tofu accepts it unpinned",
                    args.path.display()
                ),
            ))
        }
    };
    Cluster::from_json(&bytes, pin).map_err(|e| Exit(2, e.into()))
}

/// What `--node-policy` checks nodes' evidence against; `None` without it.
fn node_trust(args: &NodeTrustArgs) -> anyhow::Result<Option<kms_client::nodes::NodeTrust>> {
    use kms_proto::attestation::{ConfidentialSpaceVerifier, CsConfig, EvidenceVerifier, Jwks, TdxTrust};
    let Some(path) = &args.node_policy else { return Ok(None) };
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let policy: Policy =
        serde_json::from_slice(&read(path)?).with_context(|| format!("{}: not a policy", path.display()))?;
    if args.audience.is_empty() {
        bail!("--audience is required with --node-policy (the audience the nodes' tokens are issued for)");
    }
    let mut cs = CsConfig::new(args.audience.clone());
    cs.issuer = args.issuer.clone();
    cs.max_age_secs = args.max_age_secs;
    if let Some(p) = &args.pki_root {
        cs.pki_root_der = Some(
            kms_proto::attestation::x5c::pem_to_der(&read(p)?)
                .ok_or_else(|| anyhow!("{}: not a PEM certificate", p.display()))?,
        );
    }
    let jwks = match &args.jwks {
        Some(p) => Jwks::from_json(&read(p)?).map_err(|e| anyhow!("{}: {e}", p.display()))?,
        None => Jwks::default(),
    };
    let tdx = match &args.tdx_collateral {
        Some(p) => Some(
            TdxTrust::from_json(&read(p)?, args.tdx_tcb_statuses.clone())
                .map_err(|e| anyhow!("{}: {e}", p.display()))?,
        ),
        None => None,
    };
    let leeway_secs = cs.leeway_secs;
    Ok(Some(kms_client::nodes::NodeTrust {
        verifier: EvidenceVerifier { cs: ConfidentialSpaceVerifier::new(cs), tdx },
        jwks,
        policy,
        max_age_secs: args.max_age_secs,
        leeway_secs,
    }))
}

fn provider(args: &ProviderArgs) -> anyhow::Result<Box<dyn AttestationProvider>> {
    Ok(match args.provider {
        ProviderKind::ConfidentialSpace => {
            if args.audience.is_empty() {
                bail!("--audience is required for the Confidential Space provider");
            }
            let mut p = ConfidentialSpace::new(
                &args.audience,
                if args.pki { TokenType::Pki } else { TokenType::Oidc },
            );
            if let Some(s) = &args.socket {
                p.socket = s.clone();
            }
            Box::new(p)
        }
        ProviderKind::Tdx => Box::new(TdxConfigfs {
            root: args.configfs.clone().unwrap_or_else(|| TdxConfigfs::default().root),
        }),
        ProviderKind::Dev => {
            let path =
                args.dev_key.as_ref().ok_or_else(|| anyhow!("--dev-key is required for the dev provider"))?;
            let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let mut p = DevIssuer::new(&pem, &args.dev_kid, &args.audience, &args.image)?;
            p.debug = args.dev_debug;
            Box::new(p)
        }
    })
}

/// Fetches the key; when the nodes answered from a newer epoch and the client moved to their
/// newer descriptor (same group key, same cluster), it replaces the descriptor file `save`.
async fn fetch(
    cluster: &Cluster,
    save: &std::path::Path,
    app: &AppId,
    label: &Label,
    args: &ProviderArgs,
    json_mode: bool,
) -> Result<fetch::Fetched, Exit> {
    let p = provider(args)?;
    let mut opts =
        FetchOptions { timeout: Duration::from_millis(args.timeout_ms), ..FetchOptions::default() };
    let lease_opts =
        kms_client::LeaseOptions { timeout: opts.timeout, ..kms_client::LeaseOptions::default() };
    if args.lease {
        let lease = kms_client::Lease::acquire(cluster, app, p.as_ref(), &lease_opts).await.map_err(|e| {
            let detail = match &e {
                kms_client::lease::LeaseError::NotGranted { report, .. } => {
                    report.iter().map(|(i, o)| format!("\n  node {i}: {o}")).collect::<String>()
                }
                _ => String::new(),
            };
            Exit(3, anyhow!("no lease: {e}{detail}"))
        })?;
        if !json_mode {
            eprintln!("lease held: fence {}, until {} (unix seconds)", lease.fence(), lease.deadline());
        }
        opts.lease = Some(lease);
    }
    let fetched = kms_client::fetch_key(cluster, app, label, p.as_ref(), &opts).await;
    if let Some(lease) = opts.lease.take() {
        if let Err(e) = lease.release(&lease_opts).await {
            eprintln!("releasing the lease failed (it lapses on its own): {e}");
        }
    }
    match fetched {
        Ok(f) => {
            if !json_mode {
                eprintln!("{}", fetch::format_report(&f.report));
            }
            if let Some(newer) = &f.refreshed {
                std::fs::write(save, newer.to_json())
                    .with_context(|| format!("writing {}", save.display()))?;
                if !json_mode {
                    eprintln!(
                        "the cluster reshared: {} now holds the descriptor of epoch {}",
                        save.display(),
                        newer.descriptor().epoch
                    );
                }
            }
            Ok(f)
        }
        Err(e @ FetchError::NotEnoughShares { .. }) => {
            if json_mode {
                // The failure report, as the success output would carry it.
                if let FetchError::NotEnoughShares { needed, valid, report } = &e {
                    print_line(
                        &json!({"error": "not_enough_shares", "needed": needed, "valid": valid, "nodes": report_json(report)})
                            .to_string(),
                    );
                }
            }
            Err(Exit(3, e.into()))
        }
        Err(e) => Err(Exit(1, e.into())),
    }
}

fn report_json(report: &[fetch::NodeReport]) -> serde_json::Value {
    json!(report
        .iter()
        .map(|r| json!({"index": r.index, "url": r.url, "outcome": r.outcome.to_string(), "epoch": r.epoch, "ms": r.elapsed.as_secs_f64() * 1e3}))
        .collect::<Vec<_>>())
}

fn app_dir_manifest(dir: &Path) -> PathBuf {
    dir.join("manifest.json")
}

/// The owner key and signed manifest of an app directory (`kms app create`).
fn read_app_dir(dir: &Path) -> anyhow::Result<(SigningKey, SignedManifest)> {
    let bytes = zeroize::Zeroizing::new(std::fs::read(dir.join("owner.key")).context("reading owner.key")?);
    let key: &[u8; 32] = bytes.as_slice().try_into().map_err(|_| anyhow!("owner.key must hold 32 bytes"))?;
    let owner = SigningKey::from_bytes(key);
    let manifest: SignedManifest =
        decode_json(&std::fs::read(app_dir_manifest(dir)).context("reading manifest.json")?)
            .map_err(|e| anyhow!("manifest.json: {e}"))?;
    if manifest.manifest.owner_key.as_bytes() != &owner.verifying_key().to_bytes() {
        bail!("owner.key is not the owner key of manifest.json");
    }
    Ok((owner, manifest))
}

async fn run(cli: Cli) -> Result<(), Exit> {
    let json_mode = cli.json;
    match cli.cmd {
        Cmd::App(AppCmd::Create { name, dir }) => {
            let name = AppName::new(name).map_err(|e| anyhow!("--name: {e}"))?;
            std::fs::create_dir_all(&dir)?;
            let key_path = dir.join("owner.key");
            if key_path.exists() {
                return Err(Exit(
                    1,
                    anyhow!("{} exists: refusing to overwrite an owner key", key_path.display()),
                ));
            }
            let owner = SigningKey::generate(&mut OsRng);
            kms_proto::secret_file::write(
                &key_path,
                &owner.to_bytes(),
                kms_proto::secret_file::Existing::Refuse,
            )
            .with_context(|| format!("creating {}", key_path.display()))?;
            let m = Manifest::new(owner.verifying_key().to_bytes(), name, 0, Policy::default());
            let signed = SignedManifest::sign(m, &owner);
            std::fs::write(app_dir_manifest(&dir), encode_json(&signed))?;
            let app = signed.manifest.app_id;
            out(json_mode, json!({"app_id": app, "owner_key": dir.join("owner.key")}), app.to_string());
        }
        Cmd::App(AppCmd::Allow {
            dir,
            images,
            mrtds,
            hwmodels,
            debug,
            env,
            cmd_override,
            require_stable,
            min_swversion,
            revoke,
            instances,
        }) => {
            let (owner, current) = read_app_dir(&dir)?;
            let mut m = current.manifest;
            if let Some(i) = instances {
                m.policy.instances = match i.as_str() {
                    "any" => kms_proto::app::InstancePolicy::Any,
                    other => {
                        let secs =
                            other.strip_prefix("single:").and_then(|s| s.parse().ok()).ok_or_else(|| {
                                anyhow!("--instances {other}: expected `any` or `single:<lease seconds>`")
                            })?;
                        kms_proto::app::InstancePolicy::Single { lease_secs: secs }
                    }
                };
            }
            for i in images {
                let d: ImageDigest = i.parse().map_err(|e| anyhow!("--image {i}: {e:?}"))?;
                if !m.policy.allowed_image_digests.contains(&d) {
                    m.policy.allowed_image_digests.push(d);
                }
            }
            for h in mrtds {
                let mrtd = HexBytes(hex_array::<48>(&h, "--tdx-mrtd")?);
                m.policy.allowed_tdx_measurements.push(TdxMeasurement {
                    mrtd,
                    rtmr0: None,
                    rtmr1: None,
                    rtmr2: None,
                    rtmr3: None,
                });
            }
            for h in hwmodels {
                if !m.policy.allowed_hwmodels.contains(&h) {
                    m.policy.allowed_hwmodels.push(h);
                }
            }
            if let Some(d) = debug {
                m.policy.allow_debug = d;
            }
            if let Some(e) = env {
                m.policy.env_override = match e.as_str() {
                    "deny" => EnvPolicy::Deny,
                    "any" => EnvPolicy::AllowAny,
                    list => EnvPolicy::AllowList { names: list.split(',').map(str::to_owned).collect() },
                };
            }
            if let Some(c) = cmd_override {
                m.policy.allow_cmd_override = c;
            }
            if let Some(s) = require_stable {
                m.policy.require_stable = s;
            }
            if min_swversion.is_some() {
                m.policy.min_swversion = min_swversion;
            }
            m.policy.revoked = revoke;
            // An image allowed on no hardware would be refused everywhere: unless the owner
            // names the models, allow every model Confidential Space runs on (the image digest
            // is what the policy is about; each model is a genuine TEE).
            let defaulted =
                !m.policy.allowed_image_digests.is_empty() && m.policy.allowed_hwmodels.is_empty();
            if defaulted {
                m.policy.allowed_hwmodels = DEFAULT_HWMODELS.iter().map(|h| h.to_string()).collect();
            }
            m.seq += 1;
            let signed = SignedManifest::sign(m, &owner);
            std::fs::write(app_dir_manifest(&dir), encode_json(&signed))?;
            let hw = &signed.manifest.policy.allowed_hwmodels;
            out(
                json_mode,
                json!({"app_id": signed.manifest.app_id, "seq": signed.manifest.seq, "hwmodels": hw, "hwmodels_defaulted": defaulted}),
                format!(
                    "manifest seq {} signed for app {}; hardware models {}{}",
                    signed.manifest.seq,
                    signed.manifest.app_id,
                    hw.join(", "),
                    if defaulted {
                        " (the default: every model Confidential Space runs on; narrow it with --hwmodel)"
                    } else {
                        ""
                    }
                ),
            );
        }
        Cmd::App(AppCmd::Publish { dir, cluster }) => {
            let c = load_cluster(&cluster)?;
            let body = std::fs::read(app_dir_manifest(&dir)).context("reading manifest.json")?;
            let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
            let mut results = Vec::new();
            let mut refusals = Vec::new();
            let mut ok = 0;
            for n in c.nodes() {
                let r = client
                    .post(format!("{}/v1/apps", n.http_url.trim_end_matches('/')))
                    .body(body.clone())
                    .send()
                    .await;
                let (status, text) = match r {
                    Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
                    Err(e) => (0, e.to_string()),
                };
                if status == 200 {
                    ok += 1;
                } else {
                    // The node's refusal as its ErrorBody says it, else what came back.
                    let why = serde_json::from_str::<serde_json::Value>(&text)
                        .ok()
                        .and_then(|v| Some(format!("{}: {}", v["code"].as_str()?, v["reason"].as_str()?)))
                        .unwrap_or_else(|| if status == 0 { text.clone() } else { format!("HTTP {status}") });
                    refusals.push(format!("node {}: {why}", n.index));
                }
                results.push(json!({"index": n.index, "status": status, "body": text}));
            }
            let mut text = format!("accepted by {ok} of {} nodes", c.nodes().len());
            for r in &refusals {
                text.push_str(&format!("\n  {r}"));
            }
            out(json_mode, json!({"accepted": ok, "nodes": results}), text);
            if ok == 0 {
                let first = refusals.first().map(|r| format!(" ({r})")).unwrap_or_default();
                return Err(Exit(4, anyhow!("no node accepted the manifest{first}")));
            }
        }
        Cmd::App(AppCmd::Show { app, cluster }) => {
            let c = load_cluster(&cluster)?;
            let app: AppId = app.parse().map_err(|e| anyhow!("--app: {e:?}"))?;
            let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
            let mut seen = Vec::new();
            for n in c.nodes() {
                let r =
                    client.get(format!("{}/v1/apps/{app}", n.http_url.trim_end_matches('/'))).send().await;
                let v = match r {
                    Ok(r) if r.status() == 200 => match decode_json::<SignedManifest>(&r.bytes().await?) {
                        Ok(m) => {
                            json!({"index": n.index, "seq": m.manifest.seq, "verified": m.verify().is_ok(), "manifest": m})
                        }
                        Err(e) => json!({"index": n.index, "error": e.to_string()}),
                    },
                    Ok(r) => {
                        json!({"index": n.index, "status": r.status().as_u16(), "body": r.text().await.unwrap_or_default()})
                    }
                    Err(e) => json!({"index": n.index, "error": e.to_string()}),
                };
                seen.push(v);
            }
            let text = seen
                .iter()
                .map(|v| format!("node {}: seq {}", v["index"], v["seq"]))
                .collect::<Vec<_>>()
                .join("\n");
            out(json_mode, json!({"app_id": app, "nodes": seen}), text);
        }
        Cmd::Encrypt { cluster, app_dir, app, label, input, output } => {
            let c = load_cluster(&cluster)?;
            let label = Label::new(label).map_err(|e| anyhow!("--label: {e}"))?;
            let plain = zeroize::Zeroizing::new(
                std::fs::read(&input).with_context(|| format!("reading {}", input.display()))?,
            );
            let (env, app, signed) = match (app_dir, app) {
                (Some(dir), _) => {
                    let (owner, m) = read_app_dir(&dir)?;
                    let env = secrets::encrypt_signed(&c, &owner, &m.manifest.name, &label, &plain)?;
                    (env, m.manifest.app_id, true)
                }
                (None, Some(app)) => {
                    let app: AppId = app.parse().map_err(|e| anyhow!("--app: {e:?}"))?;
                    (secrets::encrypt(&c, &app, &label, &plain)?, app, false)
                }
                (None, None) => return Err(anyhow!("--app-dir or --app is required").into()),
            };
            std::fs::write(&output, &env)?;
            out(
                json_mode,
                json!({"out": output, "bytes": env.len(), "app_id": app, "signed": signed}),
                format!(
                    "wrote {} ({} bytes, {})",
                    output.display(),
                    env.len(),
                    if signed { "signed by the app's owner" } else { "unsigned" }
                ),
            );
        }
        Cmd::Decrypt { cluster, provider: p, input, output, allow_unsigned } => {
            let c = load_cluster(&cluster)?;
            let env = std::fs::read(&input).with_context(|| format!("reading {}", input.display()))?;
            let (app, label) = secrets::envelope_key(&env).map_err(|e| Exit(2, e.into()))?;
            if !allow_unsigned && !secrets::is_signed(&env) {
                // Refused before any key is fetched.
                return Err(Exit(2, kms_dkg::EnvelopeError::Unsigned.into()));
            }
            let f = fetch(&c, &cluster.path, &app, &label, &p, json_mode).await?;
            let plain = if allow_unsigned {
                secrets::decrypt(&f.key, &c, &env)
            } else {
                secrets::decrypt_signed(&f.key, &c, &env)
            }
            .map_err(|e| Exit(2, e.into()))?;
            write_private(&output, &plain)?;
            out(
                json_mode,
                json!({"out": output, "bytes": plain.len(), "nodes": report_json(&f.report)}),
                format!("wrote {}", output.display()),
            );
        }
        Cmd::FetchKey { cluster, provider: p, app, label, out_root_secret, prove_release } => {
            let c = load_cluster(&cluster)?;
            let app: AppId = app.parse().map_err(|e| anyhow!("--app: {e:?}"))?;
            let label = Label::new(label).map_err(|e| anyhow!("--label: {e}"))?;
            let witnesses = match prove_release.as_deref() {
                None => None,
                Some("default") => {
                    let n = c.nodes().len();
                    Some((n.saturating_sub(1) / 3 + 1).min(n.saturating_sub(1)))
                }
                Some(w) => {
                    Some(w.parse::<usize>().map_err(|_| anyhow!("--prove-release: a number of witnesses"))?)
                }
            };
            let f = fetch(&c, &cluster.path, &app, &label, &p, json_mode).await?;
            let fingerprint = hex::encode(&secrets::derive(&f.key, "kms/fingerprint")[..8]);
            if let Some(path) = out_root_secret {
                write_private(&path, &f.key.root_secret()[..])?;
            }
            let proofs = match witnesses {
                Some(w) => {
                    // After a reshare the fetch moved to the newer descriptor: its nodes answered.
                    let current = f.refreshed.as_ref().unwrap_or(&c);
                    Some(
                        kms_client::audit::prove_release(current, &f, &app, w, Duration::from_secs(30)).await,
                    )
                }
                None => None,
            };
            let mut text = format!("key fetched; fingerprint {fingerprint}");
            for r in proofs.iter().flatten() {
                text.push_str(&match &r.failure {
                    None => format!(
                        "\nnode {}: release #{} proven in its checkpoint of {} entries, co-signed by {} witnesses",
                        r.node,
                        r.index.unwrap_or_default(),
                        r.size.unwrap_or_default(),
                        r.witnesses
                    ),
                    Some(e) => format!("\nnode {}: release NOT proven: {e}", r.node),
                });
            }
            out(
                json_mode,
                json!({"app_id": app, "label": label.as_str(), "fingerprint": fingerprint, "nodes": report_json(&f.report), "release_proofs": proofs}),
                text,
            );
            if proofs.iter().flatten().any(|r| r.failure.is_some()) {
                return Err(Exit(5, anyhow!("a release is not proven in its node's transparency log")));
            }
        }
        Cmd::Audit { cluster, app, allowed, state, watch } => {
            let c = load_cluster(&cluster)?;
            let app: AppId = app.parse().map_err(|e| anyhow!("--app: {e:?}"))?;
            let mut seen: kms_client::audit::Seen = match std::fs::read(&state) {
                Ok(bytes) => {
                    serde_json::from_slice(&bytes).with_context(|| format!("reading {}", state.display()))?
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Default::default(),
                Err(e) => {
                    return Err(anyhow::Error::from(e).context(format!("reading {}", state.display())).into())
                }
            };
            loop {
                let report = kms_client::audit::audit(&c, &app, &allowed, &mut seen).await;
                // Only checkpoints that verified were added: the state never learns a bad one.
                write_private(&state, &serde_json::to_vec_pretty(&seen)?)
                    .with_context(|| format!("writing {}", state.display()))?;
                let text = audit_text(&report);
                out(json_mode, serde_json::to_value(&report)?, text);
                if !report.findings.is_empty() {
                    return Err(Exit(5, anyhow!("{} finding(s) in the nodes' logs", report.findings.len())));
                }
                let Some(secs) = watch else { break };
                tokio::time::sleep(Duration::from_secs(secs)).await;
            }
        }
        Cmd::Cluster(ClusterCmd::Fetch { node, output, pin_group_key }) => {
            let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
            let bytes = client
                .get(format!("{}/v1/cluster", node.trim_end_matches('/')))
                .send()
                .await?
                .error_for_status()?
                .bytes()
                .await?;
            let pin = match &pin_group_key {
                Some(k) => Pin::GroupKey(hex_array(k, "--pin-group-key")?),
                None => Pin::None,
            };
            let c = Cluster::from_json(&bytes, pin).map_err(|e| Exit(2, e.into()))?;
            std::fs::write(&output, &bytes)?;
            let d = c.descriptor();
            out(
                json_mode,
                json!({"out": output, "epoch": d.epoch, "group_key": d.group_key}),
                format!(
                    "wrote {} (epoch {}, group key {}){}",
                    output.display(),
                    d.epoch,
                    d.group_key,
                    if pin_group_key.is_some() {
                        String::new()
                    } else {
                        format!(
                            "\nnot pinned: check the group key with the cluster's operators, then pin it for every later command:\n  export KMS_PIN_GROUP_KEY={}",
                            d.group_key
                        )
                    }
                ),
            );
        }
        Cmd::Cluster(ClusterCmd::Show { cluster }) => {
            let c = load_cluster(&cluster)?;
            let d = c.descriptor();
            let text = format!(
                "cluster {}\nepoch {}, t = {} of n = {}\nmpk {}\ngroup key {}\n{}",
                d.cluster_id,
                d.epoch,
                d.threshold,
                d.nodes.len(),
                d.mpk,
                d.group_key,
                d.nodes
                    .iter()
                    .map(|n| format!("  node {}: {} {}", n.index, n.http_url, n.peer_id))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            out(json_mode, serde_json::to_value(d)?, text);
        }
        Cmd::Cluster(ClusterCmd::Verify { cluster, nodes }) => {
            let c = load_cluster(&cluster)?;
            let Some(trust) = node_trust(&nodes)? else {
                out(
                    json_mode,
                    json!({"verified": true, "group_key": c.descriptor().group_key}),
                    "descriptor verifies".into(),
                );
                return Ok(());
            };
            let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
            let checks = kms_client::nodes::verify_nodes(&c, &trust, &client).await;
            let failed = checks.iter().filter(|c| !c.passed).count();
            let text = checks
                .iter()
                .map(|n| match (&n.reason, &n.workload) {
                    (None, w) => format!(
                        "node {}: passes: runs {} (v{}) {}",
                        n.node,
                        w.as_deref().unwrap_or("?"),
                        n.software_version.as_deref().unwrap_or("?"),
                        n.url
                    ),
                    (Some(r), _) => format!("node {}: REFUSED: {r} {}", n.node, n.url),
                })
                .chain([format!(
                    "descriptor verifies; {} of {} nodes pass",
                    checks.len() - failed,
                    checks.len()
                )])
                .collect::<Vec<_>>()
                .join("\n");
            out(
                json_mode,
                json!({"verified": failed == 0, "group_key": c.descriptor().group_key, "nodes": checks}),
                text,
            );
            if failed > 0 {
                return Err(Exit(2, anyhow!("{failed} node(s) do not pass the node policy")));
            }
        }
    }
    Ok(())
}
