//! Prints the top-5 ImageNet classes of each image: the quickest proof that real weights load
//! right.
//!
//! ```sh
//! cargo run --release --example classify -- [--backbone NAME] [--weights FILE] [--size S] IMAGE...
//! ```
//!
//! One line per image: the path, then `index:label:probability` five times, tab-separated.
//! Default backbone: EfficientNet-Lite0, with the weights `scripts/setup.sh` puts in
//! `~/.cache/deepfactor/weights/` (override with `DEEPFACTOR_EFFICIENTNET_LITE0_WEIGHTS` or
//! `--weights`). Images are resized so the shorter side is 256 pixels and the central 224×224
//! square is classified, the usual ImageNet evaluation; `--whole` classifies the whole image
//! resized so its shorter side is `--size` (default 224).

use anyhow::{bail, Context, Result};
use deepfactor::backbone::prepare_center_crop;
use deepfactor::backbone::{BackboneBuilder, BackboneKind, WeightSource};
use deepfactor::images::load_rgb;
use std::path::PathBuf;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mut kind = BackboneKind::EfficientNetLite0;
    let mut weights = WeightSource::Default;
    let mut size = 224;
    let mut whole = false;
    let mut images = Vec::new();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--backbone" => kind = args.next().context("--backbone needs a name")?.parse()?,
            "--weights" => {
                weights = WeightSource::File(PathBuf::from(
                    args.next().context("--weights needs a file")?,
                ))
            }
            "--size" => {
                size = args
                    .next()
                    .context("--size needs a number")?
                    .parse()
                    .context("--size")?
            }
            "--whole" => whole = true,
            "-h" | "--help" => {
                println!("usage: classify [--backbone NAME] [--weights FILE] [--whole] [--size S] IMAGE...");
                return Ok(());
            }
            _ if a.starts_with("--") => bail!("unknown option {a}"),
            _ => images.push(PathBuf::from(a)),
        }
    }
    if images.is_empty() {
        bail!("usage: classify [--backbone NAME] [--weights FILE] [--whole] [--size S] IMAGE...");
    }
    let backbone = BackboneBuilder::new(kind)
        .weights(weights)
        .input_size(size)
        .build()?;
    if !backbone.has_classifier() {
        bail!(
            "{}: the weights hold no ImageNet classifier",
            backbone.weights_path().display()
        );
    }
    let mut failed = 0;
    for path in &images {
        let prepared = if whole {
            backbone.prepare_path(path)
        } else {
            load_rgb(path).and_then(|img| prepare_center_crop(&img, 256, 224, kind.normalization()))
        };
        match prepared.and_then(|p| backbone.classify(&p, 5)) {
            Ok(top) => {
                let cols: Vec<String> = top
                    .iter()
                    .map(|c| format!("{}:{}:{:.4}", c.index, c.label, c.probability))
                    .collect();
                println!("{}\t{}", path.display(), cols.join("\t"));
            }
            Err(e) => {
                eprintln!("error: {e}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} images failed", images.len());
    }
    Ok(())
}
