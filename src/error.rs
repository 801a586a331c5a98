//! The library's one error type.
//!
//! Every variant that concerns a file carries its path, and every variant carries a reason a
//! person can act on. The enum is `#[non_exhaustive]` so that new cases do not break users.

use std::path::PathBuf;

/// Errors returned by deepfactor.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system I/O failure on a named file or directory.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// An image that cannot be decoded or is refused (corrupt, unsupported, too large).
    #[error("{}: {reason}", path.display())]
    Image {
        /// The image file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A weights file that cannot be read or does not fit the model.
    #[error("{}: {reason}", path.display())]
    Weights {
        /// The weights file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// Weights that are not on this machine and cannot be fetched now.
    #[error("weights for {model} are not available: {reason}\n{help}")]
    WeightsUnavailable {
        /// The model whose weights are missing.
        model: String,
        /// Why they could not be had.
        reason: String,
        /// How to get them.
        help: String,
    },

    /// A layer name that the backbone does not have, or may not be used as asked.
    #[error("layer {layer:?} of {backbone}: {reason}")]
    Layer {
        /// The backbone.
        backbone: String,
        /// The layer asked for.
        layer: String,
        /// What is wrong.
        reason: String,
    },

    /// An argument outside what the function accepts.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// Input to a numerical routine that it cannot work with (NaN, wrong shape, …).
    #[error("{0}")]
    Numeric(String),

    /// Ground truth that cannot be read (missing file, malformed line, unknown image).
    #[error("{}{}: {reason}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    GroundTruth {
        /// The ground-truth file.
        path: PathBuf,
        /// The 1-based line, where one is to blame.
        line: Option<usize>,
        /// What is wrong.
        reason: String,
    },

    /// A data set file that cannot be read (missing, bad magic, wrong sizes, truncated), or a
    /// training checkpoint that does not fit its settings.
    #[error("{}: {reason}", path.display())]
    Dataset {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// An index file that is damaged, truncated, or of an unknown format.
    #[error("{}: {section}: {reason}", path.display())]
    IndexFormat {
        /// The file.
        path: PathBuf,
        /// The part of the file (header, manifest, a section name, footer).
        section: String,
        /// What is wrong.
        reason: String,
    },

    /// A whitening file that is damaged, truncated, or of an unknown format or version.
    #[error("{}: whitening file: {reason}", path.display())]
    Whitening {
        /// The file (or the index holding it).
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// A query or addition whose recipe differs from the index's.
    #[error("recipe mismatch: the index was built with {index}, but this was made with {other}")]
    RecipeMismatch {
        /// The index's recipe, described.
        index: String,
        /// The other recipe, described.
        other: String,
    },

    /// Another writer holds the index.
    #[error("{}: the index is locked by another writer (remove the lock file only if no writer runs)", path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
    },

    /// A failure inside the tensor library.
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// An image error for `path`.
    pub fn image(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Image {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// A weights error for `path`.
    pub fn weights(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Weights {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// A data set error for `path`.
    pub fn dataset(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Dataset {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// An invalid-argument error.
    pub fn invalid(reason: impl Into<String>) -> Self {
        Error::InvalidArgument(reason.into())
    }

    /// The error's message, naming `path` exactly once: as it is when the error is about
    /// that very file (its message starts with it), prefixed with it otherwise.
    pub(crate) fn naming(&self, path: &std::path::Path) -> String {
        let about = match self {
            Error::Io { path: p, .. }
            | Error::Image { path: p, .. }
            | Error::Weights { path: p, .. }
            | Error::Whitening { path: p, .. }
            | Error::IndexFormat { path: p, .. } => p == path,
            _ => false,
        };
        if about {
            self.to_string()
        } else {
            format!("{}: {self}", path.display())
        }
    }
}

/// Result alias used throughout the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;
