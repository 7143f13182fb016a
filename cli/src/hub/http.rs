//! HTTP to the hub that cannot hang: every request has a connect and a read timeout, transient
//! failures (timeouts, dropped connections, HTTP 429 and 5xx) are retried a bounded number of
//! times with exponential backoff, and a download that stops making progress is cut off.
//!
//! Built on ureq's blocking client. The timeouts follow huggingface_hub's variables:
//! `HF_HUB_ETAG_TIMEOUT` for connecting and for metadata requests, `HF_HUB_DOWNLOAD_TIMEOUT`
//! for the silence allowed while a file streams (both 10 s by default).

use std::io::Read;
use std::time::{Duration, Instant};

use ureq::{Agent, AgentBuilder, RedirectAuthHeaders, Response};

/// How hard to try before giving up. Every wait is bounded: `attempts` tries, each with
/// timeouts, with at most `backoff_max` between two.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkPolicy {
    /// Connecting, and waiting for a metadata answer (`HF_HUB_ETAG_TIMEOUT`).
    pub metadata_timeout: Duration,
    /// The longest silence while a file streams (`HF_HUB_DOWNLOAD_TIMEOUT`).
    pub download_timeout: Duration,
    /// Tries per request, the first included (`QWENMK_HUB_RETRIES`).
    pub attempts: u32,
    /// The wait before the first retry; doubled for each later one.
    pub backoff: Duration,
    /// The longest wait between two tries.
    pub backoff_max: Duration,
}

impl Default for NetworkPolicy {
    fn default() -> Self {
        NetworkPolicy {
            metadata_timeout: Duration::from_secs(10),
            download_timeout: Duration::from_secs(10),
            attempts: 5,
            backoff: Duration::from_secs(1),
            backoff_max: Duration::from_secs(8),
        }
    }
}

impl NetworkPolicy {
    /// The wait before try `attempt` (1 is the first retry).
    pub fn backoff_before(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(16);
        self.backoff.saturating_mul(factor).min(self.backoff_max)
    }

    /// A download that receives fewer than [`LOW_SPEED_BYTES`] in this long has stalled, even
    /// if a byte trickles in now and then, just in time for the read timeout.
    pub fn low_speed_window(&self) -> Duration {
        self.download_timeout.saturating_mul(3)
    }
}

/// See [`NetworkPolicy::low_speed_window`].
pub const LOW_SPEED_BYTES: u64 = 1024;

/// Why one try failed.
#[derive(Debug)]
pub enum Failure {
    /// An HTTP status; `retry` for 429 and 5xx.
    Status { code: u16, retry: bool },
    /// No connection could be made and trying again will not help soon (refused, no DNS).
    Unreachable(String),
    /// The connection timed out, dropped or delivered too little; worth another try.
    Transient { message: String, timed_out: bool },
    /// Anything else (a malformed answer, a local file error): not retried.
    Fatal(String),
}

impl Failure {
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Failure::Transient { .. } | Failure::Status { retry: true, .. }
        )
    }

    /// From ureq's error: statuses and transport failures sorted into the kinds above.
    pub fn from_ureq(error: ureq::Error) -> Self {
        match error {
            ureq::Error::Status(code, _) => Failure::Status {
                code,
                retry: code == 429 || (500..600).contains(&code),
            },
            ureq::Error::Transport(transport) => {
                let message = describe_transport(&transport);
                let io_kind = io_kind(&transport);
                match (transport.kind(), io_kind) {
                    (ureq::ErrorKind::Dns, _) => Failure::Unreachable(message),
                    (_, Some(std::io::ErrorKind::ConnectionRefused)) => {
                        Failure::Unreachable(message)
                    }
                    (_, Some(std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock)) => {
                        Failure::Transient {
                            message,
                            timed_out: true,
                        }
                    }
                    (
                        ureq::ErrorKind::Io
                        | ureq::ErrorKind::ConnectionFailed
                        | ureq::ErrorKind::BadStatus
                        | ureq::ErrorKind::BadHeader
                        | ureq::ErrorKind::ProxyConnect,
                        _,
                    ) => Failure::Transient {
                        message,
                        timed_out: false,
                    },
                    _ => Failure::Unreachable(message),
                }
            }
        }
    }

    /// From an error while reading a response body.
    pub fn from_read(error: &std::io::Error) -> Self {
        let timed_out = matches!(
            error.kind(),
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
        );
        Failure::Transient {
            message: if timed_out {
                "the connection went silent".to_owned()
            } else {
                error.to_string()
            },
            timed_out,
        }
    }
}

fn io_kind(transport: &ureq::Transport) -> Option<std::io::ErrorKind> {
    let mut source: Option<&(dyn std::error::Error + 'static)> =
        std::error::Error::source(transport);
    // A short chain: ureq wraps the io error once or twice.
    for _ in 0..8 {
        let error = source?;
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        source = error.source();
    }
    None
}

fn describe_transport(transport: &ureq::Transport) -> String {
    let mut text = transport.message().map_or_else(
        || transport.kind().to_string(),
        |message| message.to_owned(),
    );
    if let Some(source) = std::error::Error::source(transport) {
        let source = source.to_string();
        if !text.contains(&source) {
            text = format!("{text}: {source}");
        }
    }
    text
}

/// What a request is for: it decides the read timeout and whether redirects are followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Repo info: a small answer, redirects followed.
    Metadata,
    /// File metadata: the hub's own answer, so that its redirect's headers can be read.
    MetadataNoRedirect,
    /// File bytes, wherever the hub redirects to.
    Download,
}

/// The agents the hub needs (ureq sets read timeouts per agent), the token and the policy.
pub struct HubClient {
    pub policy: NetworkPolicy,
    metadata: Agent,
    metadata_no_redirect: Agent,
    download: Agent,
    token: Option<String>,
    endpoint_host: Option<String>,
    user_agent: String,
}

impl HubClient {
    pub fn new(policy: NetworkPolicy, endpoint: &str, token: Option<String>) -> Self {
        let builder = |read: Duration| {
            AgentBuilder::new()
                .try_proxy_from_env(true)
                .timeout_connect(policy.metadata_timeout)
                .timeout_write(policy.metadata_timeout)
                .timeout_read(read)
                // The token goes to the hub only, never to the CDN a download is sent to.
                .redirect_auth_headers(RedirectAuthHeaders::SameHost)
        };
        HubClient {
            metadata: builder(policy.metadata_timeout).redirects(10).build(),
            metadata_no_redirect: builder(policy.metadata_timeout).redirects(0).build(),
            download: builder(policy.download_timeout).redirects(10).build(),
            token,
            endpoint_host: host_of(endpoint),
            user_agent: format!("qwenmk/{}", env!("CARGO_PKG_VERSION")),
            policy,
        }
    }

    /// A request with the user agent, no compression (byte counts must match the hub's sizes)
    /// and the token when the URL is on the hub's host.
    pub fn request(&self, purpose: Purpose, method: &str, url: &str) -> ureq::Request {
        let agent = match purpose {
            Purpose::Metadata => &self.metadata,
            Purpose::MetadataNoRedirect => &self.metadata_no_redirect,
            Purpose::Download => &self.download,
        };
        let mut request = agent
            .request(method, url)
            .set("User-Agent", &self.user_agent)
            .set("Accept-Encoding", "identity");
        if let Some(token) = &self.token
            && host_of(url) == self.endpoint_host
        {
            request = request.set("Authorization", &format!("Bearer {token}"));
        }
        request
    }

    /// Runs `attempt` until it succeeds, fails for good, or has been tried
    /// [`NetworkPolicy::attempts`] times; sleeps the backoff between tries. `progressed` tells
    /// whether a failed try moved forward (a download that got bytes): such a try does not count
    /// against the limit, but `max_total` tries bound the whole.
    pub fn retry<T>(
        &self,
        mut attempt: impl FnMut() -> Result<T, (Failure, bool)>,
    ) -> Result<T, RetryExhausted> {
        let max_total = self.policy.attempts.saturating_mul(20).max(1);
        let mut failures = 0u32;
        for total in 1..=max_total {
            match attempt() {
                Ok(value) => return Ok(value),
                Err((failure, progressed)) => {
                    if !failure.is_transient() {
                        return Err(RetryExhausted {
                            failure,
                            tries: total,
                        });
                    }
                    failures = if progressed { 1 } else { failures + 1 };
                    if failures >= self.policy.attempts || total == max_total {
                        return Err(RetryExhausted {
                            failure,
                            tries: total,
                        });
                    }
                    std::thread::sleep(self.policy.backoff_before(failures));
                }
            }
        }
        unreachable_exhausted(max_total)
    }
}

fn unreachable_exhausted<T>(tries: u32) -> Result<T, RetryExhausted> {
    Err(RetryExhausted {
        failure: Failure::Fatal("no try was made".to_owned()),
        tries,
    })
}

/// The last failure of a request that was given up on, and how many tries it got.
#[derive(Debug)]
pub struct RetryExhausted {
    pub failure: Failure,
    pub tries: u32,
}

/// `host:port` of a URL, lowercased; `None` when it has none.
pub fn host_of(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let host = rest.split(['/', '?', '#']).next()?;
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

/// Reads a response body into `out`, failing when it goes silent for the read timeout (the
/// socket's) or delivers under [`LOW_SPEED_BYTES`] in a [`NetworkPolicy::low_speed_window`].
/// `on_bytes` sees every chunk written. Returns the bytes read.
pub fn stream_body(
    response: Response,
    policy: &NetworkPolicy,
    mut on_bytes: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> Result<u64, (Failure, u64)> {
    let mut reader = response.into_reader();
    let mut buffer = vec![0u8; 1 << 16];
    let mut total = 0u64;
    let mut window_start = Instant::now();
    let mut window_bytes = 0u64;
    loop {
        let n = match reader.read(&mut buffer) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err((Failure::from_read(&e), total)),
        };
        if let Err(e) = on_bytes(&buffer[..n]) {
            return Err((Failure::Fatal(e.to_string()), total));
        }
        total += n as u64;
        window_bytes += n as u64;
        if window_start.elapsed() >= policy.low_speed_window() {
            if window_bytes < LOW_SPEED_BYTES {
                return Err((
                    Failure::Transient {
                        message: format!(
                            "under {LOW_SPEED_BYTES} bytes in {} s",
                            policy.low_speed_window().as_secs()
                        ),
                        timed_out: true,
                    },
                    total,
                ));
            }
            window_start = Instant::now();
            window_bytes = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let policy = NetworkPolicy::default();
        let waits: Vec<u64> = (1..=6)
            .map(|a| policy.backoff_before(a).as_secs())
            .collect();
        assert_eq!(waits, [1, 2, 4, 8, 8, 8]);
    }

    #[test]
    fn hosts_are_compared_without_paths_or_credentials() {
        assert_eq!(
            host_of("https://huggingface.co/api/models/x").as_deref(),
            Some("huggingface.co")
        );
        assert_eq!(
            host_of("http://u:p@127.0.0.1:8080/a?b").as_deref(),
            Some("127.0.0.1:8080")
        );
        assert_eq!(host_of("not a url"), None);
    }

    #[test]
    fn retries_stop_at_the_limit_and_at_a_permanent_failure() {
        let policy = NetworkPolicy {
            attempts: 3,
            backoff: Duration::from_millis(1),
            backoff_max: Duration::from_millis(2),
            ..NetworkPolicy::default()
        };
        let client = HubClient::new(policy, "http://127.0.0.1:9", None);
        let mut tries = 0;
        let err = client
            .retry::<()>(|| {
                tries += 1;
                Err((
                    Failure::Transient {
                        message: "reset".into(),
                        timed_out: false,
                    },
                    false,
                ))
            })
            .unwrap_err();
        assert_eq!((tries, err.tries), (3, 3));

        let mut tries = 0;
        let err = client
            .retry::<()>(|| {
                tries += 1;
                Err((
                    Failure::Status {
                        code: 404,
                        retry: false,
                    },
                    false,
                ))
            })
            .unwrap_err();
        assert_eq!((tries, err.tries), (1, 1));

        // Progress resets the count, but the total stays bounded.
        let mut tries = 0;
        let err = client
            .retry::<()>(|| {
                tries += 1;
                Err((
                    Failure::Transient {
                        message: "dropped".into(),
                        timed_out: false,
                    },
                    true,
                ))
            })
            .unwrap_err();
        assert_eq!(tries, 60);
        assert_eq!(err.tries, 60);
    }
}
