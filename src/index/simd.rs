//! Dot products in the widest SIMD the CPU has, picked at run time through `pulp` (no
//! `unsafe` here): f32 · f32, and f16 (stored) · f32 (query) without a conversion pass.
//!
//! The f16 dot converts in registers: on AVX-512 with `VCVTPH2PS` (16 values per
//! instruction, through pulp's safe wrapper of `_mm512_cvtph_ps`), elsewhere with a
//! branch-free bit conversion that the compiler vectorizes inside pulp's AVX2 (or baseline)
//! context. Both give exactly `f16::to_f32` per element; only the summation order differs
//! from the f32 dot of the converted row.

use half::f16;
use pulp::{Arch, Simd, WithSimd};
use std::sync::atomic::{AtomicBool, Ordering};

/// Dot product of `a` and `b` (over the shorter length) with the instruction set `arch`.
#[inline]
pub(crate) fn dot_f32(arch: Arch, a: &[f32], b: &[f32]) -> f32 {
    arch.dispatch(DotOp { a, b })
}

/// Dot product of two equal-length rows in the widest SIMD the CPU has.
struct DotOp<'a> {
    a: &'a [f32],
    b: &'a [f32],
}

impl WithSimd for DotOp<'_> {
    type Output = f32;

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> f32 {
        let n = self.a.len().min(self.b.len());
        let (ah, at) = S::as_simd_f32s(&self.a[..n]);
        let (bh, bt) = S::as_simd_f32s(&self.b[..n]);
        let zero = simd.splat_f32s(0.0);
        let mut acc = [zero; 4];
        let (a4, ar) = ah.split_at(ah.len() / 4 * 4);
        let (b4, br) = bh.split_at(a4.len());
        for (x, y) in a4.chunks_exact(4).zip(b4.chunks_exact(4)) {
            for j in 0..4 {
                acc[j] = simd.mul_add_f32s(x[j], y[j], acc[j]);
            }
        }
        for (x, y) in ar.iter().zip(br) {
            acc[0] = simd.mul_add_f32s(*x, *y, acc[0]);
        }
        let s = simd.add_f32s(simd.add_f32s(acc[0], acc[1]), simd.add_f32s(acc[2], acc[3]));
        let mut t = simd.reduce_sum_f32s(s);
        for (x, y) in at.iter().zip(bt) {
            t += x * y;
        }
        t
    }
}

/// Converts binary16 bits to f32 without branches, so that loops over it vectorize:
/// shifting the exponent and mantissa into place and scaling by 2¹¹² is exact for normal and
/// subnormal values and zero; infinities and NaNs get the all-ones exponent back.
#[inline(always)]
pub(crate) fn f16_bits_to_f32(h: u16) -> f32 {
    let h = u32::from(h);
    let em = h & 0x7fff;
    let scaled = f32::from_bits(em << 13) * f32::from_bits(0x7780_0000);
    let bits = if em >= 0x7c00 {
        scaled.to_bits() | 0x7f80_0000
    } else {
        scaled.to_bits()
    };
    f32::from_bits(bits | (h & 0x8000) << 16)
}

/// The f16 · f32 dot kernel of this CPU, chosen once (cheap to copy; make one per scan).
#[derive(Clone, Copy)]
pub(crate) struct F16Dot {
    arch: Arch,
    #[cfg(target_arch = "x86_64")]
    v4: Option<pulp::x86::V4>,
    #[cfg(target_arch = "x86_64")]
    sse: Option<pulp::core_arch::x86::Sse>,
    /// The former path (convert the row into a buffer with the plain loop, then the f32
    /// dot; no prefetching), kept as the bench's baseline: see
    /// [`set_f16_reference_scoring`].
    reference: bool,
}

/// Whether [`F16Dot`]s made from now on use the former convert-then-dot path.
static REFERENCE: AtomicBool = AtomicBool::new(false);

/// Makes every scan started after this call use the former scoring path when `on` (f16
/// rows converted into a buffer with a plain loop, then the f32 SIMD dot; the graph search
/// prefetches no rows), or the current one (the default) when not. Results agree to float
/// rounding; only speed differs. For the bench's same-run baseline; not part of the stable
/// API.
#[doc(hidden)]
pub fn set_f16_reference_scoring(on: bool) {
    REFERENCE.store(on, Ordering::Relaxed);
}

impl F16Dot {
    /// The kernel for this CPU.
    pub fn new() -> F16Dot {
        F16Dot {
            arch: Arch::new(),
            #[cfg(target_arch = "x86_64")]
            v4: pulp::x86::V4::try_new(),
            #[cfg(target_arch = "x86_64")]
            sse: pulp::core_arch::x86::Sse::try_new(),
            reference: REFERENCE.load(Ordering::Relaxed),
        }
    }

    /// Asks the CPU to start loading `bytes` into cache (every 64-byte line of them), so
    /// that a row about to be scored is on its way while another one is: the graph search
    /// reads rows at random, and at 1M rows each read otherwise waits on memory. A hint
    /// only: nothing is read.
    #[inline]
    pub fn prefetch<T>(&self, row: &[T]) {
        if self.reference {
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if let Some(sse) = self.sse {
            let p = row.as_ptr().cast::<i8>();
            for at in (0..std::mem::size_of_val(row)).step_by(64) {
                sse._mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.wrapping_add(at));
            }
        }
    }

    /// The f32 kernel of the same CPU.
    #[inline]
    pub fn arch(&self) -> Arch {
        self.arch
    }

    /// `a · b` over the shorter length, `a` converted exactly from f16.
    #[inline]
    pub fn dot(&self, a: &[f16], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        if self.reference {
            return reference_dot(self.arch, a, b);
        }
        #[cfg(target_arch = "x86_64")]
        if let Some(v4) = self.v4 {
            return Simd::vectorize(v4, DotF16V4 { v4, a, b });
        }
        self.arch.dispatch(DotF16 { a, b })
    }
}

/// The former path: the row converted into a buffer, then the f32 dot.
fn reference_dot(arch: Arch, a: &[f16], b: &[f32]) -> f32 {
    thread_local! {
        static BUF: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUF.with(|buf| {
        let mut buf = buf.borrow_mut();
        buf.clear();
        buf.extend(a.iter().map(|h| f16_bits_to_f32(h.to_bits())));
        dot_f32(arch, &buf, b)
    })
}

/// Fused f16 · f32 dot with the conversion written as plain integer and float operations:
/// compiled inside pulp's dispatch, so the compiler vectorizes it for the instruction set
/// chosen (16 independent lanes, like [`crate::index::dot`]).
struct DotF16<'a> {
    a: &'a [f16],
    b: &'a [f32],
}

impl WithSimd for DotF16<'_> {
    type Output = f32;

    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) -> f32 {
        let mut acc = [0f32; 16];
        let ca = self.a.chunks_exact(16);
        let cb = self.b.chunks_exact(16);
        let (ra, rb) = (ca.remainder(), cb.remainder());
        for (x, y) in ca.zip(cb) {
            for i in 0..16 {
                acc[i] += f16_bits_to_f32(x[i].to_bits()) * y[i];
            }
        }
        let mut s = 0f32;
        for (x, y) in ra.iter().zip(rb) {
            s += f16_bits_to_f32(x.to_bits()) * y;
        }
        let mut h = [0f32; 8];
        for i in 0..8 {
            h[i] = acc[i] + acc[i + 8];
        }
        s + ((h[0] + h[4]) + (h[1] + h[5])) + ((h[2] + h[6]) + (h[3] + h[7]))
    }
}

/// Fused f16 · f32 dot on AVX-512: 16 halves converted per `VCVTPH2PS`, two accumulators.
#[cfg(target_arch = "x86_64")]
struct DotF16V4<'a> {
    v4: pulp::x86::V4,
    a: &'a [f16],
    b: &'a [f32],
}

#[cfg(target_arch = "x86_64")]
impl WithSimd for DotF16V4<'_> {
    type Output = f32;

    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) -> f32 {
        use std::arch::x86_64::{__m256i, __m512};
        let f = self.v4.avx512f;
        let load = |x: &[f16], y: &[f32]| -> (__m512, __m512) {
            let mut h = [0u16; 16];
            for (o, v) in h.iter_mut().zip(x) {
                *o = v.to_bits();
            }
            let mut g = [0f32; 16];
            g.copy_from_slice(y);
            let hv: __m256i = pulp::cast(h);
            (f._mm512_cvtph_ps(hv), pulp::cast(g))
        };
        let mut acc0 = f._mm512_setzero_ps();
        let mut acc1 = f._mm512_setzero_ps();
        let ca = self.a.chunks_exact(32);
        let cb = self.b.chunks_exact(32);
        let (ra, rb) = (ca.remainder(), cb.remainder());
        for (x, y) in ca.zip(cb) {
            let (x0, y0) = load(&x[..16], &y[..16]);
            let (x1, y1) = load(&x[16..], &y[16..]);
            acc0 = f._mm512_fmadd_ps(x0, y0, acc0);
            acc1 = f._mm512_fmadd_ps(x1, y1, acc1);
        }
        let mut t = f._mm512_reduce_add_ps(f._mm512_add_ps(acc0, acc1));
        let c16a = ra.chunks_exact(16);
        let c16b = rb.chunks_exact(16);
        let (ta, tb) = (c16a.remainder(), c16b.remainder());
        for (x, y) in c16a.zip(c16b) {
            let (x0, y0) = load(x, y);
            t += f._mm512_reduce_add_ps(f._mm512_mul_ps(x0, y0));
        }
        for (x, y) in ta.iter().zip(tb) {
            t += x.to_f32() * y;
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_dot_equals_f32_dot_of_the_rounded_row() {
        let k = F16Dot::new();
        for n in [0usize, 1, 7, 15, 16, 17, 31, 32, 33, 100, 512, 1280] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let ah: Vec<f16> = a.iter().map(|&x| f16::from_f32(x)).collect();
            let rounded: Vec<f32> = ah.iter().map(|h| h.to_f32()).collect();
            let want: f64 = rounded
                .iter()
                .zip(&b)
                .map(|(x, y)| f64::from(*x) * f64::from(*y))
                .sum();
            let tol = 1e-5 * (n as f64).max(1.0);
            for got in [
                k.dot(&ah, &b),
                k.arch.dispatch(DotF16 { a: &ah, b: &b }),
                reference_dot(k.arch, &ah, &b),
                dot_f32(k.arch, &rounded, &b),
            ] {
                assert!(
                    (f64::from(got) - want).abs() < tol,
                    "n {n}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn f16_dot_handles_special_values_and_uneven_lengths() {
        let k = F16Dot::new();
        let mut a = vec![f16::from_f32(0.5); 40];
        a[3] = f16::from_bits(0x0001); // smallest subnormal
        a[20] = f16::from_f32(-65504.0);
        let b = vec![1.0f32; 37];
        let want: f32 = a[..37].iter().map(|h| h.to_f32()).sum();
        assert!((k.dot(&a, &b) - want).abs() < 1e-2);
        a[35] = f16::INFINITY;
        assert_eq!(k.dot(&a, &b), f32::INFINITY);
        a[36] = f16::NAN;
        assert!(k.dot(&a, &b).is_nan());
    }
}
