//! A minimal stand-in for the hub's HTTP API on 127.0.0.1: repo info
//! (`/api/models/{repo}/revision/{rev}`), file metadata (HEAD on `/{repo}/resolve/{rev}/{file}`,
//! with `ETag`, `X-Repo-Commit`, `Content-Length`; `.safetensors` files answer like large files
//! do, with a redirect to `/cdn/{file}` and `X-Linked-Etag` / `X-Linked-Size`) and ranged
//! downloads. One repo, `org/tiny`; any other repo gets 401, as the real hub answers for unknown
//! or private repos.
//!
//! [`Faults`] makes it misbehave the ways networks do. Every wait in it is bounded, and its
//! thread serves each connection in a thread of its own that ends by itself.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const REPO: &str = "org/tiny";
/// The longest a stalling connection is held open before the server gives up on it.
const STALL: Duration = Duration::from_secs(20);

#[derive(Debug, Clone)]
pub struct Request {
    #[allow(dead_code)] // shown when a test fails
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    pub range: Option<String>,
}

/// Ways to misbehave.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Accept connections, read the request and never answer.
    pub stall_after_accept: bool,
    /// The first `n` requests get HTTP 503.
    pub unavailable_first: usize,
    /// The first download of this file sends these many bytes, then stalls.
    pub stall_mid_file: Option<(String, usize)>,
    /// The first download of this file announces its full length but sends these many bytes,
    /// then closes the connection.
    pub truncate_once: Option<(String, usize)>,
    /// Ignore `Range` (always send the whole file with 200).
    pub ignore_range: bool,
}

pub struct FakeHub {
    port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
}

struct Repo {
    commit: String,
    files: Vec<(String, Vec<u8>)>,
    faults: Faults,
    served: AtomicUsize,
    downloads: Mutex<Vec<String>>,
}

impl FakeHub {
    pub fn start(commit: &str, files: &[(&str, Vec<u8>)]) -> Self {
        Self::start_with(commit, files, Faults::default())
    }

    pub fn start_with(commit: &str, files: &[(&str, Vec<u8>)], faults: Faults) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a local port");
        let port = listener.local_addr().unwrap().port();
        let repo = Arc::new(Repo {
            commit: commit.to_owned(),
            files: files
                .iter()
                .map(|(n, b)| (n.to_string(), b.clone()))
                .collect(),
            faults,
            served: AtomicUsize::new(0),
            downloads: Mutex::new(Vec::new()),
        });
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&requests);
        // The thread ends with the test process; each test starts its own server.
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let repo = Arc::clone(&repo);
                let log = Arc::clone(&log);
                std::thread::spawn(move || {
                    let _ = serve(stream, &repo, &log);
                });
            }
        });
        Self { port, requests }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

/// An address where nothing listens: connections are refused at once.
pub fn refusing_endpoint() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a local port");
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

fn serve(stream: TcpStream, repo: &Repo, log: &Mutex<Vec<Request>>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(STALL))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut words = line.split_whitespace();
    let method = words.next().unwrap_or("").to_owned();
    let path = words.next().unwrap_or("").to_owned();
    let (mut range, mut authorization) = (None, None);
    // At most 100 header lines.
    for _ in 0..100 {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            match name.trim().to_ascii_lowercase().as_str() {
                "range" => range = Some(value.trim().to_owned()),
                "authorization" => authorization = Some(value.trim().to_owned()),
                _ => {}
            }
        }
    }
    log.lock().unwrap().push(Request {
        method: method.clone(),
        path: path.clone(),
        authorization,
        range: range.clone(),
    });

    let mut out = stream;
    if repo.faults.stall_after_accept {
        std::thread::sleep(STALL);
        return Ok(());
    }
    if repo.served.fetch_add(1, Ordering::SeqCst) < repo.faults.unavailable_first {
        return respond(&mut out, "503 Service Unavailable", &[], b"busy", true);
    }
    let head = method == "HEAD";
    let info_prefix = format!("/api/models/{REPO}/revision/");
    let file_prefix = format!("/{REPO}/resolve/");
    if path.starts_with(&info_prefix) {
        let siblings: Vec<String> = repo
            .files
            .iter()
            .map(|(n, _)| format!("{{\"rfilename\": \"{n}\"}}"))
            .collect();
        let body = format!(
            "{{\"sha\": \"{}\", \"siblings\": [{}]}}",
            repo.commit,
            siblings.join(",")
        );
        let headers = [("Content-Type", "application/json".into())];
        return respond(&mut out, "200 OK", &headers, body.as_bytes(), !head);
    }
    if let Some(rest) = path.strip_prefix(&file_prefix) {
        let name = rest.split_once('/').map_or("", |(_rev, name)| name);
        let Some(index) = repo.files.iter().position(|(n, _)| n == name) else {
            return respond(&mut out, "404 Not Found", &[], b"", !head);
        };
        let bytes = &repo.files[index].1;
        let large = name.ends_with(".safetensors");
        let mut headers = vec![
            ("X-Repo-Commit", repo.commit.clone()),
            ("ETag", format!("\"blob{index}\"")),
        ];
        if large {
            // Like the hub for LFS files: a redirect whose headers describe the real file.
            headers.push(("X-Linked-Etag", format!("\"sha{index:04}\"")));
            headers.push(("X-Linked-Size", bytes.len().to_string()));
            // `localhost`, another host name than the endpoint's: the token must not follow.
            headers.push((
                "Location",
                format!("http://localhost:{}/cdn/{name}", port(&out)),
            ));
            return respond(&mut out, "302 Found", &headers, b"", false);
        }
        if head {
            return respond_head(&mut out, &headers, bytes.len());
        }
        return send_file(&mut out, repo, name, bytes, range.as_deref(), headers);
    }
    if let Some(name) = path.strip_prefix("/cdn/")
        && let Some((_, bytes)) = repo.files.iter().find(|(n, _)| n == name)
    {
        return send_file(&mut out, repo, name, bytes, range.as_deref(), Vec::new());
    }
    respond(
        &mut out,
        "401 Unauthorized",
        &[],
        b"{\"error\": \"Repository not found\"}",
        !head,
    )
}

fn port(stream: &TcpStream) -> u16 {
    stream.local_addr().map_or(0, |a| a.port())
}

/// A file or a range of it, with the faults that apply to its first download.
fn send_file(
    out: &mut TcpStream,
    repo: &Repo,
    name: &str,
    bytes: &[u8],
    range: Option<&str>,
    mut headers: Vec<(&str, String)>,
) -> std::io::Result<()> {
    let first = {
        let mut downloads = repo.downloads.lock().unwrap();
        let first = !downloads.iter().any(|n| n == name);
        downloads.push(name.to_owned());
        first
    };
    let (start, end) = if repo.faults.ignore_range {
        (0, bytes.len())
    } else {
        parse_range(range, bytes.len())
    };
    let status = if range.is_some() && !repo.faults.ignore_range {
        headers.push((
            "Content-Range",
            format!("bytes {start}-{}/{}", end.saturating_sub(1), bytes.len()),
        ));
        "206 Partial Content"
    } else {
        "200 OK"
    };
    let body = &bytes[start..end];
    let cut = |fault: &Option<(String, usize)>| {
        fault
            .as_ref()
            .filter(|(file, _)| first && file == name)
            .map(|(_, at)| (*at).min(body.len()))
    };
    if let Some(at) = cut(&repo.faults.stall_mid_file) {
        write_head(out, status, &headers, body.len())?;
        out.write_all(&body[..at])?;
        out.flush()?;
        std::thread::sleep(STALL);
        return Ok(());
    }
    if let Some(at) = cut(&repo.faults.truncate_once) {
        write_head(out, status, &headers, body.len())?;
        out.write_all(&body[..at])?;
        return out.flush();
    }
    write_head(out, status, &headers, body.len())?;
    out.write_all(body)?;
    out.flush()
}

/// `bytes=a-b` (inclusive) or `bytes=a-` → the half-open byte range to send.
fn parse_range(range: Option<&str>, len: usize) -> (usize, usize) {
    let Some(spec) = range.and_then(|r| r.strip_prefix("bytes=")) else {
        return (0, len);
    };
    let (a, b) = spec.split_once('-').unwrap_or((spec, ""));
    let start = a.parse().unwrap_or(0).min(len);
    let end = b.parse::<usize>().map_or(len, |b| (b + 1).min(len));
    (start, end.max(start))
}

fn write_head(
    out: &mut TcpStream,
    status: &str,
    headers: &[(&str, String)],
    len: usize,
) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {status}\r\nContent-Length: {len}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())
}

fn respond_head(
    out: &mut TcpStream,
    headers: &[(&str, String)],
    len: usize,
) -> std::io::Result<()> {
    write_head(out, "200 OK", headers, len)?;
    out.flush()
}

fn respond(
    out: &mut TcpStream,
    status: &str,
    headers: &[(&str, String)],
    body: &[u8],
    with_body: bool,
) -> std::io::Result<()> {
    write_head(out, status, headers, body.len())?;
    if with_body {
        out.write_all(body)?;
    }
    out.flush()
}
