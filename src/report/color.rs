//! Colour maps: viridis for a single heatmap, a fixed qualitative palette for factors.

use image::Rgb;

/// Viridis, the perceptually uniform map of matplotlib, at `t ∈ [0, 1]` (clamped; NaN is 0).
///
/// Evaluated with a degree-6 polynomial fit of the matplotlib table (the public-domain fit
/// published with the map's shader ports); it stays within 5/255 of the table per channel.
pub fn viridis(t: f32) -> Rgb<u8> {
    const C: [[f64; 3]; 7] = [
        [
            0.277_727_327_223_417_7,
            0.005_407_344_544_966_578,
            0.334_099_805_335_306_1,
        ],
        [
            0.105_093_043_108_577_4,
            1.404_613_529_898_575,
            1.384_590_162_594_685,
        ],
        [
            -0.330_861_828_725_556_3,
            0.214_847_559_468_213,
            0.095_095_163_028_236_59,
        ],
        [
            -4.634_230_498_983_486,
            -5.799_100_973_351_585,
            -19.332_440_956_279_87,
        ],
        [
            6.228_269_936_347_081,
            14.179_933_366_805_09,
            56.690_552_600_681_05,
        ],
        [
            4.776_384_997_670_288,
            -13.745_145_377_746_01,
            -65.353_032_633_372_34,
        ],
        [
            -5.435_455_855_934_631,
            4.645_852_612_178_535,
            26.312_435_249_583_2,
        ],
    ];
    let t = if t.is_nan() {
        0.0
    } else {
        f64::from(t.clamp(0.0, 1.0))
    };
    let mut out = [0u8; 3];
    for (ch, slot) in out.iter_mut().enumerate() {
        let v = C.iter().rev().fold(0.0, |acc, c| acc * t + c[ch]);
        *slot = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
    }
    Rgb(out)
}

/// The factor palette: ten saturated, mutually distinct colours that stay visible over
/// photographs (from Sasha Trubetskoy's list of distinct colours). Factor `i` of a report
/// gets `PALETTE[i % 10]`.
pub const PALETTE: [Rgb<u8>; 10] = [
    Rgb([230, 25, 75]),  // red
    Rgb([60, 180, 75]),  // green
    Rgb([67, 99, 216]),  // blue
    Rgb([245, 130, 49]), // orange
    Rgb([66, 212, 244]), // cyan
    Rgb([240, 50, 230]), // magenta
    Rgb([255, 225, 25]), // yellow
    Rgb([145, 30, 180]), // purple
    Rgb([191, 239, 69]), // lime
    Rgb([70, 153, 144]), // teal
];

/// The palette colour of the `i`-th factor (cycling after ten).
pub fn palette(i: usize) -> Rgb<u8> {
    PALETTE[i % PALETTE.len()]
}

/// `#rrggbb`.
pub fn hex(c: Rgb<u8>) -> String {
    format!("#{:02x}{:02x}{:02x}", c[0], c[1], c[2])
}

/// `base` blended towards `over` by `alpha ∈ [0, 1]`.
pub fn blend(base: Rgb<u8>, over: Rgb<u8>, alpha: f32) -> Rgb<u8> {
    let a = if alpha.is_nan() {
        0.0
    } else {
        alpha.clamp(0.0, 1.0)
    };
    let mut out = [0u8; 3];
    for i in 0..3 {
        let v = f32::from(base[i]) * (1.0 - a) + f32::from(over[i]) * a;
        out[i] = v.round().clamp(0.0, 255.0) as u8;
    }
    Rgb(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: Rgb<u8>, b: [u8; 3], tol: i32) -> bool {
        (0..3).all(|i| (i32::from(a[i]) - i32::from(b[i])).abs() <= tol)
    }

    #[test]
    fn viridis_matches_matplotlib_anchors() {
        // matplotlib's viridis at 0, ¼, ½, ¾, 1 (its published five-colour sample).
        let anchors = [
            (0.0, [0x44, 0x01, 0x54]),
            (0.25, [0x3b, 0x52, 0x8b]),
            (0.5, [0x21, 0x91, 0x8c]),
            (0.75, [0x5e, 0xc9, 0x62]),
            (1.0, [0xfd, 0xe7, 0x25]),
        ];
        for (t, want) in anchors {
            let got = viridis(t);
            assert!(close(got, want, 5), "viridis({t}) = {got:?}, want {want:?}");
        }
        assert_eq!(viridis(-3.0), viridis(0.0));
        assert_eq!(viridis(7.0), viridis(1.0));
        assert_eq!(viridis(f32::NAN), viridis(0.0));
    }

    #[test]
    fn viridis_lightness_increases_monotonically() {
        // The point of a perceptual map: brightness rises with the value.
        let luma = |c: Rgb<u8>| {
            0.299 * f32::from(c[0]) + 0.587 * f32::from(c[1]) + 0.114 * f32::from(c[2])
        };
        let mut prev = -1.0;
        for i in 0..=100 {
            let l = luma(viridis(i as f32 / 100.0));
            assert!(l >= prev - 0.5, "luma drops at {i}: {l} < {prev}");
            prev = l;
        }
    }

    #[test]
    fn palette_colours_are_distinct() {
        for (i, a) in PALETTE.iter().enumerate() {
            for (j, b) in PALETTE.iter().enumerate().skip(i + 1) {
                let d: i32 = (0..3)
                    .map(|k| (i32::from(a[k]) - i32::from(b[k])).abs())
                    .sum();
                assert!(d >= 90, "colours {i} and {j} are too close ({d})");
            }
        }
        assert_eq!(palette(3), palette(13));
        assert_eq!(hex(Rgb([1, 171, 255])), "#01abff");
    }

    #[test]
    fn blending() {
        let a = Rgb([0, 100, 200]);
        let b = Rgb([200, 100, 0]);
        assert_eq!(blend(a, b, 0.0), a);
        assert_eq!(blend(a, b, 1.0), b);
        assert_eq!(blend(a, b, 0.5), Rgb([100, 100, 100]));
        assert_eq!(blend(a, b, 2.0), b);
        assert_eq!(blend(a, b, f32::NAN), a);
    }
}
