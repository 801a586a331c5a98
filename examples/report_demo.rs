//! Writes a demo search report — `report.html` and `report.png` — from real photos, with
//! **synthetic** heatmaps, boxes and scores standing in for what the query path computes.
//!
//! ```sh
//! cargo run --example report_demo -- [--photos DIR] [--out DIR]
//! ```
//!
//! `--photos` defaults to the photos `scripts/setup.sh` fetches (`~/.cache/deepfactor/photos`);
//! `--out` to `target/report-demo`. The first photo named `chelsea.png` (else the first in name
//! order) is the query; the others are the results. `scripts/report_screenshot.sh` runs this and
//! photographs the page in headless Chromium.
//!
//! How the stand-ins are made (so the pictures look like real ones, but are not): each image
//! gets the feature grid EfficientNet-Lite0 would give it (input shorter side 512, stride 32);
//! a per-cell saliency (colour distance from the image's mean colour, smoothed); three
//! "factors", each the saliency weighted by a Gaussian around one of its three strongest,
//! well-separated peaks. The query's box is drawn around their main blob, and the query keeps
//! the factors with more than 75% of their mass inside it; each result's predicted box is the
//! box around the largest connected blob of the top 30% of its averaged heatmap (the thesis'
//! rules, applied to these fake heatmaps); scores fall with rank.

use anyhow::{bail, Context, Result};
use deepfactor::backbone::{input_dims, DEFAULT_INPUT_SIZE};
use deepfactor::heatmap::{Binarize, Heatmap, DEFAULT_MASS_THRESHOLD};
use deepfactor::images::load_rgb;
use deepfactor::localize::DEFAULT_TOP_FRACTION;
use deepfactor::report::{FactorHeatmap, QueryView, ResultView, SearchReport};
use deepfactor::{BBox, CellGrid};
use image::RgbImage;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Stride of the demo feature grid, in input pixels.
const STRIDE: u32 = 32;
/// Factor ids used for the stand-in factors (as if kept from a rank-16 NMF).
const FACTOR_IDS: [usize; 3] = [3, 7, 12];

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mut photos = deepfactor::backbone::cache_dir().join("photos");
    let mut out = PathBuf::from("target/report-demo");
    while let Some(a) = args.next() {
        match a.as_str() {
            "--photos" => photos = PathBuf::from(args.next().context("--photos needs a folder")?),
            "--out" => out = PathBuf::from(args.next().context("--out needs a folder")?),
            other => bail!("unknown argument {other:?} (expected --photos DIR, --out DIR)"),
        }
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&photos)
        .with_context(|| format!("{}: cannot list (run scripts/setup.sh)", photos.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
        })
        .collect();
    files.sort();
    if files.len() < 2 {
        bail!(
            "{}: need at least two photos (run scripts/setup.sh)",
            photos.display()
        );
    }
    let qi = files
        .iter()
        .position(|p| p.file_name().is_some_and(|n| n == "chelsea.png"))
        .unwrap_or(0);
    let query_path = files.remove(qi);
    let started = Instant::now();

    let (qimg, qgrid, qfactors) = stand_in(&query_path)?;
    // The user's box stands in as the main blob of all the factors together; the query keeps
    // the factors with more than 75% of their mass inside it (the thesis' filter rule).
    let qbox = localize(&average(qgrid, &qfactors)?);
    let kept: Vec<(usize, Heatmap)> = FACTOR_IDS
        .iter()
        .copied()
        .zip(qfactors)
        .filter(|(_, h)| qbox.is_some_and(|b| h.mass_inside(&b) > DEFAULT_MASS_THRESHOLD))
        .collect();
    let kept_ids: Vec<usize> = kept.iter().map(|(id, _)| *id).collect();
    let mut query = QueryView::new(file_name(&query_path), qimg);
    query.grid = Some(qgrid);
    query.bbox = qbox;
    query.factors = kept
        .into_iter()
        .map(|(id, h)| FactorHeatmap::new(id, h.into_values()))
        .collect();

    let mut results = Vec::new();
    for (i, path) in files.iter().enumerate() {
        let (img, grid, factors) = stand_in(path)?;
        // Each result shows the query's kept factors (the stand-ins for this image, taken in
        // turn).
        let shown: Vec<(usize, Heatmap)> = kept_ids
            .iter()
            .copied()
            .zip(factors.into_iter().cycle().skip(i))
            .collect();
        let maps: Vec<Heatmap> = shown.iter().map(|(_, h)| h.clone()).collect();
        let avg = average(grid, &maps)?;
        let mut r = ResultView::new(i + 1, file_name(path), img, 0.91 - 0.055 * i as f32);
        r.bbox = localize(&avg);
        r.grid = Some(grid);
        r.factors = shown
            .into_iter()
            .map(|(id, h)| FactorHeatmap::new(id, h.into_values()))
            .collect();
        r.average = Some(avg.into_values());
        r.details
            .push(("kept factors".into(), format!("{}", kept_ids.len())));
        results.push(r);
    }
    let prepared = started.elapsed();

    let report = SearchReport {
        title: format!("deepfactor demo report: {}", file_name(&query_path)),
        query,
        results,
        settings: vec![
            (
                "what this is".into(),
                "DEMO: real photos, synthetic heatmaps, boxes and scores (no network was run)"
                    .into(),
            ),
            (
                "recipe".into(),
                "efficientnet-lite0 (stand-in grid: input 512, stride 32)".into(),
            ),
            (
                "box mode".into(),
                "filter (factors with > 75% of their mass in the box)".into(),
            ),
            ("query expansion".into(), "none".into()),
            ("photos".into(), photos.display().to_string()),
            (
                "label check".into(),
                "<b>not bold</b> & 'single' \"double\" <script>".into(),
            ),
            (
                "stand-ins prepared in".into(),
                format!("{:.0} ms", prepared.as_secs_f64() * 1e3),
            ),
        ],
    };
    std::fs::create_dir_all(&out).with_context(|| format!("{}: cannot create", out.display()))?;
    let html = out.join("report.html");
    let png = out.join("report.png");
    report.write_html(&html)?;
    report.write_sheet(&png)?;
    println!("{}", html.display());
    println!("{}", png.display());
    Ok(())
}

fn file_name(p: &Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// The image, its demo grid, and three stand-in factor heatmaps.
fn stand_in(path: &Path) -> Result<(RgbImage, CellGrid, Vec<Heatmap>)> {
    let img = load_rgb(path)?;
    let (w, h) = img.dimensions();
    let (iw, ih) = input_dims(w, h, DEFAULT_INPUT_SIZE, None);
    let grid = CellGrid {
        rows: ih.div_ceil(STRIDE) as usize,
        cols: iw.div_ceil(STRIDE) as usize,
        image_width: w,
        image_height: h,
    };
    let sal = saliency(&img, &grid);
    let peaks = peaks(&sal, &grid, FACTOR_IDS.len());
    let sigma = (grid.rows.min(grid.cols) as f32 / 5.0).max(1.0);
    let factors = peaks
        .iter()
        .map(|&(pr, pc)| {
            let values = (0..grid.len())
                .map(|i| {
                    let (r, c) = ((i / grid.cols) as f32, (i % grid.cols) as f32);
                    let d2 = (r - pr as f32).powi(2) + (c - pc as f32).powi(2);
                    sal[i] * (-d2 / (2.0 * sigma * sigma)).exp()
                })
                .collect();
            Ok(Heatmap::new(grid, values)?)
        })
        .collect::<Result<_>>()?;
    Ok((img, grid, factors))
}

/// Per cell: the mean colour distance of its pixels from the image's mean colour, smoothed
/// over the 3 × 3 neighbourhood.
fn saliency(img: &RgbImage, g: &CellGrid) -> Vec<f32> {
    let n = f64::from(img.width()) * f64::from(img.height());
    let mut mean = [0f64; 3];
    for p in img.pixels() {
        for k in 0..3 {
            mean[k] += f64::from(p[k]) / n;
        }
    }
    let mut sum = vec![0f64; g.len()];
    let mut count = vec![0f64; g.len()];
    let (cw, ch) = g.cell_size();
    for (x, y, p) in img.enumerate_pixels() {
        let c = ((x as f32 / cw) as usize).min(g.cols - 1);
        let r = ((y as f32 / ch) as usize).min(g.rows - 1);
        let d: f64 = (0..3).map(|k| (f64::from(p[k]) - mean[k]).powi(2)).sum();
        sum[r * g.cols + c] += d.sqrt();
        count[r * g.cols + c] += 1.0;
    }
    let raw: Vec<f64> = sum
        .iter()
        .zip(&count)
        .map(|(s, c)| s / c.max(1.0))
        .collect();
    let mut out = vec![0f32; g.len()];
    for r in 0..g.rows {
        for c in 0..g.cols {
            let (mut s, mut k) = (0.0, 0.0);
            for rr in r.saturating_sub(1)..=(r + 1).min(g.rows - 1) {
                for cc in c.saturating_sub(1)..=(c + 1).min(g.cols - 1) {
                    s += raw[rr * g.cols + cc];
                    k += 1.0;
                }
            }
            out[r * g.cols + c] = (s / k) as f32;
        }
    }
    out
}

/// The `k` strongest cells at least a fifth of the grid apart (fewer if the grid is tiny,
/// then repeated).
fn peaks(sal: &[f32], g: &CellGrid, k: usize) -> Vec<(usize, usize)> {
    let mut order: Vec<usize> = (0..sal.len()).collect();
    order.sort_by(|&a, &b| sal[b].total_cmp(&sal[a]));
    let min_d = (g.rows.max(g.cols) as f32 / 5.0).max(1.0);
    let mut out: Vec<(usize, usize)> = Vec::new();
    for i in order {
        let (r, c) = (i / g.cols, i % g.cols);
        let far = out.iter().all(|&(pr, pc)| {
            ((r as f32 - pr as f32).powi(2) + (c as f32 - pc as f32).powi(2)).sqrt() >= min_d
        });
        if far {
            out.push((r, c));
            if out.len() == k {
                break;
            }
        }
    }
    while out.len() < k {
        out.push(out[0]);
    }
    out
}

/// The factors' heatmaps averaged, each scaled to its own maximum first.
fn average(grid: CellGrid, factors: &[Heatmap]) -> Result<Heatmap> {
    let refs: Vec<&Heatmap> = factors.iter().collect();
    Ok(Heatmap::average(grid, &refs, &vec![1.0; refs.len()])?)
}

/// The box around the largest 4-connected blob of the cells in the top 30% of `heat` (the
/// thesis' rule, on the cells themselves).
fn localize(heat: &Heatmap) -> Option<BBox> {
    heat.component_box(Binarize::TopFraction(DEFAULT_TOP_FRACTION))
}
