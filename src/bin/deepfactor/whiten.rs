//! `deepfactor whiten`: learn a PCA whitening from a folder of training images, or describe a
//! whitening file.

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use deepfactor::backbone::{BackboneBuilder, BackboneKind, WeightSource};
use deepfactor::descriptor::{DescriptorConfig, DescriptorKind, Shrinkage, Whitening, DEFAULT_K};
use deepfactor::pipeline::Pipeline;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;

/// Arguments of `deepfactor whiten`.
#[derive(Args, Debug)]
pub struct WhitenArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(Subcommand, Debug)]
enum Action {
    /// Learn a whitening from the local vectors of every image in a folder (a training set,
    /// not the images you will search).
    Learn(LearnArgs),
    /// Print what a whitening file holds.
    Info {
        /// The whitening file.
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Arguments of `deepfactor whiten learn`.
#[derive(Args, Debug)]
struct LearnArgs {
    /// Folder of training images (searched recursively).
    images: PathBuf,
    /// Where to write the whitening (a safetensors file).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Descriptor kind whose local vectors are learned from: nmf-v, nmf-vu, crow, mac, spoc,
    /// gem, rmac.
    #[arg(long, default_value = "nmf-vu")]
    descriptor: DescriptorKind,
    /// NMF rank (NMF descriptors).
    #[arg(long, default_value_t = DEFAULT_K)]
    k: usize,
    /// Backbone: efficientnet-lite0, vgg16, vgg19, resnet50.
    #[arg(long, default_value = "efficientnet-lite0")]
    backbone: BackboneKind,
    /// Weights file (default: the backbone's default weights).
    #[arg(long, value_name = "FILE")]
    weights: Option<PathBuf>,
    /// Layer (default: the backbone's default layer).
    #[arg(long)]
    layer: Option<String>,
    /// Shorter side of the network input, in pixels.
    #[arg(long, default_value_t = 512)]
    size: u32,
    /// Keep at most this many axes.
    #[arg(long)]
    max_dim: Option<usize>,
    /// Fixed shrinkage in [0, 1] instead of the Ledoit–Wolf estimate.
    #[arg(long)]
    shrinkage: Option<f64>,
    /// Name recorded as the training set (default: the folder's name).
    #[arg(long)]
    name: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Runs `deepfactor whiten`.
pub fn run(args: WhitenArgs) -> anyhow::Result<()> {
    match args.action {
        Action::Info { file, json } => {
            let w = Whitening::load(&file)?;
            print(&w, &file, json);
            Ok(())
        }
        Action::Learn(a) => learn(a),
    }
}

fn learn(a: LearnArgs) -> anyhow::Result<()> {
    let found = deepfactor::images::image_files(&a.images);
    if let Some((dir, reason)) = found.unreadable.first() {
        bail!("{}: {reason}", dir.display());
    }
    let mut builder = BackboneBuilder::new(a.backbone).input_size(a.size);
    if let Some(w) = &a.weights {
        builder = builder.weights(WeightSource::File(w.clone()));
    }
    if let Some(l) = &a.layer {
        builder = builder.layer(l.clone());
    }
    let backbone = builder.build()?;
    let mut cfg = DescriptorConfig::new(a.descriptor);
    if a.descriptor.is_nmf() {
        cfg = cfg.k(a.k);
    }
    let pipeline = Pipeline::new(backbone, cfg.build()?);
    let name = a.name.clone().unwrap_or_else(|| {
        a.images
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_else(|| a.images.display().to_string())
    });
    let shrinkage = a.shrinkage.map_or(Shrinkage::LedoitWolf, Shrinkage::Fixed);
    let bar = ProgressBar::new(found.files.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("learning vectors {bar:40} {pos}/{len} {elapsed}<{eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let learned = pipeline
        .learn_whitening(&found.files, &name, shrinkage, a.max_dim, &mut |done, _| {
            bar.set_position(done as u64)
        })
        .with_context(|| format!("learning a whitening from {}", a.images.display()))?;
    bar.finish_and_clear();
    for s in &learned.skipped {
        eprintln!("skipped {s}");
    }
    learned.whitening.save(&a.out)?;
    print(&learned.whitening, &a.out, a.json);
    Ok(())
}

fn print(w: &Whitening, file: &std::path::Path, json: bool) {
    let t = w.training();
    if json {
        let v = serde_json::json!({
            "file": file, "id": w.id(), "input_dim": w.input_dim(),
            "max_output_dim": w.max_output_dim(), "shrinkage": w.shrinkage(),
            "training_set": t.name, "training_images": t.images, "training_vectors": t.vectors,
        });
        println!("{v}");
    } else {
        println!(
            "{}: whitening {}\n  {} → at most {} dimensions, shrinkage {:.3e}\n  learned on {} \
             ({} images, {} vectors)",
            file.display(),
            w.id(),
            w.input_dim(),
            w.max_output_dim(),
            w.shrinkage(),
            t.name,
            t.images,
            t.vectors
        );
    }
}
