//! The kernels' building blocks, written once against [`crate::device`].

pub mod argmax;
pub mod matvec;
pub mod norm;
pub mod sample;
