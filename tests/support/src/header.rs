//! Test dimensions in a model's header comment, as Cranelift's filetests keep their `test` lines
//! in the file they test.
//!
//! A model whose declared sizes make it slow in the interpreter says, in the comment block at the
//! top of its `.nn` file, which sizes its tests use instead:
//!
//! ```text
//! // A Llama decoder at the size of SmolLM2-135M: ...
//! //
//! // test-dims: seq=4
//! network llama_decoder(input_ids: i64[batch, seq]) -> ... where batch = 1, seq = 64 {
//! ```
//!
//! The line is `// test-dims:` followed by `name=size` entries separated by commas. Each name is a
//! symbolic dimension of the file's network (a `where` binding) and each size a positive
//! integer; they become the `FrontendOptions::dims` overrides. A file without the line runs at its
//! declared sizes. Only the leading comment block counts as the header: a `test-dims` line further
//! down is an error rather than silently ignored, and so is a second one.
//!
//! Which tests apply them: every test that runs a model in the reference interpreter (the
//! optimizer's -O0/-O2 agreement, the examples' smoke test). Tests about the declared model itself
//! keep the declared sizes on purpose: the generated-code snapshots and the `tests/codegen` crate
//! (whose generated code is compiled once, at the declared sizes, and which the decoder and
//! allocation tests drive at those sizes), cost reports and memory plans.

/// The prefix of the header line, after `//` and any spaces.
pub const TEST_DIMS_PREFIX: &str = "test-dims:";

/// Why a header's `test-dims` line could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("line {line}: `{entry}` is not `name=size`")]
    NotAnAssignment { line: usize, entry: String },
    #[error("line {line}: the size of `{name}` is `{size}`, not a positive integer")]
    BadSize {
        line: usize,
        name: String,
        size: String,
    },
    #[error("line {line}: `{name}` is given twice")]
    RepeatedDimension { line: usize, name: String },
    #[error("line {line}: a second `test-dims` line (the first is on line {first})")]
    RepeatedLine { line: usize, first: usize },
    #[error("line {line}: `test-dims` is outside the header comment at the top of the file")]
    OutsideHeader { line: usize },
    #[error("line {line}: `test-dims` has no entries")]
    Empty { line: usize },
}

/// The dimension overrides the header of `source` asks tests to use, in the order written; empty
/// when the header has no `test-dims` line.
pub fn test_dims(source: &str) -> Result<Vec<(String, i64)>, HeaderError> {
    let mut in_header = true;
    let mut found: Option<(usize, Vec<(String, i64)>)> = None;
    for (index, text) in source.lines().enumerate() {
        let line = index + 1;
        let trimmed = text.trim();
        let comment = trimmed.strip_prefix("//").map(str::trim);
        if comment.is_none() && !trimmed.is_empty() {
            in_header = false;
        }
        let Some(entries) = comment.and_then(|comment| comment.strip_prefix(TEST_DIMS_PREFIX))
        else {
            continue;
        };
        if !in_header {
            return Err(HeaderError::OutsideHeader { line });
        }
        if let Some((first, _)) = &found {
            return Err(HeaderError::RepeatedLine {
                line,
                first: *first,
            });
        }
        found = Some((line, parse_entries(entries, line)?));
    }
    Ok(found.map(|(_, dims)| dims).unwrap_or_default())
}

/// The `name=size` entries of one `test-dims` line.
fn parse_entries(entries: &str, line: usize) -> Result<Vec<(String, i64)>, HeaderError> {
    let mut dims: Vec<(String, i64)> = Vec::new();
    for entry in entries.split(',').map(str::trim) {
        let Some((name, size)) = entry.split_once('=') else {
            return Err(if entry.is_empty() && dims.is_empty() {
                HeaderError::Empty { line }
            } else {
                HeaderError::NotAnAssignment {
                    line,
                    entry: entry.to_string(),
                }
            });
        };
        let (name, size) = (name.trim(), size.trim());
        let is_identifier = name
            .chars()
            .all(|character| character.is_ascii_alphanumeric() || character == '_')
            && name
                .chars()
                .next()
                .is_some_and(|first| !first.is_ascii_digit());
        if !is_identifier {
            return Err(HeaderError::NotAnAssignment {
                line,
                entry: entry.to_string(),
            });
        }
        let size_value = size
            .parse::<i64>()
            .ok()
            .filter(|value| *value > 0)
            .ok_or_else(|| HeaderError::BadSize {
                line,
                name: name.to_string(),
                size: size.to_string(),
            })?;
        if dims.iter().any(|(existing, _)| existing == name) {
            return Err(HeaderError::RepeatedDimension {
                line,
                name: name.to_string(),
            });
        }
        dims.push((name.to_string(), size_value));
    }
    Ok(dims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dims(pairs: &[(&str, i64)]) -> Vec<(String, i64)> {
        pairs
            .iter()
            .map(|(name, size)| (name.to_string(), *size))
            .collect()
    }

    #[test]
    fn reads_the_line_in_the_header() {
        let source = "// A model.\n//\n// test-dims: src_len=10, tgt_len = 6\n\nnetwork n() {}\n";
        assert_eq!(
            test_dims(source),
            Ok(dims(&[("src_len", 10), ("tgt_len", 6)]))
        );
    }

    #[test]
    fn a_file_without_the_line_has_no_overrides() {
        assert_eq!(test_dims("// A model.\nnetwork n() {}\n"), Ok(vec![]));
        assert_eq!(test_dims(""), Ok(vec![]));
    }

    #[test]
    fn rejects_malformed_lines() {
        assert_eq!(
            test_dims("// test-dims:\n"),
            Err(HeaderError::Empty { line: 1 })
        );
        assert_eq!(
            test_dims("// test-dims: seq\n"),
            Err(HeaderError::NotAnAssignment {
                line: 1,
                entry: "seq".into()
            })
        );
        assert_eq!(
            test_dims("// test-dims: seq=0\n"),
            Err(HeaderError::BadSize {
                line: 1,
                name: "seq".into(),
                size: "0".into()
            })
        );
        assert_eq!(
            test_dims("// test-dims: seq=4, seq=8\n"),
            Err(HeaderError::RepeatedDimension {
                line: 1,
                name: "seq".into()
            })
        );
        assert_eq!(
            test_dims("// test-dims: seq=4\n// test-dims: batch=2\n"),
            Err(HeaderError::RepeatedLine { line: 2, first: 1 })
        );
    }

    #[test]
    fn a_line_below_the_header_is_an_error_not_ignored() {
        let source = "// A model.\nconst d = 4\n// test-dims: seq=4\n";
        assert_eq!(
            test_dims(source),
            Err(HeaderError::OutsideHeader { line: 3 })
        );
    }
}
