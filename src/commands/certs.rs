//! `spheromesh certs`: the cluster CA, node certificates and a cluster key.

use std::path::PathBuf;

use anyhow::Context;
use spheromesh_mesh::security::{generate_ca, issue_node_cert, CaBundle, ClusterKey};

/// Arguments of `spheromesh certs`.
#[derive(Debug, clap::Args)]
pub(crate) struct CertsArgs {
    #[command(subcommand)]
    action: CertsAction,
}

#[derive(Debug, clap::Subcommand)]
enum CertsAction {
    /// Create the cluster CA (`ca.pem`, `ca.key`) in DIR; keep `ca.key` off the nodes.
    Init {
        /// Folder for the CA files.
        #[arg(long)]
        dir: PathBuf,
        /// Cluster name written into the CA.
        #[arg(long, default_value = "spheromesh")]
        cluster: String,
    },
    /// Issue a certificate for each node NAME (its instance id) from the CA in DIR.
    Issue {
        /// Folder holding the CA; `<name>.pem` and `<name>.key` are written there.
        #[arg(long)]
        dir: PathBuf,
        /// Extra DNS names or IPs for every certificate.
        #[arg(long = "san")]
        sans: Vec<String>,
        /// Node instance ids.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Print a fresh random cluster key (64 hex digits) for `SPHEROMESH_CLUSTER_KEY`.
    Key,
}

pub(crate) fn run(args: CertsArgs) -> anyhow::Result<()> {
    match args.action {
        CertsAction::Init { dir, cluster } => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let ca = generate_ca(&cluster).context("generating the CA")?;
            ca.save(&dir)
                .with_context(|| format!("writing the CA to {}", dir.display()))?;
            println!("CA for cluster {cluster:?} written to {}", dir.display());
        }
        CertsAction::Issue { dir, sans, names } => {
            let ca = CaBundle::load(&dir)
                .with_context(|| format!("reading the CA from {}", dir.display()))?;
            for name in names {
                let node = issue_node_cert(&ca, &name, &sans)
                    .with_context(|| format!("issuing a certificate for {name}"))?;
                node.save(&dir)
                    .with_context(|| format!("writing {name}'s certificate"))?;
                println!(
                    "{name}: {}/{name}.pem, {}/{name}.key",
                    dir.display(),
                    dir.display()
                );
            }
        }
        CertsAction::Key => {
            println!(
                "{}",
                ClusterKey::generate().context("generating a key")?.to_hex()
            );
        }
    }
    Ok(())
}
