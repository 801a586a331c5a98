//! Visual reports of a search: the pictures a person looks at instead of reading numbers.
//!
//! A [`SearchReport`] is plain data — the query (its image, box and kept-factor heatmaps), the
//! ranked results (score, heatmaps, predicted box) and the run's settings — rendered two ways:
//!
//! - [`SearchReport::write_html`]: one self-contained HTML page. Images are embedded as
//!   `data:` URIs (JPEG), so the single file can be moved, mailed or archived and opens offline;
//!   it fetches nothing and needs no JavaScript. All text is HTML-escaped.
//! - [`SearchReport::write_sheet`]: one PNG contact sheet, a grid of thumbnails with the query
//!   (and each kept factor on its own) on the first row(s) and the results after, in rank order,
//!   labelled with an embedded bitmap font (no system fonts needed).
//!
//! Coordinates: boxes are in pixels of the original image (after EXIF orientation, as
//! [`crate::images::load_rgb`] decodes it); heatmaps are at feature-map
//! resolution, one value per cell of a [`CellGrid`] whose image size must equal the image's.
//! The renderer upsamples them ([`Heatmap::upsample`]) to whatever size it draws.
//!
//! Colours: every factor id gets one colour of a fixed palette for the whole report, in
//! order of first appearance (the query's kept factors first), so a factor looks the same on
//! the query and on every result. Each pixel of an overlay takes the colour of its strongest
//! factor, with opacity by strength. A result's averaged
//! heatmap, when given, is drawn with the perceptual viridis map. Boxes are white with a dark
//! rim, their thickness scaling with the picture.
//!
//! ```no_run
//! use deepfactor::report::{QueryView, ResultView, SearchReport, FactorHeatmap};
//! use deepfactor::{BBox, CellGrid};
//! # fn main() -> deepfactor::Result<()> {
//! let grid = CellGrid { rows: 2, cols: 3, image_width: 600, image_height: 400 };
//! let mut query = QueryView::new("query.jpg", "photos/query.jpg");
//! query.bbox = Some(BBox::new(100.0, 50.0, 400.0, 350.0)?);
//! query.grid = Some(grid);
//! query.factors.push(FactorHeatmap::new(4, vec![0.0, 1.0, 0.2, 0.0, 0.8, 0.1]));
//! let mut hit = ResultView::new(1, "match.jpg", "photos/match.jpg", 0.83);
//! hit.bbox = Some(BBox::new(120.0, 60.0, 380.0, 300.0)?);
//! let report = SearchReport {
//!     title: "Search report".into(),
//!     query,
//!     results: vec![hit],
//!     settings: vec![("box mode".into(), "filter".into())],
//! };
//! report.write_html("report.html")?;
//! report.write_sheet("report.png")?;
//! # Ok(())
//! # }
//! ```

mod color;
mod coseg;
mod draw;
pub(crate) mod font; // also the probe plots' text
mod html;
mod overlay;
mod sheet;

pub use color::palette;
pub use coseg::{coseg_overlay, CosegReport, CosegView};
pub use html::{base64_encode, escape_html};

use crate::heatmap::Heatmap;
use crate::images::load_rgb;
use crate::query::SearchResults;
use crate::{BBox, CellGrid, Error, Recipe, Result};
use image::{imageops::FilterType, Rgb, RgbImage};
use std::borrow::Cow;
use std::path::{Path, PathBuf};

/// Default longest side of a thumbnail on a PNG sheet, in pixels.
pub const DEFAULT_SHEET_THUMB: u32 = 256;
/// Default number of thumbnails per row of a PNG sheet.
pub const DEFAULT_SHEET_COLUMNS: usize = 4;
/// Default longest side of the query picture in the HTML report, in pixels.
pub const DEFAULT_HTML_QUERY_SIDE: u32 = 640;
/// Default longest side of result and factor pictures in the HTML report, in pixels.
pub const DEFAULT_HTML_RESULT_SIDE: u32 = 384;
/// Default opacity of a heatmap overlay at its strongest.
pub const DEFAULT_OVERLAY_ALPHA: f32 = 0.55;
/// Default JPEG quality of the pictures embedded in the HTML report.
pub const DEFAULT_JPEG_QUALITY: u8 = 85;

/// Where a picture comes from: a file (decoded when rendering) or pixels already decoded.
#[derive(Debug, Clone)]
pub enum ImageSource {
    /// An image file, decoded with [`load_rgb`] (EXIF orientation applied).
    Path(PathBuf),
    /// Decoded pixels.
    Pixels(RgbImage),
}

impl From<PathBuf> for ImageSource {
    fn from(p: PathBuf) -> Self {
        ImageSource::Path(p)
    }
}

impl From<&Path> for ImageSource {
    fn from(p: &Path) -> Self {
        ImageSource::Path(p.to_path_buf())
    }
}

impl From<&str> for ImageSource {
    fn from(p: &str) -> Self {
        ImageSource::Path(PathBuf::from(p))
    }
}

impl From<RgbImage> for ImageSource {
    fn from(img: RgbImage) -> Self {
        ImageSource::Pixels(img)
    }
}

/// One factor's heatmap on one image: a value per cell of the view's grid, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct FactorHeatmap {
    /// The factor's id (its NMF component); the same id has the same colour everywhere.
    pub factor: usize,
    /// One non-negative value per grid cell, row-major.
    pub values: Vec<f32>,
}

impl FactorHeatmap {
    /// A heatmap of factor `factor`.
    pub fn new(factor: usize, values: Vec<f32>) -> Self {
        FactorHeatmap { factor, values }
    }
}

/// The query as shown: its image, its box, and the heatmaps of the factors it kept.
#[derive(Debug, Clone)]
pub struct QueryView {
    /// Label shown (usually the file name); any text, escaped on output.
    pub name: String,
    /// The query image.
    pub image: ImageSource,
    /// The query's region, in original-image pixels.
    pub bbox: Option<BBox>,
    /// The feature-map grid of the heatmaps (required when there are heatmaps).
    pub grid: Option<CellGrid>,
    /// The kept factors' heatmaps, in the order to show them.
    pub factors: Vec<FactorHeatmap>,
}

impl QueryView {
    /// A query view with no box and no heatmaps.
    pub fn new(name: impl Into<String>, image: impl Into<ImageSource>) -> Self {
        QueryView {
            name: name.into(),
            image: image.into(),
            bbox: None,
            grid: None,
            factors: Vec::new(),
        }
    }
}

/// One ranked result as shown.
#[derive(Debug, Clone)]
pub struct ResultView {
    /// 1-based rank.
    pub rank: usize,
    /// Label shown (usually the file name or database id); any text, escaped on output.
    pub name: String,
    /// The result image.
    pub image: ImageSource,
    /// The similarity score.
    pub score: f32,
    /// The predicted region, in original-image pixels.
    pub bbox: Option<BBox>,
    /// The feature-map grid of the heatmaps (required when there are heatmaps).
    pub grid: Option<CellGrid>,
    /// Per-factor heatmaps on this image (the query's kept factors), overlaid one colour each.
    pub factors: Vec<FactorHeatmap>,
    /// The averaged heatmap used for localization, shown in viridis (HTML only).
    pub average: Option<Vec<f32>>,
    /// Further facts to show, as `(name, value)` (e.g. the IoU with ground truth).
    pub details: Vec<(String, String)>,
}

impl ResultView {
    /// A result view with no box, no heatmaps and no details.
    pub fn new(
        rank: usize,
        name: impl Into<String>,
        image: impl Into<ImageSource>,
        score: f32,
    ) -> Self {
        ResultView {
            rank,
            name: name.into(),
            image: image.into(),
            score,
            bbox: None,
            grid: None,
            factors: Vec::new(),
            average: None,
            details: Vec::new(),
        }
    }
}

/// A search, ready to be drawn: see the [module documentation](self).
#[derive(Debug, Clone)]
pub struct SearchReport {
    /// Page and sheet title.
    pub title: String,
    /// The query.
    pub query: QueryView,
    /// The results, in the order to show them (normally by rank).
    pub results: Vec<ResultView>,
    /// The run's settings as `(name, value)` in display order: recipe, box mode, query
    /// expansion, timings, …
    pub settings: Vec<(String, String)>,
}

impl SearchReport {
    /// Checks everything that can be checked without decoding images: heatmaps have a grid,
    /// one finite value per cell, no factor twice on one image; boxes and scores are finite.
    pub fn validate(&self) -> Result<()> {
        let q = &self.query;
        check_view(
            &format!("query {:?}", q.name),
            q.bbox.as_ref(),
            q.grid.as_ref(),
            &q.factors,
            None,
        )?;
        for r in &self.results {
            let what = format!("result #{} {:?}", r.rank, r.name);
            check_view(
                &what,
                r.bbox.as_ref(),
                r.grid.as_ref(),
                &r.factors,
                r.average.as_deref(),
            )?;
            if !r.score.is_finite() {
                return Err(Error::invalid(format!("{what}: score is {}", r.score)));
            }
        }
        Ok(())
    }

    /// Every factor id of the report with its colour, in order of first appearance (the
    /// query's kept factors first, then factors that only results have).
    pub fn factor_colors(&self) -> Vec<(usize, Rgb<u8>)> {
        let mut ids: Vec<usize> = Vec::new();
        let all = self
            .query
            .factors
            .iter()
            .chain(self.results.iter().flat_map(|r| r.factors.iter()));
        for f in all {
            if !ids.contains(&f.factor) {
                ids.push(f.factor);
            }
        }
        ids.into_iter()
            .enumerate()
            .map(|(i, id)| (id, color::palette(i)))
            .collect()
    }

    /// The HTML page, with [`ReportOptions::default`].
    pub fn to_html(&self) -> Result<String> {
        self.to_html_with(&ReportOptions::default())
    }

    /// The HTML page.
    pub fn to_html_with(&self, options: &ReportOptions) -> Result<String> {
        self.validate()?;
        html::render(self, options)
    }

    /// Writes the HTML page to `path` (see the [module documentation](self)).
    pub fn write_html(&self, path: impl AsRef<Path>) -> Result<()> {
        self.write_html_with(path, &ReportOptions::default())
    }

    /// Writes the HTML page to `path` with `options`.
    pub fn write_html_with(&self, path: impl AsRef<Path>, options: &ReportOptions) -> Result<()> {
        let page = self.to_html_with(options)?;
        let path = path.as_ref();
        std::fs::write(path, page).map_err(|e| Error::io(path, e))
    }

    /// The PNG sheet as an image, with [`ReportOptions::default`].
    pub fn render_sheet(&self) -> Result<RgbImage> {
        self.render_sheet_with(&ReportOptions::default())
    }

    /// The PNG sheet as an image.
    pub fn render_sheet_with(&self, options: &ReportOptions) -> Result<RgbImage> {
        self.validate()?;
        sheet::render(self, options)
    }

    /// Writes the PNG sheet to `path`.
    pub fn write_sheet(&self, path: impl AsRef<Path>) -> Result<()> {
        self.write_sheet_with(path, &ReportOptions::default())
    }

    /// Writes the PNG sheet to `path` with `options`.
    pub fn write_sheet_with(&self, path: impl AsRef<Path>, options: &ReportOptions) -> Result<()> {
        let img = self.render_sheet_with(options)?;
        let path = path.as_ref();
        let mut bytes = Vec::new();
        img.write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .map_err(|e| Error::image(path, format!("cannot encode the sheet as PNG: {e}")))?;
        std::fs::write(path, bytes).map_err(|e| Error::io(path, e))
    }
}

impl SearchReport {
    /// The visual report of a search: the query with its region and kept heatmaps, each
    /// hit with its score, factor overlay and predicted box. `query_image` is the query file;
    /// `settings` are shown as a table (recipe, box mode, expansion, timings are added).
    pub fn from_results(
        results: &SearchResults,
        query_image: &Path,
        recipe: &Recipe,
        settings: Vec<(String, String)>,
    ) -> SearchReport {
        let name = query_image.file_name().map_or_else(
            || query_image.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let mut query = QueryView::new(name.clone(), query_image);
        query.bbox = results.query.region;
        query.grid = Some(results.query.grid);
        // The joint factorization's kept factors if it ran (their numbers label the hits'
        // overlays), else the query's own kept factors.
        query.factors = match &results.query.joint {
            Some(j) => j
                .kept
                .iter()
                .zip(&j.query_heatmaps)
                .map(|(&k, h)| FactorHeatmap::new(k, h.values().to_vec()))
                .collect(),
            None => results
                .query
                .kept
                .iter()
                .zip(&results.query.heatmaps)
                .map(|(&k, h)| FactorHeatmap::new(k, h.values().to_vec()))
                .collect(),
        };
        let views = results
            .hits
            .iter()
            .map(|h| {
                let file = h.path.file_name().map_or_else(
                    || h.path.display().to_string(),
                    |n| n.to_string_lossy().into_owned(),
                );
                let mut r = ResultView::new(h.rank, file, h.path.as_path(), h.score);
                r.details.push(("id".into(), h.id.to_string()));
                r.details
                    .push(("path".into(), h.path.display().to_string()));
                if let (Some(g), Some(f)) = (h.global_score, h.factor_score) {
                    r.details.push(("global score".into(), format!("{g:.4}")));
                    r.details.push(("factor score".into(), format!("{f:.4}")));
                }
                if !h.factor_matches.is_empty() {
                    r.details.push((
                        "factor matches (query → image, cosine)".into(),
                        crate::query::describe_matches(&h.factor_matches),
                    ));
                }
                if let Some(loc) = &h.location {
                    if let Some(st) = loc.strength {
                        r.details
                            .push(("region strength".into(), format!("{st:.2} of the query's")));
                    }
                    r.grid = Some(*loc.heatmap.grid());
                    r.bbox = loc.bbox;
                    r.factors = loc
                        .factor_maps
                        .iter()
                        .map(|(k, m)| FactorHeatmap::new(*k, m.values().to_vec()))
                        .collect();
                    r.average = Some(loc.heatmap.values().to_vec());
                }
                r
            })
            .collect();
        let mut all = vec![("recipe".to_string(), recipe.describe())];
        if let Some(b) = &results.query.region {
            all.push((
                "region".into(),
                format!(
                    "{:.0}, {:.0} – {:.0}, {:.0} ({})",
                    b.x1, b.y1, b.x2, b.y2, results.query.box_mode
                ),
            ));
            if results.query.fallback {
                all.push((
                    "region note".into(),
                    "no factor passed the mass threshold; the one with the largest share was used"
                        .into(),
                ));
            }
        }
        match (&results.query.factor_search, &results.query.factor_note) {
            (Some(f), _) => all.push((
                "factor-level search".into(),
                format!(
                    "λ {}, {}, query factors {:?}",
                    f.get_weight(),
                    f.get_aggregation(),
                    results.query.query_factors
                ),
            )),
            (None, Some(note)) => all.push(("factor-level search".into(), note.clone())),
            (None, None) => {}
        }
        all.extend(settings);
        let t = &results.timings;
        all.push((
            "time".into(),
            format!(
                "{:.0} ms (features {:.0}, describe {:.0}, search {:.0}, localize {:.0})",
                t.total_ms, t.features_ms, t.describe_ms, t.search_ms, t.localize_ms
            ),
        ));
        SearchReport {
            title: format!("deepfactor search: {name}"),
            query,
            results: views,
            settings: all,
        }
    }
}

fn check_view(
    what: &str,
    bbox: Option<&BBox>,
    grid: Option<&CellGrid>,
    factors: &[FactorHeatmap],
    average: Option<&[f32]>,
) -> Result<()> {
    if let Some(b) = bbox {
        if ![b.x1, b.y1, b.x2, b.y2].iter().all(|v| v.is_finite()) {
            return Err(Error::invalid(format!(
                "{what}: box {b:?} has a non-finite coordinate"
            )));
        }
    }
    let has_heat = !factors.is_empty() || average.is_some();
    let grid = match grid {
        Some(g) => g,
        None if has_heat => {
            return Err(Error::invalid(format!(
                "{what}: heatmaps given without their grid"
            )))
        }
        None => return Ok(()),
    };
    for (i, f) in factors.iter().enumerate() {
        Heatmap::new(*grid, f.values.clone())
            .map_err(|e| Error::invalid(format!("{what}: factor {}: {e}", f.factor)))?;
        if factors[..i].iter().any(|g| g.factor == f.factor) {
            return Err(Error::invalid(format!(
                "{what}: factor {} appears twice",
                f.factor
            )));
        }
    }
    if let Some(avg) = average {
        Heatmap::new(*grid, avg.to_vec())
            .map_err(|e| Error::invalid(format!("{what}: averaged heatmap: {e}")))?;
    }
    Ok(())
}

/// How reports are drawn. Built with [`ReportOptions::builder`]; defaults in the
/// `DEFAULT_*` constants of this module.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportOptions {
    sheet_thumb: u32,
    sheet_columns: usize,
    html_query_side: u32,
    html_result_side: u32,
    overlay_alpha: f32,
    jpeg_quality: u8,
}

impl Default for ReportOptions {
    fn default() -> Self {
        ReportOptions {
            sheet_thumb: DEFAULT_SHEET_THUMB,
            sheet_columns: DEFAULT_SHEET_COLUMNS,
            html_query_side: DEFAULT_HTML_QUERY_SIDE,
            html_result_side: DEFAULT_HTML_RESULT_SIDE,
            overlay_alpha: DEFAULT_OVERLAY_ALPHA,
            jpeg_quality: DEFAULT_JPEG_QUALITY,
        }
    }
}

impl ReportOptions {
    /// A builder starting from the defaults.
    pub fn builder() -> ReportOptionsBuilder {
        ReportOptionsBuilder(ReportOptions::default())
    }

    /// Longest side of a sheet thumbnail.
    pub fn sheet_thumb(&self) -> u32 {
        self.sheet_thumb
    }

    /// Thumbnails per sheet row.
    pub fn sheet_columns(&self) -> usize {
        self.sheet_columns
    }

    /// Longest side of the HTML query picture.
    pub fn html_query_side(&self) -> u32 {
        self.html_query_side
    }

    /// Longest side of HTML result and factor pictures.
    pub fn html_result_side(&self) -> u32 {
        self.html_result_side
    }

    /// Overlay opacity at a heatmap's strongest.
    pub fn overlay_alpha(&self) -> f32 {
        self.overlay_alpha
    }

    /// JPEG quality of embedded HTML pictures.
    pub fn jpeg_quality(&self) -> u8 {
        self.jpeg_quality
    }
}

/// Builder of [`ReportOptions`]; [`build`](Self::build) validates.
#[derive(Debug, Clone)]
pub struct ReportOptionsBuilder(ReportOptions);

impl ReportOptionsBuilder {
    /// Longest side of a sheet thumbnail, 64 to 2048 (default [`DEFAULT_SHEET_THUMB`]).
    pub fn sheet_thumb(mut self, pixels: u32) -> Self {
        self.0.sheet_thumb = pixels;
        self
    }

    /// Thumbnails per sheet row, 1 to 32 (default [`DEFAULT_SHEET_COLUMNS`]).
    pub fn sheet_columns(mut self, columns: usize) -> Self {
        self.0.sheet_columns = columns;
        self
    }

    /// Longest side of the HTML query picture, 64 to 4096 (default
    /// [`DEFAULT_HTML_QUERY_SIDE`]).
    pub fn html_query_side(mut self, pixels: u32) -> Self {
        self.0.html_query_side = pixels;
        self
    }

    /// Longest side of HTML result and factor pictures, 64 to 4096 (default
    /// [`DEFAULT_HTML_RESULT_SIDE`]).
    pub fn html_result_side(mut self, pixels: u32) -> Self {
        self.0.html_result_side = pixels;
        self
    }

    /// Overlay opacity at a heatmap's strongest, in `(0, 1]` (default
    /// [`DEFAULT_OVERLAY_ALPHA`]).
    pub fn overlay_alpha(mut self, alpha: f32) -> Self {
        self.0.overlay_alpha = alpha;
        self
    }

    /// JPEG quality of embedded HTML pictures, 1 to 100 (default [`DEFAULT_JPEG_QUALITY`]).
    pub fn jpeg_quality(mut self, quality: u8) -> Self {
        self.0.jpeg_quality = quality;
        self
    }

    /// The options, or an error naming the first value out of range.
    pub fn build(self) -> Result<ReportOptions> {
        let o = self.0;
        let range = |name: &str, v: u32, lo: u32, hi: u32| -> Result<()> {
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(Error::invalid(format!(
                    "report option {name} = {v} is outside {lo}..={hi}"
                )))
            }
        };
        range("sheet_thumb", o.sheet_thumb, 64, 2048)?;
        range(
            "sheet_columns",
            o.sheet_columns.min(u32::MAX as usize) as u32,
            1,
            32,
        )?;
        range("html_query_side", o.html_query_side, 64, 4096)?;
        range("html_result_side", o.html_result_side, 64, 4096)?;
        range("jpeg_quality", u32::from(o.jpeg_quality), 1, 100)?;
        if !(o.overlay_alpha > 0.0 && o.overlay_alpha <= 1.0) {
            return Err(Error::invalid(format!(
                "report option overlay_alpha = {} is outside (0, 1]",
                o.overlay_alpha
            )));
        }
        Ok(o)
    }
}

/// The pixels of a view's image, decoded if need be; `name` is used in errors about pixels
/// given in memory.
fn load<'a>(source: &'a ImageSource, name: &str) -> Result<Cow<'a, RgbImage>> {
    match source {
        ImageSource::Path(p) => load_rgb(p).map(Cow::Owned),
        ImageSource::Pixels(img) => {
            if img.width() == 0 || img.height() == 0 {
                return Err(Error::image(name, "image has no pixels"));
            }
            Ok(Cow::Borrowed(img))
        }
    }
}

/// A name for errors about a view's image: its path, or its label.
fn source_name(source: &ImageSource, name: &str) -> PathBuf {
    match source {
        ImageSource::Path(p) => p.clone(),
        ImageSource::Pixels(_) => PathBuf::from(name),
    }
}

/// What to draw on one picture.
struct Layers<'a> {
    grid: Option<&'a CellGrid>,
    factors: Vec<(Heatmap, Rgb<u8>)>,
    bbox: Option<&'a BBox>,
}

/// The heatmaps of `factors` over `grid` with their colours in `colors` (none without a
/// grid); the values were checked by [`SearchReport::validate`].
fn colored_heatmaps(
    grid: Option<&CellGrid>,
    factors: &[&FactorHeatmap],
    colors: &[(usize, Rgb<u8>)],
) -> Result<Vec<(Heatmap, Rgb<u8>)>> {
    let Some(g) = grid else {
        return Ok(Vec::new());
    };
    factors
        .iter()
        .map(|f| {
            Ok((
                Heatmap::new(*g, f.values.clone())?,
                color_of(colors, f.factor),
            ))
        })
        .collect()
}

/// `img` scaled so its longest side is at most `max_side` (never enlarged).
pub(crate) fn thumbnail(img: &RgbImage, max_side: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    let long = w.max(h);
    if long <= max_side {
        return img.clone();
    }
    let s = max_side as f64 / long as f64;
    let tw = ((w as f64 * s).round() as u32).max(1);
    let th = ((h as f64 * s).round() as u32).max(1);
    image::imageops::resize(img, tw, th, FilterType::Triangle)
}

/// Draws a view: the thumbnail of `img`, with the factor overlay and the box.
fn render_view(
    img: &RgbImage,
    err_name: &Path,
    layers: &Layers<'_>,
    max_side: u32,
    alpha: f32,
) -> Result<RgbImage> {
    if let Some(g) = layers.grid {
        if (g.image_width, g.image_height) != img.dimensions() {
            return Err(Error::image(
                err_name,
                format!(
                    "the heatmap grid is for a {}×{} image, but the image is {}×{}",
                    g.image_width,
                    g.image_height,
                    img.width(),
                    img.height()
                ),
            ));
        }
    }
    let mut thumb = thumbnail(img, max_side);
    if !layers.factors.is_empty() {
        let maps: Vec<(&Heatmap, Rgb<u8>)> = layers.factors.iter().map(|(h, c)| (h, *c)).collect();
        overlay::overlay_factors(&mut thumb, &maps, alpha);
    }
    if let Some(b) = layers.bbox {
        let sx = thumb.width() as f32 / img.width() as f32;
        let sy = thumb.height() as f32 / img.height() as f32;
        let t = draw::box_thickness(thumb.width(), thumb.height());
        draw::draw_box(&mut thumb, &b.scale(sx, sy), draw::BOX_COLOR, t);
    }
    Ok(thumb)
}

/// The colour of factor `id` in `colors` (grey if absent, which `factor_colors` rules out).
fn color_of(colors: &[(usize, Rgb<u8>)], id: usize) -> Rgb<u8> {
    colors
        .iter()
        .find(|(f, _)| *f == id)
        .map_or(Rgb([128, 128, 128]), |(_, c)| *c)
}

/// Rendered pictures of the query: combined overlay, then one per kept factor.
struct QueryPictures {
    main: RgbImage,
    per_factor: Vec<(usize, Rgb<u8>, Option<f32>, RgbImage)>,
}

fn render_query(
    report: &SearchReport,
    colors: &[(usize, Rgb<u8>)],
    main_side: u32,
    factor_side: u32,
    alpha: f32,
) -> Result<QueryPictures> {
    let q = &report.query;
    let img = load(&q.image, &q.name)?;
    let err_name = source_name(&q.image, &q.name);
    let all = Layers {
        grid: q.grid.as_ref(),
        factors: colored_heatmaps(
            q.grid.as_ref(),
            &q.factors.iter().collect::<Vec<_>>(),
            colors,
        )?,
        bbox: q.bbox.as_ref(),
    };
    let main = render_view(&img, &err_name, &all, main_side, alpha)?;
    let mut per_factor = Vec::new();
    for f in &q.factors {
        let c = color_of(colors, f.factor);
        let one = Layers {
            grid: q.grid.as_ref(),
            factors: colored_heatmaps(q.grid.as_ref(), &[f], colors)?,
            bbox: q.bbox.as_ref(),
        };
        let mass = match (one.factors.first(), q.bbox.as_ref()) {
            (Some((h, _)), Some(b)) => Some(h.mass_inside(b)),
            _ => None,
        };
        per_factor.push((
            f.factor,
            c,
            mass,
            render_view(&img, &err_name, &one, factor_side, alpha)?,
        ));
    }
    Ok(QueryPictures { main, per_factor })
}

/// Rendered pictures of one result: the overlay, and the averaged heatmap when given.
struct ResultPictures {
    overlay: RgbImage,
    average: Option<RgbImage>,
}

fn render_result(
    r: &ResultView,
    colors: &[(usize, Rgb<u8>)],
    side: u32,
    alpha: f32,
    with_average: bool,
) -> Result<ResultPictures> {
    let img = load(&r.image, &r.name)?;
    let err_name = source_name(&r.image, &r.name);
    let layers = Layers {
        grid: r.grid.as_ref(),
        factors: colored_heatmaps(
            r.grid.as_ref(),
            &r.factors.iter().collect::<Vec<_>>(),
            colors,
        )?,
        bbox: r.bbox.as_ref(),
    };
    let overlay = render_view(&img, &err_name, &layers, side, alpha)?;
    let average = match (with_average, r.grid.as_ref(), r.average.as_deref()) {
        (true, Some(g), Some(avg)) => {
            let avg = Heatmap::new(*g, avg.to_vec())?;
            let mut pic = overlay::colormap_image(&avg, overlay.width(), overlay.height());
            if let Some(b) = &r.bbox {
                let sx = pic.width() as f32 / img.width() as f32;
                let sy = pic.height() as f32 / img.height() as f32;
                let t = draw::box_thickness(pic.width(), pic.height());
                draw::draw_box(&mut pic, &b.scale(sx, sy), draw::BOX_COLOR, t);
            }
            Some(pic)
        }
        _ => None,
    };
    Ok(ResultPictures { overlay, average })
}

/// `x1, y1 – x2, y2 (w×h)`, rounded to pixels.
fn describe_box(b: &BBox) -> String {
    format!(
        "{:.0}, {:.0} – {:.0}, {:.0} ({:.0}×{:.0})",
        b.x1,
        b.y1,
        b.x2,
        b.y2,
        b.width(),
        b.height()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(factors: &[usize]) -> Vec<FactorHeatmap> {
        factors
            .iter()
            .map(|&f| FactorHeatmap::new(f, vec![1.0]))
            .collect()
    }

    #[test]
    fn factor_colours_follow_first_appearance_query_first() {
        let mut q = QueryView::new("q", RgbImage::new(1, 1));
        q.factors = view(&[9, 4]);
        let mut r1 = ResultView::new(1, "a", RgbImage::new(1, 1), 0.5);
        r1.factors = view(&[4, 11, 9]);
        let mut r2 = ResultView::new(2, "b", RgbImage::new(1, 1), 0.4);
        r2.factors = view(&[2, 11]);
        let report = SearchReport {
            title: String::new(),
            query: q,
            results: vec![r1, r2],
            settings: Vec::new(),
        };
        let ids: Vec<usize> = report.factor_colors().iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, vec![9, 4, 11, 2]);
        let colours: Vec<Rgb<u8>> = report.factor_colors().iter().map(|(_, c)| *c).collect();
        assert_eq!(colours, color::PALETTE[..4].to_vec());
        assert_eq!(color_of(&report.factor_colors(), 11), color::PALETTE[2]);
    }

    #[test]
    fn thumbnails_keep_the_aspect_and_never_enlarge() {
        let img = RgbImage::new(1000, 400);
        assert_eq!(thumbnail(&img, 250).dimensions(), (250, 100));
        assert_eq!(thumbnail(&img, 2000).dimensions(), (1000, 400));
        assert_eq!(
            thumbnail(&RgbImage::new(3000, 1), 100).dimensions(),
            (100, 1)
        );
    }

    #[test]
    fn boxes_are_described_in_pixels() {
        let b = BBox::new(10.4, 20.6, 110.0, 70.0).unwrap();
        assert_eq!(describe_box(&b), "10, 21 – 110, 70 (100×49)");
    }
}
