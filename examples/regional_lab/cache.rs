//! Cached activations and factorizations of a development set.

use anyhow::{bail, Context, Result};
use deepfactor::backbone::{Backbone, BackboneBuilder, BackboneKind};
use deepfactor::descriptor::{DescriptorConfig, DescriptorKind};
use deepfactor::eval::GroundTruth;
use deepfactor::linalg::Matrix;
use deepfactor::nmf::Factorization;
use deepfactor::query::image_file;
use deepfactor::{Activations, CellGrid};
use half::f16;
use rayon::prelude::*;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// A development set: ground truth, image names, and its cache folder.
pub struct Set {
    pub name: String,
    pub root: PathBuf,
    pub gt: GroundTruth,
    pub cache: PathBuf,
}

impl Set {
    pub fn open(root: &Path) -> Result<Set> {
        let gt = GroundTruth::load(root).with_context(|| format!("{}", root.display()))?;
        let name = root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let cache = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target/regional-cache")
            .join(&name);
        Ok(Set {
            name,
            root: root.to_path_buf(),
            gt,
            cache,
        })
    }

    pub fn images(&self) -> &[String] {
        self.gt.images()
    }

    pub fn image_path(&self, i: usize) -> Result<PathBuf> {
        Ok(image_file(&self.root.join("jpg"), &self.images()[i])?)
    }

    fn act_file(&self, size: u32, layer: &str, i: usize) -> PathBuf {
        self.cache
            .join(format!("s{size}"))
            .join(layer)
            .join(format!("{}.bin", self.images()[i]))
    }

    fn crop_file(&self, size: u32, query: &str) -> PathBuf {
        self.cache
            .join(format!("s{size}"))
            .join("crop-head")
            .join(format!("{query}.bin"))
    }

    /// Head activations of query `qn`'s box cut out of its image (as a crop query makes them).
    pub fn crop_activations(&self, size: u32, qn: usize) -> Result<Activations> {
        read_acts(&self.crop_file(size, &self.gt.queries()[qn].name))
    }

    /// Extracts and caches every query's crop.
    pub fn extract_crops(&self, size: u32) -> Result<()> {
        let bb = backbone("head", size)?;
        for (qn, q) in self.gt.queries().iter().enumerate() {
            let file = self.crop_file(size, &q.name);
            if file.is_file() {
                continue;
            }
            let Some(b) = q.bbox else { continue };
            let i = self.gt.image_index(&q.image).context("query image")?;
            let acts = deepfactor::descriptor::extract_crop(&bb, &self.image_path(i)?, &b)?;
            write_acts(&file, &acts)?;
            let _ = qn;
        }
        Ok(())
    }

    /// Activations of image `i` at `layer` (input shorter side `size`).
    pub fn activations(&self, size: u32, layer: &str, i: usize) -> Result<Activations> {
        read_acts(&self.act_file(size, layer, i))
    }
}

pub fn backbone(layer: &str, size: u32) -> Result<Backbone> {
    Ok(BackboneBuilder::new(BackboneKind::EfficientNetLite0)
        .layer(layer)
        .input_size(size)
        .build()?)
}

/// Extracts and caches every image's activations at `layers` (one forward pass each).
pub fn extract(set: &Set, size: u32, layers: &[&str]) -> Result<()> {
    let bb = backbone(layers[0], size)?;
    let n = set.images().len();
    let t = Instant::now();
    let mut done = 0;
    for i in 0..n {
        let files: Vec<PathBuf> = layers.iter().map(|l| set.act_file(size, l, i)).collect();
        if files.iter().all(|f| f.is_file()) {
            continue;
        }
        let path = set.image_path(i)?;
        let prepared = bb.prepare_path(&path)?;
        let outs = bb.forward_layers(&prepared.tensor.unsqueeze(0)?, layers)?;
        for (out, file) in outs.iter().zip(&files) {
            let map = out.get(0)?;
            let (c, h, w) = map.dims3()?;
            let data: Vec<f32> = map.permute((1, 2, 0))?.flatten_all()?.to_vec1()?;
            let grid = CellGrid {
                rows: h,
                cols: w,
                image_width: prepared.image_width,
                image_height: prepared.image_height,
            };
            let acts = Activations {
                grid,
                data: Matrix::from_vec(h * w, c, data)?,
            };
            write_acts(file, &acts)?;
        }
        done += 1;
        if done % 25 == 0 {
            eprintln!(
                "{}: {done} extracted ({} of {n}), {:.2} s/image",
                set.name,
                i + 1,
                t.elapsed().as_secs_f64() / done as f64
            );
        }
    }
    Ok(())
}

fn write_acts(file: &Path, a: &Activations) -> Result<()> {
    std::fs::create_dir_all(file.parent().context("cache file without a folder")?)?;
    let tmp = file.with_extension("tmp");
    {
        let mut w = BufWriter::new(std::fs::File::create(&tmp)?);
        let g = &a.grid;
        for v in [
            g.rows as u32,
            g.cols as u32,
            g.image_width,
            g.image_height,
            a.data.cols() as u32,
        ] {
            w.write_all(&v.to_le_bytes())?;
        }
        for &x in a.data.as_slice() {
            w.write_all(&f16::from_f32(x).to_le_bytes())?;
        }
        w.flush()?;
    }
    std::fs::rename(&tmp, file)?;
    Ok(())
}

fn read_acts(file: &Path) -> Result<Activations> {
    let mut bytes = Vec::new();
    std::fs::File::open(file)
        .with_context(|| format!("{} (run `regional_lab extract` first)", file.display()))?
        .read_to_end(&mut bytes)?;
    if bytes.len() < 20 {
        bail!("{}: truncated", file.display());
    }
    let u = |i: usize| u32::from_le_bytes(bytes[4 * i..4 * i + 4].try_into().unwrap_or_default());
    let grid = CellGrid {
        rows: u(0) as usize,
        cols: u(1) as usize,
        image_width: u(2),
        image_height: u(3),
    };
    let c = u(4) as usize;
    let body = &bytes[20..];
    if body.len() != grid.len() * c * 2 {
        bail!("{}: wrong length", file.display());
    }
    let data = body
        .chunks_exact(2)
        .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
        .collect();
    Ok(Activations {
        grid,
        data: Matrix::from_vec(grid.len(), c, data)?,
    })
}

/// Every image's factorization at (`size`, `layer`, `k`) — CroW-weighted activations, NNDSVDa,
/// 200 iterations, as the index's describer makes them — with its grid; cached.
pub fn factors(
    set: &Set,
    size: u32,
    layer: &str,
    k: usize,
) -> Result<Vec<(CellGrid, Factorization)>> {
    let file = set
        .cache
        .join(format!("s{size}"))
        .join(format!("{layer}-k{k}.factors"));
    if let Ok(f) = read_factors(&file) {
        if f.len() == set.images().len() {
            return Ok(f);
        }
    }
    let describer = DescriptorConfig::new(DescriptorKind::NmfVu).k(k).build()?;
    let t = Instant::now();
    let out: Vec<(CellGrid, Factorization)> = (0..set.images().len())
        .into_par_iter()
        .map(|i| -> Result<_> {
            let a = set.activations(size, layer, i)?;
            Ok((a.grid, describer.factorize(&a)?))
        })
        .collect::<Result<_>>()?;
    eprintln!(
        "{}: factorized {} images at {layer} K={k} in {:.1} s",
        set.name,
        out.len(),
        t.elapsed().as_secs_f64()
    );
    write_factors(&file, &out)?;
    Ok(out)
}

fn put_matrix(w: &mut impl Write, m: &Matrix) -> Result<()> {
    w.write_all(&(m.rows() as u32).to_le_bytes())?;
    w.write_all(&(m.cols() as u32).to_le_bytes())?;
    for &x in m.as_slice() {
        w.write_all(&x.to_le_bytes())?;
    }
    Ok(())
}

fn get_u32(r: &mut impl Read) -> Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn get_matrix(r: &mut impl Read) -> Result<Matrix> {
    let rows = get_u32(r)? as usize;
    let cols = get_u32(r)? as usize;
    let mut b = vec![0u8; rows * cols * 4];
    r.read_exact(&mut b)?;
    let data = b
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok(Matrix::from_vec(rows, cols, data)?)
}

fn write_factors(file: &Path, fs: &[(CellGrid, Factorization)]) -> Result<()> {
    std::fs::create_dir_all(file.parent().context("no folder")?)?;
    let tmp = file.with_extension("tmp");
    {
        let mut w = BufWriter::new(std::fs::File::create(&tmp)?);
        w.write_all(&(fs.len() as u32).to_le_bytes())?;
        for (g, f) in fs {
            for v in [g.rows as u32, g.cols as u32, g.image_width, g.image_height] {
                w.write_all(&v.to_le_bytes())?;
            }
            put_matrix(&mut w, &f.u)?;
            put_matrix(&mut w, &f.v)?;
            w.write_all(&f.rel_error.to_le_bytes())?;
        }
        w.flush()?;
    }
    std::fs::rename(&tmp, file)?;
    Ok(())
}

fn read_factors(file: &Path) -> Result<Vec<(CellGrid, Factorization)>> {
    let mut r = BufReader::new(std::fs::File::open(file)?);
    let n = get_u32(&mut r)? as usize;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let grid = CellGrid {
            rows: get_u32(&mut r)? as usize,
            cols: get_u32(&mut r)? as usize,
            image_width: get_u32(&mut r)?,
            image_height: get_u32(&mut r)?,
        };
        let u = get_matrix(&mut r)?;
        let v = get_matrix(&mut r)?;
        let mut b = [0u8; 8];
        r.read_exact(&mut b)?;
        out.push((
            grid,
            Factorization {
                u,
                v,
                iterations: 0,
                rel_error: f64::from_le_bytes(b),
            },
        ));
    }
    Ok(out)
}
