//! Maps fields of a parsed spec back to lines of its TOML text, for error messages.

use std::fmt;
use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// One step in a path through the document: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    /// Table key.
    Key(String),
    /// Array index.
    Index(usize),
}

/// A path to a field, shown as `node[2].depends_on[0]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldPath(pub Vec<Seg>);

impl FieldPath {
    /// The path with a key appended.
    pub fn key(&self, key: &str) -> FieldPath {
        let mut p = self.clone();
        p.0.push(Seg::Key(key.to_string()));
        p
    }

    /// The path with an index appended.
    pub fn index(&self, i: usize) -> FieldPath {
        let mut p = self.clone();
        p.0.push(Seg::Index(i));
        p
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(top level)");
        }
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// The spans of a TOML document.
pub struct Locator<'a> {
    text: &'a str,
    root: Option<Spanned<DeValue<'a>>>,
}

impl<'a> Locator<'a> {
    /// Parses `text` for spans only; the parser recovers from errors, so even a document
    /// with a syntax error locates the fields it could read.
    pub fn new(text: &'a str) -> Self {
        let (table, _errors) = DeTable::parse_recoverable(text);
        let span = table.span();
        Locator {
            text,
            root: Some(Spanned::new(span, DeValue::Table(table.into_inner()))),
        }
    }

    /// 1-based line of a byte offset.
    pub fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    /// 1-based column of a byte offset.
    pub fn column_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        let start = self.text.as_bytes()[..end]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |p| p + 1);
        self.text
            .get(start..end)
            .map_or(1, |s| s.chars().count() + 1)
    }

    /// Line of the value at `path`, or of its nearest existing ancestor (for absent fields).
    pub fn line(&self, path: &FieldPath) -> usize {
        let Some(root) = &self.root else { return 1 };
        let mut span = root.span();
        let mut here = root;
        for seg in &path.0 {
            let next = match seg {
                Seg::Key(k) => here.get_ref().get(k.as_str()),
                Seg::Index(i) => here.get_ref().get(*i),
            };
            match next {
                Some(v) => {
                    span = v.span();
                    here = v;
                }
                None => break,
            }
        }
        self.line_of(span.start)
    }

    /// The field a parse error at `span` belongs to: the smallest key or value containing
    /// it. (Tables of `[[array]]`s span only their header, so a top-down walk cannot be used.)
    pub fn path_at(&self, span: &Range<usize>) -> FieldPath {
        let mut all = Vec::new();
        if let Some(root) = &self.root {
            flatten(root.get_ref(), &FieldPath::default(), &mut all);
        }
        let contains = |s: &Range<usize>| s.start <= span.start && span.end <= s.end;
        all.iter()
            .filter(|(_, s)| contains(s))
            .min_by_key(|(p, s)| (s.len(), usize::MAX - p.0.len()))
            .or_else(|| {
                all.iter()
                    .filter(|(_, s)| s.start <= span.start)
                    .max_by_key(|(p, s)| (s.start, p.0.len()))
            })
            .map(|(p, _)| p.clone())
            .unwrap_or_default()
    }
}

/// Every key and value below `value` with its span.
fn flatten(value: &DeValue<'_>, at: &FieldPath, out: &mut Vec<(FieldPath, Range<usize>)>) {
    match value {
        DeValue::Table(table) => {
            for (key, v) in table.iter() {
                let path = at.key(key.get_ref());
                out.push((path.clone(), key.span()));
                out.push((path.clone(), v.span()));
                flatten(v.get_ref(), &path, out);
            }
        }
        DeValue::Array(array) => {
            for (i, v) in array.iter().enumerate() {
                let path = at.index(i);
                out.push((path.clone(), v.span()));
                flatten(v.get_ref(), &path, out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "name = \"x\"\n\n[[node]]\nname = \"a\"\n\n[[node]]\nname = \"b\"\ndepends_on = [\"a\",\n  \"c\"]\n";

    #[test]
    fn lines_of_nested_fields() {
        let loc = Locator::new(DOC);
        assert_eq!(loc.line(&FieldPath::default().key("name")), 1);
        assert_eq!(
            loc.line(&FieldPath::default().key("node").index(1).key("name")),
            7
        );
        assert_eq!(
            loc.line(
                &FieldPath::default()
                    .key("node")
                    .index(1)
                    .key("depends_on")
                    .index(1)
            ),
            9
        );
    }

    #[test]
    fn path_at_finds_the_deepest_field() {
        let loc = Locator::new(DOC);
        let at = DOC.find("\"c\"").unwrap();
        let path = loc.path_at(&(at..at + 3));
        assert_eq!(path.to_string(), "node[1].depends_on[1]");
        assert_eq!(loc.column_of(at), 3);
    }
}
