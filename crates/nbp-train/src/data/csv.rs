//! The `csv:<file>` manifest: a header `path,label` (or just `path`), then one video per line.
//!
//! Relative paths are relative to the folder of the CSV file. The label is a class *name*; the classes are the
//! sorted set of names (numerically sorted when every name is an integer). Without a label column every video
//! has the class `""`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use nbp_core::{Error, Result};

use super::ClipOptions;
use super::files::{VideoFileSource, index_classes, keep_existing};
use super::ucf::class_text;

/// Parses the manifest `text` of the CSV file `csv_path` into `(video path, class name)` pairs in file order.
/// Relative paths are joined to the CSV file's folder; fields may be double-quoted (`""` inside quotes is a
/// quote); empty lines are ignored. A row may leave out its label (class `""`).
pub fn parse_manifest(text: &str, csv_path: &Path) -> Result<Vec<(PathBuf, String)>> {
    let base = csv_path.parent().unwrap_or(Path::new(""));
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())).filter(|(_, l)| !l.is_empty());
    let header = match lines.next() {
        Some((_, h)) => split_fields(h.trim_start_matches('\u{feff}'))
            .into_iter()
            .map(|f| f.to_ascii_lowercase())
            .collect::<Vec<_>>(),
        None => return Err(Error::file(csv_path, "the manifest is empty; expected a header `path,label` or `path`")),
    };
    let columns = match header.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["path"] => 1,
        ["path", "label"] => 2,
        _ => {
            return Err(Error::file(
                csv_path,
                format!(
                    "the first line must be the header `path,label` or `path`, found `{}`",
                    text.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim()
                ),
            ));
        }
    };
    let mut rows = Vec::new();
    for (n, line) in lines {
        if line.chars().filter(|&c| c == '"').count() % 2 == 1 {
            return Err(Error::file(csv_path, format!("line {n} has a quote that is not closed: `{line}`")));
        }
        let fields = split_fields(line);
        if fields.len() > columns {
            return Err(Error::file(
                csv_path,
                format!("line {n} has {} fields, the header has {columns}: `{line}`", fields.len()),
            ));
        }
        let path = fields[0].as_str();
        if path.is_empty() {
            return Err(Error::file(csv_path, format!("line {n} has an empty path")));
        }
        let label = fields.get(1).cloned().unwrap_or_default();
        rows.push((base.join(path), label));
    }
    if rows.is_empty() {
        return Err(Error::file(csv_path, "the manifest lists no video (only a header)"));
    }
    Ok(rows)
}

/// Splits one CSV line into trimmed fields, honouring double quotes.
fn split_fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                fields.last_mut().expect("one field").push('"');
            }
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(String::new()),
            _ => fields.last_mut().expect("one field").push(c),
        }
    }
    fields.into_iter().map(|f| f.trim().to_string()).collect()
}

/// Class order of a manifest: numeric when every name is an integer, otherwise sorted as text.
fn manifest_classes(names: BTreeSet<String>) -> Vec<String> {
    let mut names: Vec<String> = names.into_iter().collect();
    if names.iter().all(|n| n.parse::<i64>().is_ok()) {
        names.sort_by_key(|n| n.parse::<i64>().expect("checked"));
    }
    names
}

impl VideoFileSource {
    /// `csv:<file>`: the videos a manifest lists (missing files are left out with a warning). The condition text
    /// is [`class_text`] of the class name.
    pub fn csv(file: &Path, opts: &ClipOptions) -> Result<Self> {
        let text = std::fs::read_to_string(file)
            .map_err(|e| Error::file(file, format!("cannot read the CSV manifest: {e}")))?;
        let rows = parse_manifest(&text, file)?;
        let (items, classes) = index_classes(rows, manifest_classes);
        let base = file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let items = keep_existing(items, file, base)?;
        let texts = classes.iter().map(|c| class_text(c)).collect();
        Self::new("CSV manifest", format!("file {}", file.display()), items, classes, texts, opts.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_fields() {
        assert_eq!(split_fields(r#""a, b.mp4" , "say ""hi""""#), vec!["a, b.mp4", r#"say "hi""#]);
        assert_eq!(split_fields("x.mp4"), vec!["x.mp4"]);
    }

    #[test]
    fn integer_classes_sort_numerically() {
        let names = ["10", "2", "1"].map(String::from).into_iter().collect();
        assert_eq!(manifest_classes(names), vec!["1", "2", "10"]);
        let names = ["b", "10", "a"].map(String::from).into_iter().collect();
        assert_eq!(manifest_classes(names), vec!["10", "a", "b"]);
    }
}
