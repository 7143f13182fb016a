//! Small PTX kernels written to check the interpreter's rules one at a time: divergence and
//! reconvergence, warp-synchronous instructions (including the same `bar.warp.sync` reached
//! from both sides of a branch), faults, deadlock and livelock reports, residency, and the
//! weak-visibility model catching a missing fence, a relaxed arrive and a missing acquire.

use qwenmk_vgpu::exec::weak::WeakOptions;
use qwenmk_vgpu::{Device, Failure, FailureKind, LaunchConfig, Outcome, Program};

fn module(params: &str, body: &str) -> String {
    format!(
        ".version 8.0\n.target sm_90\n.address_size 64\n\n\
         .extern .shared .align 16 .b8 smem[];\n\n\
         .visible .entry k({params})\n{{\n{body}\n}}\n"
    )
}

struct Run {
    device: Device,
    program: Program,
}

impl Run {
    fn new(params: &str, body: &str) -> Run {
        let mut device = Device::new(1 << 26, (9, 0));
        let program = device
            .load(&module(params, body))
            .unwrap_or_else(|e| panic!("{e}"));
        Run { device, program }
    }

    fn alloc(&mut self, bytes: u64) -> u64 {
        self.device.mem.alloc(bytes).unwrap()
    }

    fn launch(
        &mut self,
        grid: u32,
        block: u32,
        resident: u32,
        params: &[u64],
        weak: Option<WeakOptions>,
    ) -> Result<Outcome, Failure> {
        let cfg = LaunchConfig {
            grid: [grid, 1, 1],
            block: [block, 1, 1],
            dynamic_shared_bytes: 256,
            resident_blocks: resident,
            sms: resident,
        };
        let bytes: Vec<u8> = params.iter().flat_map(|p| p.to_le_bytes()).collect();
        let kernel = self.program.kernel("k").unwrap().clone();
        let program = self.program.clone();
        self.device.launch(&program, &kernel, &cfg, &bytes, weak)
    }

    fn words(&mut self, addr: u64, n: usize) -> Vec<u32> {
        let mut bytes = vec![0u8; n * 4];
        self.device.mem.read(addr, &mut bytes).unwrap();
        bytes
            .chunks(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }
}

/// The PTX line of the first line of `body` that contains `needle` (the module header and
/// the entry's opening take 8 lines).
fn line_of(body: &str, needle: &str) -> u32 {
    9 + body.lines().position(|l| l.contains(needle)).unwrap() as u32
}

const STORE_TID: &str = "
    mul.wide.u32 %rd2, %r1, 4;
    add.s64 %rd3, %rd1, %rd2;
    st.global.u32 [%rd3], %r5;
    ret;";

#[test]
fn divergent_paths_reconverge_before_a_shuffle() {
    let body = format!(
        "
    .reg .pred %p<3>;
    .reg .b32 %r<10>;
    .reg .b64 %rd<5>;
    ld.param.u64 %rd1, [out];
    mov.u32 %r1, %tid.x;
    and.b32 %r2, %r1, 1;
    setp.eq.u32 %p1, %r2, 1;
    @%p1 bra ODD;
    add.s32 %r3, %r1, 100;
    bra.uni JOIN;
ODD:
    mul.lo.s32 %r3, %r1, 3;
JOIN:
    shfl.sync.bfly.b32 %r4, %r3, 1, 0x1f, 0xffffffff;
    add.s32 %r5, %r3, %r4;{STORE_TID}"
    );
    let mut run = Run::new(".param .u64 out", &body);
    let out = run.alloc(4 * 64);
    run.launch(1, 64, 1, &[out], None).unwrap();
    let v = |t: u32| if t % 2 == 1 { 3 * t } else { t + 100 };
    let want: Vec<u32> = (0..64).map(|t| v(t) + v(t ^ 1)).collect();
    assert_eq!(run.words(out, 64), want);
}

#[test]
fn a_shuffle_meets_its_twin_on_the_other_side_of_a_branch() {
    // Lanes 0-15 and 16-31 exchange values through two different shfl.sync instructions, and
    // meet again at two different bar.warp.sync: legal on sm_70+, and what LLVM emits when it
    // duplicates a warp barrier into both sides of a branch.
    let body = format!(
        "
    .reg .pred %p<3>;
    .reg .b32 %r<10>;
    .reg .b64 %rd<5>;
    ld.param.u64 %rd1, [out];
    mov.u32 %r1, %tid.x;
    setp.lt.u32 %p1, %r1, 16;
    @%p1 bra LOW;
    mul.lo.s32 %r3, %r1, 10;
    shfl.sync.bfly.b32 %r4, %r3, 16, 0x1f, 0xffffffff;
    bar.warp.sync 0xffffffff;
    bra.uni JOIN;
LOW:
    add.s32 %r6, %r1, 1000;
    shfl.sync.bfly.b32 %r4, %r6, 16, 0x1f, 0xffffffff;
    bar.warp.sync 0xffffffff;
JOIN:
    mov.b32 %r5, %r4;{STORE_TID}"
    );
    let mut run = Run::new(".param .u64 out", &body);
    let out = run.alloc(4 * 32);
    run.launch(1, 32, 1, &[out], None).unwrap();
    let sent = |t: u32| if t < 16 { t + 1000 } else { 10 * t };
    let want: Vec<u32> = (0..32).map(|t| sent(t ^ 16)).collect();
    assert_eq!(run.words(out, 32), want);
}

fn fails(run: &mut Run, params: &[u64], block: u32) -> Failure {
    run.launch(1, block, 1, params, None)
        .expect_err("the launch must fail")
}

#[test]
fn a_divergent_block_barrier_is_reported_with_its_line() {
    let body = "
    .reg .pred %p<3>;
    .reg .b32 %r<4>;
    mov.u32 %r1, %tid.x;
    and.b32 %r2, %r1, 1;
    setp.eq.u32 %p1, %r2, 1;
    @%p1 bra SKIP;
    bar.sync 0;
SKIP:
    ret;";
    let mut run = Run::new("", body);
    let f = fails(&mut run, &[], 32);
    assert_eq!(f.kind, FailureKind::LaunchFailed);
    assert!(
        f.report.contains("divergent bar.sync")
            && f.report
                .contains(&format!("PTX line {}", line_of(body, "bar.sync 0"))),
        "{}",
        f.report
    );
}

#[test]
fn shuffle_masks_that_name_absent_lanes_are_reported() {
    let exited = "
    .reg .pred %p<3>;
    .reg .b32 %r<6>;
    mov.u32 %r1, %tid.x;
    setp.ge.u32 %p1, %r1, 16;
    @%p1 bra DONE;
    shfl.sync.bfly.b32 %r4, %r1, 1, 0x1f, 0xffffffff;
DONE:
    ret;";
    let mut run = Run::new("", exited);
    let f = fails(&mut run, &[], 32);
    assert!(
        f.report.contains("have exited") || f.report.contains("another point"),
        "{}",
        f.report
    );
    // A block of 48 threads: its second warp has 16 lanes, and a full mask names 16 more.
    let partial = "
    .reg .b32 %r<6>;
    mov.u32 %r1, %tid.x;
    shfl.sync.bfly.b32 %r4, %r1, 1, 0x1f, 0xffffffff;
    ret;";
    let mut run = Run::new("", partial);
    let f = fails(&mut run, &[], 48);
    assert!(f.report.contains("do not exist"), "{}", f.report);
}

#[test]
fn memory_faults_end_the_launch_like_the_hardware() {
    let load = |instr: &str| {
        format!(
            "
    .reg .b32 %r<6>;
    .reg .b64 %rd<5>;
    ld.param.u64 %rd1, [p];
    {instr}
    ret;"
        )
    };
    // Past the end of the allocation.
    let mut run = Run::new(".param .u64 p", &load("ld.global.u32 %r1, [%rd1+4096];"));
    let buf = run.alloc(64);
    let f = fails(&mut run, &[buf], 32);
    assert_eq!(f.kind, FailureKind::IllegalAddress);
    assert!(
        f.report.contains("outside every live allocation"),
        "{}",
        f.report
    );
    // A 16-byte vector at a 4-byte offset.
    let mut run = Run::new(
        ".param .u64 p",
        &load("ld.global.v4.u32 {%r1, %r2, %r3, %r4}, [%rd1+4];"),
    );
    let buf = run.alloc(64);
    let f = fails(&mut run, &[buf], 32);
    assert_eq!(f.kind, FailureKind::Misaligned);
    // Freed memory.
    let mut run = Run::new(".param .u64 p", &load("ld.global.u32 %r1, [%rd1];"));
    let buf = run.alloc(64);
    run.device.mem.free(buf).unwrap();
    let f = fails(&mut run, &[buf], 32);
    assert!(f.report.contains("was freed"), "{}", f.report);
    // A store to memory the same launch reads through the read-only path.
    let mut run = Run::new(
        ".param .u64 p",
        &load("ld.global.nc.u32 %r1, [%rd1];\n    st.global.u32 [%rd1], %r1;"),
    );
    let buf = run.alloc(64);
    let f = fails(&mut run, &[buf], 32);
    assert!(f.report.contains(".nc"), "{}", f.report);
    // Shared memory past the launch's window (256 bytes).
    let mut run = Run::new(
        ".param .u64 p",
        &load("mov.b32 %r1, 0;\n    st.shared.u32 [smem+256], %r1;"),
    );
    let buf = run.alloc(64);
    let f = fails(&mut run, &[buf], 32);
    assert!(f.report.contains("shared memory"), "{}", f.report);
}

#[test]
fn a_grid_that_cannot_progress_is_a_deadlock_report_naming_each_wait() {
    let body = "
    .reg .pred %p<3>;
    .reg .b32 %r<4>;
    mov.u32 %r1, %tid.x;
    setp.ge.u32 %p1, %r1, 32;
    @%p1 bra SECOND;
    bar.sync 0;
    ret;
SECOND:
    bar.sync 1;
    ret;";
    let mut run = Run::new("", body);
    let f = fails(&mut run, &[], 64);
    assert_eq!(f.kind, FailureKind::Deadlock);
    for needle in ["bar.sync 0", "bar.sync 1"] {
        assert!(
            f.report
                .contains(&format!("PTX line {}", line_of(body, needle))),
            "{}",
            f.report
        );
    }
}

/// Block 0 waits for a flag nobody sets, bounded by %globaltimer: the interpreter fast-forwards
/// the clock while it only polls, so a virtual second passes in no time.
const TIMED_SPIN: &str = "
    .reg .pred %p<4>;
    .reg .b32 %r<6>;
    .reg .b64 %rd<8>;
    ld.param.u64 %rd1, [flag];
    mov.u64 %rd4, %globaltimer;
SPIN:
    ld.acquire.gpu.global.u32 %r1, [%rd1];
    setp.ne.u32 %p1, %r1, 0;
    @%p1 bra DONE;
    mov.u64 %rd5, %globaltimer;
    sub.s64 %rd6, %rd5, %rd4;
    setp.gt.u64 %p2, %rd6, 1000000000;
    @%p2 bra TIMEOUT;
    nanosleep.u32 100;
    bra.uni SPIN;
TIMEOUT:
    mov.b32 %r2, 7;
    st.global.u32 [%rd1+4], %r2;
DONE:
    ret;";

#[test]
fn a_spin_bounded_by_the_clock_reaches_its_timeout() {
    let mut run = Run::new(".param .u64 flag", TIMED_SPIN);
    let flag = run.alloc(8);
    let started = std::time::Instant::now();
    let outcome = run.launch(1, 32, 1, &[flag], None).unwrap();
    assert_eq!(run.words(flag, 2), [0, 7]);
    assert!(outcome.end_ns >= 1_000_000_000, "{}", outcome.end_ns);
    assert!(outcome.stats.fast_forward_ns > 0);
    assert!(started.elapsed().as_secs() < 30);
}

#[test]
fn an_unbounded_spin_is_reported_as_no_progress() {
    let body = "
    .reg .pred %p<4>;
    .reg .b32 %r<6>;
    .reg .b64 %rd<4>;
    ld.param.u64 %rd1, [flag];
SPIN:
    ld.acquire.gpu.global.u32 %r1, [%rd1];
    setp.eq.u32 %p1, %r1, 0;
    nanosleep.u32 100;
    @%p1 bra SPIN;
    ret;";
    let mut run = Run::new(".param .u64 flag", body);
    let flag = run.alloc(4);
    let f = fails(&mut run, &[flag], 32);
    assert_eq!(f.kind, FailureKind::Deadlock);
    assert!(
        f.report.contains("no progress") && f.report.contains("sleeps in a polling loop"),
        "{}",
        f.report
    );
}

#[test]
fn later_blocks_start_when_earlier_ones_exit() {
    let body = "
    .reg .b32 %r<6>;
    .reg .b64 %rd<4>;
    ld.param.u64 %rd1, [count];
    atom.global.add.u32 %r1, [%rd1], 1;
    ret;";
    let mut run = Run::new(".param .u64 count", body);
    let count = run.alloc(4);
    run.launch(6, 32, 2, &[count], None).unwrap();
    assert_eq!(run.words(count, 1), [6 * 32]);
}

/// Block 0 publishes 42 at `data` and raises `flag`; block 1 waits for the flag and copies
/// `data` to `out`. `arrive` is how block 0 raises the flag; `poll` how block 1 reads it.
/// Block 1 first reads `data` (as a stale value to find later) and signals `ready`, and block
/// 0 waits for that before it writes.
fn handoff(arrive: &str, poll: &str) -> String {
    format!(
        "
    .reg .pred %p<4>;
    .reg .b32 %r<8>;
    .reg .b64 %rd<8>;
    ld.param.u64 %rd1, [buf];
    mov.u32 %r1, %ctaid.x;
    mov.u32 %r2, %tid.x;
    setp.ne.u32 %p1, %r2, 0;
    @%p1 bra END;
    setp.ne.u32 %p2, %r1, 0;
    @%p2 bra CONSUMER;
WAIT_READY:
    ld.acquire.gpu.global.u32 %r3, [%rd1+8];
    setp.eq.u32 %p3, %r3, 0;
    @%p3 bra WAIT_READY;
    mov.b32 %r4, 42;
    st.global.u32 [%rd1], %r4;
    {arrive}
    bra.uni END;
CONSUMER:
    ld.global.u32 %r5, [%rd1];
    mov.b32 %r6, 1;
    st.relaxed.gpu.global.u32 [%rd1+8], %r6;
WAIT_FLAG:
    {poll}
    setp.eq.u32 %p3, %r3, 0;
    @%p3 bra WAIT_FLAG;
    ld.global.u32 %r5, [%rd1];
    st.global.u32 [%rd1+12], %r5;
END:
    ret;"
    )
}

const RELEASE: &str = "fence.acq_rel.gpu;\n    atom.release.gpu.global.add.u32 %r7, [%rd1+4], 1;";
const RELAXED: &str = "atom.relaxed.gpu.global.add.u32 %r7, [%rd1+4], 1;";
const ACQUIRE: &str = "ld.acquire.gpu.global.u32 %r3, [%rd1+4];";
const RELAXED_POLL: &str = "ld.relaxed.gpu.global.u32 %r3, [%rd1+4];";

fn run_handoff(
    arrive: &str,
    poll: &str,
    weak: Option<WeakOptions>,
) -> (Result<Outcome, Failure>, u32) {
    let mut run = Run::new(".param .u64 buf", &handoff(arrive, poll));
    let buf = run.alloc(16);
    let result = run.launch(2, 32, 2, &[buf], weak);
    let out = run.words(buf, 4)[3];
    (result, out)
}

fn weak(seed: u64) -> Option<WeakOptions> {
    Some(WeakOptions {
        seed,
        early_publish_one_in: 0,
    })
}

#[test]
fn a_correct_handoff_passes_in_both_memory_models() {
    let (r, out) = run_handoff(RELEASE, ACQUIRE, None);
    r.unwrap();
    assert_eq!(out, 42);
    for seed in 1..6 {
        let (r, out) = run_handoff(
            RELEASE,
            ACQUIRE,
            Some(WeakOptions {
                seed,
                ..Default::default()
            }),
        );
        r.unwrap();
        assert_eq!(out, 42, "seed {seed}");
    }
}

#[test]
fn weak_visibility_catches_a_relaxed_arrive_without_a_fence() {
    // Sequentially consistent memory hides the bug: the value is simply there.
    let (r, out) = run_handoff(RELAXED, ACQUIRE, None);
    r.unwrap();
    assert_eq!(out, 42);
    // Under weak visibility the store is still in block 0's buffer when block 1 reads it.
    let (r, _) = run_handoff(RELAXED, ACQUIRE, weak(1));
    let f = r.expect_err("a data race report");
    assert!(
        f.report.contains("data race") && f.report.contains("has not published"),
        "{}",
        f.report
    );
}

#[test]
fn weak_visibility_catches_a_missing_acquire() {
    let (r, out) = run_handoff(RELEASE, RELAXED_POLL, None);
    r.unwrap();
    assert_eq!(out, 42);
    // Block 1 polls without acquiring, so its plain load may still return the copy of `data`
    // it read before the producer wrote: the old value.
    let (r, out) = run_handoff(RELEASE, RELAXED_POLL, weak(1));
    let outcome = r.unwrap();
    assert_eq!(out, 0, "the stale value");
    assert!(outcome.stats.stale_loads > 0);
}

/// Simulated cycles of one warp doing `body` once (one block of 32 threads, timing model on).
fn timed_cycles(body: &str) -> u64 {
    let mut run = Run::new(
        ".param .u64 buf",
        &format!(
            "    .reg .u32 %r<8>;\n    .reg .u64 %rd<2>;\n    ld.param.u64 %rd1, [buf];\n    {body}\n    ret;"
        ),
    );
    run.device.enable_timing(qwenmk_vgpu::timing::H100_SXM, 1);
    let buf = run.alloc(16);
    let outcome = run.launch(1, 32, 1, &[buf], None).unwrap();
    outcome.timing.expect("the timing model ran").cycles
}

/// On the GPU `atom.release` is a `MEMBAR` and the atomic: the model charges it the fence's
/// cost, so a fence in front of it is a second fence (as in the SASS), and an acquiring or
/// relaxed atomic pays none.
#[test]
fn a_release_atomic_costs_a_fence_in_the_timing_model() {
    let fence = qwenmk_vgpu::timing::H100_SXM.fence_cycles as u64;
    let relaxed = timed_cycles(RELAXED);
    let acquire = timed_cycles("atom.acquire.gpu.global.add.u32 %r7, [%rd1+4], 1;");
    let release = timed_cycles("atom.release.gpu.global.add.u32 %r7, [%rd1+4], 1;");
    let acq_rel = timed_cycles("atom.acq_rel.gpu.global.add.u32 %r7, [%rd1+4], 1;");
    let fenced_release = timed_cycles(RELEASE);
    assert_eq!(acquire, relaxed);
    // Within a few cycles of issue that overlap.
    let at_least_a_fence = |more: u64, less: u64| more + 8 >= less + fence;
    assert!(at_least_a_fence(release, relaxed), "{release} vs {relaxed}");
    assert_eq!(acq_rel, release);
    assert!(
        at_least_a_fence(fenced_release, release),
        "{fenced_release} vs {release}"
    );
}

/// A block copies 128 bytes of `src` into shared memory: thread 0 with one bulk copy that
/// completes on an mbarrier (sm_90), every thread waits on the barrier, then each thread
/// stores its word to `out`. `before_wait` is placed between the copy and the wait.
fn bulk_copy_kernel(before_wait: &str, wait: bool) -> String {
    let wait = if wait {
        "
WAIT:
    mbarrier.try_wait.parity.shared::cta.b64 %p2, [%r10], 0;
    @!%p2 bra WAIT;"
    } else {
        ""
    };
    format!(
        "
    .reg .pred %p<4>;
    .reg .b32 %r<16>;
    .reg .b64 %rd<8>;
    ld.param.u64 %rd1, [src];
    ld.param.u64 %rd2, [out];
    mov.u32 %r1, %tid.x;
    mov.u32 %r10, smem;
    add.u32 %r11, %r10, 16;
    setp.eq.u32 %p1, %r1, 0;
    @!%p1 bra ISSUED;
    mbarrier.init.shared::cta.b64 [%r10], 1;
    fence.mbarrier_init.release.cluster;
    mbarrier.arrive.expect_tx.shared::cta.b64 _, [%r10], 128;
    cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%r11], [%rd1], 128, [%r10];
ISSUED:
    bar.sync 0;
    {before_wait}{wait}
    mul.wide.u32 %rd3, %r1, 4;
    cvt.u64.u32 %rd4, %r11;
    add.s64 %rd5, %rd4, %rd3;
    cvt.u32.u64 %r12, %rd5;
    ld.shared.u32 %r5, [%r12];
    add.s64 %rd6, %rd2, %rd3;
    st.global.u32 [%rd6], %r5;
    ret;"
    )
}

fn fill(run: &mut Run, addr: u64, words: &[u32]) {
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    run.device.mem.write(addr, &bytes).unwrap();
}

#[test]
fn a_bulk_copy_lands_once_its_mbarrier_phase_completes() {
    for timed in [false, true] {
        let mut run = Run::new(
            ".param .u64 src, .param .u64 out",
            &bulk_copy_kernel("", true),
        );
        if timed {
            run.device.enable_timing(qwenmk_vgpu::timing::H100_SXM, 1);
        }
        let (src, out) = (run.alloc(128), run.alloc(128));
        let words: Vec<u32> = (0..32).map(|i| 1000 + i).collect();
        fill(&mut run, src, &words);
        run.launch(1, 32, 1, &[src, out], None).unwrap();
        assert_eq!(run.words(out, 32), words, "timed: {timed}");
    }
}

#[test]
fn shared_memory_read_before_its_copy_landed_is_a_fault() {
    let mut run = Run::new(
        ".param .u64 src, .param .u64 out",
        &bulk_copy_kernel("", false),
    );
    let (src, out) = (run.alloc(128), run.alloc(128));
    let f = fails(&mut run, &[src, out], 32);
    assert_eq!(f.kind, FailureKind::LaunchFailed);
    assert!(f.report.contains("before its copy landed"), "{}", f.report);
}

#[test]
fn a_block_that_exits_with_a_copy_in_flight_fails_the_launch() {
    let body = "
    .reg .pred %p<2>;
    .reg .b32 %r<4>;
    .reg .b64 %rd<2>;
    ld.param.u64 %rd1, [src];
    mov.u32 %r1, smem;
    add.u32 %r2, %r1, 16;
    mbarrier.init.shared::cta.b64 [%r1], 1;
    mbarrier.arrive.expect_tx.shared::cta.b64 _, [%r1], 64;
    cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%r2], [%rd1], 64, [%r1];
    ret;";
    let mut run = Run::new(".param .u64 src", body);
    let src = run.alloc(64);
    let f = fails(&mut run, &[src], 1);
    assert!(f.report.contains("still in flight"), "{}", f.report);
}

#[test]
fn cp_async_groups_land_at_wait_group() {
    // Each thread copies its own 16 bytes in two groups (8 + 8) and waits for both.
    let body = "
    .reg .b32 %r<8>;
    .reg .b64 %rd<8>;
    ld.param.u64 %rd1, [src];
    ld.param.u64 %rd2, [out];
    mov.u32 %r1, %tid.x;
    mul.wide.u32 %rd3, %r1, 16;
    add.s64 %rd4, %rd1, %rd3;
    mov.u32 %r2, smem;
    mul.lo.u32 %r3, %r1, 16;
    add.u32 %r4, %r2, %r3;
    cp.async.cg.shared.global [%r4], [%rd4], 8;
    cp.async.commit_group;
    cp.async.cg.shared.global [%r4+8], [%rd4+8], 8;
    cp.async.commit_group;
    cp.async.wait_group 0;
    ld.shared.v4.u32 {%r5, %r6, %r7, %r3}, [%r4];
    add.s64 %rd5, %rd2, %rd3;
    st.global.v4.u32 [%rd5], {%r5, %r6, %r7, %r3};
    ret;";
    let mut run = Run::new(".param .u64 src, .param .u64 out", body);
    let (src, out) = (run.alloc(256), run.alloc(256));
    let words: Vec<u32> = (0..64).map(|i| 7 * i + 3).collect();
    fill(&mut run, src, &words);
    run.launch(1, 16, 1, &[src, out], None).unwrap();
    assert_eq!(run.words(out, 64), words);
}
