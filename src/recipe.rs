//! The recipe: everything that decides what a descriptor means.
//!
//! Two descriptors can be compared only when they were made by the same recipe. An index
//! records its recipe in the manifest and refuses queries and additions made with another.
//!
//! See [`Recipe`] for its typed form and its JSON form.

use crate::backbone::{BackboneKind, Padding};
use crate::descriptor::{
    DescriptorKind, DEFAULT_GEM_P, DEFAULT_MAX_ITER, DEFAULT_RMAC_LEVELS, DEFAULT_TOL,
    DEFAULT_WHITEN_POWER,
};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt;

/// How descriptors are made: backbone, weights, layer, preprocessing, factorization and
/// pooling.
///
/// A recipe is typed: the backbone ([`BackboneSpec`]), the padding
/// ([`Padding`]), the descriptor with its parameters ([`DescriptorSpec`]) and the whitening it
/// applies ([`WhiteningRef`]) are enums and structs, not strings. Its JSON form — the one
/// written into every index manifest since the first format version — is flat and keeps the
/// descriptor and whitening as short specs; `src/recipe.rs` is the one place that reads and
/// writes it:
///
/// ```json
/// { "backbone": "efficientnet-lite0", "weights_fingerprint": "5793…", "layer": "head",
///   "input_size": 512, "max_side": null, "padding": "zero", "shift_negative": false,
///   "descriptor": "nmf-vu(max_iter=200,tol=0,init=nndsvda)", "k": 8, "crow": true,
///   "whitening": "wh-0123456789abcdef(power=0.5)", "dim": 1280 }
/// ```
///
/// Reading refuses, with a message naming the value: an unknown padding, a descriptor of one of
/// deepfactor's backbones that deepfactor does not make, an unknown or repeated parameter, a
/// parameter value out of range, `k` missing for an NMF descriptor or given for another, a
/// malformed spec. Parameters left out take the defaults they had when they were introduced
/// (`max_iter=200`, `tol=0`, `p=3`, `L=3`, `power=0.5`). A recipe whose backbone is not one of
/// deepfactor's ([`BackboneSpec::External`]) was made by another [`crate::index::Extractor`]:
/// its descriptor may then be that extractor's own ([`DescriptorSpec::External`]); such an index
/// can be searched by vector and extended by that extractor, and deepfactor refuses to rebuild a
/// pipeline from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RecipeJson", into = "RecipeJson")]
pub struct Recipe {
    /// The backbone.
    pub backbone: BackboneSpec,
    /// Fingerprint of the weights and preprocessing (hex).
    pub weights_fingerprint: String,
    /// Layer whose activations are used, e.g. `head`.
    pub layer: String,
    /// Shorter side of the network input, in pixels.
    pub input_size: u32,
    /// Optional cap on the longer side of the network input.
    pub max_side: Option<u32>,
    /// Convolution padding.
    pub padding: Padding,
    /// Whether a layer that can be negative was shifted to be non-negative.
    pub shift_negative: bool,
    /// The descriptor and its parameters.
    pub descriptor: DescriptorSpec,
    /// Whether CroW channel weights are applied before factorization or pooling.
    pub crow: bool,
    /// The whitening applied, if any.
    pub whitening: Option<WhiteningRef>,
    /// Dimension of the final descriptor.
    pub dim: usize,
}

/// The backbone a recipe names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackboneSpec {
    /// One of deepfactor's backbones.
    Builtin(BackboneKind),
    /// Any other name: features made by another [`crate::index::Extractor`].
    External(String),
}

/// The descriptor a recipe names, with the parameters that change its values.
#[derive(Debug, Clone, PartialEq)]
pub enum DescriptorSpec {
    /// `nmf-v`.
    NmfV(NmfSpec),
    /// `nmf-vu`.
    NmfVu(NmfSpec),
    /// `crow`.
    Crow,
    /// `mac`.
    Mac,
    /// `spoc`.
    Spoc,
    /// `gem(p=…)`.
    Gem {
        /// The pooling power.
        p: f32,
    },
    /// `rmac(L=…)`.
    Rmac {
        /// Number of region scales.
        levels: usize,
    },
    /// Another extractor's descriptor (only with a [`BackboneSpec::External`] backbone).
    External(String),
}

/// The factorization behind the NMF descriptors (NNDSVDa initialisation).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NmfSpec {
    /// NMF rank.
    pub k: usize,
    /// Iterations.
    pub max_iter: usize,
    /// Relative-improvement tolerance (0: every iteration runs).
    pub tol: f64,
}

/// The whitening a recipe applies: its identity (the file `<id>.whitening` beside an index
/// holds it) and the power of the variances.
#[derive(Debug, Clone, PartialEq)]
pub struct WhiteningRef {
    /// `wh-` and 16 hex digits (see [`crate::descriptor::Whitening::id`]).
    pub id: String,
    /// Power applied to the variances.
    pub power: f32,
}

impl DescriptorSpec {
    /// The descriptor kind; `None` for another extractor's descriptor.
    pub fn kind(&self) -> Option<DescriptorKind> {
        Some(match self {
            DescriptorSpec::NmfV(_) => DescriptorKind::NmfV,
            DescriptorSpec::NmfVu(_) => DescriptorKind::NmfVu,
            DescriptorSpec::Crow => DescriptorKind::Crow,
            DescriptorSpec::Mac => DescriptorKind::Mac,
            DescriptorSpec::Spoc => DescriptorKind::Spoc,
            DescriptorSpec::Gem { .. } => DescriptorKind::Gem,
            DescriptorSpec::Rmac { .. } => DescriptorKind::Rmac,
            DescriptorSpec::External(_) => return None,
        })
    }

    /// The factorization settings of the NMF kinds.
    pub fn nmf(&self) -> Option<&NmfSpec> {
        match self {
            DescriptorSpec::NmfV(n) | DescriptorSpec::NmfVu(n) => Some(n),
            _ => None,
        }
    }
}

impl fmt::Display for DescriptorSpec {
    /// The JSON form without `k`, e.g. `gem(p=3)` or `nmf-vu(max_iter=200,tol=0,init=nndsvda)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DescriptorSpec::NmfV(n) | DescriptorSpec::NmfVu(n) => write!(
                f,
                "{}(max_iter={},tol={},init=nndsvda)",
                self.kind().map_or("", DescriptorKind::name),
                n.max_iter,
                n.tol
            ),
            DescriptorSpec::Gem { p } => write!(f, "gem(p={p})"),
            DescriptorSpec::Rmac { levels } => write!(f, "rmac(L={levels})"),
            DescriptorSpec::External(name) => f.write_str(name),
            other => f.write_str(other.kind().map_or("", DescriptorKind::name)),
        }
    }
}

impl fmt::Display for BackboneSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackboneSpec::Builtin(k) => f.write_str(k.name()),
            BackboneSpec::External(name) => f.write_str(name),
        }
    }
}

impl fmt::Display for WhiteningRef {
    /// `<id>(power=<power>)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}(power={})", self.id, self.power)
    }
}

impl Recipe {
    /// A one-line description for messages.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "{} {} (weights {}), layer {}, input {}",
            self.descriptor,
            self.backbone,
            self.weights_fingerprint
                .chars()
                .take(12)
                .collect::<String>(),
            self.layer,
            self.input_size
        );
        if let Some(m) = self.max_side {
            s.push_str(&format!(" (max {m})"));
        }
        if self.padding != Padding::Zero {
            s.push_str(&format!(", {} padding", padding_name(self.padding)));
        }
        if self.shift_negative {
            s.push_str(", shifted");
        }
        if let Some(n) = self.descriptor.nmf() {
            s.push_str(&format!(", K={}", n.k));
        }
        if self.crow {
            s.push_str(", CroW");
        }
        match &self.whitening {
            Some(w) => s.push_str(&format!(", whitening {w}")),
            None => s.push_str(", no whitening"),
        }
        s.push_str(&format!(", {} dims", self.dim));
        s
    }

    /// `Ok` when `other` makes comparable descriptors, else [`crate::Error::RecipeMismatch`].
    pub fn check_compatible(&self, other: &Recipe) -> Result<()> {
        if self == other {
            Ok(())
        } else {
            Err(Error::RecipeMismatch {
                index: self.describe(),
                other: other.describe(),
            })
        }
    }

    /// Checks what the JSON form needs to read the recipe back: a descriptor deepfactor makes
    /// when the backbone is one of its own, parameters in range, a plain whitening id.
    pub fn validate(&self) -> Result<()> {
        let json = RecipeJson::from(self.clone());
        let back = Recipe::try_from(json).map_err(|e| Error::invalid(format!("recipe: {e}")))?;
        if &back != self {
            return Err(Error::invalid(format!(
                "recipe {} does not read back as itself",
                self.describe()
            )));
        }
        Ok(())
    }
}

/// The JSON form (see the module documentation); field order as written since format 1.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecipeJson {
    backbone: String,
    weights_fingerprint: String,
    layer: String,
    input_size: u32,
    max_side: Option<u32>,
    #[serde(default = "default_padding")]
    padding: String,
    #[serde(default)]
    shift_negative: bool,
    descriptor: String,
    k: Option<usize>,
    crow: bool,
    whitening: Option<String>,
    dim: usize,
}

fn default_padding() -> String {
    padding_name(Padding::Zero).to_string()
}

fn padding_name(p: Padding) -> &'static str {
    match p {
        Padding::Zero => "zero",
        Padding::Reflect => "reflect",
    }
}

/// Why a recipe's JSON form was refused.
#[derive(Debug)]
struct RecipeError(String);

impl fmt::Display for RecipeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

type Parsed<T> = std::result::Result<T, RecipeError>;

fn bad(what: impl fmt::Display) -> RecipeError {
    RecipeError(what.to_string())
}

impl From<Recipe> for RecipeJson {
    fn from(r: Recipe) -> Self {
        RecipeJson {
            backbone: r.backbone.to_string(),
            weights_fingerprint: r.weights_fingerprint,
            layer: r.layer,
            input_size: r.input_size,
            max_side: r.max_side,
            padding: padding_name(r.padding).to_string(),
            shift_negative: r.shift_negative,
            k: r.descriptor.nmf().map(|n| n.k),
            descriptor: r.descriptor.to_string(),
            crow: r.crow,
            whitening: r.whitening.as_ref().map(WhiteningRef::to_string),
            dim: r.dim,
        }
    }
}

impl TryFrom<RecipeJson> for Recipe {
    type Error = RecipeError;

    fn try_from(j: RecipeJson) -> Parsed<Self> {
        let backbone = match BackboneKind::from_name(&j.backbone) {
            Ok(kind) => BackboneSpec::Builtin(kind),
            Err(_) => BackboneSpec::External(j.backbone.clone()),
        };
        let padding = match j.padding.as_str() {
            "zero" => Padding::Zero,
            "reflect" => Padding::Reflect,
            other => {
                return Err(bad(format!(
                    "unknown padding {other:?}: expected zero or reflect"
                )))
            }
        };
        let descriptor = parse_descriptor(&j.descriptor, j.k, &backbone)?;
        let whitening = j.whitening.as_deref().map(parse_whitening).transpose()?;
        Ok(Recipe {
            backbone,
            weights_fingerprint: j.weights_fingerprint,
            layer: j.layer,
            input_size: j.input_size,
            max_side: j.max_side,
            padding,
            shift_negative: j.shift_negative,
            descriptor,
            crow: j.crow,
            whitening,
            dim: j.dim,
        })
    }
}

/// `name` or `name(key=value,…)`: the name and its parameters, in order.
fn split_spec(spec: &str) -> Parsed<(&str, Vec<(&str, &str)>)> {
    let Some((name, rest)) = spec.split_once('(') else {
        if spec.contains(')') {
            return Err(bad(format!("malformed spec {spec:?}")));
        }
        return Ok((spec.trim(), Vec::new()));
    };
    let Some(inner) = rest.strip_suffix(')') else {
        return Err(bad(format!("spec {spec:?} does not end with ')'")));
    };
    if inner.contains(['(', ')']) {
        return Err(bad(format!("malformed spec {spec:?}")));
    }
    let mut params: Vec<(&str, &str)> = Vec::new();
    for kv in inner.split(',').filter(|kv| !kv.trim().is_empty()) {
        let Some((k, v)) = kv.split_once('=') else {
            return Err(bad(format!("{spec:?}: parameter {kv:?} is not key=value")));
        };
        let (k, v) = (k.trim(), v.trim());
        if params.iter().any(|(seen, _)| *seen == k) {
            return Err(bad(format!("{spec:?}: parameter {k} is given twice")));
        }
        params.push((k, v));
    }
    Ok((name.trim(), params))
}

/// The value of parameter `key` of `spec`, parsed, or `default` when absent.
fn param<T: std::str::FromStr>(
    spec: &str,
    params: &[(&str, &str)],
    key: &str,
    default: T,
) -> Parsed<T> {
    match params.iter().find(|(k, _)| *k == key) {
        None => Ok(default),
        Some((_, v)) => v
            .parse()
            .map_err(|_| bad(format!("{spec:?}: {key}={v} is not a valid value"))),
    }
}

/// Refuses parameters of `spec` other than `known`.
fn only(spec: &str, params: &[(&str, &str)], known: &[&str]) -> Parsed<()> {
    match params.iter().find(|(k, _)| !known.contains(k)) {
        None => Ok(()),
        Some((k, _)) => Err(bad(format!(
            "{spec:?}: unknown parameter {k} (expected {})",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        ))),
    }
}

fn parse_descriptor(
    spec: &str,
    k: Option<usize>,
    backbone: &BackboneSpec,
) -> Parsed<DescriptorSpec> {
    let (name, params) = split_spec(spec)?;
    let known = DescriptorKind::ALL.into_iter().find(|k| k.name() == name);
    let kind = match (known, backbone) {
        (Some(kind), _) => kind,
        (None, BackboneSpec::Builtin(b)) => {
            let names: Vec<&str> = DescriptorKind::ALL.iter().map(|k| k.name()).collect();
            return Err(bad(format!(
                "unknown descriptor {name:?} for backbone {b}: expected one of {}",
                names.join(", ")
            )));
        }
        (None, BackboneSpec::External(_)) => {
            if k.is_some() {
                return Err(bad(format!(
                    "k is recorded only for nmf-v and nmf-vu, not for {spec:?}"
                )));
            }
            return Ok(DescriptorSpec::External(spec.to_string()));
        }
    };
    if kind.is_nmf() != k.is_some() {
        return Err(bad(if kind.is_nmf() {
            format!("{spec:?} needs its NMF rank k")
        } else {
            format!("k is recorded only for nmf-v and nmf-vu, not for {spec:?}")
        }));
    }
    let d = match kind {
        DescriptorKind::NmfV | DescriptorKind::NmfVu => {
            only(spec, &params, &["max_iter", "tol", "init"])?;
            let init: String = param(spec, &params, "init", "nndsvda".to_string())?;
            if init != "nndsvda" {
                return Err(bad(format!(
                    "{spec:?}: init={init}; deepfactor's NMF descriptors start from nndsvda"
                )));
            }
            let n = NmfSpec {
                k: k.unwrap_or_default(),
                max_iter: param(spec, &params, "max_iter", DEFAULT_MAX_ITER)?,
                tol: param(spec, &params, "tol", DEFAULT_TOL)?,
            };
            if n.k == 0 || n.max_iter == 0 || !(n.tol.is_finite() && n.tol >= 0.0) {
                return Err(bad(format!(
                    "{spec:?} with k={}: k and max_iter must be at least 1, tol finite and \
                     not negative",
                    n.k
                )));
            }
            if kind == DescriptorKind::NmfV {
                DescriptorSpec::NmfV(n)
            } else {
                DescriptorSpec::NmfVu(n)
            }
        }
        DescriptorKind::Gem => {
            only(spec, &params, &["p"])?;
            let p: f32 = param(spec, &params, "p", DEFAULT_GEM_P)?;
            if !(p.is_finite() && p > 0.0) {
                return Err(bad(format!("{spec:?}: p must be finite and positive")));
            }
            DescriptorSpec::Gem { p }
        }
        DescriptorKind::Rmac => {
            only(spec, &params, &["L"])?;
            DescriptorSpec::Rmac {
                levels: param(spec, &params, "L", DEFAULT_RMAC_LEVELS)?,
            }
        }
        DescriptorKind::Crow | DescriptorKind::Mac | DescriptorKind::Spoc => {
            only(spec, &params, &[])?;
            match kind {
                DescriptorKind::Crow => DescriptorSpec::Crow,
                DescriptorKind::Mac => DescriptorSpec::Mac,
                _ => DescriptorSpec::Spoc,
            }
        }
    };
    Ok(d)
}

fn parse_whitening(spec: &str) -> Parsed<WhiteningRef> {
    let (id, params) = split_spec(spec)?;
    only(spec, &params, &["power"])?;
    let valid_id = id
        .strip_prefix("wh-")
        .is_some_and(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit()));
    if !valid_id {
        return Err(bad(format!(
            "whitening {spec:?}: the id must be wh- and hex digits"
        )));
    }
    let power: f32 = param(spec, &params, "power", DEFAULT_WHITEN_POWER)?;
    if !(power.is_finite() && power >= 0.0) {
        return Err(bad(format!(
            "whitening {spec:?}: power must be finite and not negative"
        )));
    }
    Ok(WhiteningRef {
        id: id.to_string(),
        power,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(descriptor: &str, k: Option<usize>) -> serde_json::Value {
        serde_json::json!({
            "backbone": "efficientnet-lite0", "weights_fingerprint": "f00d", "layer": "head",
            "input_size": 512, "max_side": null, "padding": "zero", "shift_negative": false,
            "descriptor": descriptor, "k": k, "crow": true, "whitening": null, "dim": 1280
        })
    }

    fn read(v: serde_json::Value) -> Result<Recipe> {
        serde_json::from_value(v).map_err(|e| Error::invalid(e.to_string()))
    }

    #[test]
    fn round_trips_in_the_format_1_form() {
        let r = read(json("nmf-vu(max_iter=200,tol=0,init=nndsvda)", Some(8))).unwrap();
        assert_eq!(
            r.descriptor,
            DescriptorSpec::NmfVu(NmfSpec {
                k: 8,
                max_iter: 200,
                tol: 0.0
            })
        );
        assert_eq!(
            r.backbone,
            BackboneSpec::Builtin(BackboneKind::EfficientNetLite0)
        );
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json("nmf-vu(max_iter=200,tol=0,init=nndsvda)", Some(8))
        );
        for (d, k) in [
            ("gem(p=3)", None),
            ("rmac(L=3)", None),
            ("mac", None),
            ("crow", None),
        ] {
            let r = read(json(d, k)).unwrap();
            assert_eq!(serde_json::to_value(&r).unwrap(), json(d, k), "{d}");
            r.validate().unwrap();
        }
        // Defaults for parameters left out.
        let r = read(json("nmf-v", Some(4))).unwrap();
        assert_eq!(
            r.descriptor.to_string(),
            "nmf-v(max_iter=200,tol=0,init=nndsvda)"
        );
        assert_eq!(
            read(json("gem", None)).unwrap().descriptor,
            DescriptorSpec::Gem { p: 3.0 }
        );
        // Whitening and padding.
        let mut v = json("gem(p=4.5)", None);
        v["whitening"] = "wh-00ff(power=0.25)".into();
        v["padding"] = "reflect".into();
        let r = read(v.clone()).unwrap();
        assert_eq!(
            r.whitening,
            Some(WhiteningRef {
                id: "wh-00ff".into(),
                power: 0.25
            })
        );
        assert_eq!(r.padding, Padding::Reflect);
        assert_eq!(serde_json::to_value(&r).unwrap(), v);
        // Written before padding and shift_negative existed: zero padding, not shifted.
        let mut old = json("mac", None);
        old.as_object_mut().unwrap().remove("padding");
        old.as_object_mut().unwrap().remove("shift_negative");
        assert_eq!(read(old).unwrap().padding, Padding::Zero);
    }

    #[test]
    fn unknown_values_are_refused() {
        let refused = |v: serde_json::Value, needle: &str| {
            let e = read(v).unwrap_err().to_string();
            assert!(e.contains(needle), "expected {needle:?} in {e}");
        };
        let mut v = json("mac", None);
        v["padding"] = "mirror".into();
        refused(v, "unknown padding \"mirror\"");
        refused(json("gem(q=3)", None), "unknown parameter q");
        refused(json("gem(p=-1)", None), "p must be finite and positive");
        refused(json("gem(p=x)", None), "p=x is not a valid value");
        refused(json("gem(p=3,p=4)", None), "given twice");
        refused(json("gem(p=3", None), "does not end with ')'");
        refused(json("rmac(levels=3)", None), "unknown parameter levels");
        refused(json("mac(p=3)", None), "unknown parameter p");
        refused(
            json("nmf-vu(max_iter=200,init=random)", Some(8)),
            "init=random",
        );
        refused(
            json("nmf-vu(max_iter=200,alpha=1)", Some(8)),
            "unknown parameter alpha",
        );
        refused(json("nmf-vu", None), "needs its NMF rank k");
        refused(json("nmf-vu", Some(0)), "at least 1");
        refused(json("mac", Some(8)), "k is recorded only");
        refused(json("vlad", None), "unknown descriptor \"vlad\"");
        let mut v = json("mac", None);
        v["whitening"] = "pca(power=0.5)".into();
        refused(v, "must be wh-");
        let mut v = json("mac", None);
        v["whitening"] = "wh-12(power=0.5,dim=3)".into();
        refused(v, "unknown parameter dim");
        let mut v = json("mac", None);
        v["extra"] = 1.into();
        refused(v, "unknown field");
    }

    #[test]
    fn other_extractors_keep_their_own_names() {
        let mut v = json("rgb-histogram-4", None);
        v["backbone"] = "synthetic".into();
        let r = read(v.clone()).unwrap();
        assert_eq!(r.backbone, BackboneSpec::External("synthetic".into()));
        assert_eq!(
            r.descriptor,
            DescriptorSpec::External("rgb-histogram-4".into())
        );
        assert_eq!(serde_json::to_value(&r).unwrap(), v);
        // Their use of deepfactor's descriptor names is still checked.
        v["descriptor"] = "gem(q=1)".into();
        assert!(read(v).is_err());
        // A recipe that would not read back is refused before it is written.
        let mut r = read(json("mac", None)).unwrap();
        r.descriptor = DescriptorSpec::External("mine".into());
        assert!(r.validate().is_err());
    }
}
