//! `spheromesh ca`: the enrolment CA service and its join tokens.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use spheromesh::enrolment::{self, CaSettings, TokenSource};
use spheromesh_mesh::security::JoinToken;
use tokio_util::sync::CancellationToken;

/// Arguments of `spheromesh ca`.
#[derive(Debug, clap::Args)]
pub(crate) struct CaArgs {
    #[command(subcommand)]
    action: CaAction,
}

#[derive(Debug, clap::Subcommand)]
enum CaAction {
    /// Serve enrolment: sign replicas' certificate requests that carry an accepted join
    /// token. Creates the cluster CA in DIR on first start; the CA key stays there.
    Serve {
        /// Folder for `ca.pem`, `ca.key` and `issued.log` (a volume only the CA mounts).
        #[arg(long, env = "CA_DIR", default_value = "/ca")]
        dir: PathBuf,
        /// Address to listen on.
        #[arg(long, env = "CA_LISTEN", default_value = "0.0.0.0:7900")]
        listen: SocketAddr,
        /// Cluster name written into a new CA.
        #[arg(long, env = "CLUSTER_ID", default_value = "spheromesh")]
        cluster: String,
        /// Days a signed certificate is valid (replicas re-enrol when they restart).
        #[arg(long, env = "CERT_VALIDITY_DAYS", default_value_t = 90,
              value_parser = clap::value_parser!(u64).range(1..=3650))]
        validity_days: u64,
        /// The one accepted join token.
        #[arg(
            long,
            env = "JOIN_TOKEN",
            hide_env_values = true,
            conflicts_with = "token_file"
        )]
        token: Option<String>,
        /// File of accepted join tokens, one per line (`TOKEN [names=PATTERN]`), re-read on
        /// every request: delete a line to revoke it.
        #[arg(long, env = "JOIN_TOKEN_FILE")]
        token_file: Option<PathBuf>,
    },
    /// Print a fresh random join token (64 hex digits).
    Token,
}

pub(crate) fn run(args: CaArgs) -> anyhow::Result<()> {
    match args.action {
        CaAction::Token => {
            println!("{}", JoinToken::generate());
            Ok(())
        }
        CaAction::Serve {
            dir,
            listen,
            cluster,
            validity_days,
            token,
            token_file,
        } => {
            let tokens = match (token, token_file) {
                (Some(token), _) => {
                    TokenSource::Fixed(JoinToken::new(&token).context("JOIN_TOKEN")?)
                }
                (None, Some(path)) => TokenSource::File(path),
                (None, None) => bail!("no join token: set JOIN_TOKEN or JOIN_TOKEN_FILE"),
            };
            let settings = CaSettings {
                dir,
                cluster,
                listen,
                validity: Duration::from_secs(validity_days * 24 * 60 * 60),
                tokens,
            };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(async {
                let stop = CancellationToken::new();
                let signal = stop.clone();
                tokio::spawn(async move {
                    spheromesh::runtime::shutdown_signal().await;
                    signal.cancel();
                });
                enrolment::serve(settings, stop).await
            })
        }
    }
}
