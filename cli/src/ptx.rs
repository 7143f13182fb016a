//! The kernels' PTX, compiled by `build.rs` and embedded in the binary.

/// The whole PTX module: every kernel of `qwenmk-kernels`, for [`qwenmk_kernels::PTX_TARGET`].
pub const KERNELS_PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/qwenmk_kernels.ptx"));

/// The `.version` and `.target` lines of the module, e.g. `("8.0", "sm_90")`.
pub fn ptx_version_and_target() -> (Option<&'static str>, Option<&'static str>) {
    let directive = |name: &str| {
        KERNELS_PTX
            .lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
    };
    (directive(".version"), directive(".target"))
}
