//! Every number of the timing model, with its source. One table, so a change is one edit and a
//! reader sees at once what the model assumes.
//!
//! Source keys (full references in `docs/PERFORMANCE.md`, "The timing model"):
//! * **L24** Luo et al., "Benchmarking and Dissecting the Nvidia Hopper GPU Architecture",
//!   IPDPS 2024, arXiv 2402.13499 — H800 PCIe (the H100 PCIe's silicon), 1,755 MHz.
//! * **L25** Luo et al., "Dissecting the NVIDIA Hopper Architecture through Microbenchmarking
//!   and Multiple Level Analysis", arXiv 2501.12084 v2, Table 4 — near/far L2 partition.
//! * **CC** Chips and Cheese, "Nvidia's H100: Funny L2, and Tons of Bandwidth" (2023) — H100
//!   PCIe, 1,755 MHz.
//! * **ERN** D. Ernst, gpu-benches (github.com/te42kyfo/gpu-benches) — H100 PCIe raw data.
//! * **JMS** a re-run of L24/L25's suite on an H100 SXM5 at 1,980 MHz
//!   (github.com/Johnsonms/NVIDIA-Hopper-Benchmark) — unreviewed, but the only SXM5 data.
//! * **BB24** Burtchell & Burtscher, IISWC 2024 (A100 synchronisation costs) — a proxy where no
//!   Hopper figure exists.
//! * **NV** NVIDIA: H100 datasheet and whitepaper, Hopper Tuning Guide.
//! * **J19** Jia et al., "Dissecting the NVIDIA Turing T4 GPU via Microbenchmarking" (2019) and
//!   the Volta report (2018) — instruction latencies where no Hopper figure exists.
//! * **A** assumed: no published figure found; the value is a stated estimate.

/// The model's version, reported with every simulated figure. v2: a store or atomic with
/// release semantics at GPU scope pays a fence first (its SASS is a `MEMBAR` and the access;
/// v1 charged only explicit fences), and an acquiring atomic empties the SM's L1 as an
/// acquire load does. v3: bulk copies into shared memory (`cp.async.bulk`, the TMA) and
/// `cp.async`, completing on mbarriers and wait groups; nothing else changed.
pub const MODEL_VERSION: &str = "h100-sxm-v3";

/// Parameters of the modelled GPU.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    /// SM clock, GHz. 1.755: the clock L24, L25, CC and ERN measured their cycle counts at,
    /// so their cycle figures apply unchanged (NV: H100 SXM5 boosts to 1.98; JMS held 1.98).
    pub clock_ghz: f64,
    /// Warp schedulers per SM, each issuing one instruction per cycle (NV whitepaper: four
    /// processing blocks per SM).
    pub schedulers: u32,
    /// Cycles a warp instruction occupies its pipe, by pipe: FP32 (32 lanes per processing
    /// block, NV), INT32 (16 lanes, NV), MUFU (4 per block, NV: 16 SFUs per SM), LSU issue.
    pub fma_cycles: u32,
    pub alu_cycles: u32,
    pub mufu_cycles: u32,
    /// Dependent-issue latency of FP32 and integer arithmetic (J19: 4 cycles on Volta/Turing
    /// FFMA, IADD3, LOP3; Hopper keeps the pipeline, A).
    pub alu_latency: u32,
    /// MUFU (ex2, rcp, rsqrt) latency (J19: ~18–23 on Volta/Turing).
    pub mufu_latency: u32,
    /// Extra cycles before a warp issues again after a branch (A: branch resolution).
    pub branch_cycles: u32,
    /// `shfl.sync` latency (BB24: 25 cycles on A100).
    pub shfl_latency: u32,
    /// `bar.sync` release after the last warp arrives: 21 + 2 per warp (BB24, A100).
    pub bar_base: u32,
    pub bar_per_warp: u32,
    /// Shared-memory load latency (L24, L25, JMS: 29 cycles).
    pub shared_latency: u32,
    /// L1/shared data path per SM, bytes per cycle (JMS, ERN: 125–128 B/clk/SM), and L1 tag
    /// lookups per cycle (A, from the banking in ERN's notes: 4 sets per cycle).
    pub l1_bytes_per_cycle: u32,
    pub l1_tags_per_cycle: u32,
    /// L1 hit latency, without the address arithmetic of a pointer chase: a chase step
    /// (IMAD.WIDE + the load) measures 40.7 cycles (L24; ERN 34.2, JMS 41.1), of which the
    /// model's integer latencies take 12 (calibrated with `cargo xtask calibrate`).
    pub l1_latency: u32,
    /// L1 + shared memory per SM (NV, CC: 256 KB), line and sector sizes (NV: 128 B, 32 B).
    pub l1_and_shared_bytes: u32,
    pub line_bytes: u32,
    pub sector_bytes: u32,
    /// L2: two partitions of 25 MB (NV, ERN), 16-way (A), hit latency from the SM's own
    /// ("near") and the other ("far") partition, and the L2-miss latency through each
    /// (L25 Table 4: 258.0 / 414.1 hit, 555.5 / 743.7 miss, cycles at 1,755 MHz).
    pub l2_partition_bytes: u64,
    pub l2_ways: u32,
    pub l2_near_latency: u32,
    pub l2_far_latency: u32,
    pub hbm_near_latency: u32,
    pub hbm_far_latency: u32,
    /// Bytes per cycle each SM's L2 port returns (JMS: 4,207 B/clk for 132 SMs at 1,980 MHz
    /// = 8.33 TB/s; per SM at 1,755 MHz: 36).
    pub l2_port_bytes_per_cycle: f64,
    /// HBM bandwidth the whole GPU streams, bytes per second (JMS: 3,008 GB/s measured on an
    /// H100 SXM5, 89.7 % of the 3,352 GB/s spec; ERN: 95 % for reads on the PCIe card).
    pub hbm_bytes_per_s: f64,
    /// A global atomic's round trip through L2, and how long it holds its line (A). Calibrated
    /// so that a CAS ping-pong between two SMs hands off in CC's 161 ns one way (H100 PCIe):
    /// a hand-off is about half a round trip plus the spinning side's next attempt.
    pub atomic_latency: u32,
    pub atomic_line_cycles: u32,
    /// A GPU-scope fence: the warp's stores are acknowledged, then this (BB24: A100
    /// `__threadfence()` ≈ 542 ns; no Hopper figure; 951 cycles at 1,755 MHz).
    pub fence_cycles: u32,
    /// Bytes per cycle a bulk copy (`cp.async.bulk`) brings into an SM's shared memory: the
    /// L2 port's rate (A: the TMA's reads return through the same interface as loads; no
    /// Hopper figure for the TMA alone). Bulk copies have a port of their own in the model:
    /// they do not queue behind the LSU's loads, nor those behind them, and their writes into
    /// shared memory do not take the data path's cycles (A: both are far from saturated
    /// when HBM feeds them, 13 B/cycle per SM at 3 TB/s).
    pub bulk_bytes_per_cycle: f64,
    /// How long `mbarrier.try_wait` suspends a thread before it answers "not yet" (PTX ISA:
    /// a system-dependent limit; A: 10 µs).
    pub try_wait_limit_cycles: u32,
}

/// The H100 SXM5 (132 SMs) as the model sees it.
pub const H100_SXM: Params = Params {
    clock_ghz: 1.755,
    schedulers: 4,
    fma_cycles: 1,
    alu_cycles: 2,
    mufu_cycles: 8,
    alu_latency: 4,
    mufu_latency: 20,
    branch_cycles: 2,
    shfl_latency: 25,
    bar_base: 21,
    bar_per_warp: 2,
    shared_latency: 29,
    l1_bytes_per_cycle: 128,
    l1_tags_per_cycle: 4,
    l1_latency: 29,
    l1_and_shared_bytes: 256 * 1024,
    line_bytes: 128,
    sector_bytes: 32,
    l2_partition_bytes: 25 * 1024 * 1024,
    l2_ways: 16,
    l2_near_latency: 258,
    l2_far_latency: 414,
    hbm_near_latency: 556,
    hbm_far_latency: 744,
    l2_port_bytes_per_cycle: 36.0,
    hbm_bytes_per_s: 3.008e12,
    atomic_latency: 490,
    atomic_line_cycles: 4,
    fence_cycles: 951,
    bulk_bytes_per_cycle: 36.0,
    try_wait_limit_cycles: 17_550,
};

impl Params {
    /// HBM bytes per SM cycle.
    pub fn hbm_bytes_per_cycle(&self) -> f64 {
        self.hbm_bytes_per_s / (self.clock_ghz * 1e9)
    }

    pub fn cycles_to_ns(&self, cycles: u64) -> f64 {
        cycles as f64 / self.clock_ghz
    }

    pub fn ns_to_cycles(&self, ns: u64) -> u64 {
        (ns as f64 * self.clock_ghz).round() as u64
    }
}
