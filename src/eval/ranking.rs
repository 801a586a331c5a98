//! Ranked result lists, one per query, and the ranking file format.
//!
//! A ranking file has one line per query: the query name (as in the ground truth, e.g.
//! `dev003` or `all_souls_1`) followed by the ranked database image names, best first, all
//! separated by whitespace. Blank lines and lines starting with `#` are ignored. A query may
//! rank only part of the database: positives it leaves out are never retrieved.

use crate::{Error, Result};
use std::collections::{HashMap, HashSet};
use std::path::Path;

/// One query's ranked list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ranking {
    /// The query's name.
    pub query: String,
    /// Database image names, best first, each at most once.
    pub images: Vec<String>,
}

/// The ranked lists of a set of queries, in insertion order.
#[derive(Debug, Clone, Default)]
pub struct Rankings {
    entries: Vec<Ranking>,
    index: HashMap<String, usize>,
}

impl Rankings {
    /// No rankings yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a query's ranked list; refuses a query given twice or an image ranked twice.
    pub fn insert(&mut self, query: impl Into<String>, images: Vec<String>) -> Result<()> {
        let query = query.into();
        check_distinct(&images)
            .map_err(|img| Error::invalid(format!("query {query:?} ranks {img:?} twice")))?;
        if self.index.contains_key(&query) {
            return Err(Error::invalid(format!("query {query:?} is ranked twice")));
        }
        self.index.insert(query.clone(), self.entries.len());
        self.entries.push(Ranking { query, images });
        Ok(())
    }

    /// Reads a ranking file (see the module docs).
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&text, path)
    }

    /// Parses ranking-file text; `origin` names it in errors (`file:line: reason`).
    pub fn parse(text: &str, origin: &Path) -> Result<Self> {
        let mut out = Rankings::new();
        let mut lines_of: HashMap<String, usize> = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut f = line.split_whitespace();
            // The line is not blank, so it has a first field.
            let query = f.next().unwrap_or_default().to_string();
            let images: Vec<String> = f.map(String::from).collect();
            if let Some(n0) = lines_of.insert(query.clone(), n) {
                return Err(Error::invalid(format!(
                    "{}:{n}: query {query:?} is already ranked at line {n0}",
                    origin.display()
                )));
            }
            if let Err(img) = check_distinct(&images) {
                return Err(Error::invalid(format!(
                    "{}:{n}: query {query:?} ranks {img:?} twice",
                    origin.display()
                )));
            }
            out.index.insert(query.clone(), out.entries.len());
            out.entries.push(Ranking { query, images });
        }
        if out.entries.is_empty() {
            return Err(Error::invalid(format!(
                "{}: no rankings (expected lines \"<query> <image> <image> ...\")",
                origin.display()
            )));
        }
        Ok(out)
    }

    /// The ranked list of a query.
    pub fn get(&self, query: &str) -> Option<&[String]> {
        self.index
            .get(query)
            .map(|&i| self.entries[i].images.as_slice())
    }

    /// Number of queries ranked.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no query is ranked.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The rankings in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = &Ranking> {
        self.entries.iter()
    }

    /// Writes the ranking-file text for these rankings.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        for r in &self.entries {
            s.push_str(&r.query);
            for img in &r.images {
                s.push(' ');
                s.push_str(img);
            }
            s.push('\n');
        }
        s
    }
}

fn check_distinct(images: &[String]) -> std::result::Result<(), String> {
    let mut seen = HashSet::with_capacity(images.len());
    for img in images {
        if !seen.insert(img.as_str()) {
            return Err(img.clone());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_round_trips() {
        let text = "# comment\nq1 a b c\n\nq2\nq3 c a\n";
        let r = Rankings::parse(text, Path::new("r.txt")).unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r.get("q1").unwrap(), ["a", "b", "c"]);
        assert_eq!(r.get("q2").unwrap().len(), 0);
        let again = Rankings::parse(&r.to_text(), Path::new("again")).unwrap();
        assert_eq!(again.get("q3").unwrap(), ["c", "a"]);
    }

    #[test]
    fn refuses_repeats_with_line_numbers() {
        let e = Rankings::parse("q1 a\nq1 b\n", Path::new("r.txt"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("r.txt:2") && e.contains("line 1"), "{e}");
        let e = Rankings::parse("q1 a b a\n", Path::new("r.txt"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("r.txt:1") && e.contains("\"a\" twice"), "{e}");
        assert!(Rankings::parse("\n# nothing\n", Path::new("r.txt")).is_err());
        let mut r = Rankings::new();
        r.insert("q", vec!["a".into()]).unwrap();
        assert!(r.insert("q", vec![]).is_err());
        assert!(r.insert("p", vec!["a".into(), "a".into()]).is_err());
    }
}
