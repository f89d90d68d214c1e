//! The UCF-101 class table of the official UCF generator: class name → the 8 LLaMA-2 token ids of its text.

use nbp_core::{Error, Result};

const TABLE: &str = include_str!("../../../assets/ucf101_class_tokens.tsv");

/// One UCF-101 class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UcfClass {
    pub label: usize,
    /// Directory name, e.g. `ApplyEyeMakeup`.
    pub name: String,
    /// Condition text, e.g. `apply eye makeup`.
    pub text: String,
    /// The 8 LLaMA-2 ids (BOS first, right-padded with EOS), unshifted.
    pub token_ids: Vec<i64>,
}

/// All 101 classes, in label order.
pub fn ucf101_classes() -> Vec<UcfClass> {
    TABLE
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("label\t") && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            UcfClass {
                label: f[0].parse().expect("label"),
                name: f[1].to_string(),
                text: f[2].to_string(),
                token_ids: f[3].split(',').map(|v| v.parse().expect("token id")).collect(),
            }
        })
        .collect()
}

/// Finds a class by directory name (`ApplyEyeMakeup`), text (`apply eye makeup`) or label number, ignoring case.
pub fn find_ucf101_class(query: &str) -> Result<UcfClass> {
    let classes = ucf101_classes();
    let q = query.trim().to_lowercase();
    let squash = |s: &str| s.to_lowercase().replace([' ', '_', '-'], "");
    classes
        .iter()
        .find(|c| {
            c.name.to_lowercase() == q || c.text == q || c.label.to_string() == q || squash(&c.name) == squash(&q)
        })
        .cloned()
        .ok_or_else(|| {
            let near: Vec<&str> = classes
                .iter()
                .filter(|c| c.name.to_lowercase().contains(&q) || q.contains(&c.text))
                .map(|c| c.name.as_str())
                .take(5)
                .collect();
            Error::invalid(format!(
                "'{query}' is not a UCF-101 class (e.g. ApplyEyeMakeup, \"apply eye makeup\" or 0){}",
                if near.is_empty() { String::new() } else { format!("; did you mean {}?", near.join(", ")) }
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_101_classes_and_lookups_work() {
        let all = ucf101_classes();
        assert_eq!(all.len(), 101);
        let a = find_ucf101_class("ApplyEyeMakeup").unwrap();
        assert_eq!(a.token_ids, vec![1, 3394, 10977, 1207, 786, 2, 2, 2]);
        assert_eq!(find_ucf101_class("apply eye makeup").unwrap(), a);
        assert_eq!(find_ucf101_class("0").unwrap(), a);
        assert_eq!(find_ucf101_class("yoyo").unwrap().name, "YoYo");
        assert!(all.iter().all(|c| c.token_ids.len() == 8 && c.token_ids[0] == 1));
        let err = find_ucf101_class("Apply").unwrap_err().to_string();
        assert!(err.contains("ApplyEyeMakeup"), "{err}");
    }
}
