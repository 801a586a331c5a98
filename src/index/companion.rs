//! The index's companion files: `<id>.whitening`, the PCA whitening its recipe names
//! (`index-format/README.md`, §1). Written atomically before the first commit that names it,
//! never deleted by writers, read and checked whenever a pipeline is rebuilt from the index.

use crate::descriptor::Whitening;
use crate::{Error, Recipe, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Suffix of a whitening companion file.
const WHITENING_SUFFIX: &str = ".whitening";

/// The file in an index directory that holds whitening `id`.
pub(crate) fn whitening_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}{WHITENING_SUFFIX}"))
}

/// Whether `name` is a whitening companion file, or the temporary of one being written.
pub(crate) fn is_companion_name(name: &str) -> bool {
    name.ends_with(WHITENING_SUFFIX) || name.contains(".whitening.tmp")
}

/// Stores `whitening` beside the index in `dir` (atomically; a file already holding it is
/// kept), after checking that `recipe` names it.
pub(crate) fn store_whitening(dir: &Path, recipe: &Recipe, whitening: &Whitening) -> Result<()> {
    match &recipe.whitening {
        Some(r) if r.id == whitening.id() => {}
        Some(r) => {
            return Err(Error::invalid(format!(
                "the recipe names whitening {}, not {}",
                r.id,
                whitening.id()
            )))
        }
        None => {
            return Err(Error::invalid(format!(
                "whitening {} given for a recipe without whitening",
                whitening.id()
            )))
        }
    }
    let path = whitening_path(dir, whitening.id());
    if Whitening::load(&path).is_ok_and(|w| w.id() == whitening.id()) {
        return Ok(());
    }
    whitening.save(&path)
}

/// The whitening `recipe` names, read from its companion file in `dir`; `None` when the
/// recipe names none. A missing, damaged or different file is an error naming it.
pub(crate) fn load_whitening(dir: &Path, recipe: &Recipe) -> Result<Option<Arc<Whitening>>> {
    let Some(r) = &recipe.whitening else {
        return Ok(None);
    };
    let path = whitening_path(dir, &r.id);
    if !path.is_file() {
        return Err(Error::IndexFormat {
            path,
            section: "whitening".into(),
            reason: format!("the recipe names whitening {}, whose file is missing", r.id),
        });
    }
    let w = Whitening::load(&path)?;
    if w.id() != r.id {
        return Err(Error::IndexFormat {
            path,
            section: "whitening".into(),
            reason: format!("holds whitening {}, the recipe names {}", w.id(), r.id),
        });
    }
    Ok(Some(Arc::new(w)))
}
