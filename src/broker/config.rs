//! Broker settings: the command-line/environment surface ([`BrokerArgs`], flattened into
//! `spheromesh node`) and the checked [`BrokerConfig`] the consumer runs with.
//!
//! The environment names are the old Python service's (`RABBITMQ_HOST`, `RABBITMQ_PORT`,
//! `RABBITMQ_USER`, `RABBITMQ_PASS`, `RABBITMQ_QUEUE`, `RABBITMQ_PREFETCH_COUNT`), plus
//! `RABBITMQ_URL`, which wins over the split variables when both are set.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use lapin::uri::AMQPUri;

use super::backoff::Backoff;
use super::redelivery::DEFAULT_MAX_FAILURES;

/// Queue the backend publishes to (contract section 2).
pub const DEFAULT_QUEUE: &str = "segmentation_tasks";
/// Suffix appended to the task queue's name to name the dead-letter queue.
pub(crate) const DEAD_LETTER_SUFFIX: &str = ".dead_letter";
/// Where the shared uploads volume is mounted on ML nodes (contract section 1.4).
pub const DEFAULT_UPLOADS_ROOT: &str = "/ML/uploads";
/// Default callback User-Agent: it must contain `python-requests`, or the stock backend
/// answers 401 (contract section 3).
pub const DEFAULT_USER_AGENT: &str = "python-requests/2.31.0 (spheromesh)";
/// The old service's prefetch (`RABBITMQ_PREFETCH_COUNT`).
pub(crate) const DEFAULT_PREFETCH: u16 = 4;
/// How long a failing callback is retried before the message is requeued.
pub(crate) const DEFAULT_CALLBACK_RETRY_FOR: Duration = Duration::from_secs(120);

/// RabbitMQ settings of `spheromesh node`. Flatten it into the node's arguments with
/// `#[command(flatten)]`; turn it into a [`BrokerConfig`] with [`BrokerConfig::from_args`].
#[derive(Debug, Clone, Default, clap::Args)]
pub struct BrokerArgs {
    /// AMQP URL of the broker, e.g. amqp://user:pass@rabbitmq:5672/%2f (wins over
    /// --rabbitmq-host and friends).
    #[arg(long, env = "RABBITMQ_URL", hide_env_values = true)]
    pub rabbitmq_url: Option<String>,
    /// Broker host (the old service's variable); setting it turns the consumer on.
    #[arg(long, env = "RABBITMQ_HOST")]
    pub rabbitmq_host: Option<String>,
    /// Broker port (default 5672).
    #[arg(long, env = "RABBITMQ_PORT")]
    pub rabbitmq_port: Option<u16>,
    /// Broker user (default guest).
    #[arg(long, env = "RABBITMQ_USER")]
    pub rabbitmq_user: Option<String>,
    /// Broker password (default guest).
    #[arg(long, env = "RABBITMQ_PASS", hide_env_values = true)]
    pub rabbitmq_pass: Option<String>,
    /// Queue the backend publishes tasks to.
    #[arg(long, env = "RABBITMQ_QUEUE", default_value = DEFAULT_QUEUE)]
    pub rabbitmq_queue: String,
    /// Most unacknowledged deliveries this node holds; it holds fewer when the mesh has
    /// fewer free slots.
    #[arg(long, env = "RABBITMQ_PREFETCH_COUNT", default_value_t = DEFAULT_PREFETCH)]
    pub rabbitmq_prefetch_count: u16,
    /// Directory the backend's uploads are mounted at; task image paths must stay inside it.
    #[arg(long, env = "UPLOADS_ROOT", default_value = DEFAULT_UPLOADS_ROOT)]
    pub uploads_root: PathBuf,
    /// Durable queue malformed task messages are moved to (default: the task queue's name
    /// plus ".dead_letter").
    #[arg(long, env = "RABBITMQ_DEAD_LETTER_QUEUE")]
    pub dead_letter_queue: Option<String>,
    /// User-Agent of result callbacks; the stock backend lets a callback in without a user
    /// token only when it contains "python-requests".
    #[arg(long, env = "CALLBACK_USER_AGENT", default_value = DEFAULT_USER_AGENT)]
    pub callback_user_agent: String,
    /// Authorization header value sent with result callbacks (e.g. "Bearer ...").
    #[arg(long, env = "CALLBACK_AUTHORIZATION", hide_env_values = true)]
    pub callback_authorization: Option<String>,
    /// Seconds a failing result callback is retried (with backoff) before the task message
    /// is requeued.
    #[arg(long, env = "CALLBACK_RETRY_FOR", default_value_t = DEFAULT_CALLBACK_RETRY_FOR.as_secs())]
    pub callback_retry_for: u64,
    /// Failures (engine error, deadline, callback never accepted) after which a task
    /// message goes to the dead-letter queue instead of back to the task queue; the count
    /// travels with the message in a header, across nodes.
    #[arg(long, env = "RABBITMQ_MAX_FAILURES", default_value_t = DEFAULT_MAX_FAILURES)]
    pub rabbitmq_max_failures: u32,
}

/// A broker setting that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The AMQP URL does not parse.
    #[error("invalid RabbitMQ URL: {reason}")]
    Url {
        /// What the URL parser said.
        reason: String,
    },
    /// A queue name is empty or longer than AMQP's 255 bytes.
    #[error("invalid queue name {name:?}: must be 1..=255 bytes")]
    QueueName {
        /// The refused name.
        name: String,
    },
    /// The dead-letter queue would be the task queue itself.
    #[error("the dead-letter queue must differ from the task queue ({name:?})")]
    DeadLetterIsTaskQueue {
        /// The shared name.
        name: String,
    },
    /// A prefetch bound of 0 would never take a task.
    #[error("RABBITMQ_PREFETCH_COUNT must be at least 1")]
    ZeroPrefetch,
    /// A failure cap of 0 would dead-letter messages that never failed.
    #[error("RABBITMQ_MAX_FAILURES must be at least 1")]
    ZeroMaxFailures,
    /// The User-Agent or Authorization value is not a valid HTTP header value.
    #[error("invalid callback header {header}: not a valid HTTP header value")]
    Header {
        /// Which header.
        header: &'static str,
    },
}

/// Everything the consumer runs with. [`BrokerConfig::new`] gives the defaults; fields can
/// be changed afterwards and are checked again by [`BrokerConfig::validate`].
#[derive(Clone)]
#[non_exhaustive]
pub struct BrokerConfig {
    /// AMQP URL, credentials included (redacted by `Debug`).
    pub amqp_url: String,
    /// Queue the backend publishes tasks to, declared exactly as the backend declares it.
    pub queue: String,
    /// Separate durable queue for malformed messages.
    pub dead_letter_queue: String,
    /// Most unacknowledged deliveries held at once (the upper bound; see the consumer).
    pub prefetch: u16,
    /// Root every task image path must resolve inside.
    pub uploads_root: PathBuf,
    /// Larger image files fail the task without being read into memory.
    pub max_image_bytes: u64,
    /// Callback User-Agent.
    pub callback_user_agent: String,
    /// Optional callback `Authorization` header value.
    pub callback_authorization: Option<String>,
    /// How long a failing callback is retried before the message is requeued.
    pub callback_retry_for: Duration,
    /// Failures after which a message is dead-lettered instead of requeued.
    pub max_failures: u32,
    /// Time limit of one callback request.
    pub callback_attempt_timeout: Duration,
    /// Schedule of callback retries.
    pub callback_backoff: Backoff,
    /// Deadline given to each task (the backend resets tasks after 30 minutes without a
    /// callback, so the default stays under it).
    pub task_timeout: Duration,
    /// Schedule of reconnect attempts while the broker is unreachable.
    pub reconnect_backoff: Backoff,
    /// Schedule of `basic.get` polls while the queue is empty (reset on every delivery).
    pub empty_poll_backoff: Backoff,
    /// How often free capacity is re-read while there is none.
    pub capacity_poll: Duration,
    /// How often the queue depth is read (passive declare).
    pub depth_poll: Duration,
    /// Results kept for answering redeliveries without recomputing.
    pub result_cache_capacity: usize,
    /// How long a kept result stays usable.
    pub result_cache_ttl: Duration,
}

impl fmt::Debug for BrokerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrokerConfig")
            .field("amqp_url", &redact_url(&self.amqp_url))
            .field("queue", &self.queue)
            .field("dead_letter_queue", &self.dead_letter_queue)
            .field("prefetch", &self.prefetch)
            .field("uploads_root", &self.uploads_root)
            .field("callback_user_agent", &self.callback_user_agent)
            .field(
                "callback_authorization",
                &self.callback_authorization.as_ref().map(|_| "<set>"),
            )
            .field("callback_retry_for", &self.callback_retry_for)
            .field("max_failures", &self.max_failures)
            .field("task_timeout", &self.task_timeout)
            .finish_non_exhaustive()
    }
}

/// `amqp://user:secret@host/..` with the password replaced, for logs.
pub(crate) fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            // set_password only fails for URLs that cannot have one; this one had one.
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "<unparsable url>".to_owned(),
    }
}

impl BrokerConfig {
    /// Defaults for everything but the broker URL.
    pub fn new(amqp_url: impl Into<String>) -> Self {
        Self {
            amqp_url: amqp_url.into(),
            queue: DEFAULT_QUEUE.to_owned(),
            dead_letter_queue: format!("{DEFAULT_QUEUE}{DEAD_LETTER_SUFFIX}"),
            prefetch: DEFAULT_PREFETCH,
            uploads_root: PathBuf::from(DEFAULT_UPLOADS_ROOT),
            max_image_bytes: 256 * 1024 * 1024,
            callback_user_agent: DEFAULT_USER_AGENT.to_owned(),
            callback_authorization: None,
            callback_retry_for: DEFAULT_CALLBACK_RETRY_FOR,
            max_failures: DEFAULT_MAX_FAILURES,
            callback_attempt_timeout: Duration::from_secs(30),
            callback_backoff: Backoff::new_unchecked(
                Duration::from_millis(200),
                Duration::from_secs(10),
            ),
            task_timeout: Duration::from_secs(25 * 60),
            // Capped at 5 s (mean 2.5 s with full jitter): a node back from a broker
            // restart takes work within seconds, and a few connects a second from a
            // whole mesh cost the broker nothing.
            reconnect_backoff: Backoff::new_unchecked(
                Duration::from_millis(500),
                Duration::from_secs(5),
            ),
            empty_poll_backoff: Backoff::new_unchecked(
                Duration::from_millis(20),
                Duration::from_millis(500),
            ),
            capacity_poll: Duration::from_millis(50),
            depth_poll: Duration::from_secs(1),
            result_cache_capacity: 1024,
            result_cache_ttl: Duration::from_secs(3600),
        }
    }

    /// Test settings: the given broker, a queue of its own (and `<queue>.dead_letter`),
    /// the given uploads root, short callback retries and fast reconnects.
    pub fn for_test(amqp_url: &str, queue: &str, uploads_root: impl Into<PathBuf>) -> Self {
        let mut c = Self::new(amqp_url);
        c.queue = queue.to_owned();
        c.dead_letter_queue = format!("{queue}{DEAD_LETTER_SUFFIX}");
        c.uploads_root = uploads_root.into();
        c.callback_retry_for = Duration::from_secs(3);
        c.callback_backoff =
            Backoff::new_unchecked(Duration::from_millis(50), Duration::from_millis(400));
        c.reconnect_backoff =
            Backoff::new_unchecked(Duration::from_millis(200), Duration::from_secs(2));
        c.depth_poll = Duration::from_millis(200);
        c
    }

    /// The consumer settings from the command line / environment, or `None` when neither
    /// `RABBITMQ_URL` nor `RABBITMQ_HOST` is given (the node then runs without a broker).
    ///
    /// # Errors
    /// [`ConfigError`] naming the first setting that cannot work.
    pub fn from_args(args: &BrokerArgs) -> Result<Option<Self>, ConfigError> {
        let url = match (&args.rabbitmq_url, &args.rabbitmq_host) {
            (Some(url), _) if !url.trim().is_empty() => url.trim().to_owned(),
            (_, Some(host)) if !host.trim().is_empty() => url_from_parts(
                host.trim(),
                args.rabbitmq_port.unwrap_or(5672),
                args.rabbitmq_user.as_deref().unwrap_or("guest"),
                args.rabbitmq_pass.as_deref().unwrap_or("guest"),
            )?,
            _ => return Ok(None),
        };
        let mut c = Self::new(url);
        c.queue = args.rabbitmq_queue.clone();
        c.dead_letter_queue = args
            .dead_letter_queue
            .clone()
            .unwrap_or_else(|| format!("{}{DEAD_LETTER_SUFFIX}", args.rabbitmq_queue));
        c.prefetch = args.rabbitmq_prefetch_count;
        c.uploads_root = args.uploads_root.clone();
        c.callback_user_agent = args.callback_user_agent.clone();
        c.callback_authorization = args.callback_authorization.clone();
        c.callback_retry_for = Duration::from_secs(args.callback_retry_for);
        c.max_failures = args.rabbitmq_max_failures;
        c.validate()?;
        Ok(Some(c))
    }

    /// Checks the rules the consumer relies on.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first broken rule.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.amqp_url
            .parse::<AMQPUri>()
            .map_err(|reason| ConfigError::Url { reason })?;
        for name in [&self.queue, &self.dead_letter_queue] {
            if name.is_empty() || name.len() > 255 {
                return Err(ConfigError::QueueName { name: name.clone() });
            }
        }
        if self.queue == self.dead_letter_queue {
            return Err(ConfigError::DeadLetterIsTaskQueue {
                name: self.queue.clone(),
            });
        }
        if self.prefetch == 0 {
            return Err(ConfigError::ZeroPrefetch);
        }
        if self.max_failures == 0 {
            return Err(ConfigError::ZeroMaxFailures);
        }
        if reqwest::header::HeaderValue::from_str(&self.callback_user_agent).is_err() {
            return Err(ConfigError::Header {
                header: "User-Agent",
            });
        }
        if let Some(auth) = &self.callback_authorization {
            if reqwest::header::HeaderValue::from_str(auth).is_err() {
                return Err(ConfigError::Header {
                    header: "Authorization",
                });
            }
        }
        Ok(())
    }
}

/// `amqp://user:pass@host:port/%2f` with user and password percent-encoded.
fn url_from_parts(host: &str, port: u16, user: &str, pass: &str) -> Result<String, ConfigError> {
    let url_err = |reason: String| ConfigError::Url { reason };
    let mut url = reqwest::Url::parse(&format!("amqp://{host}:{port}/%2f"))
        .map_err(|e| url_err(format!("host {host:?}: {e}")))?;
    url.set_username(user)
        .map_err(|()| url_err(format!("user {user:?} cannot be set")))?;
    url.set_password(Some(pass))
        .map_err(|()| url_err("password cannot be set".to_owned()))?;
    Ok(url.to_string())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        broker: BrokerArgs,
    }

    fn parse(args: &[&str]) -> BrokerArgs {
        Cli::try_parse_from(std::iter::once("node").chain(args.iter().copied()))
            .expect("parses")
            .broker
    }

    // These tests must not depend on the RABBITMQ_* variables of the machine running
    // them: each one passes the switch that decides, and the no-broker case builds the
    // args by hand.
    #[test]
    fn no_url_and_no_host_means_no_broker() {
        let args = BrokerArgs {
            rabbitmq_queue: DEFAULT_QUEUE.into(),
            rabbitmq_prefetch_count: 4,
            ..BrokerArgs::default()
        };
        assert!(matches!(BrokerConfig::from_args(&args), Ok(None)));
    }

    #[test]
    fn split_variables_build_an_encoded_url_with_defaults() {
        let args = parse(&[
            "--rabbitmq-url=",
            "--rabbitmq-host=rabbit",
            "--rabbitmq-user=ml user",
            "--rabbitmq-pass=p@ss/word",
            "--rabbitmq-queue=q",
            "--rabbitmq-prefetch-count=7",
        ]);
        let c = BrokerConfig::from_args(&args)
            .expect("valid")
            .expect("enabled");
        assert_eq!(c.amqp_url, "amqp://ml%20user:p%40ss%2Fword@rabbit:5672/%2f");
        assert_eq!(c.queue, "q");
        assert_eq!(c.dead_letter_queue, "q.dead_letter");
        assert_eq!(c.prefetch, 7);
        let parsed: AMQPUri = c.amqp_url.parse().expect("lapin parses it");
        assert_eq!(parsed.authority.userinfo.username, "ml user");
        assert_eq!(parsed.authority.userinfo.password, "p@ss/word");
        assert_eq!(parsed.vhost, "/");
    }

    #[test]
    fn url_wins_and_defaults_match_the_old_service() {
        let args = parse(&["--rabbitmq-url=amqp://a:b@h:1/%2f", "--rabbitmq-host=other"]);
        let c = BrokerConfig::from_args(&args)
            .expect("valid")
            .expect("enabled");
        assert_eq!(c.amqp_url, "amqp://a:b@h:1/%2f");
        assert_eq!(c.uploads_root, PathBuf::from("/ML/uploads"));
        assert!(c.callback_user_agent.contains("python-requests"));
        assert!(
            !format!("{c:?}").contains(":b@"),
            "Debug must hide the password"
        );
    }

    #[test]
    fn broken_settings_are_named() {
        let bad_prefetch = parse(&["--rabbitmq-url=amqp://h/%2f", "--rabbitmq-prefetch-count=0"]);
        assert!(matches!(
            BrokerConfig::from_args(&bad_prefetch),
            Err(ConfigError::ZeroPrefetch)
        ));
        let no_failures = parse(&["--rabbitmq-url=amqp://h/%2f", "--rabbitmq-max-failures=0"]);
        assert!(matches!(
            BrokerConfig::from_args(&no_failures),
            Err(ConfigError::ZeroMaxFailures)
        ));
        let same = parse(&[
            "--rabbitmq-url=amqp://h/%2f",
            "--dead-letter-queue=segmentation_tasks",
        ]);
        assert!(matches!(
            BrokerConfig::from_args(&same),
            Err(ConfigError::DeadLetterIsTaskQueue { .. })
        ));
        let url = parse(&["--rabbitmq-url=http://h/"]);
        assert!(matches!(
            BrokerConfig::from_args(&url),
            Err(ConfigError::Url { .. })
        ));
        let long = "q".repeat(256);
        let queue = parse(&["--rabbitmq-url=amqp://h/%2f", "--rabbitmq-queue", &long]);
        assert!(matches!(
            BrokerConfig::from_args(&queue),
            Err(ConfigError::QueueName { .. })
        ));
    }
}
