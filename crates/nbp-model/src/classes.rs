//! The UCF-101 class table of the official UCF generator: class name → the 8 LLaMA-2 token ids of its text.

use nbp_core::{Error, Result};

use crate::checkpoint::GeneratorSettings;
use crate::generate::Condition;

const TABLE: &str = include_str!("../../../assets/ucf101_class_tokens.tsv");

/// Condition tokens of the official UCF generator: a class name as 8 LLaMA-2 ids.
pub const UCF_CONDITION_TOKENS: usize = 8;
/// The LLaMA-2 vocabulary those ids come from.
pub const UCF_TEXT_VOCAB: usize = 32000;

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

/// The UCF-101 class named `name`, by directory name or text (case, spaces, `_` and `-` ignored) but not by label
/// number: how the classes of a dataset are matched to the table.
pub fn find_ucf101_class_by_name(name: &str) -> Result<UcfClass> {
    if name.trim().parse::<usize>().is_ok() {
        return Err(Error::invalid(format!("'{name}' is a number, not a UCF-101 class name")));
    }
    find_ucf101_class(name)
}

/// The condition ids (unshifted) of class `i` of `classes` for a generator of `settings`: the label itself for a
/// model with one condition token, the UCF-101 text ids of the class's name for a text model (several tokens).
pub fn class_condition(settings: &GeneratorSettings, classes: &[String], i: usize) -> Result<Vec<i64>> {
    if settings.cond_tokens <= 1 {
        return Ok(vec![i as i64]);
    }
    let name = classes.get(i).map(String::as_str).unwrap_or_default();
    let ids = find_ucf101_class_by_name(name).map(|c| c.token_ids).map_err(|e| {
        Error::invalid(format!(
            "class '{name}': a text-conditional generator takes the UCF-101 class names as the official UCF \
             generator's LLaMA-2 ids, and {e}"
        ))
    })?;
    if ids.len() != settings.cond_tokens {
        return Err(Error::invalid(format!(
            "class '{name}' has {} UCF-101 text ids, but the generator takes {} condition tokens",
            ids.len(),
            settings.cond_tokens
        )));
    }
    Ok(ids)
}

/// Whether a generator takes text conditions as the official UCF generator does (8 LLaMA-2 ids).
fn is_ucf_text(settings: &GeneratorSettings) -> bool {
    !settings.unconditional && settings.cond_tokens == UCF_CONDITION_TOKENS && settings.cond_vocab == UCF_TEXT_VOCAB
}

/// What a user asked to condition a generation on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConditionChoice<'a> {
    /// A class by name (`circle-bounce`, `"circle bounce"`, `ApplyEyeMakeup`) or by number.
    Class(&'a str),
    /// Raw condition token ids.
    Ids(&'a [i64]),
    /// A class label number.
    Label(i64),
    /// Nothing given: a grid of classes for a class-conditional model, no condition otherwise.
    Default,
}

/// A condition to generate with, and its name for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedCondition {
    pub condition: Condition,
    pub name: String,
    /// How a UCF-101 class name became token ids, for the log.
    pub note: Option<String>,
}

impl NamedCondition {
    fn new(condition: Condition, name: impl Into<String>) -> Self {
        Self { condition, name: name.into(), note: None }
    }
}

/// Classes a class grid shows: up to 8, 5 apart, so that the shapes and the motions of the moving-shapes classes
/// both vary.
const GRID_CLASSES: usize = 8;

/// The name of class `i` for messages (a dataset without class folders has one class named "").
fn class_name(classes: &[String], i: usize) -> String {
    if classes[i].is_empty() { format!("class {i}") } else { classes[i].clone() }
}

/// The conditions to generate for `choice`, one generation each. `classes` are the class names a model records
/// (empty for official checkpoints, whose `Class` is looked up in the UCF-101 table).
pub fn conditions(
    classes: &[String],
    settings: &GeneratorSettings,
    choice: ConditionChoice,
) -> Result<Vec<NamedCondition>> {
    if settings.unconditional && !matches!(choice, ConditionChoice::Default) {
        return Err(Error::invalid(
            "this model is unconditional (frame prediction): it takes no --class, --label or --condition-ids; \
             leave them out and give the frames to continue (--condition-video or --prefix-tokens)",
        ));
    }
    let norm = |s: &str| s.trim().to_lowercase().replace([' ', '_'], "-");
    // A text model that records no classes (the official UCF generator) shows UCF-101 classes by default.
    let ucf_names: Vec<String>;
    let by_label = matches!(choice, ConditionChoice::Default | ConditionChoice::Label(_));
    let classes = if classes.is_empty() && is_ucf_text(settings) && by_label {
        ucf_names = ucf101_classes().into_iter().map(|c| c.name).collect();
        &ucf_names[..]
    } else {
        classes
    };
    Ok(match choice {
        ConditionChoice::Class(c) if !classes.is_empty() => {
            let i = classes
                .iter()
                .position(|k| norm(k) == norm(c))
                .or_else(|| c.trim().parse::<usize>().ok().filter(|&i| i < classes.len()))
                // A UCF-101 class by its text ("apply eye makeup" for ApplyEyeMakeup).
                .or_else(|| {
                    let ucf = find_ucf101_class_by_name(c).ok()?;
                    classes.iter().position(|k| norm(k) == norm(&ucf.name))
                })
                .ok_or_else(|| Error::invalid(format!("no class '{c}' (classes: {})", classes.join(", "))))?;
            vec![NamedCondition::new(Condition::Tokens(class_condition(settings, classes, i)?), class_name(classes, i))]
        }
        ConditionChoice::Class(c) => {
            let class = find_ucf101_class(c)?;
            let note = format!("condition: class {} \"{}\" → ids {:?}", class.name, class.text, class.token_ids);
            vec![NamedCondition { condition: Condition::Tokens(class.token_ids), name: class.name, note: Some(note) }]
        }
        ConditionChoice::Ids(ids) => vec![NamedCondition::new(Condition::Tokens(ids.to_vec()), format!("{ids:?}"))],
        // A text model: the text ids of class `label`.
        ConditionChoice::Label(label) if settings.cond_tokens > 1 => {
            let i = usize::try_from(label).ok().filter(|&l| l < classes.len()).ok_or_else(|| {
                Error::invalid(format!("no class with label {label}: the model knows {} classes", classes.len()))
            })?;
            vec![NamedCondition::new(Condition::Tokens(class_condition(settings, classes, i)?), class_name(classes, i))]
        }
        ConditionChoice::Label(label) => {
            let name = usize::try_from(label).ok().filter(|&l| l < classes.len()).map(|l| class_name(classes, l));
            let name = name.unwrap_or_else(|| format!("label {label}"));
            vec![NamedCondition::new(Condition::Tokens(vec![label]), name)]
        }
        ConditionChoice::Default if !settings.unconditional && !classes.is_empty() => {
            let n = classes.len();
            let mut picked: Vec<usize> = Vec::with_capacity(GRID_CLASSES);
            for i in 0..n.min(GRID_CLASSES) {
                // The next class not yet shown, from `5·i mod n` on (when 5 divides n, `5·i` comes back).
                let next = (0..n).map(|k| (i * 5 + k) % n).find(|c| !picked.contains(c)).expect("fewer picked than n");
                picked.push(next);
            }
            picked
                .into_iter()
                .map(|i| {
                    let ids = class_condition(settings, classes, i)?;
                    Ok(NamedCondition::new(Condition::Tokens(ids), class_name(classes, i)))
                })
                .collect::<Result<_>>()?
        }
        ConditionChoice::Default => vec![NamedCondition::new(Condition::None, "unconditional")],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_official_ucf_generator_shows_8_ucf_classes_by_default() {
        let ucf =
            GeneratorSettings { block: 16, hybrid: true, unconditional: false, cond_tokens: 8, cond_vocab: 32000 };
        let grid = conditions(&[], &ucf, ConditionChoice::Default).unwrap();
        let names: Vec<&str> = grid.iter().map(|c| c.name.as_str()).collect();
        let all = ucf101_classes();
        let expected: Vec<&str> = [0, 5, 10, 15, 20, 25, 30, 35].iter().map(|&i| all[i].name.as_str()).collect();
        assert_eq!(names, expected);
        assert_eq!(grid[0].condition, Condition::Tokens(vec![1, 3394, 10977, 1207, 786, 2, 2, 2]));
        // --label N: the text ids of class N (of the UCF-101 table here).
        let yoyo = conditions(&[], &ucf, ConditionChoice::Label(100)).unwrap();
        assert_eq!(
            (yoyo[0].name.as_str(), &yoyo[0].condition),
            ("YoYo", &Condition::Tokens(all[100].token_ids.clone()))
        );
        let e = conditions(&[], &ucf, ConditionChoice::Label(101)).unwrap_err().to_string();
        assert!(e.contains("no class with label 101: the model knows 101 classes"), "{e}");
        // Other models without classes: one unconditional generation, as before.
        let three = GeneratorSettings { cond_tokens: 3, ..ucf.clone() };
        assert_eq!(conditions(&[], &three, ConditionChoice::Default).unwrap()[0].condition, Condition::None);
    }

    #[test]
    fn class_conditions_are_labels_or_ucf_text_ids() {
        let classes: Vec<String> = ["YoYo", "apply eye makeup", "3"].map(String::from).to_vec();
        let label = GeneratorSettings { block: 16, hybrid: true, unconditional: false, cond_tokens: 1, cond_vocab: 3 };
        assert_eq!(class_condition(&label, &classes, 2).unwrap(), [2]);
        let text = GeneratorSettings { cond_tokens: 8, cond_vocab: 32000, ..label.clone() };
        assert_eq!(class_condition(&text, &classes, 1).unwrap(), [1, 3394, 10977, 1207, 786, 2, 2, 2]);
        assert_eq!(class_condition(&text, &classes, 0).unwrap(), find_ucf101_class("YoYo").unwrap().token_ids);
        // A number is a label, not a class name: "3" is not the UCF-101 class of label 3.
        let e = class_condition(&text, &classes, 2).unwrap_err().to_string();
        assert!(e.contains("class '3'") && e.contains("is a number, not a UCF-101 class name"), "{e}");
        let three = GeneratorSettings { cond_tokens: 3, ..text.clone() };
        let e = class_condition(&three, &classes, 0).unwrap_err().to_string();
        assert!(e.contains("has 8 UCF-101 text ids, but the generator takes 3 condition tokens"), "{e}");
    }

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

    fn names(list: &[NamedCondition]) -> Vec<&str> {
        list.iter().map(|c| c.name.as_str()).collect()
    }

    #[test]
    fn conditions_follow_the_choice_and_the_model() {
        let labelled =
            GeneratorSettings { block: 16, hybrid: true, unconditional: false, cond_tokens: 1, cond_vocab: 10 };
        let classes: Vec<String> = (0..10).map(|i| format!("shape-{i} move")).collect();
        let one = |c| conditions(&classes, &labelled, c).unwrap();
        // By name (case, spaces and underscores do not matter) or by number.
        for query in ["shape-3 move", "Shape_3 Move", " shape 3-move ", "3"] {
            let got = one(ConditionChoice::Class(query));
            assert_eq!(got, [NamedCondition::new(Condition::Tokens(vec![3]), "shape-3 move")], "{query}");
        }
        let err = conditions(&classes, &labelled, ConditionChoice::Class("10")).unwrap_err().to_string();
        assert!(err.starts_with("no class '10' (classes: shape-0 move, shape-1 move"), "{err}");
        assert_eq!(one(ConditionChoice::Label(4))[0].name, "shape-4 move");
        assert_eq!(one(ConditionChoice::Label(-1))[0].name, "label -1");
        // A dataset without class folders has one class, named "".
        let unnamed = [String::new()];
        assert_eq!(conditions(&unnamed, &labelled, ConditionChoice::Default).unwrap()[0].name, "class 0");
        assert_eq!(one(ConditionChoice::Ids(&[7, 8]))[0].condition, Condition::Tokens(vec![7, 8]));
        // Nothing given: 8 different classes, 5 apart modulo the class count, the next free one where that repeats.
        let grid: Vec<String> = [0, 5, 1, 6, 2, 7, 3, 8].iter().map(|i| format!("shape-{i} move")).collect();
        assert_eq!(names(&one(ConditionChoice::Default)), grid);
        let eight: Vec<String> = (0..8).map(|i| format!("c{i}")).collect();
        let grid = conditions(&eight, &labelled, ConditionChoice::Default).unwrap();
        assert_eq!(names(&grid), ["c0", "c5", "c2", "c7", "c4", "c1", "c6", "c3"]);
        let three: Vec<String> = (0..3).map(|i| format!("c{i}")).collect();
        assert_eq!(names(&conditions(&three, &labelled, ConditionChoice::Default).unwrap()), ["c0", "c2", "c1"]);
        // An unconditional model, or one without class names: one unconditional generation.
        let uncond = GeneratorSettings { unconditional: true, cond_tokens: 0, ..labelled.clone() };
        assert_eq!(conditions(&[], &uncond, ConditionChoice::Default).unwrap()[0].condition, Condition::None);
        // Official checkpoints record no class names: a class is looked up in the UCF-101 table.
        let ucf = GeneratorSettings { cond_tokens: 8, cond_vocab: 32000, ..labelled };
        let got = conditions(&[], &ucf, ConditionChoice::Class("apply eye makeup")).unwrap();
        assert_eq!(got[0].condition, Condition::Tokens(vec![1, 3394, 10977, 1207, 786, 2, 2, 2]));
        assert_eq!(got[0].name, "ApplyEyeMakeup");
        assert!(got[0].note.as_deref().unwrap().contains("→ ids [1, 3394"));
    }
}
