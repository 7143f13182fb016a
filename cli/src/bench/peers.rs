//! Peer measurements (`cargo xtask peers`, which runs `xtask/peers/hf_peers.py`) read back from
//! their JSON so that `qwenmk bench --peers FILE` can put qwenmk's ratio to each peer beside
//! every depth.
//!
//! The file, as the script writes it (fields not listed are kept for people, not read here):
//! ```json
//! {"gpu": "NVIDIA H100 80GB HBM3", "tokens": 128, "repetitions": 5,
//!  "weights": "random, not qwenmk's synthetic values (same shapes)",
//!  "peers": [{"name": "hf_eager", "label": "HF eager bf16",
//!             "results": [{"depth": 0, "tok_s_mean": 61.2, "tokens_per_s": [..]}, ..]}, ..]}
//! ```

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize)]
pub struct PeersFile {
    #[serde(default)]
    pub gpu: Option<String>,
    #[serde(default)]
    pub tokens: Option<usize>,
    #[serde(default)]
    pub weights: Option<String>,
    pub peers: Vec<Peer>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Peer {
    /// A short identifier (`hf_eager`), used for CSV columns.
    pub name: String,
    /// What tables and plots call it (`HF eager bf16`).
    pub label: String,
    pub results: Vec<PeerResult>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PeerResult {
    pub depth: usize,
    /// `None` when the peer could not run at this depth (e.g. out of memory).
    pub tok_s_mean: Option<f64>,
}

/// qwenmk against one peer at one depth.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeerRatio {
    pub name: String,
    pub label: String,
    /// The peer's mean tok/s at this depth, when it has one.
    pub tok_s_mean: Option<f64>,
    /// qwenmk's mean tok/s ÷ the peer's.
    pub ratio: Option<f64>,
}

impl PeersFile {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the peers file {}", path.display()))?;
        let file: PeersFile = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a peers file (as `cargo xtask peers` writes)",
                path.display()
            )
        })?;
        if file.peers.is_empty() {
            bail!("the peers file {} lists no peer", path.display());
        }
        for peer in &file.peers {
            if peer.name.is_empty() || peer.label.is_empty() {
                bail!(
                    "the peers file {} has a peer without a name or label",
                    path.display()
                );
            }
        }
        Ok(file)
    }

    /// One entry per peer, in file order, for a qwenmk row at `depth` with `tok_s_mean`.
    pub fn ratios(&self, depth: usize, tok_s_mean: f64) -> Vec<PeerRatio> {
        self.peers
            .iter()
            .map(|peer| {
                let theirs = peer
                    .results
                    .iter()
                    .find(|r| r.depth == depth)
                    .and_then(|r| r.tok_s_mean)
                    .filter(|t| t.is_finite() && *t > 0.0);
                PeerRatio {
                    name: peer.name.clone(),
                    label: peer.label.clone(),
                    tok_s_mean: theirs,
                    ratio: theirs.map(|t| tok_s_mean / t),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"{
        "gpu": "NVIDIA H100 80GB HBM3", "tokens": 128, "weights": "random",
        "peers": [
          {"name": "hf_eager", "label": "HF eager bf16",
           "results": [{"depth": 0, "tok_s_mean": 50.0}, {"depth": 128, "tok_s_mean": 40.0}]},
          {"name": "hf_compile", "label": "HF static cache + compile",
           "results": [{"depth": 0, "tok_s_mean": 400.0}, {"depth": 128, "tok_s_mean": null}]}
        ]}"#;

    #[test]
    fn ratios_per_depth_with_gaps() {
        let file: PeersFile = serde_json::from_str(FILE).unwrap();
        let r = file.ratios(0, 1000.0);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].ratio, Some(20.0));
        assert_eq!(r[1].ratio, Some(2.5));
        assert_eq!(r[1].label, "HF static cache + compile");
        let r = file.ratios(128, 1000.0);
        assert_eq!(r[0].ratio, Some(25.0));
        assert_eq!(r[1].ratio, None, "no measurement: no ratio");
        let r = file.ratios(512, 1000.0);
        assert!(
            r.iter()
                .all(|p| p.ratio.is_none() && p.tok_s_mean.is_none())
        );
    }

    #[test]
    fn a_file_without_peers_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.json");
        std::fs::write(&path, r#"{"peers": []}"#).unwrap();
        assert!(PeersFile::load(&path).is_err());
        std::fs::write(&path, "not json").unwrap();
        let e = PeersFile::load(&path).unwrap_err();
        assert!(format!("{e:#}").contains("is not a peers file"), "{e:#}");
    }
}
