//! The exported `cu*` functions.
//!
//! cudarc resolves each driver function the first time it is called and panics when the
//! library lacks it, so every function its safe layer can reach is exported here; the ones the
//! virtual device does not model answer `CUDA_ERROR_NOT_SUPPORTED`, which cudarc turns into an
//! ordinary error. Every function catches panics of the interpreter (a bug there) and answers
//! `CUDA_ERROR_UNKNOWN` instead of unwinding into C.

#![allow(non_snake_case, clippy::missing_safety_doc, clippy::too_many_arguments)]

use std::ffi::{CStr, c_char, c_int, c_uint, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Mutex, OnceLock};

use crate::config::Fault;
use crate::state::{CONTEXT_HANDLE, Driver, Event, code, describe};

type CUresult = u32;
type CUdeviceptr = u64;
type Handle = *mut c_void;

const UNKNOWN: u32 = 999;

fn driver() -> &'static Mutex<Driver> {
    static DRIVER: OnceLock<Mutex<Driver>> = OnceLock::new();
    DRIVER.get_or_init(|| Mutex::new(Driver::new()))
}

/// Runs `f` on the driver state; `sticky` calls fail with the context's sticky error.
fn call(name: &str, sticky: bool, f: impl FnOnce(&mut Driver) -> u32) -> CUresult {
    let result = catch_unwind(AssertUnwindSafe(|| {
        let mut d = driver().lock().unwrap_or_else(|e| e.into_inner());
        if d.config.trace {
            eprintln!("qwenmk virtual GPU: {name}");
        }
        if sticky && let Some(e) = d.sticky {
            return e;
        }
        f(&mut d)
    }));
    result.unwrap_or_else(|_| {
        eprintln!("qwenmk virtual GPU: {name} panicked inside the interpreter (a vgpu bug)");
        UNKNOWN
    })
}

fn out<T>(p: *mut T, v: T) -> u32 {
    if p.is_null() {
        return code::INVALID_VALUE;
    }
    // SAFETY: the caller passes a valid pointer for the result, as the CUDA API requires.
    unsafe { p.write(v) };
    code::SUCCESS
}

fn handle_value(h: Handle) -> usize {
    h as usize
}

// ---- Initialisation, device and context -------------------------------------------------

#[unsafe(no_mangle)]
pub extern "C" fn cuInit(_flags: c_uint) -> CUresult {
    call("cuInit", false, |d| {
        d.initialised = true;
        code::SUCCESS
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDriverGetVersion(version: *mut c_int) -> CUresult {
    // The H100 machines' driver 580 implements CUDA 13.0.
    call("cuDriverGetVersion", false, |_| out(version, 13000))
}

fn need_init(d: &Driver) -> Result<(), u32> {
    if d.initialised {
        Ok(())
    } else {
        Err(code::NOT_INITIALIZED)
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGetCount(count: *mut c_int) -> CUresult {
    call("cuDeviceGetCount", false, |d| match need_init(d) {
        Ok(()) => out(count, 1),
        Err(e) => e,
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGet(device: *mut c_int, ordinal: c_int) -> CUresult {
    call("cuDeviceGet", false, |d| {
        if let Err(e) = need_init(d) {
            return e;
        }
        if ordinal != 0 {
            return code::INVALID_DEVICE;
        }
        out(device, 0)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGetName(name: *mut c_char, len: c_int, dev: c_int) -> CUresult {
    call("cuDeviceGetName", false, |d| {
        if dev != 0 {
            return code::INVALID_DEVICE;
        }
        if name.is_null() || len <= 0 {
            return code::INVALID_VALUE;
        }
        let device_name = d.name();
        let bytes = device_name.as_bytes();
        let n = bytes.len().min(len as usize - 1);
        // SAFETY: `name` holds `len` bytes (API contract).
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), name.cast::<u8>(), n);
            name.add(n).write(0);
        }
        code::SUCCESS
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGetAttribute(
    value: *mut c_int,
    attribute: c_int,
    dev: c_int,
) -> CUresult {
    call("cuDeviceGetAttribute", false, |d| {
        if dev != 0 {
            return code::INVALID_DEVICE;
        }
        out(value, d.attribute(attribute))
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceTotalMem_v2(bytes: *mut usize, dev: c_int) -> CUresult {
    call("cuDeviceTotalMem_v2", false, |d| {
        if dev != 0 {
            return code::INVALID_DEVICE;
        }
        out(bytes, d.device.mem.capacity as usize)
    })
}

fn uuid(p: *mut [u8; 16]) -> u32 {
    // A fixed, recognisable UUID: "qwenmk-vgpu" padded.
    out(p, *b"qwenmk-vgpu\0\0\0\0\x01")
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGetUuid(id: *mut [u8; 16], _dev: c_int) -> CUresult {
    call("cuDeviceGetUuid", false, |_| uuid(id))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGetUuid_v2(id: *mut [u8; 16], _dev: c_int) -> CUresult {
    call("cuDeviceGetUuid_v2", false, |_| uuid(id))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDevicePrimaryCtxRetain(ctx: *mut Handle, dev: c_int) -> CUresult {
    call("cuDevicePrimaryCtxRetain", false, |d| {
        if let Err(e) = need_init(d) {
            return e;
        }
        if dev != 0 {
            return code::INVALID_DEVICE;
        }
        d.context_refs += 1;
        out(ctx, CONTEXT_HANDLE as Handle)
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuDevicePrimaryCtxRelease_v2(_dev: c_int) -> CUresult {
    call("cuDevicePrimaryCtxRelease_v2", false, |d| {
        d.context_refs = d.context_refs.saturating_sub(1);
        code::SUCCESS
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuCtxSetCurrent(ctx: Handle) -> CUresult {
    call("cuCtxSetCurrent", false, |d| {
        if !ctx.is_null() && handle_value(ctx) != CONTEXT_HANDLE {
            return code::INVALID_CONTEXT;
        }
        d.current_context = !ctx.is_null();
        code::SUCCESS
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxGetCurrent(ctx: *mut Handle) -> CUresult {
    call("cuCtxGetCurrent", false, |d| {
        let h = if d.current_context {
            CONTEXT_HANDLE as Handle
        } else {
            std::ptr::null_mut()
        };
        out(ctx, h)
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuCtxSynchronize() -> CUresult {
    call("cuCtxSynchronize", true, |_| code::SUCCESS)
}

// ---- Memory -------------------------------------------------------------------------------

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemGetInfo_v2(free: *mut usize, total: *mut usize) -> CUresult {
    call("cuMemGetInfo_v2", true, |d| {
        let m = &d.device.mem;
        let r = out(free, (m.capacity - m.used) as usize);
        if r != code::SUCCESS {
            return r;
        }
        out(total, m.capacity as usize)
    })
}

fn alloc(d: &mut Driver, ptr: *mut CUdeviceptr, bytes: usize) -> u32 {
    d.allocations += 1;
    if let Some(Fault::Alloc(n)) = d.config.fault
        && d.allocations >= n
    {
        d.trace(&format!("injected allocation failure ({bytes} bytes)"));
        return code::OUT_OF_MEMORY;
    }
    match d.device.mem.alloc(bytes as u64) {
        Some(a) => out(ptr, a),
        None => code::OUT_OF_MEMORY,
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemAlloc_v2(ptr: *mut CUdeviceptr, bytes: usize) -> CUresult {
    call("cuMemAlloc_v2", true, |d| alloc(d, ptr, bytes))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemAllocAsync(
    ptr: *mut CUdeviceptr,
    bytes: usize,
    _stream: Handle,
) -> CUresult {
    call("cuMemAllocAsync", true, |d| alloc(d, ptr, bytes))
}

fn free(d: &mut Driver, ptr: CUdeviceptr) -> u32 {
    match d.device.mem.free(ptr) {
        Ok(()) => code::SUCCESS,
        Err(e) => {
            eprintln!("qwenmk virtual GPU: cuMemFree({ptr:#x}): {e}");
            code::INVALID_VALUE
        }
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemFree_v2(ptr: CUdeviceptr) -> CUresult {
    call("cuMemFree_v2", false, |d| free(d, ptr))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemFreeAsync(ptr: CUdeviceptr, _stream: Handle) -> CUresult {
    call("cuMemFreeAsync", false, |d| free(d, ptr))
}

fn copy_in(d: &mut Driver, what: &str, dst: CUdeviceptr, src: *const c_void, n: usize) -> u32 {
    if n == 0 {
        return code::SUCCESS;
    }
    if src.is_null() {
        return code::INVALID_VALUE;
    }
    // SAFETY: the caller passes `n` readable host bytes (API contract).
    let bytes = unsafe { std::slice::from_raw_parts(src.cast::<u8>(), n) };
    match d.device.mem.write(dst, bytes) {
        Ok(()) => code::SUCCESS,
        Err(e) => {
            eprintln!("qwenmk virtual GPU: {what} of {n} bytes to {dst:#x}: {e}");
            code::INVALID_VALUE
        }
    }
}

fn copy_out(d: &mut Driver, what: &str, dst: *mut c_void, src: CUdeviceptr, n: usize) -> u32 {
    if n == 0 {
        return code::SUCCESS;
    }
    if dst.is_null() {
        return code::INVALID_VALUE;
    }
    // SAFETY: the caller passes `n` writable host bytes (API contract).
    let bytes = unsafe { std::slice::from_raw_parts_mut(dst.cast::<u8>(), n) };
    match d.device.mem.read(src, bytes) {
        Ok(()) => code::SUCCESS,
        Err(e) => {
            eprintln!("qwenmk virtual GPU: {what} of {n} bytes from {src:#x}: {e}");
            code::INVALID_VALUE
        }
    }
}

fn copy_device(d: &mut Driver, what: &str, dst: CUdeviceptr, src: CUdeviceptr, n: usize) -> u32 {
    let mut tmp = vec![0u8; n];
    if let Err(e) = d.device.mem.read(src, &mut tmp) {
        eprintln!("qwenmk virtual GPU: {what} of {n} bytes from {src:#x}: {e}");
        return code::INVALID_VALUE;
    }
    if let Err(e) = d.device.mem.write(dst, &tmp) {
        eprintln!("qwenmk virtual GPU: {what} of {n} bytes to {dst:#x}: {e}");
        return code::INVALID_VALUE;
    }
    code::SUCCESS
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemcpyHtoD_v2(
    dst: CUdeviceptr,
    src: *const c_void,
    n: usize,
) -> CUresult {
    call("cuMemcpyHtoD_v2", true, |d| {
        copy_in(d, "cuMemcpyHtoD", dst, src, n)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemcpyHtoDAsync_v2(
    dst: CUdeviceptr,
    src: *const c_void,
    n: usize,
    _stream: Handle,
) -> CUresult {
    call("cuMemcpyHtoDAsync_v2", true, |d| {
        copy_in(d, "cuMemcpyHtoDAsync", dst, src, n)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemcpyDtoH_v2(dst: *mut c_void, src: CUdeviceptr, n: usize) -> CUresult {
    call("cuMemcpyDtoH_v2", true, |d| {
        copy_out(d, "cuMemcpyDtoH", dst, src, n)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemcpyDtoHAsync_v2(
    dst: *mut c_void,
    src: CUdeviceptr,
    n: usize,
    _stream: Handle,
) -> CUresult {
    call("cuMemcpyDtoHAsync_v2", true, |d| {
        copy_out(d, "cuMemcpyDtoHAsync", dst, src, n)
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemcpyDtoD_v2(dst: CUdeviceptr, src: CUdeviceptr, n: usize) -> CUresult {
    call("cuMemcpyDtoD_v2", true, |d| {
        copy_device(d, "cuMemcpyDtoD", dst, src, n)
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemcpyDtoDAsync_v2(
    dst: CUdeviceptr,
    src: CUdeviceptr,
    n: usize,
    _stream: Handle,
) -> CUresult {
    call("cuMemcpyDtoDAsync_v2", true, |d| {
        copy_device(d, "cuMemcpyDtoDAsync", dst, src, n)
    })
}

fn memset(d: &mut Driver, dst: CUdeviceptr, value: u8, n: usize) -> u32 {
    if n == 0 {
        return code::SUCCESS;
    }
    match d.device.mem.fill(dst, n as u64, value) {
        Ok(()) => code::SUCCESS,
        Err(e) => {
            eprintln!("qwenmk virtual GPU: cuMemsetD8 of {n} bytes at {dst:#x}: {e}");
            code::INVALID_VALUE
        }
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemsetD8_v2(dst: CUdeviceptr, value: u8, n: usize) -> CUresult {
    call("cuMemsetD8_v2", true, |d| memset(d, dst, value, n))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemsetD8Async(
    dst: CUdeviceptr,
    value: u8,
    n: usize,
    _stream: Handle,
) -> CUresult {
    call("cuMemsetD8Async", true, |d| memset(d, dst, value, n))
}

// ---- Streams and events -------------------------------------------------------------------

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamCreate(stream: *mut Handle, _flags: c_uint) -> CUresult {
    call("cuStreamCreate", true, |d| {
        let h = d.handle();
        d.streams.push(h);
        out(stream, h as Handle)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamCreateWithPriority(
    stream: *mut Handle,
    flags: c_uint,
    _priority: c_int,
) -> CUresult {
    unsafe { cuStreamCreate(stream, flags) }
}

#[unsafe(no_mangle)]
pub extern "C" fn cuStreamDestroy_v2(stream: Handle) -> CUresult {
    call("cuStreamDestroy_v2", false, |d| {
        d.streams.retain(|&s| s != handle_value(stream));
        code::SUCCESS
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuStreamSynchronize(_stream: Handle) -> CUresult {
    // Work runs when it is submitted: a stream is always drained.
    call("cuStreamSynchronize", true, |_| code::SUCCESS)
}

#[unsafe(no_mangle)]
pub extern "C" fn cuStreamWaitEvent(_stream: Handle, _event: Handle, _flags: c_uint) -> CUresult {
    call("cuStreamWaitEvent", true, |_| code::SUCCESS)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamIsCapturing(_stream: Handle, status: *mut c_int) -> CUresult {
    call("cuStreamIsCapturing", true, |_| out(status, 0))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxGetStreamPriorityRange(
    least: *mut c_int,
    greatest: *mut c_int,
) -> CUresult {
    call("cuCtxGetStreamPriorityRange", false, |_| {
        if !least.is_null() {
            out(least, 0);
        }
        if !greatest.is_null() {
            out(greatest, 0);
        }
        code::SUCCESS
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuEventCreate(event: *mut Handle, flags: c_uint) -> CUresult {
    call("cuEventCreate", true, |d| {
        let h = d.handle();
        // CU_EVENT_DISABLE_TIMING = 0x2.
        d.events.insert(
            h,
            Event {
                timing: flags & 0x2 == 0,
                recorded: None,
            },
        );
        out(event, h as Handle)
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuEventDestroy_v2(event: Handle) -> CUresult {
    call("cuEventDestroy_v2", false, |d| {
        match d.events.remove(&handle_value(event)) {
            Some(_) => code::SUCCESS,
            None => code::INVALID_HANDLE,
        }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuEventRecord(event: Handle, _stream: Handle) -> CUresult {
    call("cuEventRecord", true, |d| {
        let now = d.device.now_ns;
        match d.events.get_mut(&handle_value(event)) {
            Some(e) => {
                e.recorded = Some(now);
                code::SUCCESS
            }
            None => code::INVALID_HANDLE,
        }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuEventSynchronize(event: Handle) -> CUresult {
    call("cuEventSynchronize", true, |d| {
        if d.events.contains_key(&handle_value(event)) {
            code::SUCCESS
        } else {
            code::INVALID_HANDLE
        }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuEventQuery(event: Handle) -> CUresult {
    call("cuEventQuery", true, |d| {
        if d.events.contains_key(&handle_value(event)) {
            code::SUCCESS
        } else {
            code::INVALID_HANDLE
        }
    })
}

/// Milliseconds of *virtual* time between two events: the interpreter's clock, not a
/// measurement (the device's name says so).
fn elapsed(d: &mut Driver, ms: *mut f32, start: Handle, end: Handle) -> u32 {
    let (Some(a), Some(b)) = (
        d.events.get(&handle_value(start)).copied(),
        d.events.get(&handle_value(end)).copied(),
    ) else {
        return code::INVALID_HANDLE;
    };
    if !a.timing || !b.timing {
        return code::INVALID_HANDLE;
    }
    let (Some(t0), Some(t1)) = (a.recorded, b.recorded) else {
        return code::INVALID_HANDLE;
    };
    out(ms, (t1.saturating_sub(t0)) as f32 / 1e6)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuEventElapsedTime(ms: *mut f32, start: Handle, end: Handle) -> CUresult {
    call("cuEventElapsedTime", true, |d| elapsed(d, ms, start, end))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuEventElapsedTime_v2(
    ms: *mut f32,
    start: Handle,
    end: Handle,
) -> CUresult {
    call("cuEventElapsedTime_v2", true, |d| {
        elapsed(d, ms, start, end)
    })
}

// ---- Modules and functions ----------------------------------------------------------------

fn module_handle(i: usize) -> Handle {
    (0x4000_0000 + i * 16) as Handle
}

fn module_index(h: Handle) -> Option<usize> {
    handle_value(h).checked_sub(0x4000_0000).map(|v| v / 16)
}

fn function_handle(i: usize) -> Handle {
    (0x5000_0000 + i * 16) as Handle
}

fn function_index(h: Handle) -> Option<usize> {
    handle_value(h).checked_sub(0x5000_0000).map(|v| v / 16)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuModuleLoadData(module: *mut Handle, image: *const c_void) -> CUresult {
    call("cuModuleLoadData", true, |d| {
        if image.is_null() {
            return code::INVALID_VALUE;
        }
        // SAFETY: a PTX image is a NUL-terminated string (API contract).
        let text = unsafe { CStr::from_ptr(image.cast::<c_char>()) };
        match d.load_module(text.to_bytes()) {
            Ok(i) => out(module, module_handle(i)),
            Err(e) => e,
        }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuModuleLoad(module: *mut Handle, path: *const c_char) -> CUresult {
    call("cuModuleLoad", true, |d| {
        if path.is_null() {
            return code::INVALID_VALUE;
        }
        // SAFETY: a NUL-terminated path (API contract).
        let path = unsafe { CStr::from_ptr(path) }
            .to_string_lossy()
            .into_owned();
        let Ok(bytes) = std::fs::read(&path) else {
            return code::NOT_FOUND;
        };
        match d.load_module(&bytes) {
            Ok(i) => out(module, module_handle(i)),
            Err(e) => e,
        }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuModuleUnload(module: Handle) -> CUresult {
    call("cuModuleUnload", false, |d| {
        match module_index(module).and_then(|i| d.modules.get_mut(i)) {
            Some(m @ Some(_)) => {
                *m = None;
                code::SUCCESS
            }
            _ => code::INVALID_HANDLE,
        }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuModuleGetFunction(
    function: *mut Handle,
    module: Handle,
    name: *const c_char,
) -> CUresult {
    call("cuModuleGetFunction", true, |d| {
        if name.is_null() {
            return code::INVALID_VALUE;
        }
        // SAFETY: a NUL-terminated name (API contract).
        let name = unsafe { CStr::from_ptr(name) }.to_string_lossy();
        let Some(m) = module_index(module) else {
            return code::INVALID_HANDLE;
        };
        let found = d.functions.iter().position(|f| {
            f.module == m
                && d.modules[m]
                    .as_ref()
                    .is_some_and(|p| p.kernels[f.kernel].name == name)
        });
        match found {
            Some(i) => out(function, function_handle(i)),
            None => code::NOT_FOUND,
        }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuModuleGetGlobal_v2(
    _ptr: *mut CUdeviceptr,
    _bytes: *mut usize,
    _module: Handle,
    _name: *const c_char,
) -> CUresult {
    call("cuModuleGetGlobal_v2", true, |_| code::NOT_FOUND)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuFuncGetAttribute(
    value: *mut c_int,
    attribute: c_int,
    function: Handle,
) -> CUresult {
    call("cuFuncGetAttribute", true, |d| {
        let Some(f) = function_index(function).and_then(|i| d.functions.get(i)) else {
            return code::INVALID_HANDLE;
        };
        let Some(program) = d.program(f) else {
            return code::INVALID_HANDLE;
        };
        let kernel = &program.kernels[f.kernel];
        let v = match attribute {
            0 => d.shape.max_threads_per_block_for(f.registers),
            1 => kernel.static_shared_bytes,
            2 | 3 => 0,
            4 => f.registers,
            5 => program.version.0 * 10 + program.version.1,
            6 => d.shape.compute_capability.0 * 10 + d.shape.compute_capability.1,
            7 => 0,
            8 => f.max_dynamic_shared,
            _ => return code::INVALID_VALUE,
        };
        out(value, v as c_int)
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuFuncSetAttribute(function: Handle, attribute: c_int, value: c_int) -> CUresult {
    call("cuFuncSetAttribute", true, |d| {
        let Some(i) = function_index(function).filter(|&i| i < d.functions.len()) else {
            return code::INVALID_HANDLE;
        };
        let static_shared = match d.program(&d.functions[i]) {
            Some(p) => p.kernels[d.functions[i].kernel].static_shared_bytes,
            None => return code::INVALID_HANDLE,
        };
        match attribute {
            // MAX_DYNAMIC_SHARED_SIZE_BYTES: up to the opt-in limit, as the real driver allows.
            8 => {
                if value < 0 || value as u32 + static_shared > d.shape.shared_optin_per_block {
                    eprintln!(
                        "qwenmk virtual GPU: {value} bytes of dynamic shared memory are more than \
                         the {} a block may opt in to",
                        d.shape.shared_optin_per_block - static_shared
                    );
                    return code::INVALID_VALUE;
                }
                d.functions[i].max_dynamic_shared = value as u32;
                code::SUCCESS
            }
            // PREFERRED_SHARED_MEMORY_CARVEOUT and others: accepted, no effect.
            9..=16 => code::SUCCESS,
            _ => code::INVALID_VALUE,
        }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuFuncSetCacheConfig(_function: Handle, _config: c_int) -> CUresult {
    call("cuFuncSetCacheConfig", true, |_| code::SUCCESS)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuOccupancyMaxActiveBlocksPerMultiprocessor(
    blocks: *mut c_int,
    function: Handle,
    block_size: c_int,
    dynamic_shared: usize,
) -> CUresult {
    unsafe {
        cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(
            blocks,
            function,
            block_size,
            dynamic_shared,
            0,
        )
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(
    blocks: *mut c_int,
    function: Handle,
    block_size: c_int,
    dynamic_shared: usize,
    _flags: c_uint,
) -> CUresult {
    call("cuOccupancyMaxActiveBlocksPerMultiprocessor", true, |d| {
        let Some(f) = function_index(function) else {
            return code::INVALID_HANDLE;
        };
        if block_size <= 0 {
            return code::INVALID_VALUE;
        }
        match d.occupancy(
            f,
            block_size as u32,
            dynamic_shared.min(u32::MAX as usize) as u32,
        ) {
            Ok(n) => out(blocks, n as c_int),
            Err(e) => e,
        }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuOccupancyAvailableDynamicSMemPerBlock(
    bytes: *mut usize,
    function: Handle,
    _blocks: c_int,
    _block_size: c_int,
) -> CUresult {
    call(
        "cuOccupancyAvailableDynamicSMemPerBlock",
        true,
        |d| match function_index(function).and_then(|i| d.functions.get(i)) {
            Some(f) => out(bytes, f.max_dynamic_shared as usize),
            None => code::INVALID_HANDLE,
        },
    )
}

// ---- Launches -----------------------------------------------------------------------------

/// `CU_LAUNCH_PARAM_END`, `_BUFFER_POINTER`, `_BUFFER_SIZE` (as pointer values).
const PARAM_END: usize = 0;
const PARAM_BUFFER_POINTER: usize = 1;
const PARAM_BUFFER_SIZE: usize = 2;

/// The kernel's parameter space from `kernelParams` (one pointer per parameter) or from
/// `extra` (a buffer and its size, which must match the kernel's).
fn parameters(
    d: &Driver,
    function: usize,
    kernel_params: *mut *mut c_void,
    extra: *mut *mut c_void,
) -> Result<Vec<u8>, u32> {
    let f = d.functions.get(function).ok_or(code::INVALID_HANDLE)?;
    let program = d.program(f).ok_or(code::INVALID_HANDLE)?;
    let kernel = &program.kernels[f.kernel];
    let mut buf = vec![0u8; kernel.param_bytes as usize];
    if !kernel_params.is_null() {
        for (i, &(offset, bytes)) in kernel.params.iter().enumerate() {
            // SAFETY: one pointer per parameter, each to a value of the parameter's size
            // (API contract).
            unsafe {
                let p = *kernel_params.add(i);
                if p.is_null() {
                    eprintln!(
                        "qwenmk virtual GPU: parameter {i} of `{}` is a null pointer",
                        kernel.name
                    );
                    return Err(code::INVALID_VALUE);
                }
                std::ptr::copy_nonoverlapping(
                    p.cast::<u8>(),
                    buf.as_mut_ptr().add(offset as usize),
                    bytes as usize,
                );
            }
        }
        return Ok(buf);
    }
    if extra.is_null() {
        if buf.is_empty() {
            return Ok(buf);
        }
        eprintln!(
            "qwenmk virtual GPU: `{}` takes parameters and none were given",
            kernel.name
        );
        return Err(code::INVALID_VALUE);
    }
    let (mut pointer, mut size) = (std::ptr::null::<u8>(), None);
    for i in (0..64).step_by(2) {
        // SAFETY: `extra` is a PARAM_END-terminated list of (key, value) pointers.
        let (key, value) = unsafe { (*extra.add(i) as usize, *extra.add(i + 1)) };
        match key {
            PARAM_END => break,
            PARAM_BUFFER_POINTER => pointer = value.cast::<u8>(),
            // SAFETY: the value points to a size_t (API contract).
            PARAM_BUFFER_SIZE => size = Some(unsafe { *value.cast::<usize>() }),
            _ => return Err(code::INVALID_VALUE),
        }
    }
    match size {
        Some(n) if n == buf.len() && !pointer.is_null() => {
            // SAFETY: the buffer holds `n` bytes (API contract).
            unsafe { std::ptr::copy_nonoverlapping(pointer, buf.as_mut_ptr(), n) };
            Ok(buf)
        }
        Some(n) => {
            eprintln!(
                "qwenmk virtual GPU: the launch gives {n} bytes of parameters; `{}` declares {}",
                kernel.name,
                buf.len()
            );
            Err(code::INVALID_VALUE)
        }
        None => Err(code::INVALID_VALUE),
    }
}

fn launch(
    name: &str,
    function: Handle,
    grid: [u32; 3],
    block: [u32; 3],
    shared: u32,
    kernel_params: *mut *mut c_void,
    extra: *mut *mut c_void,
    cooperative: bool,
) -> CUresult {
    call(name, true, |d| {
        let Some(f) = function_index(function).filter(|&i| i < d.functions.len()) else {
            return code::INVALID_HANDLE;
        };
        let params = match parameters(d, f, kernel_params, extra) {
            Ok(p) => p,
            Err(e) => return e,
        };
        d.launch(f, grid, block, shared, &params, cooperative)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuLaunchKernel(
    f: Handle,
    gx: c_uint,
    gy: c_uint,
    gz: c_uint,
    bx: c_uint,
    by: c_uint,
    bz: c_uint,
    shared: c_uint,
    _stream: Handle,
    kernel_params: *mut *mut c_void,
    extra: *mut *mut c_void,
) -> CUresult {
    launch(
        "cuLaunchKernel",
        f,
        [gx, gy, gz],
        [bx, by, bz],
        shared,
        kernel_params,
        extra,
        false,
    )
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuLaunchCooperativeKernel(
    f: Handle,
    gx: c_uint,
    gy: c_uint,
    gz: c_uint,
    bx: c_uint,
    by: c_uint,
    bz: c_uint,
    shared: c_uint,
    _stream: Handle,
    kernel_params: *mut *mut c_void,
) -> CUresult {
    launch(
        "cuLaunchCooperativeKernel",
        f,
        [gx, gy, gz],
        [bx, by, bz],
        shared,
        kernel_params,
        std::ptr::null_mut(),
        true,
    )
}

// ---- The virtual GPU's own extension ------------------------------------------------------

/// Not a CUDA function: the timing model's profile of the launches since the last call, as
/// JSON (`{"model", "clock_ghz", "sms", "launches": [{"cycles", "hbm_bytes", …,
/// "marks": [[block, cycle], …]}]}`), written to `buf` (`len` bytes) NUL-terminated.
/// Returns the JSON's length; when `len` is too small nothing is written or forgotten, so a
/// caller can ask again with a larger buffer. A program finds it with `dlsym`; only the
/// virtual GPU has it.
///
/// # Safety
/// `buf` must hold `len` writable bytes (or be null with `len` 0).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qwenmkVgpuTakeProfile(buf: *mut c_char, len: usize) -> usize {
    let mut d = driver().lock().unwrap_or_else(|e| e.into_inner());
    let saved = std::mem::take(&mut d.profile);
    d.profile = saved.clone();
    let json = d.take_profile();
    if json.len() + 1 > len || buf.is_null() {
        d.profile = saved;
        return json.len();
    }
    // SAFETY: `buf` holds `len` > json.len() bytes (checked above).
    unsafe {
        std::ptr::copy_nonoverlapping(json.as_ptr(), buf.cast::<u8>(), json.len());
        buf.add(json.len()).write(0);
    }
    json.len()
}

// ---- Errors -------------------------------------------------------------------------------

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuGetErrorString(error: CUresult, text: *mut *const c_char) -> CUresult {
    match describe(error) {
        Some((_, s)) => out(text, s.as_ptr().cast()),
        None => code::INVALID_VALUE,
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuGetErrorName(error: CUresult, text: *mut *const c_char) -> CUresult {
    match describe(error) {
        Some((n, _)) => out(text, n.as_ptr().cast()),
        None => code::INVALID_VALUE,
    }
}

// ---- What the virtual device does not model -----------------------------------------------

/// Functions cudarc can reach that the virtual device does not model. Their arguments are
/// ignored (the C calling convention lets a callee ignore arguments it does not declare).
macro_rules! not_supported {
    ($($name:ident),* $(,)?) => {$(
        #[unsafe(no_mangle)]
        pub extern "C" fn $name() -> CUresult {
            call(stringify!($name), false, |_| code::NOT_SUPPORTED)
        }
    )*};
}

not_supported!(
    cuCtxCreate_v3,
    cuCtxCreate_v4,
    cuCtxDestroy_v2,
    cuCtxGetCacheConfig,
    cuCtxSetCacheConfig,
    cuCtxGetLimit,
    cuCtxSetLimit,
    cuCtxSetFlags,
    cuDestroyExternalMemory,
    cuDeviceGetDefaultMemPool,
    cuDeviceGetMemPool,
    cuDeviceSetMemPool,
    cuExternalMemoryGetMappedBuffer,
    cuGraphClone,
    cuGraphDestroy,
    cuGraphExecDestroy,
    cuGraphInstantiate,
    cuGraphInstantiateWithFlags,
    cuGraphLaunch,
    cuGraphUpload,
    cuImportExternalMemory,
    cuLaunchHostFunc,
    cuMemAdvise_v2,
    cuMemAllocFromPoolAsync,
    cuMemAllocManaged,
    cuMemFreeHost,
    cuMemHostAlloc,
    cuMemPoolCreate,
    cuMemPoolDestroy,
    cuMemPoolGetAttribute,
    cuMemPoolSetAttribute,
    cuMemPoolTrimTo,
    cuMemPrefetchAsync_v2,
    cuMemcpyPeerAsync,
    cuOccupancyMaxActiveClusters,
    cuOccupancyMaxPotentialBlockSize,
    cuOccupancyMaxPotentialBlockSizeWithFlags,
    cuOccupancyMaxPotentialClusterSize,
    cuProfilerStart,
    cuProfilerStop,
    cuStreamAttachMemAsync,
    cuStreamBeginCapture_v2,
    cuStreamEndCapture,
    cuLaunchKernelEx,
);

#[cfg(test)]
mod tests {
    //! The C API as cudarc drives it, on one small kernel: `out[tid] = tid + param`.

    use super::*;
    use crate::state::code;

    const PTX: &str = "
.version 8.0
.target sm_90
.address_size 64
.extern .shared .align 16 .b8 smem[];
.visible .entry add(.param .u64 out, .param .u32 k)
{
    .reg .b32 %r<4>;
    .reg .b64 %rd<4>;
    ld.param.u64 %rd1, [out];
    ld.param.u32 %r2, [k];
    mov.u32 %r1, %tid.x;
    add.s32 %r3, %r1, %r2;
    mul.wide.u32 %rd2, %r1, 4;
    add.s64 %rd3, %rd1, %rd2;
    st.global.u32 [%rd3], %r3;
    ret;
}
\0";

    fn load() -> Handle {
        assert_eq!(cuInit(0), code::SUCCESS);
        let mut module = std::ptr::null_mut();
        // SAFETY: a NUL-terminated PTX image and a valid out-pointer.
        let r = unsafe { cuModuleLoadData(&mut module, PTX.as_ptr().cast()) };
        assert_eq!(r, code::SUCCESS);
        let mut f = std::ptr::null_mut();
        // SAFETY: valid handles and a NUL-terminated name.
        let r = unsafe { cuModuleGetFunction(&mut f, module, c"add".as_ptr()) };
        assert_eq!(r, code::SUCCESS);
        f
    }

    fn alloc(bytes: usize) -> CUdeviceptr {
        let mut p = 0;
        // SAFETY: a valid out-pointer.
        assert_eq!(unsafe { cuMemAlloc_v2(&mut p, bytes) }, code::SUCCESS);
        p
    }

    #[test]
    fn a_launch_runs_and_copies_come_back() {
        let f = load();
        let out = alloc(64 * 4);
        let (mut out_arg, mut k) = (out, 7u32);
        let mut params = [
            (&raw mut out_arg).cast::<c_void>(),
            (&raw mut k).cast::<c_void>(),
        ];
        // SAFETY: two parameter pointers for the kernel's two parameters.
        let r = unsafe {
            cuLaunchKernel(
                f,
                1,
                1,
                1,
                64,
                1,
                1,
                0,
                std::ptr::null_mut(),
                params.as_mut_ptr(),
                std::ptr::null_mut(),
            )
        };
        assert_eq!(r, code::SUCCESS);
        let mut host = [0u32; 64];
        // SAFETY: 256 writable bytes.
        let r = unsafe { cuMemcpyDtoH_v2(host.as_mut_ptr().cast(), out, 256) };
        assert_eq!(r, code::SUCCESS);
        assert_eq!(host[0], 7);
        assert_eq!(host[63], 70);
    }

    #[test]
    fn more_than_48_kib_of_shared_memory_needs_the_attribute() {
        let f = load();
        let out = alloc(64 * 4);
        let (mut out_arg, mut k) = (out, 1u32);
        let mut params = [
            (&raw mut out_arg).cast::<c_void>(),
            (&raw mut k).cast::<c_void>(),
        ];
        let launch = |params: &mut [*mut c_void; 2]| {
            // SAFETY: as above.
            unsafe {
                cuLaunchKernel(
                    f,
                    1,
                    1,
                    1,
                    32,
                    1,
                    1,
                    64 << 10,
                    std::ptr::null_mut(),
                    params.as_mut_ptr(),
                    std::ptr::null_mut(),
                )
            }
        };
        assert_eq!(launch(&mut params), code::INVALID_VALUE);
        // MAX_DYNAMIC_SHARED_SIZE_BYTES: up to the opt-in limit, not beyond.
        assert_eq!(cuFuncSetAttribute(f, 8, 300 << 10), code::INVALID_VALUE);
        assert_eq!(cuFuncSetAttribute(f, 8, 64 << 10), code::SUCCESS);
        assert_eq!(launch(&mut params), code::SUCCESS);
    }

    #[test]
    fn a_parameter_buffer_of_the_wrong_size_is_refused() {
        let f = load();
        let out = alloc(64 * 4);
        let mut buffer = [0u8; 16];
        buffer[..8].copy_from_slice(&out.to_le_bytes());
        let launch = |size: usize| {
            let mut size = size;
            let mut extra = [
                PARAM_BUFFER_POINTER as *mut c_void,
                buffer.as_ptr() as *mut c_void,
                PARAM_BUFFER_SIZE as *mut c_void,
                (&raw mut size).cast::<c_void>(),
                PARAM_END as *mut c_void,
                std::ptr::null_mut(),
            ];
            // SAFETY: a well-formed `extra` list over a live buffer.
            unsafe {
                cuLaunchKernel(
                    f,
                    1,
                    1,
                    1,
                    32,
                    1,
                    1,
                    0,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    extra.as_mut_ptr(),
                )
            }
        };
        // The kernel's parameters take 12 bytes (u64 then u32).
        assert_eq!(launch(16), code::INVALID_VALUE);
        assert_eq!(launch(12), code::SUCCESS);
    }

    #[test]
    fn a_double_free_is_an_error() {
        assert_eq!(cuInit(0), code::SUCCESS);
        let p = alloc(32);
        assert_eq!(cuMemFree_v2(p), code::SUCCESS);
        assert_eq!(cuMemFree_v2(p), code::INVALID_VALUE);
    }

    #[test]
    fn the_device_names_itself_virtual() {
        assert_eq!(cuInit(0), code::SUCCESS);
        let mut name = [0 as c_char; 64];
        // SAFETY: 64 writable bytes.
        assert_eq!(
            unsafe { cuDeviceGetName(name.as_mut_ptr(), 64, 0) },
            code::SUCCESS
        );
        // SAFETY: NUL-terminated by the call.
        let name = unsafe { CStr::from_ptr(name.as_ptr()) }.to_string_lossy();
        assert_eq!(name, crate::state::DEVICE_NAME);
        let mut major = 0;
        // SAFETY: a valid out-pointer.
        assert_eq!(
            unsafe { cuDeviceGetAttribute(&mut major, 75, 0) },
            code::SUCCESS
        );
        assert_eq!(major, 9);
    }
}
