//! A safe entry point to the `gemm` crate's `f32` matrix product, for the large products of the
//! CPU convolutions.
//!
//! `gemm` picks its micro-kernel at run time (AVX-512, AVX2+FMA, NEON, scalar; the `x86-v4`
//! feature compiles the AVX-512 kernels in, still chosen only where the CPU has them) and
//! reaches the machine's peak on the shapes convolutions make, which the crate's own portable
//! kernels (`kernel.rs`) do not. Its entry point takes raw pointers and strides; this module
//! checks every offset it will touch against the slices' lengths, so its one function is safe.
//!
//! This is one of the two modules where the crate allows `unsafe` code (the other is
//! `index/storage.rs`): one block, with its `// SAFETY:` argument.
#![allow(unsafe_code)]

/// A row-major matrix operand: `rows × cols` values, row `i` starting at `data[i * ld]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Operand<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub ld: usize,
}

impl<'a> Operand<'a> {
    /// A dense row-major `rows × cols` operand.
    pub fn dense(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Operand {
            data,
            rows,
            cols,
            ld: cols,
        }
    }

    /// Whether every element lies inside `data` and rows do not overlap.
    fn fits(&self) -> bool {
        self.rows == 0 || self.cols == 0 || (self.ld >= self.cols && last_end(self).is_some())
    }
}

/// One past the last element of a non-empty operand, when it is inside the slice.
fn last_end(op: &Operand<'_>) -> Option<usize> {
    let end = (op.rows - 1).checked_mul(op.ld)?.checked_add(op.cols)?;
    (end <= op.data.len()).then_some(end)
}

/// `dst = lhs · rhs`, or `dst += lhs · rhs` when `accumulate`; `dst` is row-major `m × n` with
/// row stride `ld_dst` (`m = lhs.rows`, `n = rhs.cols`). Runs on the calling thread: callers
/// split the work into blocks and run those in parallel.
///
/// # Panics
/// When the shapes disagree or an operand does not fit its slice — a bug in the caller, never
/// a property of input data.
pub(crate) fn gemm(
    dst: &mut [f32],
    ld_dst: usize,
    lhs: Operand<'_>,
    rhs: Operand<'_>,
    accumulate: bool,
) {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    assert_eq!(k, rhs.rows, "gemm: inner dimensions differ");
    assert!(
        lhs.fits() && rhs.fits(),
        "gemm: an operand exceeds its slice"
    );
    let out = Operand {
        data: dst,
        rows: m,
        cols: n,
        ld: ld_dst,
    };
    assert!(out.fits(), "gemm: the destination exceeds its slice");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for row in dst.chunks_mut(ld_dst).take(m) {
                row[..n].fill(0.0);
            }
        }
        return;
    }
    // SAFETY: `gemm::gemm` reads `lhs[i·ld + p]` (i < m, p < k), `rhs[p·ld + j]` (p < k, j < n)
    // and reads/writes `dst[i·ld_dst + j]` (i < m, j < n); `fits` checked above that the
    // largest of these offsets, `(rows−1)·ld + cols − 1`, lies inside each slice, and that
    // `ld ≥ cols`, so distinct (i, j) are distinct elements of `dst`. `dst` is a unique borrow,
    // so it overlaps neither operand. The strides are at most the slices' lengths, which fit
    // in `isize` (a Rust allocation never exceeds `isize::MAX` bytes). `read_dst` is false only
    // when `accumulate` is, and then `gemm` ignores `dst`'s old values (alpha is zero).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            ld_dst as isize,
            accumulate,
            lhs.data.as_ptr(),
            1,
            lhs.ld as isize,
            rhs.data.as_ptr(),
            1,
            rhs.ld as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize, lda: usize) -> Vec<f32> {
        let mut out = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|p| a[i * lda + p] * b[p * n + j]).sum();
            }
        }
        out
    }

    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| {
                ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) % 1000) as f32 / 500.0
                    - 1.0
            })
            .collect()
    }

    #[test]
    fn matches_naive_product_with_strides_and_accumulation() {
        for &(m, k, n) in &[(1, 1, 1), (7, 5, 3), (33, 70, 17), (130, 64, 96), (5, 0, 4)] {
            let lda = k + 3;
            let a = values(m * lda, 1);
            let b = values(k * n, 2);
            let want = naive(&a, &b, m, k, n, lda);
            let lhs = Operand {
                data: &a,
                rows: m,
                cols: k,
                ld: lda,
            };
            let mut dst = vec![f32::NAN; m * n];
            gemm(&mut dst, n, lhs, Operand::dense(&b, k, n), false);
            for (g, w) in dst.iter().zip(&want) {
                assert!(
                    (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                    "{m}×{k}×{n}: {g} vs {w}"
                );
            }
            gemm(&mut dst, n, lhs, Operand::dense(&b, k, n), true);
            for (g, w) in dst.iter().zip(&want) {
                assert!((g - 2.0 * w).abs() <= 2e-4 * (1.0 + w.abs()));
            }
        }
    }

    #[test]
    #[should_panic(expected = "exceeds")]
    fn refuses_an_operand_longer_than_its_slice() {
        let a = vec![0f32; 11];
        let b = vec![0f32; 12];
        let mut dst = vec![0f32; 12];
        gemm(
            &mut dst,
            4,
            Operand::dense(&a, 3, 4),
            Operand::dense(&b, 4, 3),
            false,
        );
    }
}
