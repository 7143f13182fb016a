//! A minimal stand-in for the hub's HTTP API, enough for hf-hub's blocking client: repo info
//! (`/api/models/{repo}/revision/{rev}`) and ranged file downloads (`/{repo}/resolve/{rev}/{file}`)
//! with the `etag`, `x-repo-commit` and `Content-Range` headers it reads. One repo, `org/tiny`;
//! any other repo gets 401, as the real hub answers for unknown or private repos.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

const REPO: &str = "org/tiny";

#[derive(Debug, Clone)]
pub struct Request {
    #[allow(dead_code)] // kept for debugging failed tests
    pub path: String,
    pub authorization: Option<String>,
}

pub struct FakeHub {
    port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
}

struct Repo {
    commit: String,
    files: Vec<(String, Vec<u8>)>,
}

impl FakeHub {
    pub fn start(commit: &str, files: &[(&str, Vec<u8>)]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a local port");
        let port = listener.local_addr().unwrap().port();
        let repo = Arc::new(Repo {
            commit: commit.to_owned(),
            files: files
                .iter()
                .map(|(n, b)| (n.to_string(), b.clone()))
                .collect(),
        });
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&requests);
        // The thread ends with the test process; each test starts its own server.
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = serve(stream, &repo, &log);
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

fn serve(stream: TcpStream, repo: &Repo, log: &Mutex<Vec<Request>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
    let (mut range, mut authorization) = (None, None);
    loop {
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
        path: path.clone(),
        authorization,
    });

    let mut out = stream;
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
        return respond(
            &mut out,
            "200 OK",
            &[("Content-Type", "application/json".into())],
            body.as_bytes(),
        );
    }
    if let Some(rest) = path.strip_prefix(&file_prefix) {
        let name = rest.split_once('/').map_or("", |(_rev, name)| name);
        let Some(index) = repo.files.iter().position(|(n, _)| n == name) else {
            return respond(&mut out, "404 Not Found", &[], b"");
        };
        let bytes = &repo.files[index].1;
        let (start, end) = parse_range(range.as_deref(), bytes.len());
        let headers = [
            ("ETag", format!("\"blob{index}\"")),
            ("X-Repo-Commit", repo.commit.clone()),
            (
                "Content-Range",
                format!("bytes {start}-{}/{}", end.saturating_sub(1), bytes.len()),
            ),
        ];
        return respond(
            &mut out,
            "206 Partial Content",
            &headers,
            &bytes[start..end],
        );
    }
    respond(
        &mut out,
        "401 Unauthorized",
        &[],
        b"{\"error\": \"Repository not found\"}",
    )
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

fn respond(
    out: &mut TcpStream,
    status: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    out.write_all(body)?;
    out.flush()
}
