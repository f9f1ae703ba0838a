//! The node's TLS identity: from `--tls-dir`, from the enrolment CA, or throwaway for a
//! node on its own.

use anyhow::Context;
use spheromesh_mesh::security::{self, NodeCredentials};
use tracing::{info, warn};

use super::NodeConfig;

/// The CA certificate peers must chain to, and this node's credentials.
pub(super) async fn load(config: &NodeConfig) -> anyhow::Result<(String, NodeCredentials)> {
    if let Some(enrolment) = &config.enrolment {
        return crate::enrolment::enrol(enrolment, &config.instance_id)
            .await
            .context("enrolling with the cluster CA");
    }
    match &config.tls_dir {
        Some(dir) => {
            let ca = security::load_ca_cert(dir)
                .with_context(|| format!("reading the cluster CA from {}", dir.display()))?;
            let node = NodeCredentials::load(dir, &config.instance_id).with_context(|| {
                format!(
                    "reading the certificate of {} from {} (create it with `spheromesh certs issue`)",
                    config.instance_id,
                    dir.display()
                )
            })?;
            info!(dir = %dir.display(), node = node.node_name(), "cluster credentials loaded");
            Ok((ca, node))
        }
        None => {
            warn!(
                "no --tls-dir: throwaway credentials; this node serves HTTP but cannot exchange \
                 tasks with peers (use `spheromesh certs` or `spheromesh up`)"
            );
            let (ca, node) = security::throwaway(&config.instance_id)
                .context("creating throwaway credentials")?;
            Ok((ca.cert_pem().to_owned(), node))
        }
    }
}
