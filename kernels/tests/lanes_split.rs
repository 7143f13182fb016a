//! `lanes_for_warps` picks its lanes per unit with shifts and one division; the choice must be
//! the one the plain definition gives (passes × loads per lane of a row, fewest wins, a tie
//! keeps the fewer lanes), for every matrix and grid a launch can have.

use qwenmk_kernels::ops::matvec::{VALUES_PER_LOAD, lanes_for_warps, loads_in_flight_per_lane};

/// The definition, with plain divisions.
fn reference(units: u32, cols: u32, base: u32, warps: u32) -> u32 {
    let loads_per_row = cols / VALUES_PER_LOAD;
    let busiest = |lanes: u32| {
        let units_per_pass = warps * (32 / lanes);
        units.div_ceil(units_per_pass) * loads_per_row.div_ceil(lanes)
    };
    let mut best = base;
    let mut lanes = base;
    while lanes < 32 && loads_per_row >= 4 * (lanes * 2) {
        lanes *= 2;
        if busiest(lanes) < busiest(best) {
            best = lanes;
        }
    }
    best
}

/// Grids of warps: tiny ones, and an H100's, an A100's and a smaller GPU's at 8 warps per SM.
const WARPS: [u32; 13] = [
    1,
    2,
    3,
    7,
    8,
    16,
    31,
    64,
    100,
    132 * 8,
    108 * 8,
    114 * 8,
    2047,
];

#[test]
fn the_lanes_per_unit_are_the_definitions_for_every_shape() {
    let mut checked = 0;
    for base in [1, 2, 4, 8, 16, 32] {
        for warps in WARPS {
            for units in [1, 2, 5, 63, 64, 65, 511, 1024, 1025, 3072, 4096, 151_936] {
                for cols in [8, 64, 128, 512, 1024, 1032, 2048, 3072, 4096] {
                    assert_eq!(
                        lanes_for_warps(units, cols, base, warps),
                        reference(units, cols, base, warps),
                        "units {units}, cols {cols}, base {base}, warps {warps}"
                    );
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 6 * 13 * 12 * 9);
}

#[test]
fn a_lane_of_a_short_row_keeps_its_whole_share_in_flight() {
    // 64 columns are 8 loads: at 16 lanes each lane has at most one (the first 8 lanes).
    assert_eq!(loads_in_flight_per_lane(64, 1, 16), 1);
    // 1,024 columns at 16 lanes: 8 loads per lane, all in flight.
    assert_eq!(loads_in_flight_per_lane(1024, 1, 16), 8);
    // 1,032 columns (129 loads) at 32 lanes: lane 0 makes 5, in flight 5 (under the group of 8).
    assert_eq!(loads_in_flight_per_lane(1032, 1, 32), 5);
    // Two rows per unit share the 8 loads in flight.
    assert_eq!(loads_in_flight_per_lane(1024, 2, 16), 8);
}
