//! The PNG contact sheet: a header (title, legend), the query and its kept factors, then the
//! results in rank order, each a thumbnail with a two-line caption.

use super::draw::{fill_rect, label};
use super::font::{self, fit_text, text_width, LINE_HEIGHT};
use super::{render_query, render_result, ReportOptions, ResultPictures, SearchReport};
use crate::Result;
use image::{Rgb, RgbImage};
use rayon::prelude::*;

const BACKGROUND: Rgb<u8> = Rgb([24, 24, 27]);
const TILE_BACKGROUND: Rgb<u8> = Rgb([44, 44, 48]);
const TEXT: Rgb<u8> = Rgb([236, 236, 236]);
const DIM_TEXT: Rgb<u8> = Rgb([165, 165, 170]);
const FRAME: Rgb<u8> = Rgb([255, 255, 255]);
const MARGIN: u32 = 16;
const GAP: u32 = 12;

/// One cell of the grid: a picture, a badge on it, two caption lines, an optional frame.
struct Tile<'a> {
    picture: &'a RgbImage,
    badge: String,
    badge_color: Rgb<u8>,
    line1: String,
    line2: String,
    framed: bool,
}

pub(super) fn render(report: &SearchReport, o: &ReportOptions) -> Result<RgbImage> {
    let t = o.sheet_thumb();
    let s = ((t as f32 / 128.0).round() as u32).max(1);
    let colors = report.factor_colors();
    let qp = render_query(report, &colors, t, t, o.overlay_alpha())?;
    let results: Vec<ResultPictures> = report
        .results
        .par_iter()
        .map(|r| render_result(r, &colors, t, o.overlay_alpha(), false))
        .collect::<Result<_>>()?;

    let q = &report.query;
    let mut query_tiles = vec![Tile {
        picture: &qp.main,
        badge: "QUERY".into(),
        badge_color: TEXT,
        line1: match &q.bbox {
            Some(b) => format!("box {:.0},{:.0}-{:.0},{:.0}", b.x1, b.y1, b.x2, b.y2),
            None => "whole image".into(),
        },
        line2: q.name.clone(),
        framed: true,
    }];
    for (id, c, mass, pic) in &qp.per_factor {
        query_tiles.push(Tile {
            picture: pic,
            badge: format!("factor {id}"),
            badge_color: *c,
            line1: format!("kept factor {id}"),
            line2: mass.map_or(String::new(), |m| format!("{:.0}% mass in box", m * 100.0)),
            framed: false,
        });
    }
    let result_tiles: Vec<Tile> = report
        .results
        .iter()
        .zip(&results)
        .map(|(r, p)| Tile {
            picture: &p.overlay,
            badge: format!("#{}", r.rank),
            badge_color: TEXT,
            line1: format!("#{}  score {:.4}", r.rank, r.score),
            line2: r.name.clone(),
            framed: false,
        })
        .collect();

    let cols = o
        .sheet_columns()
        .min(query_tiles.len().max(result_tiles.len()))
        .max(1) as u32;
    let width = 2 * MARGIN + cols * t + (cols - 1) * GAP;
    let line = LINE_HEIGHT * s;
    let caption = 2 * line + 4 * s;
    let tile_h = t + caption;

    // Header: title, a summary line, and the legend (wrapped to the width).
    let title_scale = s + 1;
    let legend = legend_lines(&colors, width - 2 * MARGIN, s);
    let header = LINE_HEIGHT * title_scale + line + legend.len() as u32 * line + GAP;
    let rows = |n: usize| (n as u32).div_ceil(cols);
    let q_rows = rows(query_tiles.len());
    let r_rows = rows(result_tiles.len());
    let height = MARGIN
        + header
        + q_rows * (tile_h + GAP)
        + if r_rows > 0 { GAP + line } else { 0 }
        + r_rows * (tile_h + GAP)
        + MARGIN;

    let mut img = RgbImage::from_pixel(width, height, BACKGROUND);
    let mut y = MARGIN as i64;
    let x0 = MARGIN as i64;
    let title = fit_text(&report.title, width - 2 * MARGIN, title_scale);
    font::draw_text(&mut img, x0, y, &title, title_scale, TEXT);
    y += i64::from(LINE_HEIGHT * title_scale);
    let summary = format!(
        "{} result{}; colours mark factors, the white box the region",
        report.results.len(),
        if report.results.len() == 1 { "" } else { "s" }
    );
    font::draw_text(
        &mut img,
        x0,
        y,
        &fit_text(&summary, width - 2 * MARGIN, s),
        s,
        DIM_TEXT,
    );
    y += i64::from(line);
    for entries in &legend {
        let mut x = x0;
        for (id, c) in entries {
            let sw = i64::from(font::GLYPH_HEIGHT * s);
            fill_rect(
                &mut img,
                x as f32,
                y as f32,
                (x + sw) as f32,
                (y + sw) as f32,
                *c,
                1.0,
            );
            let text = format!("factor {id}");
            font::draw_text(&mut img, x + sw + i64::from(3 * s), y, &text, s, TEXT);
            x += legend_entry_width(*id, s) as i64;
        }
        y += i64::from(line);
    }
    y += i64::from(GAP);

    let place = |img: &mut RgbImage, tiles: &[Tile], y0: i64| {
        for (i, tile) in tiles.iter().enumerate() {
            let (col, row) = ((i as u32) % cols, (i as u32) / cols);
            let tx = x0 + i64::from(col * (t + GAP));
            let ty = y0 + i64::from(row * (tile_h + GAP));
            draw_tile(img, tile, tx, ty, t, s);
        }
    };
    place(&mut img, &query_tiles, y);
    y += i64::from(q_rows * (tile_h + GAP));
    if r_rows > 0 {
        y += i64::from(GAP);
        font::draw_text(&mut img, x0, y, "Results", s, DIM_TEXT);
        y += i64::from(line);
        place(&mut img, &result_tiles, y);
    }
    Ok(img)
}

fn legend_entry_width(id: usize, s: u32) -> u32 {
    font::GLYPH_HEIGHT * s + 3 * s + text_width(&format!("factor {id}"), s) + 12 * s
}

fn legend_lines(colors: &[(usize, Rgb<u8>)], max_width: u32, s: u32) -> Vec<Vec<(usize, Rgb<u8>)>> {
    let mut lines: Vec<Vec<(usize, Rgb<u8>)>> = Vec::new();
    let mut used = 0;
    for &(id, c) in colors {
        let w = legend_entry_width(id, s);
        match lines.last_mut() {
            Some(l) if used + w <= max_width => l.push((id, c)),
            _ => {
                lines.push(vec![(id, c)]);
                used = 0;
            }
        }
        used += w;
    }
    lines
}

fn draw_tile(img: &mut RgbImage, tile: &Tile, x: i64, y: i64, t: u32, s: u32) {
    let (xf, yf, tf) = (x as f32, y as f32, t as f32);
    fill_rect(img, xf, yf, xf + tf, yf + tf, TILE_BACKGROUND, 1.0);
    let (pw, ph) = tile.picture.dimensions();
    let px = x + i64::from(t.saturating_sub(pw) / 2);
    let py = y + i64::from(t.saturating_sub(ph) / 2);
    image::imageops::overlay(img, tile.picture, px, py);
    if tile.framed {
        let frame = crate::BBox {
            x1: xf - 3.0,
            y1: yf - 3.0,
            x2: xf + tf + 3.0,
            y2: yf + tf + 3.0,
        };
        super::draw::draw_outline(img, &frame, FRAME, 2);
    }
    let badge = fit_text(&tile.badge, t.saturating_sub(4 * s), s);
    label(
        img,
        px + i64::from(2 * s),
        py + i64::from(2 * s),
        &badge,
        s,
        tile.badge_color,
    );
    let cy = y + i64::from(t + 3 * s);
    font::draw_text(img, x, cy, &fit_text(&tile.line1, t, s), s, TEXT);
    let cy = cy + i64::from(LINE_HEIGHT * s);
    font::draw_text(img, x, cy, &fit_text(&tile.line2, t, s), s, DIM_TEXT);
}
