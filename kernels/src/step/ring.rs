//! The weight ring: every block streams its share of every layer's weights through a ring of
//! shared-memory slots, so that HBM keeps streaming while the block waits for activations.
//!
//! Weights do not depend on activations. Each block takes contiguous rows of each of a layer's
//! four matrices (QKV, O, gate/up, down), cut into *chunks* that fit a slot, and the chunks of
//! all layers form one sequence: chunk `k` goes to slot `k % SLOTS`. The block begins the
//! first [`SLOTS`] copies when the step starts; each time it is done with a chunk it begins
//! the one [`SLOTS`] places later, into the slot just freed. So while a block waits for the
//! next stage's inputs, that stage's weights (and often the next one's) are already on their
//! way into its shared memory — across stage and layer boundaries — and the matvec reads them
//! from there instead of starting its loads after the wait.
//!
//! The copies are the device layer's ([`device::copy_begin`]: one bulk copy by thread 0 on
//! sm_90, every thread's `cp.async` pieces on sm_80); the host sizes the slots and cuts the
//! matrices ([`RingPlan::new`]).

use super::flow::Waiter;
use super::sync::Stage;
use super::{LayerPointers, ModelDims, StepParams};
use crate::device;
use crate::ops::matvec::{VALUES_PER_LOAD, matvec_chunk};

/// Slots of the ring.
pub const SLOTS: u32 = device::COPY_SLOTS;

/// The matrices of a layer, in the order the ring carries them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Matrix {
    Qkv = 0,
    O = 1,
    GateUp = 2,
    Down = 3,
}

#[cfg(not(target_arch = "nvptx64"))]
const MATRICES: [Matrix; 4] = [Matrix::Qkv, Matrix::O, Matrix::GateUp, Matrix::Down];

impl Matrix {
    /// Units (rows; row pairs of gate/up), values per row and rows per unit.
    pub const fn shape(self, d: &ModelDims) -> (u32, u32, u32) {
        match self {
            Matrix::Qkv => (d.qkv_rows(), d.hidden, 1),
            Matrix::O => (d.hidden, d.q_dim(), 1),
            Matrix::GateUp => (d.intermediate, d.hidden, 2),
            Matrix::Down => (d.hidden, d.intermediate, 1),
        }
    }

    /// Bytes of one unit (BF16).
    pub const fn unit_bytes(self, d: &ModelDims) -> u32 {
        let (_, cols, rows) = self.shape(d);
        cols * rows * 2
    }

    /// The stage that multiplies by it.
    pub const fn stage(self) -> Stage {
        match self {
            Matrix::Qkv => Stage::Qkv,
            Matrix::O => Stage::OutputProjection,
            Matrix::GateUp => Stage::GateUp,
            Matrix::Down => Stage::Down,
        }
    }

    fn weights(self, w: &LayerPointers) -> *const u16 {
        // A `match` here becomes a table of field offsets in global memory, one more load (a
        // round trip to L2) before every refill; the fields' order makes it an index.
        const _: () = assert!(
            core::mem::offset_of!(LayerPointers, down)
                == core::mem::offset_of!(LayerPointers, qkv) + 24
        );
        let first = core::mem::offset_of!(LayerPointers, qkv) / 8;
        // SAFETY: `LayerPointers` is `repr(C)` with eight pointers; the four matrices are the
        // fields `first ..= first + 3`, in `Matrix` order.
        unsafe {
            (w as *const LayerPointers)
                .cast::<*const u16>()
                .add(first + self as usize)
                .read()
        }
    }
}

/// How one matrix is cut: block `b` takes units `b · units_per_block ..` (the last blocks may
/// take fewer, or none), in `chunks` chunks of `units_per_chunk` (the last may be shorter).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MatrixPlan {
    pub units_per_block: u32,
    pub units_per_chunk: u32,
    pub chunks: u32,
    pub reserved: u32,
}

/// The ring's geometry for a launch.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingPlan {
    /// Bytes of one slot (a multiple of 128).
    pub slot_bytes: u32,
    /// Chunks per layer, every matrix's together.
    pub chunks_per_layer: u32,
    /// Lanes per unit in each matrix's chunks, a byte each by [`Matrix`]
    /// ([`crate::ops::matvec::lanes_for_warps`] for a full chunk on the block's warps): chosen
    /// once here, not at every chunk (a division and a dependent chain, about 300 cycles in
    /// the timing model), and packed in one word (the step has no registers to spare for
    /// four).
    pub lanes: u32,
    /// Where the slots and the layer table start in the block's shared memory
    /// ([`crate::step::ring_offset`], [`crate::step::layer_table_offset`]): set by the
    /// host with the launch, read where needed instead of kept in registers.
    pub offset: u32,
    pub table_offset: u32,
    pub reserved: u32,
    /// By [`Matrix`].
    pub matrices: [MatrixPlan; 4],
}

impl RingPlan {
    #[cfg(not(target_arch = "nvptx64"))]
    /// The plan for `dims` on a grid of `blocks` blocks of `warps` warps with slots of
    /// `slot_bytes`, starting from the launch's `lanes` per row; `None` when a unit does not
    /// fit a slot.
    pub const fn new(
        d: &ModelDims,
        blocks: u32,
        warps: u32,
        lanes: u32,
        slot_bytes: u32,
    ) -> Option<RingPlan> {
        let mut matrices = [MatrixPlan {
            units_per_block: 0,
            units_per_chunk: 0,
            chunks: 0,
            reserved: 0,
        }; 4];
        let mut packed_lanes = 0;
        let mut chunks_per_layer = 0;
        let mut i = 0;
        while i < 4 {
            let m = MATRICES[i];
            let (units, cols, _) = m.shape(d);
            let fit = slot_bytes / m.unit_bytes(d);
            if fit == 0 || blocks == 0 || warps == 0 {
                return None;
            }
            let per_block = units.div_ceil(blocks);
            let chunks = per_block.div_ceil(fit);
            // Evened out: the same number of chunks, of nearly equal length.
            let per_chunk = per_block.div_ceil(chunks);
            matrices[i] = MatrixPlan {
                units_per_block: per_block,
                units_per_chunk: per_chunk,
                chunks,
                reserved: 0,
            };
            let chosen = crate::ops::matvec::lanes_for_warps(per_chunk, cols, lanes, warps);
            packed_lanes |= chosen << (8 * i);
            chunks_per_layer += chunks;
            i += 1;
        }
        Some(RingPlan {
            slot_bytes,
            chunks_per_layer,
            lanes: packed_lanes,
            offset: crate::step::ring_offset(d, warps) as u32,
            table_offset: crate::step::layer_table_offset(d, warps) as u32,
            reserved: 0,
            matrices,
        })
    }

    /// Lanes per unit in the chunks of `m` (the byte of [`RingPlan::lanes`]).
    pub const fn lanes_of(&self, m: Matrix) -> u32 {
        (self.lanes >> (8 * m as u32)) & 0xff
    }

    /// Shared memory the ring takes.
    pub const fn bytes(&self) -> usize {
        SLOTS as usize * self.slot_bytes as usize
    }
}

/// The plan of `m`, by constant indices: a runtime index into the parameters would make the
/// compiler copy them all to the stack (336 bytes of local memory).
#[inline(always)]
fn plan_of(p: &StepParams, m: Matrix) -> MatrixPlan {
    // By value: a reference chosen at run time is an address into the parameters, which the
    // compiler can only give by copying them to the stack too.
    let r = &p.ring.matrices;
    match m {
        Matrix::Qkv => r[0],
        Matrix::O => r[1],
        Matrix::GateUp => r[2],
        Matrix::Down => r[3],
    }
}

/// Units `[first, end)` of chunk `c` of matrix `m` for this block (empty past the matrix).
#[inline(always)]
fn chunk_units(p: &StepParams, m: Matrix, c: u32) -> (u32, u32) {
    let plan = plan_of(p, m);
    let (units, _, _) = m.shape(&p.dims);
    let block_first = device::opaque_u32(device::block_idx()) * plan.units_per_block;
    let block_end = (block_first + plan.units_per_block).min(units);
    let first = (block_first + c * plan.units_per_chunk).min(block_end);
    let end = (first + plan.units_per_chunk).min(block_end);
    (first, end)
}

/// Whether this block has units of `m` (a block without reads none of the stage's inputs).
#[inline(always)]
pub fn block_has_units(p: &StepParams, m: Matrix) -> bool {
    let (units, _, _) = m.shape(&p.dims);
    device::opaque_u32(device::block_idx()) * plan_of(p, m).units_per_block < units
}

/// The place of chunk `c` of `m` in layer `layer` in the block's sequence.
#[inline(always)]
fn sequence(p: &StepParams, layer: u32, m: Matrix, c: u32) -> u32 {
    let r = &p.ring.matrices;
    let before = match m {
        Matrix::Qkv => 0,
        Matrix::O => r[0].chunks,
        Matrix::GateUp => r[0].chunks + r[1].chunks,
        Matrix::Down => r[0].chunks + r[1].chunks + r[2].chunks,
    };
    layer * p.ring.chunks_per_layer + before + c
}

/// The ring's slots and copy barriers, and the layer table, in the block's shared memory;
/// their places come from the plan, computed where used (no register holds them through the
/// step).
#[derive(Clone, Copy)]
pub struct Ring<'a> {
    p: &'a StepParams,
}

/// Where the ring's copy barriers live in the shared header (8-byte words after the block
/// reductions' slots).
pub const BARRIERS_OFFSET: usize = 192;

impl<'a> Ring<'a> {
    /// The ring of the launch `p`: its shared memory is laid out by `shared_bytes`.
    #[inline(always)]
    pub fn of(p: &'a StepParams) -> Ring<'a> {
        Ring { p }
    }

    #[inline(always)]
    fn at(&self, offset: u32) -> *mut u8 {
        // SAFETY (of the arithmetic): an offset inside the launch's shared memory.
        unsafe { device::shared_memory().add(device::opaque_u32(offset) as usize) }
    }

    /// The block's copy of the layer table.
    #[inline(always)]
    pub fn table(&self) -> *mut LayerPointers {
        self.at(self.p.ring.table_offset).cast()
    }

    /// Layer `layer`'s weights, from the block's copy of the table.
    #[inline(always)]
    pub fn layer(&self, layer: u32) -> &'a LayerPointers {
        // SAFETY: the table holds `dims.layers` entries (copied at the step's start); callers
        // pass a layer below it.
        unsafe { &*self.table().add(layer as usize) }
    }

    #[inline(always)]
    fn slot(&self, k: u32) -> (*mut u8, *mut u64) {
        let s = k & (SLOTS - 1);
        // SAFETY (of the arithmetic): `SLOTS` slots and barriers.
        unsafe {
            (
                self.at(self.p.ring.offset)
                    .add((s * self.p.ring.slot_bytes) as usize),
                self.at(BARRIERS_OFFSET as u32)
                    .cast::<u64>()
                    .add(s as usize),
            )
        }
    }

    /// Readies the barriers and begins the first [`SLOTS`] chunks. Every thread calls it.
    ///
    /// # Safety
    /// The launch's shared memory holds the ring.
    #[inline(always)]
    pub unsafe fn start(&self) {
        if device::thread_idx() == 0 {
            let bars = self.at(BARRIERS_OFFSET as u32).cast::<u64>();
            let mut s = 0;
            while s < SLOTS {
                // SAFETY: the barriers are in this block's shared memory.
                unsafe { device::copy_barrier_init(bars.add(s as usize)) };
                s += 1;
            }
        }
        device::copy_barriers_ready();
        let mut k = 0;
        while k < SLOTS {
            // SAFETY: forwarded contract.
            unsafe { self.begin(k) };
            k += 1;
        }
    }

    /// Begins chunk `k` of the sequence into its slot (an empty copy past the last chunk).
    ///
    /// # Safety
    /// As [`Ring::start`]; the slot's previous chunk is done with.
    #[inline(always)]
    unsafe fn begin(&self, k: u32) {
        let p = self.p;
        let (dst, bar) = self.slot(k);
        let per_layer = p.ring.chunks_per_layer;
        let layer = k / per_layer;
        let (mut src, mut bytes) = (core::ptr::null::<u8>(), 0);
        if layer < p.dims.layers {
            // Which matrix and chunk: constant indices only (see `plan_of`).
            let r = &p.ring.matrices;
            let c = k - layer * per_layer;
            let (m, c) = if c < r[0].chunks {
                (Matrix::Qkv, c)
            } else if c < r[0].chunks + r[1].chunks {
                (Matrix::O, c - r[0].chunks)
            } else if c < r[0].chunks + r[1].chunks + r[2].chunks {
                (Matrix::GateUp, c - r[0].chunks - r[1].chunks)
            } else {
                (Matrix::Down, c - r[0].chunks - r[1].chunks - r[2].chunks)
            };
            let (first, end) = chunk_units(p, m, c);
            let unit_bytes = m.unit_bytes(&p.dims);
            let w = self.layer(layer);
            // SAFETY: inside the matrix (units below its count).
            src = unsafe { m.weights(w).cast::<u8>().add((first * unit_bytes) as usize) };
            bytes = (end - first) * unit_bytes;
        }
        // SAFETY: the slot holds `slot_bytes ≥ bytes`; the source is packed weights, 16-byte
        // aligned rows.
        unsafe { device::copy_begin(dst, src, bytes, bar) };
    }

    /// `epilogue(unit, values, waiter)` for this block's units of `m` in `layer`, each chunk
    /// read from its slot as soon as it has landed, then the slot refilled. Every thread
    /// calls it.
    ///
    /// # Safety
    /// As [`Ring::start`]; `x` staged for the matvec ([`crate::ops::matvec::staged_index`]),
    /// of the matrix's row length; the chunks before this one consumed in order.
    #[inline(always)]
    pub unsafe fn matvec<const R: usize>(
        &self,
        layer: u32,
        m: Matrix,
        x: &[f32],
        waiter: &mut Waiter,
        mut epilogue: impl FnMut(u32, [f32; R], &mut Waiter),
    ) {
        let p = self.p;
        let chunks = plan_of(p, m).chunks;
        let lanes = device::opaque_u32(p.ring.lanes_of(m));
        let mut c = 0;
        while c < chunks {
            let k = sequence(p, layer, m, c);
            let (slot, bar) = self.slot(k);
            let parity = (k / SLOTS) & 1;
            // SAFETY: the slot's barrier is readied.
            while !unsafe { device::copy_landed(bar, parity) } {
                if !waiter.pause_for_copy(layer, m.stage()) {
                    break;
                }
            }
            waiter.done();
            // sm_80 lands each thread's own pieces: the others' are seen after a barrier.
            device::sync_threads();
            let (first, end) = chunk_units(p, m, c);
            if first < end {
                debug_assert!((x.len() as u32).is_multiple_of(VALUES_PER_LOAD));
                // SAFETY: the slot holds units `first..end` of the matrix, landed.
                unsafe {
                    matvec_chunk::<R>(
                        slot.cast::<u16>(),
                        x,
                        end - first,
                        lanes,
                        &mut |unit, values| epilogue(first + unit, values, waiter),
                    )
                };
            }
            // Every warp is done with the slot before it is filled again.
            device::sync_threads();
            // SAFETY: the slot's chunk is consumed.
            unsafe { self.begin(k + SLOTS) };
            c += 1;
        }
    }
}
