//! The HTML report: one self-contained page, pictures embedded as `data:` URIs.

use super::{
    color, describe_box, render_query, render_result, ReportOptions, ResultPictures, SearchReport,
};
use crate::{Error, Result};
use image::RgbImage;
use rayon::prelude::*;
use std::fmt::Write as _;

/// `text` made safe for HTML text and (quoted) attribute values: `&`, `<`, `>`, `"` and `'`
/// become character references, and control characters other than tab and newline (which
/// HTML forbids) become U+FFFD.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' => out.push(c),
            c if c.is_control() => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// Standard base64 (RFC 4648, with padding).
pub fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `<img>` of `img` as an embedded JPEG.
pub(super) fn img_tag(img: &RgbImage, alt: &str, class: &str, quality: u8) -> Result<String> {
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, quality)
        .encode_image(img)
        .map_err(|e| Error::image(alt, format!("cannot encode a report picture as JPEG: {e}")))?;
    Ok(format!(
        "<img class=\"{class}\" src=\"data:image/jpeg;base64,{}\" width=\"{}\" height=\"{}\" alt=\"{}\">",
        base64_encode(&jpeg),
        img.width(),
        img.height(),
        escape_html(alt)
    ))
}

pub(super) fn swatch(c: image::Rgb<u8>) -> String {
    format!(
        "<span class=\"swatch\" style=\"background:{}\"></span>",
        color::hex(c)
    )
}

pub(super) const STYLE: &str = r#"
*{box-sizing:border-box}
body{margin:0;padding:20px 28px 40px;background:#f4f4f1;color:#1f1f1f;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif}
h1{font-size:22px;margin:0 0 4px}
h2{font-size:17px;margin:28px 0 10px}
h3{font-size:14px;margin:0 0 8px}
.sub{color:#666;margin:0 0 16px}
figure{margin:0;background:#fff;border-radius:6px;box-shadow:0 1px 3px rgba(0,0,0,.18);overflow:hidden}
figure img{display:block;width:100%;height:auto;background:#222}
figcaption{padding:7px 10px 9px}
.query{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}
.query-main{flex:0 1 640px;min-width:280px}
.side{flex:1 1 360px;min-width:280px}
.kept{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:10px;margin-bottom:18px}
.kept figcaption{font-size:12px;padding:5px 8px 7px}
.results{display:grid;grid-template-columns:repeat(auto-fill,minmax(270px,1fr));gap:14px;align-items:start}
.results img.r,.kept img{aspect-ratio:4/3;object-fit:contain}
.head{display:flex;justify-content:space-between;align-items:baseline;gap:8px}
.rank{font-weight:700;font-size:15px}
.score{font-variant-numeric:tabular-nums;font-weight:600}
.name{display:block;overflow-wrap:anywhere;color:#444;font-size:12.5px;margin-top:2px}
.meta{color:#666;font-size:12px;margin-top:3px}
.swatch{display:inline-block;width:12px;height:12px;border-radius:3px;margin-right:4px;vertical-align:-1px;border:1px solid rgba(0,0,0,.35)}
.legend span.item{margin-right:12px;white-space:nowrap}
table{border-collapse:collapse;font-size:13px;width:100%}
th,td{text-align:left;padding:3px 10px 3px 0;border-bottom:1px solid #ddd;vertical-align:top;overflow-wrap:anywhere}
th{font-weight:600;white-space:nowrap;width:1%}
details{margin-top:6px;font-size:12px;color:#555}
details img{margin-top:6px;border-radius:4px}
footer{margin-top:32px;color:#888;font-size:12px}
"#;

pub(super) fn render(report: &SearchReport, o: &ReportOptions) -> Result<String> {
    let colors = report.factor_colors();
    let alpha = o.overlay_alpha();
    let q = &report.query;
    let qp = render_query(
        report,
        &colors,
        o.html_query_side(),
        o.html_result_side(),
        alpha,
    )?;
    let results: Vec<ResultPictures> = report
        .results
        .par_iter()
        .map(|r| render_result(r, &colors, o.html_result_side(), alpha, true))
        .collect::<Result<_>>()?;

    let mut h = String::new();
    let e = escape_html;
    // Writing to a String cannot fail; the results of write! are ignored below for that reason.
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"generator\" content=\"deepfactor {}\">\n<title>{}</title>\n<style>{}</style>\n</head>\n<body>\n",
        env!("CARGO_PKG_VERSION"),
        e(&report.title),
        STYLE
    );
    let _ = writeln!(h, "<h1>{}</h1>", e(&report.title));
    let _ = writeln!(
        h,
        "<p class=\"sub\">Query <b>{}</b> · {} result{} · colours mark factors, the white box the region</p>",
        e(&q.name),
        report.results.len(),
        if report.results.len() == 1 { "" } else { "s" }
    );

    // The query: combined overlay, then kept factors, legend and settings.
    h.push_str("<section class=\"query\">\n<figure class=\"query-main\">");
    h.push_str(&img_tag(
        &qp.main,
        &format!("query {}", q.name),
        "q",
        o.jpeg_quality(),
    )?);
    let _ = write!(
        h,
        "<figcaption><b>Query</b><span class=\"name\">{}</span>",
        e(&q.name)
    );
    if let Some(b) = &q.bbox {
        let _ = write!(h, "<div class=\"meta\">box {}</div>", e(&describe_box(b)));
    }
    let _ = write!(
        h,
        "<div class=\"meta\">{} kept factor{}</div></figcaption></figure>\n<div class=\"side\">\n",
        q.factors.len(),
        if q.factors.len() == 1 { "" } else { "s" }
    );
    if !qp.per_factor.is_empty() {
        h.push_str("<h3>Kept factors</h3>\n<div class=\"kept\">\n");
        for (id, c, mass, pic) in &qp.per_factor {
            h.push_str("<figure>");
            h.push_str(&img_tag(
                pic,
                &format!("factor {id}"),
                "f",
                o.jpeg_quality(),
            )?);
            let _ = write!(h, "<figcaption>{}factor {id}", swatch(*c));
            if let Some(m) = mass {
                let _ = write!(h, " · {:.0}% in box", m * 100.0);
            }
            h.push_str("</figcaption></figure>\n");
        }
        h.push_str("</div>\n");
    }
    if !colors.is_empty() {
        h.push_str("<h3>Legend</h3>\n<p class=\"legend\">");
        for (id, c) in &colors {
            let _ = write!(h, "<span class=\"item\">{}factor {id}</span>", swatch(*c));
        }
        h.push_str("</p>\n");
    }
    if !report.settings.is_empty() {
        h.push_str("<h3>Settings</h3>\n<table class=\"settings\">\n");
        for (k, v) in &report.settings {
            let _ = writeln!(h, "<tr><th>{}</th><td>{}</td></tr>", e(k), e(v));
        }
        h.push_str("</table>\n");
    }
    h.push_str("</div>\n</section>\n");

    // The results.
    let _ = writeln!(h, "<h2>Results</h2>");
    if report.results.is_empty() {
        h.push_str("<p>No results.</p>\n");
    } else {
        h.push_str("<section class=\"results\">\n");
        for (r, pics) in report.results.iter().zip(&results) {
            h.push_str("<figure class=\"result\">");
            h.push_str(&img_tag(
                &pics.overlay,
                &format!("#{} {}", r.rank, r.name),
                "r",
                o.jpeg_quality(),
            )?);
            let _ = write!(
                h,
                "<figcaption><div class=\"head\"><span class=\"rank\">#{}</span><span class=\"score\">score {:.4}</span></div><span class=\"name\">{}</span>",
                r.rank,
                r.score,
                e(&r.name)
            );
            if let Some(b) = &r.bbox {
                let _ = write!(
                    h,
                    "<div class=\"meta\">predicted box {}</div>",
                    e(&describe_box(b))
                );
            }
            if !r.factors.is_empty() {
                h.push_str("<div class=\"meta\">");
                for f in &r.factors {
                    let c = super::color_of(&colors, f.factor);
                    let _ = write!(h, "<span class=\"item\">{}{} </span>", swatch(c), f.factor);
                }
                h.push_str("</div>");
            }
            for (k, v) in &r.details {
                let _ = write!(h, "<div class=\"meta\">{}: {}</div>", e(k), e(v));
            }
            if let Some(avg) = &pics.average {
                h.push_str("<details><summary>averaged heatmap (viridis)</summary>");
                h.push_str(&img_tag(
                    avg,
                    &format!("averaged heatmap of #{}", r.rank),
                    "a",
                    o.jpeg_quality(),
                )?);
                h.push_str("</details>");
            }
            h.push_str("</figcaption></figure>\n");
        }
        h.push_str("</section>\n");
    }
    let _ = writeln!(
        h,
        "<footer>deepfactor {} · self-contained page: pictures are embedded, nothing is fetched</footer>\n</body>\n</html>",
        env!("CARGO_PKG_VERSION")
    );
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_quotes_and_controls() {
        assert_eq!(
            escape_html(r#"<a href="x">Tom & 'Jerry'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;Tom &amp; &#39;Jerry&#39;&lt;/a&gt;"
        );
        assert_eq!(escape_html("&amp;"), "&amp;amp;");
        assert_eq!(escape_html("a\u{0}b\tc\u{7f}"), "a\u{FFFD}b\tc\u{FFFD}");
        assert_eq!(escape_html("café ☕"), "café ☕");
    }

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(input.as_bytes()), want, "{input:?}");
        }
        assert_eq!(base64_encode(&[0xfb, 0xff, 0xbf]), "+/+/");
    }
}
