//! Any bytes as a segment file: parse, check, search, read every record, verify.
//! Must never panic, abort or allocate more than the input justifies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let _ = deepfactor::index::check_segment_bytes(data, Path::new("fuzz.dfs"));
});
