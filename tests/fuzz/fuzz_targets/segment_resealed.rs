//! Any bytes as a segment file, with every checksum recomputed first (as the format
//! defines them) so that inputs get past the checksums and reach the checks of sizes,
//! contents, records and graph, and the readers behind them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Recomputes section checksums and the header checksum (index-format/README.md §3).
fn reseal(b: &mut [u8]) {
    if b.len() < 128 {
        return;
    }
    let n = (u32::from_le_bytes([b[24], b[25], b[26], b[27]]) as usize).min(32);
    for i in 0..n {
        let e = 64 + 64 * i;
        if e + 64 > b.len() {
            return;
        }
        let (off, len) = (u64_at(b, e + 8), u64_at(b, e + 16));
        let Some(end) = off.checked_add(len).filter(|&x| x <= b.len() as u64) else {
            continue;
        };
        let mut h = blake3::Hasher::new();
        h.update(&b[e..e + 4]);
        h.update(&b[off as usize..end as usize]);
        h.update(&len.to_le_bytes());
        let d = *h.finalize().as_bytes();
        b[e + 24..e + 56].copy_from_slice(&d);
    }
    let end = 64 + 64 * n;
    let footer = b.len() - 64;
    if end <= footer {
        let d = *blake3::hash(&b[..end]).as_bytes();
        b[footer..footer + 32].copy_from_slice(&d);
    }
}

fuzz_target!(|data: &[u8]| {
    let mut b = data.to_vec();
    reseal(&mut b);
    let _ = deepfactor::index::check_segment_bytes(&b, Path::new("fuzz.dfs"));
});
