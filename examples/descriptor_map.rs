//! Exact-search mAP of every descriptor kind on an Oxford-layout dev set (placeholder: extraction).
use anyhow::{bail, Context, Result};
use deepfactor::backbone::{Activations, Backbone, BackboneBuilder, BackboneKind};
use deepfactor::descriptor::crop::extract_crop;
use deepfactor::eval::ground_truth::IMAGE_EXTENSIONS;
use deepfactor::eval::GroundTruth;
use deepfactor::{CellGrid, Matrix};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

const CACHE_MAGIC: &[u8; 8] = b"DFACTS01";

struct Features {
    database: Vec<Activations>,
    crops: Vec<Activations>,
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mut gt_dir = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--gt" => gt_dir = Some(PathBuf::from(args.next().context("--gt needs a folder")?)),
            _ => bail!("unknown option {a}"),
        }
    }
    let gt_dir = gt_dir.context("--gt is required")?;
    let gt = GroundTruth::load(&gt_dir)?;
    let backbone = BackboneBuilder::new(BackboneKind::EfficientNetLite0)
        .layer("head")
        .input_size(512)
        .build()?;
    let t = std::time::Instant::now();
    let f = features(&gt, &gt_dir, &backbone)?;
    eprintln!(
        "{} + {} activations in {:.1?}",
        f.database.len(),
        f.crops.len(),
        t.elapsed()
    );
    Ok(())
}

fn image_path(root: &Path, name: &str) -> Result<PathBuf> {
    for ext in IMAGE_EXTENSIONS {
        let p = root.join("jpg").join(format!("{name}.{ext}"));
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!("{}: no image file for {name}", root.join("jpg").display())
}

fn cache_file(gt: &GroundTruth, root: &Path, backbone: &Backbone) -> Result<PathBuf> {
    let mut h = blake3::Hasher::new();
    h.update(backbone.fingerprint().as_bytes());
    h.update(backbone.layer().name.as_bytes());
    h.update(std::fs::canonicalize(root)?.to_string_lossy().as_bytes());
    for name in gt.images() {
        h.update(name.as_bytes());
        h.update(b"\n");
    }
    for q in gt.queries() {
        h.update(format!("{} {:?}\n", q.image, q.bbox).as_bytes());
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/descriptor-cache");
    std::fs::create_dir_all(&dir)?;
    Ok(dir.join(format!(
        "{}-{}.acts",
        gt.name(),
        &h.finalize().to_hex()[..16]
    )))
}

fn features(gt: &GroundTruth, root: &Path, backbone: &Backbone) -> Result<Features> {
    let file = cache_file(gt, root, backbone)?;
    if file.is_file() {
        eprintln!("reading cached activations from {}", file.display());
        let all = read_cache(&file)?;
        let n = gt.images().len();
        if all.len() == n + gt.queries().len() {
            let mut database = all;
            let crops = database.split_off(n);
            return Ok(Features { database, crops });
        }
        eprintln!(
            "{}: wrong number of entries, extracting again",
            file.display()
        );
    }
    let paths = gt
        .images()
        .iter()
        .map(|n| image_path(root, n))
        .collect::<Result<Vec<_>>>()?;
    let bar = progress(paths.len() + gt.queries().len(), "extracting");
    let mut database = Vec::with_capacity(paths.len());
    for chunk in paths.chunks(8) {
        for (p, r) in chunk.iter().zip(backbone.extract_paths(chunk)) {
            database.push(r.with_context(|| p.display().to_string())?);
        }
        bar.inc(chunk.len() as u64);
    }
    let mut crops = Vec::with_capacity(gt.queries().len());
    for q in gt.queries() {
        let p = image_path(root, &q.image)?;
        let bbox = q
            .bbox
            .with_context(|| format!("query {} has no box", q.name))?;
        crops.push(extract_crop(backbone, &p, &bbox)?);
        bar.inc(1);
    }
    bar.finish_and_clear();
    write_cache(&file, database.iter().chain(&crops))?;
    Ok(Features { database, crops })
}

fn progress(n: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(n as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg} {bar:40} {pos}/{len} {elapsed}<{eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(what.to_string());
    bar
}

fn write_cache<'a>(file: &Path, acts: impl Iterator<Item = &'a Activations>) -> Result<()> {
    let acts: Vec<&Activations> = acts.collect();
    let tmp = file.with_extension("tmp");
    let mut w = BufWriter::new(std::fs::File::create(&tmp)?);
    w.write_all(CACHE_MAGIC)?;
    w.write_all(&(acts.len() as u64).to_le_bytes())?;
    for a in acts {
        let g = a.grid;
        for v in [g.rows, g.cols, a.data.cols()] {
            w.write_all(&(v as u32).to_le_bytes())?;
        }
        w.write_all(&g.image_width.to_le_bytes())?;
        w.write_all(&g.image_height.to_le_bytes())?;
        for v in a.data.as_slice() {
            w.write_all(&v.to_le_bytes())?;
        }
    }
    w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(&tmp, file)?;
    Ok(())
}

fn read_cache(file: &Path) -> Result<Vec<Activations>> {
    let mut bytes = Vec::new();
    std::fs::File::open(file)?.read_to_end(&mut bytes)?;
    let mut r = Reader {
        bytes: &bytes,
        at: 0,
        file,
    };
    if r.take(8)? != CACHE_MAGIC {
        bail!("{}: not an activation cache", file.display());
    }
    let n = u64::from_le_bytes(r.take(8)?.try_into()?) as usize;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let mut h = [0u32; 5];
        for v in &mut h {
            *v = u32::from_le_bytes(r.take(4)?.try_into()?);
        }
        let (rows, cols, ch) = (h[0] as usize, h[1] as usize, h[2] as usize);
        let data: Vec<f32> = r
            .take(rows * cols * ch * 4)?
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        out.push(Activations {
            grid: CellGrid {
                rows,
                cols,
                image_width: h[3],
                image_height: h[4],
            },
            data: Matrix::from_vec(rows * cols, ch, data)?,
        });
    }
    Ok(out)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    file: &'a Path,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            bail!("{}: truncated activation cache", self.file.display());
        };
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }
}
