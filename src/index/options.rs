//! Settings of an index (chosen at creation, stored in the manifest) and of a search.

use super::hnsw::{check_params, DEFAULT_EF_CONSTRUCTION, DEFAULT_EF_SEARCH, DEFAULT_M};
use super::segment::VectorEncoding;
use crate::{Error, Result};

/// Default smallest segment that gets an HNSW graph; smaller ones are searched exactly.
pub const DEFAULT_GRAPH_MIN_DOCS: usize = 2048;
/// Default merge factor: this many segments of one size class are merged into one.
pub const DEFAULT_MERGE_FACTOR: usize = 10;
/// Default number of results.
pub const DEFAULT_K: usize = 10;
/// Default size (live images) below which [`SearchMode::Auto`] searches exactly.
pub const DEFAULT_EXACT_THRESHOLD: usize = 20_000;
/// Largest `k` a search accepts.
pub const MAX_K: usize = 100_000;

/// Settings of an index, fixed when it is created and stored in its manifest.
///
/// ```
/// use deepfactor::index::{IndexOptions, VectorEncoding};
/// let o = IndexOptions::new().m(24).vector_encoding(VectorEncoding::F16);
/// assert_eq!(o.get_m(), 24);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexOptions {
    vector_encoding: VectorEncoding,
    m: usize,
    ef_construction: usize,
    graph_min_docs: usize,
    merge_factor: usize,
}

impl Default for IndexOptions {
    fn default() -> Self {
        IndexOptions {
            vector_encoding: VectorEncoding::F32,
            m: DEFAULT_M,
            ef_construction: DEFAULT_EF_CONSTRUCTION,
            graph_min_docs: DEFAULT_GRAPH_MIN_DOCS,
            merge_factor: DEFAULT_MERGE_FACTOR,
        }
    }
}

impl IndexOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// How descriptors are stored (default f32).
    pub fn vector_encoding(mut self, e: VectorEncoding) -> Self {
        self.vector_encoding = e;
        self
    }

    /// HNSW links per node in the upper layers; layer 0 keeps twice as many (default
    /// [`DEFAULT_M`]).
    pub fn m(mut self, m: usize) -> Self {
        self.m = m;
        self
    }

    /// HNSW beam width while building (default [`DEFAULT_EF_CONSTRUCTION`]).
    pub fn ef_construction(mut self, ef: usize) -> Self {
        self.ef_construction = ef;
        self
    }

    /// Smallest segment that gets a graph (default [`DEFAULT_GRAPH_MIN_DOCS`]).
    pub fn graph_min_docs(mut self, n: usize) -> Self {
        self.graph_min_docs = n;
        self
    }

    /// How many segments of one size class trigger a merge (default
    /// [`DEFAULT_MERGE_FACTOR`]).
    pub fn merge_factor(mut self, f: usize) -> Self {
        self.merge_factor = f;
        self
    }

    /// The vector encoding.
    pub fn get_vector_encoding(&self) -> VectorEncoding {
        self.vector_encoding
    }

    /// `m`.
    pub fn get_m(&self) -> usize {
        self.m
    }

    /// `ef_construction`.
    pub fn get_ef_construction(&self) -> usize {
        self.ef_construction
    }

    /// Smallest segment that gets a graph.
    pub fn get_graph_min_docs(&self) -> usize {
        self.graph_min_docs
    }

    /// Merge factor.
    pub fn get_merge_factor(&self) -> usize {
        self.merge_factor
    }

    /// Checks the settings (called when an index is created).
    pub fn validate(&self) -> Result<()> {
        check_params(self.m, self.ef_construction)?;
        if self.graph_min_docs < 2 {
            return Err(Error::invalid(format!(
                "graph_min_docs = {} must be at least 2",
                self.graph_min_docs
            )));
        }
        if !(2..=1000).contains(&self.merge_factor) {
            return Err(Error::invalid(format!(
                "merge_factor = {} is outside 2..=1000",
                self.merge_factor
            )));
        }
        Ok(())
    }
}

/// How a search visits the segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SearchMode {
    /// Exact below the exact threshold (live images), HNSW above it.
    #[default]
    Auto,
    /// Every descriptor is scored.
    Exact,
    /// HNSW on segments that have a graph, exact on the (small) ones that do not.
    Hnsw,
}

/// Options of one search.
///
/// ```
/// use deepfactor::index::{SearchMode, SearchOptions};
/// let o = SearchOptions::new().k(5).mode(SearchMode::Hnsw).ef_search(200);
/// assert_eq!((o.get_k(), o.get_ef_search()), (5, 200));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchOptions {
    k: usize,
    mode: SearchMode,
    ef_search: usize,
    exact_threshold: usize,
}

impl Default for SearchOptions {
    fn default() -> Self {
        SearchOptions {
            k: DEFAULT_K,
            mode: SearchMode::Auto,
            ef_search: DEFAULT_EF_SEARCH,
            exact_threshold: DEFAULT_EXACT_THRESHOLD,
        }
    }
}

impl SearchOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of results (default [`DEFAULT_K`]).
    pub fn k(mut self, k: usize) -> Self {
        self.k = k;
        self
    }

    /// Exact, HNSW, or automatic (default).
    pub fn mode(mut self, mode: SearchMode) -> Self {
        self.mode = mode;
        self
    }

    /// HNSW beam width (default [`DEFAULT_EF_SEARCH`]); raised to `k` when smaller.
    pub fn ef_search(mut self, ef: usize) -> Self {
        self.ef_search = ef;
        self
    }

    /// Live images below which [`SearchMode::Auto`] searches exactly (default
    /// [`DEFAULT_EXACT_THRESHOLD`]).
    pub fn exact_threshold(mut self, n: usize) -> Self {
        self.exact_threshold = n;
        self
    }

    /// `k`.
    pub fn get_k(&self) -> usize {
        self.k
    }

    /// The mode.
    pub fn get_mode(&self) -> SearchMode {
        self.mode
    }

    /// `ef_search`.
    pub fn get_ef_search(&self) -> usize {
        self.ef_search
    }

    /// The exact threshold.
    pub fn get_exact_threshold(&self) -> usize {
        self.exact_threshold
    }

    /// Checks the options (called by every search).
    pub fn validate(&self) -> Result<()> {
        if self.k == 0 || self.k > MAX_K {
            return Err(Error::invalid(format!(
                "k = {} is outside 1..={MAX_K}",
                self.k
            )));
        }
        if self.ef_search == 0 || self.ef_search > 100_000 {
            return Err(Error::invalid(format!(
                "ef_search = {} is outside 1..=100000",
                self.ef_search
            )));
        }
        Ok(())
    }
}
