//! `qwenmk bench`'s parts; `commands/bench.rs` puts them together.
//!
//! - [`engine`]: what the bench needs of an engine (truncating, timed decoding);
//! - [`sweep`]: the depths, filling the cache, warm-up and timed runs;
//! - [`stats`]: mean ± sd, bytes per token, GB/s, % of peak, roofline;
//! - [`report`]: the run as data (the JSON), Markdown and CSV;
//! - [`peers`]: peer measurements from `cargo xtask peers`, as ratios;
//! - [`plot`]: the SVG;
//! - [`simulated`]: where a step's time goes on the virtual GPU's timing model.

pub mod engine;
pub mod peers;
pub mod plot;
pub mod report;
pub mod simulated;
pub mod stats;
pub mod sweep;
