//! Options shared by the commands that make descriptors: backbone, weights, layer, input size,
//! descriptor kind, NMF rank, CroW, whitening, device.

use anyhow::Context;
use clap::Args;
use deepfactor::backbone::{BackboneBuilder, BackboneKind, Padding, WeightSource};
use deepfactor::descriptor::{DescriptorConfig, DescriptorKind, Whitening};
use deepfactor::pipeline::Pipeline;
use std::path::PathBuf;
use std::sync::Arc;

/// How descriptors are made. Every option is optional: a new index takes the defaults shown,
/// an existing one keeps its recipe (and refuses options that contradict it).
#[derive(Args, Debug, Clone, Default)]
pub struct RecipeArgs {
    /// Backbone: efficientnet-lite0 (default), vgg16, vgg19, resnet50.
    #[arg(long)]
    pub backbone: Option<BackboneKind>,
    /// Weights file (.safetensors or .pth); default: the backbone's default weights.
    #[arg(long, value_name = "FILE")]
    pub weights: Option<PathBuf>,
    /// Layer (default: the backbone's last convolutional layer).
    #[arg(long)]
    pub layer: Option<String>,
    /// Shorter side of the network input in pixels (default 512).
    #[arg(long)]
    pub size: Option<u32>,
    /// Cap on the longer side of the network input.
    #[arg(long)]
    pub max_side: Option<u32>,
    /// Reflection instead of zero padding (VGG, ResNet).
    #[arg(long)]
    pub reflect: bool,
    /// Descriptor: nmf-vu (default), nmf-v, crow, mac, spoc, gem, rmac.
    #[arg(long)]
    pub descriptor: Option<DescriptorKind>,
    /// NMF rank (default 8).
    #[arg(long)]
    pub k: Option<usize>,
    /// Turn CroW channel weighting off.
    #[arg(long)]
    pub no_crow: bool,
    /// PCA whitening file (from `deepfactor whiten learn`).
    #[arg(long, value_name = "FILE")]
    pub whitening: Option<PathBuf>,
    /// Device: cpu (default) or cuda (builds with the `cuda` feature).
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

impl RecipeArgs {
    /// Whether any option that shapes the recipe was given.
    pub fn shapes_recipe(&self) -> bool {
        self.backbone.is_some()
            || self.layer.is_some()
            || self.size.is_some()
            || self.max_side.is_some()
            || self.reflect
            || self.descriptor.is_some()
            || self.k.is_some()
            || self.no_crow
            || self.whitening.is_some()
    }

    /// The weights source.
    pub fn weight_source(&self) -> WeightSource {
        match &self.weights {
            Some(p) => WeightSource::File(p.clone()),
            None => WeightSource::Default,
        }
    }

    /// The device.
    pub fn device(&self) -> anyhow::Result<candle_core::Device> {
        device(&self.device)
    }

    /// Loads the whitening file, if one was named.
    pub fn load_whitening(&self) -> anyhow::Result<Option<Arc<Whitening>>> {
        self.whitening
            .as_ref()
            .map(|p| Ok(Arc::new(Whitening::load(p)?)))
            .transpose()
    }

    /// A pipeline from these options and the defaults.
    pub fn pipeline(&self) -> anyhow::Result<Pipeline> {
        let kind = self.backbone.unwrap_or(BackboneKind::EfficientNetLite0);
        let mut b = BackboneBuilder::new(kind)
            .weights(self.weight_source())
            .input_size(
                self.size
                    .unwrap_or(deepfactor::backbone::DEFAULT_INPUT_SIZE),
            )
            .max_side(self.max_side)
            .padding(if self.reflect {
                Padding::Reflect
            } else {
                Padding::Zero
            })
            .device(self.device()?);
        if let Some(l) = &self.layer {
            b = b.layer(l.clone());
        }
        let backbone = b.build().context("loading the backbone")?;
        let mut cfg = DescriptorConfig::new(self.descriptor.unwrap_or(DescriptorKind::NmfVu))
            .crow(!self.no_crow);
        if let Some(k) = self.k {
            cfg = cfg.k(k);
        }
        if let Some(w) = self.load_whitening()? {
            cfg = cfg.whitening(w);
        }
        Ok(Pipeline::new(backbone, cfg.build()?))
    }
}

/// Parses `cpu`, `cuda` or `cuda:N`.
pub fn device(name: &str) -> anyhow::Result<candle_core::Device> {
    match name {
        "cpu" => Ok(candle_core::Device::Cpu),
        n if n == "cuda" || n.starts_with("cuda:") => {
            let ordinal: usize = n
                .strip_prefix("cuda:")
                .map_or(Ok(0), str::parse)
                .context("cuda device number")?;
            candle_core::Device::new_cuda(ordinal)
                .context("CUDA is not available (build with --features cuda, on a machine with an NVIDIA driver)")
        }
        other => anyhow::bail!("unknown device {other:?}: expected cpu, cuda or cuda:N"),
    }
}

/// Localization settings shared by `search` and `eval`.
#[derive(clap::Args, Debug, Clone)]
pub struct LocalizeArgs {
    /// Binarize localization heatmaps: calibrated (default: the level at which the query's own
    /// heatmap gives back its box), top30 (the thesis' fixed top 30% of cells) or otsu.
    #[arg(long, default_value = "calibrated", value_name = "RULE")]
    pub binarize: String,
    /// Stored localization: how the query's concepts pick a hit's stored factors —
    /// standardized (default: every factor matching well above the concept's baseline over
    /// the index, weighted by its z-score) or best (the best match per concept).
    #[arg(long, default_value = "standardized", value_name = "RULE")]
    pub matching: String,
    /// Joint localization: which joint factors stand for the region — matched (default: those
    /// matching the query's kept concepts) or mass (the thesis: those whose query heatmap lies
    /// in the box).
    #[arg(long, default_value = "matched", value_name = "RULE")]
    pub selection: String,
    /// Whole-view rule: the box is the whole image where the hit's factors matching the region
    /// explain at least this share of it (default 0.4); `off` turns the rule off.
    #[arg(long, default_value = "0.4", value_name = "FILL|off")]
    pub whole_view: String,
    /// Sharpen each hit's heatmap with its image before the box is read off it: colour
    /// (default: colour model and guided filter, co-segmentation's refinement), guided (guided
    /// filter alone) or none (no image is read).
    #[arg(long, default_value = "colour", value_name = "HOW")]
    pub sharpen: String,
}

impl LocalizeArgs {
    /// The localizer settings the arguments name.
    pub fn builder(&self) -> anyhow::Result<deepfactor::localize::LocalizerBuilder> {
        use anyhow::Context;
        let whole_view = match self.whole_view.as_str() {
            "off" | "none" => None,
            v => Some(
                v.parse::<f32>()
                    .with_context(|| format!("--whole-view {v:?}: expected a share or off"))?,
            ),
        };
        let b = deepfactor::localize::Localizer::builder()
            .binarize(binarize_rule(&self.binarize)?)
            .matching(self.matching.parse()?)
            .selection(self.selection.parse()?)
            .whole_view(whole_view)
            .sharpen(self.sharpen.parse()?);
        // Validate now, so that a bad value is reported before any work.
        b.build()?;
        Ok(b)
    }
}

/// The localization binarization rule named on the command line.
pub fn binarize_rule(name: &str) -> anyhow::Result<deepfactor::heatmap::Binarize> {
    use deepfactor::heatmap::Binarize;
    use deepfactor::localize::DEFAULT_TOP_FRACTION;
    match name {
        "top30" => Ok(Binarize::TopFraction(DEFAULT_TOP_FRACTION)),
        "otsu" => Ok(Binarize::Otsu),
        "calibrated" => Ok(Binarize::Calibrated),
        other => anyhow::bail!("--binarize {other:?}: expected calibrated, top30 or otsu"),
    }
}
