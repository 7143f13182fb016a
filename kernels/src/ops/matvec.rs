//! Matrix-vector products over BF16 weights, split across every warp of the grid.
//!
//! The matrix is cut into *units* of `R` consecutive rows (`R = 1` for a plain matvec, `R = 2`
//! for the interleaved gate/up matrix, whose rows `2j` and `2j + 1` are gate and up of the same
//! output `j`). `lanes_per_row` lanes share a unit, so a warp handles `32 / lanes_per_row` units
//! per pass and the grid's warps stride over all units. The lane that finishes a unit calls the
//! epilogue with its `R` dot products; the epilogue does the rest (residual add, SiLU, argmax).

use crate::device;

/// BF16 values per 128-bit load.
pub const VALUES_PER_LOAD: u32 = 8;

/// How the grid's warps cut a matrix: shared by the matvec and by the prefetch that warms L2
/// for it, so both touch exactly the same rows.
#[derive(Clone, Copy)]
pub struct RowSplit {
    pub lanes_per_row: u32,
    pub units_per_pass: u32,
    pub group: u32,
    pub sub: u32,
    pub first_unit: u32,
    pub unit_stride: u32,
}

impl RowSplit {
    /// This thread's place in the split of a matrix over the whole grid's warps.
    #[inline(always)]
    pub fn here(lanes_per_row: u32) -> Self {
        let warps_in_grid = device::grid_dim() * device::warps_per_block();
        let warp_in_grid = device::block_idx() * device::warps_per_block() + device::warp_id();
        Self::among(lanes_per_row, warp_in_grid, warps_in_grid)
    }

    /// This thread's place in the split of a matrix over its own block's warps.
    #[inline(always)]
    pub fn in_block(lanes_per_row: u32) -> Self {
        Self::among(lanes_per_row, device::warp_id(), device::warps_per_block())
    }

    #[inline(always)]
    fn among(lanes_per_row: u32, warp: u32, warps: u32) -> Self {
        // `lanes_per_row` is a power of two: shifts and masks, not divisions (a division is a
        // long instruction sequence on the GPU, and this runs at the start of every stage).
        let shift = lanes_per_row.trailing_zeros();
        let units_per_pass = device::WARP_SIZE >> shift;
        // Opaque, as the row length in `matvec_split`: computed where used, not hoisted.
        let (lane, warp) = (
            device::opaque_u32(device::lane_id()),
            device::opaque_u32(warp),
        );
        RowSplit {
            lanes_per_row,
            units_per_pass,
            group: lane >> shift,
            sub: lane & (lanes_per_row - 1),
            first_unit: warp * units_per_pass,
            unit_stride: warps * units_per_pass,
        }
    }
}

/// Where a matvec reads its weights from: 16 bytes at a time.
pub trait WeightSource {
    /// # Safety
    /// `p` must be 16-byte aligned and readable in this source's memory.
    unsafe fn load(p: *const [u32; 4]) -> [u32; 4];
}

/// Global memory, through the non-coherent path without allocating in L1.
pub struct Global;

impl WeightSource for Global {
    #[inline(always)]
    unsafe fn load(p: *const [u32; 4]) -> [u32; 4] {
        // SAFETY: forwarded contract.
        unsafe { device::load_global_nc_v4(p) }
    }
}

/// The block's shared memory (a slot of the weight ring).
pub struct Shared;

/// Four `u32`s, 16-byte aligned: one vector load.
#[repr(C, align(16))]
#[derive(Clone, Copy)]
struct Piece([u32; 4]);

impl WeightSource for Shared {
    #[inline(always)]
    unsafe fn load(p: *const [u32; 4]) -> [u32; 4] {
        // SAFETY: forwarded contract; a pointer into shared memory compiles to `ld.shared`.
        unsafe { p.cast::<Piece>().read().0 }
    }
}

/// 16-byte weight loads each lane issues before it uses the first of them: the matvec's
/// memory-level parallelism. 8 × 16 B per lane is 32 KiB in flight per SM at 256 threads,
/// about what Little's law asks of an H100 (3 TB/s × ~400 ns over 132 SMs ≈ 9 KiB from HBM,
/// more while loads queue).
pub const LOADS_IN_FLIGHT: usize = 8;

/// Lanes per unit for a matrix of `units` units whose rows are `cols` values: of the launch's
/// `base` and its doublings up to a warp, the one whose busiest lane makes the fewest loads,
/// `passes × loads per lane of a row` (a tie keeps the fewer lanes, which shuffle less),
/// among those where every lane keeps at least four loads of each row. More lanes per unit
/// finish a unit sooner but fit fewer units in a pass: O and down (1,024 rows) get a whole
/// warp per row and run on every SM instead of half of them, and gate/up (3,072 units on 1,056
/// warps) three full passes instead of a full one and a half-empty one. The matvec and the
/// prefetch for it call it alike.
#[inline(always)]
pub fn lanes_for(units: u32, cols: u32, base: u32) -> u32 {
    lanes_for_warps(
        units,
        cols,
        base,
        device::grid_dim() * device::warps_per_block(),
    )
}

/// [`lanes_for`] for a grid of `warps` warps (the host's reports call it too).
///
/// `base` must be a power of two up to 32 and `warps` at least 1. One division (by `warps`),
/// the rest shifts: the matvec and its prefetch evaluate it at every stage.
pub const fn lanes_for_warps(units: u32, cols: u32, base: u32, warps: u32) -> u32 {
    let loads_per_row = cols / VALUES_PER_LOAD;
    // ⌈units / (warps · 32 / lanes)⌉ = ⌈⌈units / warps⌉ / (32 / lanes)⌉: the division by the
    // grid's warps is shared by every candidate.
    let units_per_warp = units.div_ceil(warps);
    let mut best = base;
    let mut lanes = base;
    while lanes < device::WARP_SIZE && loads_per_row >= 4 * (lanes * 2) {
        lanes *= 2;
        if busiest_lane_loads(units_per_warp, loads_per_row, lanes)
            < busiest_lane_loads(units_per_warp, loads_per_row, best)
        {
            best = lanes;
        }
    }
    best
}

/// Loads the busiest lane makes over a matrix: passes × loads per lane of a row, for
/// `units_per_warp = ⌈units / warps⌉` and `lanes` a power of two up to 32.
const fn busiest_lane_loads(units_per_warp: u32, loads_per_row: u32, lanes: u32) -> u32 {
    let shift = lanes.trailing_zeros();
    let passes = ceil_shift(units_per_warp, device::WARP_SIZE.trailing_zeros() - shift);
    passes * ceil_shift(loads_per_row, shift)
}

/// ⌈x / 2^shift⌉.
const fn ceil_shift(x: u32, shift: u32) -> u32 {
    (x >> shift) + (x & ((1 << shift) - 1) != 0) as u32
}

/// 16-byte weight loads one lane has in flight at the start of a matvec of units of `rows`
/// rows of `cols` values at `lanes` lanes per unit: a group ([`LOADS_IN_FLIGHT`] over the
/// unit's rows), or the lane's whole share of a short row.
pub const fn loads_in_flight_per_lane(cols: u32, rows: u32, lanes: u32) -> u32 {
    let group = LOADS_IN_FLIGHT as u32 / rows;
    let mine = loads_of_lane(0, cols / VALUES_PER_LOAD, lanes);
    (if mine < group { mine } else { group }) * rows
}

/// Where value `j` of an `n`-value activation vector is kept in shared memory for a matvec:
/// of each 8 values that one weight load meets, the first 4 go to the first half of the
/// buffer and the last 4 to the second half, so that the lanes of a warp, which take
/// consecutive groups of 8, read their halves with 16-byte loads at consecutive addresses.
/// Stored plainly, the lanes' values would sit 32 bytes apart and 8 lanes would share each
/// bank: a scalar read replayed 8 times, the matvecs' costliest instruction.
///
/// `n` must be a multiple of [`VALUES_PER_LOAD`].
#[inline(always)]
pub const fn staged_index(j: usize, n: usize) -> usize {
    let half = (j / 4) % 2;
    half * (n / 2) + (j / 8) * 4 + j % 4
}

/// The 8 activations that weight load `m` of a row meets, from a vector of `n` values staged
/// by [`staged_index`]: two 16-byte shared-memory loads.
///
/// # Safety
/// `xs` must point to `n` staged values, 16-byte aligned; `m < n / 8`.
#[inline(always)]
unsafe fn staged_x8(xs: *const f32, n: u32, m: u32) -> ([f32; 4], [f32; 4]) {
    // SAFETY: both halves hold `n / 2` values, `4m + 4 ≤ n / 2`; 16-byte aligned as `xs`.
    unsafe {
        (
            device::load_f32x4(xs.add(4 * m as usize)),
            device::load_f32x4(xs.add((n / 2 + 4 * m) as usize)),
        )
    }
}

/// Stores values `8m .. 8m + 8` of an `n`-value vector into `xs`, staged as [`staged_index`]
/// lays them out (what [`staged_x8`] reads back): two 16-byte stores.
///
/// # Safety
/// `xs` must hold `n` f32s, 16-byte aligned; `m < n / 8`.
#[inline(always)]
pub unsafe fn store_staged8(xs: *mut f32, n: usize, m: usize, v: [f32; 8]) {
    // SAFETY: as in `staged_x8`: both halves hold `n / 2` values and `4m + 4 ≤ n / 2`.
    unsafe {
        device::store_f32x4(xs.add(4 * m), [v[0], v[1], v[2], v[3]]);
        device::store_f32x4(xs.add(n / 2 + 4 * m), [v[4], v[5], v[6], v[7]]);
    }
}

/// Values `8m .. 8m + 8` of an `n`-value vector staged by [`store_staged8`], back in order.
///
/// # Safety
/// As [`store_staged8`].
#[inline(always)]
pub unsafe fn load_staged8(xs: *const f32, n: usize, m: usize) -> [f32; 8] {
    // SAFETY: as in `staged_x8`.
    unstage(unsafe { staged_x8(xs, n as u32, m as u32) })
}

/// How many of a row's `loads_per_row` 16-byte loads lane `sub` of `lanes` makes.
#[inline(always)]
const fn loads_of_lane(sub: u32, loads_per_row: u32, lanes: u32) -> u32 {
    if sub < loads_per_row {
        // `lanes` is a power of two.
        ceil_shift(loads_per_row - sub, lanes.trailing_zeros())
    } else {
        0
    }
}

/// Loads `k .. k + n` of the lane's share of each of the unit's `R` rows, and their dot
/// products with the activations added to `sums`. The triple is (the lane's first load of
/// the unit's first row, loads per row, values per row); `sub` is the lane's place in the
/// unit.
///
/// # Safety
/// `k + n` must not exceed the lane's loads of a row, `n ≤ LOADS_IN_FLIGHT / R`; `weights`
/// and `xs` as in [`matvec`].
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn group_of_loads<const R: usize, S: WeightSource>(
    sums: &mut [[f32; ACCUMULATORS]; R],
    weights: *const u16,
    xs: *const f32,
    (first, loads_per_row, cols): (u32, u32, u32),
    sub: u32,
    k: u32,
    lanes: u32,
    n: u32,
) {
    let mut w = [[[0u32; 4]; LOADS_IN_FLIGHT]; R];
    // SAFETY: forwarded contract.
    unsafe {
        load_group::<R, S>(&mut w, weights, first + k * lanes, loads_per_row, lanes, n);
        dot_group::<R>(sums, &w, xs, cols, sub + k * lanes, lanes, n);
    }
}

/// Issues loads `0 .. group` of the lane's share of each of the unit's `R` rows from its
/// first row's load `at` on, into `w[r][g]`, all before any is used. Each address is one base
/// plus an offset, an immediate when `lanes` is a constant.
///
/// # Safety
/// `group` loads must remain in the lane's share of each row; `weights` as in [`matvec`].
#[inline(always)]
unsafe fn load_group<const R: usize, S: WeightSource>(
    w: &mut [[[u32; 4]; LOADS_IN_FLIGHT]; R],
    weights: *const u16,
    at: u32,
    loads_per_row: u32,
    lanes: u32,
    group: u32,
) {
    // SAFETY (of the arithmetic): the group's first load is inside the matrix.
    let base = unsafe { weights.cast::<[u32; 4]>().add(at as usize) };
    // `group · R` is LOADS_IN_FLIGHT: copies past `group` vanish at compile time.
    crate::unroll!(8; g => {
        if (g as u32) < group {
            let mut r = 0;
            while r < R {
                let offset = r * loads_per_row as usize + g * lanes as usize;
                // SAFETY: load `g` of the group is below the lane's loads, so it lies in row
                // `r` of the unit, inside the matrix; rows are 16-byte aligned.
                w[r][g] = unsafe { S::load(base.add(offset)) };
                r += 1;
            }
        }
    });
}

/// Independent sums each lane keeps per row: loads `2h` and `2h + 1` of a group add into sums
/// `2h % 4` and `2h % 4 + 1`. One sum would chain every fused multiply-add of a row behind
/// the previous one (4 cycles each): gate/up's 64 per group took over 250 cycles with the
/// loads long arrived.
pub const ACCUMULATORS: usize = 2;
// The sums are added at the end of a unit, written out for two.
const _: () = assert!(ACCUMULATORS == 2 && LOADS_IN_FLIGHT == 8);

/// Adds to `partial[r]` the dot products of the `n` loads `w[r][..n]` with their activations:
/// load `g` meets the 8 staged values of weight load `m0 + g · lanes` of the row. Loads are
/// taken in pairs whose multiply-adds alternate between two sums (and between the `R` rows),
/// so that each one's previous result is ready when it issues: in-order issue, as on the GPU,
/// does not wait on a chain.
///
/// # Safety
/// `xs` must hold `cols` staged values ([`staged_index`]) and `m0 + (n − 1) · lanes < cols / 8`.
#[inline(always)]
unsafe fn dot_group<const R: usize>(
    partial: &mut [[f32; ACCUMULATORS]; R],
    w: &[[[u32; 4]; LOADS_IN_FLIGHT]; R],
    xs: *const f32,
    cols: u32,
    m0: u32,
    lanes: u32,
    n: u32,
) {
    // The halves of the staged vector (`staged_x8`) from the group's first load on; each load's
    // activations are an offset from them, an immediate when `lanes` is a constant.
    // SAFETY (of the arithmetic): `m0 < cols / 8`, both halves hold `cols / 2` values.
    let (lo, hi) = unsafe {
        let lo = xs.add(4 * m0 as usize);
        (lo, lo.add(cols as usize / 2))
    };
    let x8 = |g: usize| {
        let at = 4 * g * lanes as usize;
        // SAFETY: `m0 + g · lanes < cols / 8` for each load that exists, 16-byte aligned.
        unsafe {
            (
                device::load_f32x4(lo.add(at)),
                device::load_f32x4(hi.add(at)),
            )
        }
    };
    crate::unroll!(4; h => {
        let (g0, g1) = (2 * h, 2 * h + 1);
        if g0 < LOADS_IN_FLIGHT / R && (g0 as u32) < n {
            let xa = x8(g0);
            // A group's odd last load is absent: its weights are zeros, and so are these.
            let xb = if (g1 as u32) < n {
                x8(g1)
            } else {
                ([0.0; 4], [0.0; 4])
            };
            let (xa, xb) = (unstage(xa), unstage(xb));
            let a = 0;
            let mut i = 0;
            while i < 4 {
                let mut r = 0;
                while r < R {
                    let (wa0, wa1) = device::bf16x2_to_f32(w[r][g0][i]);
                    let (wb0, wb1) = device::bf16x2_to_f32(w[r][g1][i]);
                    let sums = &mut partial[r];
                    sums[a] = device::fma(wa0, xa[2 * i], sums[a]);
                    sums[a + 1] = device::fma(wb0, xb[2 * i], sums[a + 1]);
                    sums[a] = device::fma(wa1, xa[2 * i + 1], sums[a]);
                    sums[a + 1] = device::fma(wb1, xb[2 * i + 1], sums[a + 1]);
                    r += 1;
                }
                i += 1;
            }
        }
    });
}

/// The 8 activations of one weight load, in order, from [`staged_x8`]'s two halves.
#[inline(always)]
fn unstage((lo, hi): ([f32; 4], [f32; 4])) -> [f32; 8] {
    [lo[0], lo[1], lo[2], lo[3], hi[0], hi[1], hi[2], hi[3]]
}

/// `epilogue(unit, [W[unit·R + r] · x for r in 0..R])` for every unit of `R` rows of the
/// `(units·R) × x.len()` matrix `weights`, each unit on exactly one lane of the grid. The
/// launch's `lanes_per_row` is widened for small matrices ([`lanes_for`]).
///
/// # Safety
/// `weights` must be 16-byte aligned and hold `units · R · x.len()` BF16 values; `x.len()` a
/// multiple of [`VALUES_PER_LOAD`] and `x` staged by [`staged_index`], 16-byte aligned; `lanes_per_row` a power of two up to 32; every lane of
/// the warp must call this function (the shuffles need them all).
#[inline(always)]
pub unsafe fn matvec<const R: usize>(
    weights: *const u16,
    x: &[f32],
    units: u32,
    lanes_per_row: u32,
    epilogue: impl FnMut(u32, [f32; R]),
) {
    let lanes = lanes_for(units, x.len() as u32, lanes_per_row);
    let split = RowSplit::here(lanes);
    // SAFETY: forwarded contract.
    unsafe { matvec_split::<R, Global, 0>(weights, x, units, split, &mut Epilogue(epilogue)) }
}

/// [`matvec`] of a chunk of `units` units in the block's shared memory (`weights`, a slot of
/// the weight ring), split over the block's own warps at exactly `lanes_per_row` lanes per
/// unit (a power of two up to 32); `epilogue` gets the unit's index in the chunk.
///
/// # Safety
/// As [`matvec`], with `weights` in shared memory, landed.
#[inline(always)]
pub unsafe fn matvec_chunk<const R: usize>(
    weights: *const u16,
    x: &[f32],
    units: u32,
    lanes_per_row: u32,
    epilogue: &mut impl FnMut(u32, [f32; R]),
) {
    let e = &mut Epilogue(epilogue);
    // The GPU's shapes (16 or 32 lanes for Qwen3-0.6B's chunks) get a copy of the loop with
    // the lane count known: every load's address is then its group's base plus an immediate,
    // not a multiply and a 64-bit add of its own (about a third of the loop's instructions in
    // the timing model). Other counts (the emulator's one lane, tiny models) take the general
    // loop, which computes the same sums in the same order.
    // SAFETY (all three): forwarded contract.
    match lanes_per_row {
        32 => unsafe {
            matvec_split::<R, Shared, 32>(weights, x, units, RowSplit::in_block(32), e)
        },
        16 => unsafe {
            matvec_split::<R, Shared, 16>(weights, x, units, RowSplit::in_block(16), e)
        },
        _ => unsafe {
            matvec_split::<R, Shared, 0>(weights, x, units, RowSplit::in_block(lanes_per_row), e)
        },
    }
}

/// What [`matvec_passes`] hands each unit's dot products to, pass by pass.
pub trait PassVisitor<const R: usize> {
    /// The `R` dot products of `unit`, on the one lane that finished it (at most once per
    /// lane per pass).
    fn unit(&mut self, unit: u32, values: [f32; R]);
    /// The end of a pass of the warp over `32 / lanes_per_row` units, on every lane of the
    /// warp, converged: a consumer that needs the whole warp (the sampler's merge) runs here.
    fn end_of_pass(&mut self) {}
}

/// A plain epilogue closure as a [`PassVisitor`].
struct Epilogue<F>(F);

impl<const R: usize, F: FnMut(u32, [f32; R])> PassVisitor<R> for Epilogue<F> {
    #[inline(always)]
    fn unit(&mut self, unit: u32, values: [f32; R]) {
        (self.0)(unit, values)
    }
}

/// [`matvec`] with a [`PassVisitor`] instead of an epilogue, and exactly `lanes_per_row`
/// lanes per unit: one object (no two closures sharing mutable state) that also sees the end
/// of every pass.
///
/// Each lane reads loads `sub, sub + lanes, …` of each of its unit's rows. It issues them in
/// groups of [`LOADS_IN_FLIGHT`] (over the unit's `R` rows together) before it uses the first,
/// so that many loads are in flight per lane; 32-bit offsets keep the address math short.
///
/// # Safety
/// As [`matvec`].
#[inline(always)]
pub unsafe fn matvec_passes<const R: usize>(
    weights: *const u16,
    x: &[f32],
    units: u32,
    lanes_per_row: u32,
    visitor: &mut impl PassVisitor<R>,
) {
    // SAFETY: forwarded contract.
    unsafe {
        matvec_split::<R, Global, 0>(weights, x, units, RowSplit::here(lanes_per_row), visitor)
    }
}

/// [`matvec_passes`] over the warps `split` names, reading weights from `S`, with `L` lanes
/// per unit (`split.lanes_per_row`) known at compile time, or 0 for a count known only at run
/// time.
///
/// # Safety
/// As [`matvec`], with `weights` in `S`'s memory; `L` is 0 or `split.lanes_per_row`.
#[inline(always)]
unsafe fn matvec_split<const R: usize, S: WeightSource, const L: u32>(
    weights: *const u16,
    x: &[f32],
    units: u32,
    split: RowSplit,
    visitor: &mut impl PassVisitor<R>,
) {
    // Opaque: what follows from the row length is computed at every call, not hoisted out of
    // the step's loop over layers and held in registers through the step (ptxas spills).
    let cols = device::opaque_u32(x.len() as u32);
    let loads_per_row = cols / VALUES_PER_LOAD;
    let lanes_per_row = if L == 0 { split.lanes_per_row } else { L };
    // This lane's loads of each row: `sub + k · lanes` for `k < mine`.
    let mine = loads_of_lane(split.sub, loads_per_row, lanes_per_row);
    let group = (LOADS_IN_FLIGHT / R) as u32;
    let xs = x.as_ptr();
    let mut base = split.first_unit;
    while base < units {
        let unit = base + split.group;
        let mut sums = [[0.0f32; ACCUMULATORS]; R];
        if unit < units {
            // The unit's first row, in 16-byte loads.
            let first = unit * R as u32 * loads_per_row + split.sub;
            // Loads `k .. k + n` of the lane's share, issued together, and their products.
            let mut loads = |k: u32, n: u32| {
                // SAFETY: `k + n ≤ mine`, `n ≤ group` at both calls below.
                unsafe {
                    group_of_loads::<R, S>(
                        &mut sums,
                        weights,
                        xs,
                        (first, loads_per_row, cols),
                        split.sub,
                        k,
                        lanes_per_row,
                        n,
                    )
                }
            };
            let mut k = 0;
            // Full groups: their size is a constant, so nothing is predicated and no weight
            // register is zeroed first.
            while k + group <= mine {
                loads(k, group);
                k += group;
            }
            // The rest of the lane's share of the row.
            if k < mine {
                loads(k, mine - k);
            }
        }
        let mut partial = [0.0f32; R];
        let mut r = 0;
        while r < R {
            let s = &sums[r];
            partial[r] = s[0] + s[1];
            r += 1;
        }
        // Every lane takes part in the shuffles, even past the last unit.
        let mut offset = lanes_per_row / 2;
        while offset > 0 {
            let mut r = 0;
            while r < R {
                partial[r] += device::shfl_xor_f32(partial[r], offset);
                r += 1;
            }
            offset /= 2;
        }
        if split.sub == 0 && unit < units {
            visitor.unit(unit, partial);
        }
        visitor.end_of_pass();
        base += split.unit_stride;
    }
}

/// Asks L2 for the rows this thread's warp will read in `matvec::<R>` over the same matrix, so
/// that a block waiting at a barrier already pulls the weights of a later stage.
///
/// The grid as a whole prefetches at most about `budget_bytes` (whole passes of the matvec's
/// row split, at least one): each warp asks for the rows it reads first, and a matrix larger
/// than L2 is not pulled in whole only to be evicted before it is read.
///
/// # Safety
/// As [`matvec`]: `weights` must point to the whole matrix.
#[inline(always)]
pub unsafe fn prefetch<const R: usize>(
    weights: *const u16,
    cols: u32,
    units: u32,
    lanes_per_row: u32,
    budget_bytes: usize,
) {
    const LINE_BYTES: usize = 128;
    let split = RowSplit::here(lanes_for(units, cols, lanes_per_row));
    let unit_bytes = R * cols as usize * 2;
    let lines_per_unit = unit_bytes.div_ceil(LINE_BYTES) as u32;
    let pass_bytes = split.unit_stride as usize * unit_bytes;
    let passes = if pass_bytes == 0 || budget_bytes <= pass_bytes {
        1
    } else {
        budget_bytes / pass_bytes
    };
    let end = (split.first_unit as usize + passes * split.unit_stride as usize).min(units as usize)
        as u32;
    let mut base = split.first_unit;
    while base < end {
        let unit = base + split.group;
        if unit < units {
            // SAFETY: inside the matrix, as in `matvec`.
            let start = unsafe { weights.cast::<u8>().add(unit as usize * unit_bytes) };
            let mut line = split.sub;
            while line < lines_per_unit {
                // SAFETY: the line starts inside the unit's rows.
                unsafe { device::prefetch_l2(start.add(line as usize * LINE_BYTES)) };
                line += split.lanes_per_row;
            }
        }
        base += split.unit_stride;
    }
}
