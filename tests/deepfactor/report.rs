//! Reports: PNG sheets and HTML pages from real photos (when present) and synthetic images,
//! clear errors for bad input, and the page photographed in headless Chromium.

use crate::common;
use deepfactor::report::{
    FactorHeatmap, QueryView, ReportOptions, ResultView, SearchReport, DEFAULT_SHEET_THUMB,
};
use deepfactor::{BBox, CellGrid, Error};
use image::{Rgb, RgbImage};
use std::path::PathBuf;

/// Where tests leave pictures for a person to look at.
fn out_dir() -> PathBuf {
    let d = common::repo_root().join("target/report-test");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A blob heatmap on `grid`, peaking at cell `(r, c)`.
fn blob(grid: &CellGrid, r: usize, c: usize) -> Vec<f32> {
    (0..grid.len())
        .map(|i| {
            let (rr, cc) = ((i / grid.cols) as f32, (i % grid.cols) as f32);
            let d2 = (rr - r as f32).powi(2) + (cc - c as f32).powi(2);
            (-d2 / 4.0).exp()
        })
        .collect()
}

fn grid_for(w: u32, h: u32) -> CellGrid {
    CellGrid {
        rows: h.div_ceil(32) as usize,
        cols: w.div_ceil(32) as usize,
        image_width: w,
        image_height: h,
    }
}

/// A report over `images` (the first is the query), with two factors, boxes and averages.
fn report_over(images: Vec<(String, RgbImage)>) -> SearchReport {
    let mut it = images.into_iter();
    let (qname, qimg) = it.next().unwrap();
    let qgrid = grid_for(qimg.width(), qimg.height());
    let mut query = QueryView::new(qname, qimg);
    query.bbox = Some(
        BBox::new(
            qgrid.image_width as f32 * 0.2,
            qgrid.image_height as f32 * 0.2,
            qgrid.image_width as f32 * 0.7,
            qgrid.image_height as f32 * 0.8,
        )
        .unwrap(),
    );
    query.factors = vec![
        FactorHeatmap::new(5, blob(&qgrid, qgrid.rows / 2, qgrid.cols / 3)),
        FactorHeatmap::new(2, blob(&qgrid, qgrid.rows / 2, qgrid.cols / 2)),
    ];
    query.grid = Some(qgrid);
    let results = it
        .enumerate()
        .map(|(i, (name, img))| {
            let g = grid_for(img.width(), img.height());
            let mut r = ResultView::new(i + 1, name, img, 0.9 - 0.1 * i as f32);
            r.factors = vec![
                FactorHeatmap::new(5, blob(&g, g.rows / 3, g.cols / 3)),
                FactorHeatmap::new(2, blob(&g, g.rows / 2, 2 * g.cols / 3)),
            ];
            r.average = Some(blob(&g, g.rows / 2, g.cols / 2));
            // Partly outside the image: must be clipped, not refused.
            r.bbox = Some(
                BBox::new(
                    -20.0,
                    10.0,
                    g.image_width as f32 * 0.6,
                    g.image_height as f32 + 50.0,
                )
                .unwrap(),
            );
            r.grid = Some(g);
            r.details
                .push(("iou".into(), format!("{:.2}", 0.5 + 0.01 * i as f32)));
            r
        })
        .collect();
    SearchReport {
        title: "test report".into(),
        query,
        results,
        settings: vec![("box mode".into(), "filter".into())],
    }
}

/// Solid images of distinct colours and assorted shapes.
fn synthetic_images() -> Vec<(String, RgbImage, Rgb<u8>)> {
    let colours = [
        Rgb([200, 30, 30]),
        Rgb([30, 160, 40]),
        Rgb([40, 60, 210]),
        Rgb([220, 200, 40]),
        Rgb([30, 200, 200]),
        Rgb([150, 60, 170]),
    ];
    let sizes = [
        (300, 200),
        (200, 300),
        (256, 256),
        (640, 120),
        (90, 70),
        (1000, 800),
    ];
    colours
        .iter()
        .zip(sizes)
        .enumerate()
        .map(|(i, (c, (w, h)))| {
            (
                format!("synthetic-{i}.png"),
                RgbImage::from_pixel(w, h, *c),
                *c,
            )
        })
        .collect()
}

fn count_near(img: &RgbImage, c: Rgb<u8>, tol: i32) -> usize {
    img.pixels()
        .filter(|p| (0..3).all(|k| (i32::from(p[k]) - i32::from(c[k])).abs() <= tol))
        .count()
}

#[test]
fn sheet_from_synthetic_images_shows_every_image() {
    let images = synthetic_images();
    let colours: Vec<Rgb<u8>> = images.iter().map(|(_, _, c)| *c).collect();
    let mut report = report_over(images.into_iter().map(|(n, i, _)| (n, i)).collect());
    // The 90 × 70 image has a 3 × 3 grid that the blobs would tint all over: show it without
    // heatmaps (a result may have none).
    report.results[3].factors.clear();
    let path = out_dir().join("synthetic-sheet.png");
    report.write_sheet(&path).unwrap();
    let sheet = image::open(&path).unwrap().into_rgb8();
    // Four columns of 256-pixel tiles, 16-pixel margins, 12-pixel gaps.
    assert_eq!(sheet.width(), 2 * 16 + 4 * DEFAULT_SHEET_THUMB + 3 * 12);
    // Query row (query + 2 factors) and two result rows of 256 + caption.
    assert!(
        sheet.height() > 3 * DEFAULT_SHEET_THUMB,
        "{}",
        sheet.height()
    );
    // Every image shows: its colour, untouched by overlays somewhere, covers a good area
    // (the smallest, 90 × 70, is not enlarged; the query shows three times).
    for (i, c) in colours.iter().enumerate() {
        let n = count_near(&sheet, *c, 2);
        assert!(n > 1500, "image {i} colour {c:?}: {n} pixels");
    }
    // Boxes are drawn white.
    assert!(count_near(&sheet, Rgb([255, 255, 255]), 0) > 500);
}

#[test]
fn sheet_from_real_photos() {
    let Some(dir) = common::photos() else { return };
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg" || e == "png"))
        .collect();
    names.sort();
    assert!(names.len() >= 2, "{}: too few photos", dir.display());
    let images: Vec<(String, RgbImage)> = names
        .iter()
        .map(|p| {
            let img = deepfactor::images::load_rgb(p).unwrap();
            (p.file_name().unwrap().to_string_lossy().into_owned(), img)
        })
        .collect();
    let mut report = report_over(images);
    // Results given by path: the renderer decodes them.
    for (r, p) in report.results.iter_mut().zip(names.iter().skip(1)) {
        r.image = p.clone().into();
    }
    let path = out_dir().join("photos-sheet.png");
    report.write_sheet(&path).unwrap();
    let sheet = image::open(&path).unwrap().into_rgb8();
    let distinct: std::collections::HashSet<[u8; 3]> = sheet.pixels().map(|p| p.0).collect();
    assert!(
        distinct.len() > 5000,
        "only {} colours: photos missing?",
        distinct.len()
    );
    let html = out_dir().join("photos-report.html");
    report.write_html(&html).unwrap();
    eprintln!("wrote {} and {}", path.display(), html.display());
}

/// Decodes standard base64 (test helper; the library only encodes).
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("bad base64 byte {c}"),
        }
    };
    let mut out = Vec::new();
    for chunk in s.as_bytes().chunks(4) {
        let pad = chunk.iter().filter(|&&c| c == b'=').count();
        let n = chunk
            .iter()
            .map(|&c| if c == b'=' { 0 } else { val(c) })
            .fold(0u32, |acc, v| (acc << 6) | v);
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    out
}

#[test]
fn html_is_self_contained_escaped_and_its_pictures_decode() {
    let mut images: Vec<(String, RgbImage)> = synthetic_images()
        .into_iter()
        .take(3)
        .map(|(n, i, _)| (n, i))
        .collect();
    images[0].0 = r#"<script>alert("q")</script> & 'cat'.jpg"#.into();
    images[1].0 = "a<b>&amp;\"c\".png".into();
    let mut report = report_over(images);
    report.title = "T <i>itle</i>".into();
    report
        .settings
        .push(("recipe <x>".into(), "efficientnet & \"head\"".into()));
    let page = report.to_html().unwrap();
    std::fs::write(out_dir().join("escaping.html"), &page).unwrap();

    // Escaped text, no raw markup from data.
    assert!(!page.contains("<script>"), "raw script tag in the page");
    assert!(!page.contains("<i>itle"));
    assert!(
        page.contains("&lt;script&gt;alert(&quot;q&quot;)&lt;/script&gt; &amp; &#39;cat&#39;.jpg")
    );
    assert!(page.contains("a&lt;b&gt;&amp;amp;&quot;c&quot;.png"));
    assert!(page.contains("recipe &lt;x&gt;"));
    assert!(page.contains("efficientnet &amp; &quot;head&quot;"));
    assert!(page.contains("<title>T &lt;i&gt;itle&lt;/i&gt;</title>"));

    // Offline: nothing refers outside the page.
    for needle in ["http://", "https://", "url(", "@import", "<link", "<script"] {
        let hits = page.matches(needle).count();
        assert_eq!(hits, 0, "{needle:?} occurs {hits} times");
    }

    // Pictures: query + 2 kept factors + per result (overlay + averaged heatmap).
    let srcs: Vec<&str> = page.split("src=\"").skip(1).collect();
    assert_eq!(srcs.len(), 1 + 2 + 2 * 2);
    for s in &srcs {
        let uri = &s[..s.find('"').unwrap()];
        let b64 = uri
            .strip_prefix("data:image/jpeg;base64,")
            .unwrap_or_else(|| panic!("not an embedded JPEG: {}", &uri[..40.min(uri.len())]));
        let img = image::load_from_memory(&base64_decode(b64)).unwrap();
        assert!(img.width() > 0 && img.height() > 0);
    }
    // The query (300 × 200) is shown whole, not enlarged.
    let first = srcs[0];
    let img = image::load_from_memory(&base64_decode(
        &first["data:image/jpeg;base64,".len()..first.find('"').unwrap()],
    ))
    .unwrap();
    assert_eq!((img.width(), img.height()), (300, 200));
    assert!(page.contains("width=\"300\" height=\"200\""));
    // Scores, details and the box are written out.
    assert!(page.contains("score 0.9000") && page.contains("iou: 0.50"));
    assert!(
        page.contains("box 60, 40 – 210, 160 (150×120)"),
        "query box text"
    );
}

#[test]
fn bad_input_gives_clear_errors() {
    let imgs: Vec<(String, RgbImage)> = synthetic_images()
        .into_iter()
        .take(2)
        .map(|(n, i, _)| (n, i))
        .collect();

    let mut missing = report_over(imgs.clone());
    missing.results[0].image = PathBuf::from("/no/such/dir/photo-42.jpg").into();
    let err = missing.render_sheet().unwrap_err();
    assert!(err.to_string().contains("photo-42.jpg"), "{err}");
    assert!(missing.to_html().is_err());

    let mut wrong_grid = report_over(imgs.clone());
    let g = wrong_grid.results[0].grid.as_mut().unwrap();
    g.image_width += 1;
    let err = wrong_grid.render_sheet().unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Image { .. }), "{err:?}");
    assert!(
        msg.contains("synthetic-1.png") && msg.contains("grid"),
        "{msg}"
    );

    let mut short = report_over(imgs.clone());
    short.results[0].factors[1].values.pop();
    let msg = short.to_html().unwrap_err().to_string();
    assert!(
        msg.contains("result #1") && msg.contains("factor 2"),
        "{msg}"
    );

    let mut no_grid = report_over(imgs.clone());
    no_grid.query.grid = None;
    let msg = no_grid.validate().unwrap_err().to_string();
    assert!(msg.contains("query") && msg.contains("grid"), "{msg}");

    let mut nan = report_over(imgs.clone());
    nan.results[0].score = f32::NAN;
    assert!(nan.validate().unwrap_err().to_string().contains("score"));

    let mut twice = report_over(imgs.clone());
    twice.query.factors[1].factor = 5;
    assert!(twice.validate().unwrap_err().to_string().contains("twice"));

    let mut empty = report_over(imgs);
    empty.results[0].image = RgbImage::new(0, 0).into();
    assert!(empty.render_sheet().is_err());

    assert!(ReportOptions::builder().sheet_thumb(10).build().is_err());
    assert!(ReportOptions::builder().sheet_columns(0).build().is_err());
    assert!(ReportOptions::builder().overlay_alpha(0.0).build().is_err());
    assert!(ReportOptions::builder()
        .overlay_alpha(f32::NAN)
        .build()
        .is_err());
    assert!(ReportOptions::builder().jpeg_quality(0).build().is_err());
    let o = ReportOptions::builder()
        .sheet_columns(2)
        .sheet_thumb(128)
        .build()
        .unwrap();
    assert_eq!((o.sheet_columns(), o.sheet_thumb()), (2, 128));
}

#[test]
fn empty_results_and_no_heatmaps_still_render() {
    let img = RgbImage::from_pixel(120, 80, Rgb([90, 90, 90]));
    let report = SearchReport {
        title: String::new(),
        query: QueryView::new("plain.jpg", img),
        results: Vec::new(),
        settings: Vec::new(),
    };
    let sheet = report.render_sheet().unwrap();
    assert!(sheet.width() >= 120 && sheet.height() >= 80);
    let page = report.to_html().unwrap();
    assert!(page.contains("No results."));
}

/// The page, opened in headless Chromium by `scripts/report_screenshot.sh`: the embedded
/// pictures must show. Skips when Chromium is not installed.
#[test]
fn html_renders_in_headless_chromium() {
    let found = ["chromium", "chromium-browser"].iter().any(|b| {
        std::process::Command::new("sh")
            .args(["-c", &format!("command -v {b}")])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !found {
        eprintln!("SKIP: chromium is not installed (apt-get install -y chromium)");
        return;
    }
    // The query is a large patch of one colour the page does not otherwise use.
    let marker = Rgb([250, 20, 200]);
    let mut images: Vec<(String, RgbImage)> = synthetic_images()
        .into_iter()
        .take(4)
        .map(|(n, i, _)| (n, i))
        .collect();
    images[0] = (
        "marker <&> \"q\".png".into(),
        RgbImage::from_pixel(600, 400, marker),
    );
    let mut report = report_over(images);
    report.query.factors.clear();
    report.query.bbox = None;
    report.query.grid = None;
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("page & <name>.html");
    report.write_html(&page).unwrap();

    let out = out_dir().join("chromium");
    let status = std::process::Command::new("bash")
        .arg(common::repo_root().join("scripts/report_screenshot.sh"))
        .arg(&out)
        .arg(&page)
        .env("WIDTH", "1200")
        .env("HEIGHT", "900")
        .status()
        .unwrap();
    assert!(status.success(), "screenshot script failed: {status}");
    let shot = image::open(out.join("screenshot.png")).unwrap().into_rgb8();
    assert_eq!(shot.dimensions(), (1200, 900));
    // The query is drawn at up to 640 CSS pixels wide: tens of thousands of marker pixels.
    let n = count_near(&shot, marker, 12);
    assert!(
        n > 40_000,
        "only {n} marker pixels: the embedded query picture did not render"
    );
    // The results' colours show too (JPEG and scaling blur edges, not the middle).
    let n = count_near(&shot, Rgb([30, 160, 40]), 16);
    assert!(
        n > 1000,
        "result #1 missing from the screenshot ({n} pixels)"
    );
    eprintln!("screenshot: {}", out.join("screenshot.png").display());
}
