//! PNG plots of the probes, drawn with plotters' bitmap backend.
//!
//! Text goes through the crate's own 5×8 bitmap font ([`crate::report::font`]): plotters is
//! built without its font features (no system fonts, no font file, nothing to fetch), and
//! [`FontBackend`] renders every label plotters asks for with the embedded glyphs, at whole
//! multiples of their size, rotated where plotters rotates (the y-axis description).

use crate::report::font::{glyph, ADVANCE, GLYPH_HEIGHT, GLYPH_WIDTH};
use crate::{Error, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, VPos};
use plotters_backend::{BackendColor, BackendCoord};
use plotters_backend::{BackendTextStyle, DrawingBackend, DrawingErrorKind};
use std::path::Path;

/// The colours of the series, in order (colour-blind-safe, Okabe–Ito).
pub const COLORS: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(120, 120, 120),
    RGBColor(0, 0, 0),
];

/// A bitmap backend whose text is drawn with the crate's bitmap font.
pub struct FontBackend<'a> {
    inner: BitMapBackend<'a>,
}

type BackendResult<'a> =
    std::result::Result<(), DrawingErrorKind<<BitMapBackend<'a> as DrawingBackend>::ErrorType>>;

impl<'a> FontBackend<'a> {
    /// Draws into an RGB buffer of `width × height` pixels.
    pub fn with_buffer(buffer: &'a mut [u8], size: (u32, u32)) -> Self {
        FontBackend {
            inner: BitMapBackend::with_buffer(buffer, size),
        }
    }

    fn scale(size: f64) -> u32 {
        (size / 10.0).round().max(1.0) as u32
    }
}

impl<'a> DrawingBackend for FontBackend<'a> {
    type ErrorType = <BitMapBackend<'a> as DrawingBackend>::ErrorType;

    fn get_size(&self) -> (u32, u32) {
        self.inner.get_size()
    }

    fn ensure_prepared(&mut self) -> BackendResult<'a> {
        self.inner.ensure_prepared()
    }

    fn present(&mut self) -> BackendResult<'a> {
        self.inner.present()
    }

    fn draw_pixel(&mut self, point: BackendCoord, color: BackendColor) -> BackendResult<'a> {
        self.inner.draw_pixel(point, color)
    }

    fn draw_line<S: plotters_backend::BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> BackendResult<'a> {
        self.inner.draw_line(from, to, style)
    }

    fn draw_rect<S: plotters_backend::BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> BackendResult<'a> {
        self.inner.draw_rect(upper_left, bottom_right, style, fill)
    }

    fn draw_path<S: plotters_backend::BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> BackendResult<'a> {
        self.inner.draw_path(path, style)
    }

    fn draw_circle<S: plotters_backend::BackendStyle>(
        &mut self,
        center: BackendCoord,
        radius: u32,
        style: &S,
        fill: bool,
    ) -> BackendResult<'a> {
        self.inner.draw_circle(center, radius, style, fill)
    }

    fn fill_polygon<S: plotters_backend::BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        style: &S,
    ) -> BackendResult<'a> {
        self.inner.fill_polygon(vert, style)
    }

    fn blit_bitmap(
        &mut self,
        pos: BackendCoord,
        size: (u32, u32),
        src: &[u8],
    ) -> BackendResult<'a> {
        self.inner.blit_bitmap(pos, size, src)
    }

    fn estimate_text_size<T: BackendTextStyle>(
        &self,
        text: &str,
        style: &T,
    ) -> std::result::Result<(u32, u32), DrawingErrorKind<Self::ErrorType>> {
        let s = Self::scale(style.size());
        Ok((text_width(text) * s, GLYPH_HEIGHT * s))
    }

    fn draw_text<T: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &T,
        pos: BackendCoord,
    ) -> BackendResult<'a> {
        let color = style.color();
        if color.alpha == 0.0 {
            return Ok(());
        }
        let s = Self::scale(style.size()) as i32;
        let (w, h) = (text_width(text) as i32 * s, GLYPH_HEIGHT as i32 * s);
        let dx = match style.anchor().h_pos {
            HPos::Left => 0,
            HPos::Right => -w,
            HPos::Center => -w / 2,
        };
        let dy = match style.anchor().v_pos {
            VPos::Top => 0,
            VPos::Center => -h / 2,
            VPos::Bottom => -h,
        };
        let trans = style.transform();
        for (ci, ch) in text.chars().enumerate() {
            let rows = glyph(ch);
            let x0 = ci as i32 * ADVANCE as i32 * s;
            for (ry, bits) in rows.iter().enumerate() {
                for rx in 0..GLYPH_WIDTH as i32 {
                    if bits & (1 << (GLYPH_WIDTH as i32 - 1 - rx)) == 0 {
                        continue;
                    }
                    for sy in 0..s {
                        for sx in 0..s {
                            let (x, y) =
                                trans.transform(x0 + rx * s + sx + dx, ry as i32 * s + sy + dy);
                            self.inner.draw_pixel((pos.0 + x, pos.1 + y), color)?;
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

fn text_width(text: &str) -> u32 {
    let n = text.chars().count() as u32;
    if n == 0 {
        0
    } else {
        n * ADVANCE - 1
    }
}

/// One series of a panel.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend text.
    pub label: String,
    /// Points `(x, y)`; non-finite ones are skipped.
    pub points: Vec<(f64, f64)>,
    /// Colour: an index into the plots' palette (Okabe–Ito, wrapping around).
    pub color: usize,
    /// Join the points with a line.
    pub line: bool,
    /// Mark each point.
    pub markers: bool,
    /// Draw faintly (raw data behind a smoothed curve).
    pub faint: bool,
}

/// One chart of a figure.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Panel {
    /// Title above the chart.
    pub title: String,
    /// x-axis description.
    pub x_label: String,
    /// y-axis description.
    pub y_label: String,
    /// The series.
    pub series: Vec<Series>,
    /// Plot x on a log₁₀ scale (ticks labelled in x).
    pub log_x: bool,
    /// Fixed y range (else fitted to the data).
    pub y_range: Option<(f64, f64)>,
    /// Vertical markers: x, label, colour index.
    pub vlines: Vec<(f64, String, usize)>,
}

/// Writes `panels` as a grid of `columns` charts under `title` into a PNG at `path`.
pub fn write_panels(path: &Path, title: &str, panels: &[Panel], columns: usize) -> Result<()> {
    if panels.is_empty() {
        return Err(Error::invalid(format!(
            "{}: no panels to plot",
            path.display()
        )));
    }
    let columns = columns.clamp(1, panels.len());
    let rows = panels.len().div_ceil(columns);
    let (pw, ph) = (620u32, 440u32);
    let (w, h) = (pw * columns as u32, ph * rows as u32 + 50);
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let backend = FontBackend::with_buffer(&mut buf, (w, h));
        let root = backend.into_drawing_area();
        let plot_err = |e: &dyn std::fmt::Display| {
            Error::invalid(format!("{}: plotting failed: {e}", path.display()))
        };
        root.fill(&WHITE).map_err(|e| plot_err(&e))?;
        let root = root
            .titled(title, ("sans-serif", 20).into_font())
            .map_err(|e| plot_err(&e))?;
        let areas = root.split_evenly((rows, columns));
        for (panel, area) in panels.iter().zip(areas.iter()) {
            draw_panel(area, panel).map_err(|e| plot_err(&e))?;
        }
        root.present().map_err(|e| plot_err(&e))?;
    }
    let img = image::RgbImage::from_raw(w, h, buf)
        .ok_or_else(|| Error::invalid("plot buffer of the wrong size"))?;
    img.save(path)
        .map_err(|e| Error::image(path, format!("cannot write the plot: {e}")))
}

type DrawResult<'a> =
    std::result::Result<(), DrawingAreaErrorKind<<FontBackend<'a> as DrawingBackend>::ErrorType>>;

fn draw_panel<'a>(area: &DrawingArea<FontBackend<'a>, Shift>, panel: &Panel) -> DrawResult<'a> {
    let tx = |x: f64| if panel.log_x { x.max(1e-12).log10() } else { x };
    let pts: Vec<(f64, f64)> = panel
        .series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .map(|(x, y)| (tx(x), y))
        .collect();
    let (mut x0, mut x1) = pts
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
            (a.min(p.0), b.max(p.0))
        });
    let (mut y0, mut y1) = panel.y_range.unwrap_or_else(|| {
        pts.iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
                (a.min(p.1), b.max(p.1))
            })
    });
    if !x0.is_finite() {
        (x0, x1) = (0.0, 1.0);
    }
    if !y0.is_finite() {
        (y0, y1) = (0.0, 1.0);
    }
    let pad = |a: f64, b: f64| {
        let d = if b > a { (b - a) * 0.05 } else { 0.5 };
        (a - d, b + d)
    };
    let (x0, x1) = pad(x0, x1);
    let (y0, y1) = if panel.y_range.is_some() {
        (y0, y1)
    } else {
        let (a, b) = pad(y0, y1);
        // Headroom for the legend, so that it never covers data.
        let legend = panel.series.iter().any(|s| !s.label.is_empty()) || !panel.vlines.is_empty();
        (a, if legend { b + (b - a) * 0.3 } else { b })
    };
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, ("sans-serif", 20).into_font())
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    let log_x = panel.log_x;
    let (xd, yd) = (tick_decimals(x1 - x0), tick_decimals(y1 - y0));
    let xfmt = move |v: &f64| {
        if log_x {
            let k = 10f64.powf(*v);
            if k >= 10.0 {
                format!("{k:.0}")
            } else {
                format!("{k:.1}")
            }
        } else {
            format!("{v:.xd$}")
        }
    };
    chart
        .configure_mesh()
        .x_desc(panel.x_label.as_str())
        .y_desc(panel.y_label.as_str())
        .x_labels(6)
        .y_labels(6)
        .x_label_formatter(&xfmt)
        .y_label_formatter(&|v| format!("{v:.yd$}"))
        .label_style(("sans-serif", 10).into_font())
        .axis_desc_style(("sans-serif", 10).into_font())
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    let mut labelled = false;
    for s in &panel.series {
        let base = COLORS[s.color % COLORS.len()];
        let color = if s.faint {
            base.mix(0.3)
        } else {
            base.mix(1.0)
        };
        let p: Vec<(f64, f64)> = s
            .points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|&(x, y)| (tx(x), y))
            .collect();
        if s.line {
            let series = chart.draw_series(LineSeries::new(p.clone(), color.stroke_width(2)))?;
            if !s.label.is_empty() {
                labelled = true;
                let c = color;
                series.label(s.label.as_str()).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], c.stroke_width(2))
                });
            }
        }
        if s.markers {
            let series = chart.draw_series(p.iter().map(|&q| Circle::new(q, 3, color.filled())))?;
            if !s.line && !s.label.is_empty() {
                labelled = true;
                let c = color;
                series
                    .label(s.label.as_str())
                    .legend(move |(x, y)| Circle::new((x + 8, y), 3, c.filled()));
            }
        }
    }
    for (x, label, c) in &panel.vlines {
        let color = COLORS[c % COLORS.len()];
        let x = tx(*x);
        chart
            .draw_series(LineSeries::new(
                vec![(x, y0), (x, y1)],
                color.stroke_width(1),
            ))?
            .label(label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y - 6), (x, y + 6)], color.stroke_width(2))
            });
        labelled = true;
    }
    if labelled {
        chart
            .configure_series_labels()
            .label_font(("sans-serif", 10).into_font())
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(200, 200, 200))
            .position(emptiest_corner(panel, (x0, x1), (y0, y1), &tx))
            .draw()?;
    }
    Ok(())
}

/// Decimals that tell apart ticks spread over `span` (about six ticks).
fn tick_decimals(span: f64) -> usize {
    if !(span.is_finite() && span > 0.0) {
        return 2;
    }
    ((-(span / 6.0).log10()).ceil().max(0.0) as usize).clamp(1, 6)
}

/// The corner of the chart with the fewest data points near it, for the legend.
fn emptiest_corner(
    panel: &Panel,
    (x0, x1): (f64, f64),
    (y0, y1): (f64, f64),
    tx: &dyn Fn(f64) -> f64,
) -> SeriesLabelPosition {
    let corners = [
        (SeriesLabelPosition::LowerRight, true, false),
        (SeriesLabelPosition::UpperRight, true, true),
        (SeriesLabelPosition::LowerLeft, false, false),
        (SeriesLabelPosition::UpperLeft, false, true),
    ];
    // The points in chart coordinates, lines sampled between their points too.
    let mut pts: Vec<(f64, f64)> = Vec::new();
    for s in &panel.series {
        let p: Vec<(f64, f64)> = s.points.iter().map(|&(x, y)| (tx(x), y)).collect();
        pts.extend(&p);
        if s.line {
            for w in p.windows(2) {
                pts.extend((1..10).map(|i| {
                    let t = i as f64 / 10.0;
                    (
                        w[0].0 + t * (w[1].0 - w[0].0),
                        w[0].1 + t * (w[1].1 - w[0].1),
                    )
                }));
            }
        }
    }
    let near = |right: bool, upper: bool| {
        pts.iter()
            .filter(|(x, y)| {
                let fx = (x - x0) / (x1 - x0);
                let fy = (y - y0) / (y1 - y0);
                let inx = if right { fx > 0.65 } else { fx < 0.35 };
                let iny = if upper { fy > 0.8 } else { fy < 0.2 };
                inx && iny
            })
            .count()
    };
    corners
        .into_iter()
        .min_by_key(|&(_, r, u)| near(r, u))
        .map_or(SeriesLabelPosition::LowerRight, |(p, _, _)| p)
}
