//! Any bytes as a manifest file: parse, check checksums, decode recipe and record.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let _ = deepfactor::index::check_manifest_bytes(data, Path::new("fuzz.dfm"));
});
