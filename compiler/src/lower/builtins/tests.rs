//! Checks of the built-in table itself: names are unique, and each built-in is documented.

use super::{BUILTINS, builtin_names, find, pytorch_alias};

/// The language reference, which must mention every built-in.
const LANGUAGE_DOC: &str =
    include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/language.md"));

/// Whether `doc` mentions `name` as code: `` `name` ``, `` `name(`` or `` `name/``.
///
/// The reference writes the 1-D and 2-D variants of a layer together, as `` `max_pool1d/2d(``, so a
/// name ending in `2d` also counts as documented where its `1d` twin is written that way.
fn documents(doc: &str, name: &str) -> bool {
    let mentioned = |spelling: &str| {
        ["`", "(", "/"]
            .iter()
            .any(|end| doc.contains(&format!("`{spelling}{end}")))
    };
    let shorthand = name
        .strip_suffix("2d")
        .is_some_and(|stem| doc.contains(&format!("`{stem}1d/2d")));
    mentioned(name) || shorthand
}

#[test]
fn every_builtin_is_documented_in_the_language_reference() {
    let undocumented: Vec<&str> = builtin_names()
        .filter(|name| !documents(LANGUAGE_DOC, name))
        .collect();
    assert!(
        undocumented.is_empty(),
        "built-ins missing from docs/language.md: {undocumented:?}"
    );
}

#[test]
fn the_documentation_check_rejects_a_name_it_does_not_find() {
    assert!(!documents(LANGUAGE_DOC, "no_such_layer"));
    assert!(documents("`max_pool1d/2d(x)`", "max_pool2d"));
    assert!(!documents("`max_pool1d(x)`", "max_pool2d"));
}

#[test]
fn builtin_names_are_unique() {
    let mut names: Vec<&str> = builtin_names().collect();
    names.sort_unstable();
    let count = names.len();
    names.dedup();
    assert_eq!(
        names.len(),
        count,
        "a built-in name appears twice in BUILTINS"
    );
}

#[test]
fn every_alias_means_one_builtin_and_is_lowercase() {
    for builtin in BUILTINS {
        for alias in builtin.aliases {
            assert_eq!(*alias, alias.to_ascii_lowercase(), "alias `{alias}`");
            assert_eq!(pytorch_alias(alias), Some(builtin.name), "alias `{alias}`");
        }
    }
}

#[test]
fn lookup_goes_through_the_table() {
    assert_eq!(find("conv2d").map(|builtin| builtin.name), Some("conv2d"));
    assert!(find("Conv2d").is_none());
    assert_eq!(pytorch_alias("MaxPool2d"), Some("max_pool2d"));
    assert_eq!(pytorch_alias("softplus"), None);
}
