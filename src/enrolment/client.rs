//! The node's side: make a key, ask the CA, retry while it is not up yet.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use spheromesh_mesh::security::{CertificateRequest, EnrolAnswer, JoinToken, NodeCredentials};
use tracing::{info, warn};

/// How a node enrols.
#[derive(Debug, Clone)]
pub struct EnrolSettings {
    /// Base URL of the CA service, e.g. `http://ca:7900`.
    pub url: String,
    /// The join token.
    pub token: JoinToken,
    /// How long to keep trying while the CA cannot be reached or answers 5xx.
    pub give_up_after: Duration,
}

/// Gets credentials for `name` from the CA: returns the CA certificate(s) to trust and this
/// node's certificate and key (the key never leaves the process).
///
/// Connection errors and 5xx answers are retried with backoff (0.5 s doubling to 5 s) until
/// `give_up_after`; a refusal (4xx) is final, since the same request would be refused again.
///
/// # Errors
///
/// Refused, timed out, or an answer that does not verify.
pub async fn enrol(
    settings: &EnrolSettings,
    name: &str,
) -> anyhow::Result<(String, NodeCredentials)> {
    let pending = CertificateRequest::new(name, &settings.token)
        .with_context(|| format!("making a certificate request for {name}"))?;
    let url = format!("{}/v1/enroll", settings.url.trim_end_matches('/'));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .context("building the HTTP client")?;
    let started = Instant::now();
    let mut backoff = Duration::from_millis(500);
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let outcome = client.post(&url).json(pending.request()).send().await;
        let retry_reason = match outcome {
            Ok(response) if response.status().is_success() => {
                let answer: EnrolAnswer = response
                    .json()
                    .await
                    .with_context(|| format!("reading the answer of {url}"))?;
                let (ca_pem, credentials) = pending
                    .accept(&settings.token, answer)
                    .with_context(|| format!("checking the answer of {url}"))?;
                info!(%url, attempts, took_ms = started.elapsed().as_millis() as u64, "enrolled");
                return Ok((ca_pem, credentials));
            }
            Ok(response) if response.status().is_client_error() => {
                let status = response.status();
                let body = response.text().await.unwrap_or_default();
                bail!("the CA at {url} refused to enrol {name}: {status} {body}");
            }
            Ok(response) => format!("answered {}", response.status()),
            Err(error) => format!("unreachable: {error}"),
        };
        if started.elapsed() + backoff > settings.give_up_after {
            bail!(
                "no certificate from {url} after {attempts} attempts in {:.0?} (last: {retry_reason})",
                started.elapsed()
            );
        }
        warn!(%url, attempts, reason = %retry_reason, "CA not answering yet; retrying");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
