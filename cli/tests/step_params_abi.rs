//! The host's `StepParams` and the kernel's parameter, as every embedded PTX module (sm_90 and
//! sm_80) declares and reads it, have one layout: the same size and alignment, every load of the parameter covers whole
//! fields, and every pointer field is read as one 64-bit value at its offset.

use std::mem::{align_of, offset_of, size_of};

use qwenmk::ptx::{MODULES, PtxModule};
use qwenmk_kernels::kernel_names::DECODE_STEP;
use qwenmk_kernels::ops::sample::SampleParams;
use qwenmk_kernels::step::ring::{MatrixPlan, RingPlan};
use qwenmk_kernels::step::{LaunchShape, ModelDims, StepParams};
use qwenmk_vgpu::ptx::{AddressBase, Operand, Statement, parse, type_bytes};

/// (offset, bytes) of every scalar field of `StepParams`, nested structs flattened.
fn fields() -> Vec<(usize, usize, &'static str)> {
    let dims = offset_of!(StepParams, dims);
    let shape = offset_of!(StepParams, shape);
    let mut v = vec![
        (dims + offset_of!(ModelDims, hidden), 4, "hidden"),
        (
            dims + offset_of!(ModelDims, intermediate),
            4,
            "intermediate",
        ),
        (dims + offset_of!(ModelDims, layers), 4, "layers"),
        (dims + offset_of!(ModelDims, q_heads), 4, "q_heads"),
        (dims + offset_of!(ModelDims, kv_heads), 4, "kv_heads"),
        (dims + offset_of!(ModelDims, head_dim), 4, "head_dim"),
        (dims + offset_of!(ModelDims, vocab), 4, "vocab"),
        (dims + offset_of!(ModelDims, max_context), 4, "max_context"),
        (dims + offset_of!(ModelDims, rms_eps), 4, "rms_eps"),
        (
            dims + offset_of!(ModelDims, attention_scale),
            4,
            "attention_scale",
        ),
        (
            shape + offset_of!(LaunchShape, lanes_per_row),
            4,
            "lanes_per_row",
        ),
        (shape + offset_of!(LaunchShape, min_chunk), 4, "min_chunk"),
        (shape + offset_of!(LaunchShape, max_chunk), 4, "max_chunk"),
        (
            shape + offset_of!(LaunchShape, ring_slot_bytes),
            4,
            "shape.ring_slot_bytes",
        ),
        (
            shape + offset_of!(LaunchShape, spin_limit_ns),
            8,
            "spin_limit_ns",
        ),
        (offset_of!(StepParams, max_splits), 4, "max_splits"),
        (offset_of!(StepParams, abi_bytes), 4, "abi_bytes"),
        (offset_of!(StepParams, kv_dtype), 4, "kv_dtype"),
        (offset_of!(StepParams, profile), 4, "profile"),
    ];
    let ring = offset_of!(StepParams, ring);
    v.extend([
        (
            ring + offset_of!(RingPlan, slot_bytes),
            4,
            "ring.slot_bytes",
        ),
        (
            ring + offset_of!(RingPlan, chunks_per_layer),
            4,
            "ring.chunks_per_layer",
        ),
        (ring + offset_of!(RingPlan, lanes), 4, "ring.lanes"),
        (ring + offset_of!(RingPlan, offset), 4, "ring.offset"),
        (
            ring + offset_of!(RingPlan, table_offset),
            4,
            "ring.table_offset",
        ),
        (ring + offset_of!(RingPlan, reserved), 4, "ring.reserved"),
    ]);
    for m in 0..4 {
        let at = ring + offset_of!(RingPlan, matrices) + m * size_of::<MatrixPlan>();
        v.extend([
            (
                at + offset_of!(MatrixPlan, units_per_block),
                4,
                "units_per_block",
            ),
            (
                at + offset_of!(MatrixPlan, units_per_chunk),
                4,
                "units_per_chunk",
            ),
            (at + offset_of!(MatrixPlan, chunks), 4, "chunks"),
            (at + offset_of!(MatrixPlan, reserved), 4, "matrix.reserved"),
        ]);
    }
    let sample = offset_of!(StepParams, sample);
    v.extend([
        (sample + offset_of!(SampleParams, mode), 4, "sample.mode"),
        (sample + offset_of!(SampleParams, top_k), 4, "sample.top_k"),
        (
            sample + offset_of!(SampleParams, temperature),
            4,
            "sample.temperature",
        ),
        (sample + offset_of!(SampleParams, top_p), 4, "sample.top_p"),
        (sample + offset_of!(SampleParams, min_p), 4, "sample.min_p"),
        (
            sample + offset_of!(SampleParams, repeat_penalty),
            4,
            "sample.repeat_penalty",
        ),
        (
            sample + offset_of!(SampleParams, penalty_window),
            4,
            "sample.penalty_window",
        ),
        (
            sample + offset_of!(SampleParams, history_len),
            4,
            "sample.history_len",
        ),
        (sample + offset_of!(SampleParams, seed), 8, "sample.seed"),
    ]);
    let pointers = [
        (offset_of!(StepParams, embedding), "embedding"),
        (offset_of!(StepParams, lm_head), "lm_head"),
        (offset_of!(StepParams, final_norm), "final_norm"),
        (offset_of!(StepParams, layers), "layers"),
        (offset_of!(StepParams, rope), "rope"),
        (offset_of!(StepParams, k_cache), "k_cache"),
        (offset_of!(StepParams, v_cache), "v_cache"),
        (offset_of!(StepParams, x), "x"),
        (offset_of!(StepParams, qkv), "qkv"),
        (offset_of!(StepParams, attn_partial), "attn_partial"),
        (offset_of!(StepParams, attn_out), "attn_out"),
        (offset_of!(StepParams, act), "act"),
        (offset_of!(StepParams, control), "control"),
        (sample + offset_of!(SampleParams, history), "sample.history"),
        (
            sample + offset_of!(SampleParams, penalty_mask),
            "sample.penalty_mask",
        ),
        (sample + offset_of!(SampleParams, lists), "sample.lists"),
        (
            sample + offset_of!(SampleParams, blocks_done),
            "sample.blocks_done",
        ),
    ];
    v.extend(pointers.iter().map(|&(o, n)| (o, 8, n)));
    v.sort();
    v
}

#[test]
fn the_kernel_parameter_has_the_host_layout() {
    for module in MODULES {
        check_layout(module);
    }
}

fn check_layout(ptx: &PtxModule) {
    let arch = ptx.arch;
    let module = parse(ptx.ptx).unwrap_or_else(|e| panic!("the {arch} PTX parses: {e}"));
    let entry = module
        .functions
        .iter()
        .find(|f| f.name == DECODE_STEP)
        .unwrap_or_else(|| panic!("the decode step is in the {arch} module"));
    assert_eq!(entry.params.len(), 1, "one by-value parameter");
    let param = &entry.params[0];
    assert_eq!(
        param.bytes as usize,
        size_of::<StepParams>(),
        "{arch}: size"
    );
    assert_eq!(
        param.align as usize,
        align_of::<StepParams>(),
        "{arch}: alignment"
    );

    let fields = fields();
    // The fields tile the struct: nothing is missing from the list above.
    let covered: usize = fields.iter().map(|f| f.1).sum();
    assert_eq!(covered, size_of::<StepParams>(), "{fields:?}");
    let starts: Vec<usize> = fields.iter().map(|f| f.0).collect();
    let ends: Vec<usize> = fields.iter().map(|f| f.0 + f.1).collect();

    let mut loads = Vec::new();
    for s in &entry.body {
        let Statement::Instruction(i) = s else {
            continue;
        };
        if !i.opcode.starts_with("ld.param") {
            continue;
        }
        let Some(Operand::Address(AddressBase::Symbol(name), offset)) = i.operands.get(1) else {
            panic!(
                "{arch} line {}: an ld.param without a symbol address",
                i.line
            )
        };
        assert_eq!(name, &param.name, "{arch} line {}", i.line);
        let ty = i.opcode.rsplit('.').next().unwrap();
        let vector = if i.opcode.contains(".v2") {
            2
        } else if i.opcode.contains(".v4") {
            4
        } else {
            1
        };
        let width = type_bytes(ty).unwrap() as usize * vector;
        let (at, end) = (*offset as usize, *offset as usize + width);
        assert!(
            starts.contains(&at) && ends.contains(&end),
            "{arch} line {}: `{}` reads bytes {at}..{end}, which cut a field of StepParams \
             ({fields:?})",
            i.line,
            i.opcode
        );
        loads.push((at, width));
    }
    for &(offset, bytes, name) in &fields {
        if bytes == 8 && name != "spin_limit_ns" {
            assert!(
                loads.contains(&(offset, 8)),
                "{arch}: the pointer `{name}` at {offset} is never read as one 64-bit value"
            );
        }
    }
}
