//! The integration tests, in one binary (each extra test target relinks candle).
//!
//! Tests that need `../shared/data` or downloaded weights skip with a message when absent.

mod backbone;
mod common;
mod coseg;
mod descriptor;
mod eval;
mod images;
mod index;
mod localize;
mod nmf;
mod pipeline;
mod probe;
mod query;
mod report;
