//! Per-layer timing by rewriting generated source.
//!
//! Code generation writes each layer of `forward` as a comment naming the layer, then a block:
//!
//! ```text
//!         // fc1: linear -> f32[1, 256]
//!         {
//!             ...
//!         }
//! ```
//!
//! [`instrument`] starts a clock before each such block and records the elapsed time after it,
//! through `crate::nnc_profile::record(block, started)`, which the bench harness defines. A block
//! inside a rolled loop records once per iteration, and the harness keeps every run in order.
//! Its comment names the layer by a template (`features.{index}.conv.0`, which [`names_layer`]
//! matches to each iteration's layer) or, when the iterations' names share none, by the first
//! iteration's name; so where the block reports its errors under the iteration's name
//! (`rt::error::at(names[2])`), it records through `record_named(block, names[2], started)`,
//! and the harness reports that name with each run. The rewrite is textual so that it needs
//! nothing from code generation beyond that layout; a block it does not recognise is left
//! untimed, never broken.

/// Source with timing code, and the comment of each timed block, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instrumented {
    pub source: String,
    /// The layer comments of the timed blocks (`fc1: linear -> f32[1, 256]`); block `k` records
    /// as block `k`.
    pub labels: Vec<String>,
}

/// The path of the recording function the instrumented code calls.
pub const RECORD_FUNCTION: &str = "crate::nnc_profile::record";
/// The path of the one it calls for a block that names its layer at each iteration.
pub const RECORD_NAMED_FUNCTION: &str = "crate::nnc_profile::record_named";

/// Wraps every commented layer block of every `forward` function of `source` in timing code.
pub fn instrument(source: &str) -> Instrumented {
    let lines: Vec<&str> = source.lines().collect();
    let mut out = String::with_capacity(source.len() * 5 / 4);
    let mut labels = Vec::new();
    let mut forward_indent: Option<&str> = None;
    let mut index = 0;
    while index < lines.len() {
        let line = lines[index];
        let indent = indentation(line);
        match forward_indent {
            None if line.trim_start().starts_with("pub fn forward(") => {
                forward_indent = Some(indent);
            }
            Some(fn_indent) if line.len() == fn_indent.len() + 1 && line.ends_with('}') => {
                forward_indent = None;
            }
            _ => {}
        }
        let block = forward_indent.and_then(|_| layer_block(&lines, index));
        let Some((label, close)) = block else {
            out.push_str(line);
            out.push('\n');
            index += 1;
            continue;
        };
        let slot = labels.len();
        labels.push(label.to_string());
        out.push_str(line);
        out.push('\n');
        out.push_str(&format!(
            "{indent}let __nnc_started = ::std::time::Instant::now();\n"
        ));
        let block = &lines[index + 1..=close];
        for block_line in block {
            out.push_str(block_line);
            out.push('\n');
        }
        match iteration_name(block) {
            Some(name) => out.push_str(&format!(
                "{indent}{RECORD_NAMED_FUNCTION}({slot}, {name}, __nnc_started);\n"
            )),
            None => out.push_str(&format!(
                "{indent}{RECORD_FUNCTION}({slot}, __nnc_started);\n"
            )),
        }
        index = close + 1;
    }
    Instrumented {
        source: out,
        labels,
    }
}

/// The layer name of a block comment: `fc1` of `fc1: linear -> f32[1, 256]`.
pub fn layer_name(label: &str) -> &str {
    label.split_once(": ").map_or(label, |(name, _)| name)
}

/// The op of a timed block's label, `linear` in `fc1: linear {activation = relu} -> f32[1,
/// 256]`; empty when the label has none.
pub fn layer_op(label: &str) -> &str {
    label
        .split_once(": ")
        .map_or("", |(_, rest)| rest.split(' ').next().unwrap_or(""))
}

/// Whether the layer name of a timed block's label (see [`layer_name`]) names `layer`: the same
/// name, or a rolled loop's template with `{index}` standing for the iteration's number
/// (`features.{index}.conv.0` names `features.5.conv.0`).
pub fn names_layer(label_name: &str, layer: &str) -> bool {
    match label_name.split_once("{index}") {
        None => label_name == layer,
        Some((prefix, suffix)) => layer
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix(suffix))
            .is_some_and(|index| {
                !index.is_empty() && index.bytes().all(|byte| byte.is_ascii_digit())
            }),
    }
}

/// The expression a block inside a rolled loop names its iteration's layer by, `names[2]` in
/// `.map_err(rt::error::at(names[2]))`: the generated code's array of each iteration's layer
/// names, which reports the block's errors.
fn iteration_name<'a>(block: &[&'a str]) -> Option<&'a str> {
    const CALL: &str = "rt::error::at(";
    block.iter().find_map(|line| {
        let start = line.find(CALL)? + CALL.len();
        let rest = &line[start..];
        let index = rest.strip_prefix("names[")?;
        let digits = index.bytes().take_while(u8::is_ascii_digit).count();
        (digits > 0 && index[digits..].starts_with("])"))
            .then(|| &rest[.."names[".len() + digits + 1])
    })
}

/// If line `index` is a layer comment followed by a block at the same indentation, the
/// comment's text and the line of the block's closing brace.
fn layer_block<'a>(lines: &[&'a str], index: usize) -> Option<(&'a str, usize)> {
    let line = lines[index];
    let indent = indentation(line);
    let label = line.trim_start().strip_prefix("// ")?;
    let opening = lines.get(index + 1)?;
    if indentation(opening) != indent || opening.trim() != "{" {
        return None;
    }
    let close = lines[index + 2..]
        .iter()
        .position(|candidate| indentation(candidate) == indent && candidate.trim() == "}")?;
    Some((label, index + 2 + close))
}

fn indentation(line: &str) -> &str {
    &line[..line.len() - line.trim_start().len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_each_layer_block_of_forward() {
        let source = "\
impl Mlp {
    pub fn new() -> Self {
        // not in forward
        {
            x();
        }
    }
    pub fn forward(
        &mut self,
    ) -> Result<(), E> {
        copy();
        // fc1: linear -> f32[1, 256]
        {
            let y = {
                inner();
            };
            call()?;
        }
        // h: relu -> f32[1, 256]
        {
            relu();
        }
        Ok(())
    }
}
";
        let instrumented = instrument(source);
        assert_eq!(
            instrumented.labels,
            ["fc1: linear -> f32[1, 256]", "h: relu -> f32[1, 256]"]
        );
        let expected = "\
impl Mlp {
    pub fn new() -> Self {
        // not in forward
        {
            x();
        }
    }
    pub fn forward(
        &mut self,
    ) -> Result<(), E> {
        copy();
        // fc1: linear -> f32[1, 256]
        let __nnc_started = ::std::time::Instant::now();
        {
            let y = {
                inner();
            };
            call()?;
        }
        crate::nnc_profile::record(0, __nnc_started);
        // h: relu -> f32[1, 256]
        let __nnc_started = ::std::time::Instant::now();
        {
            relu();
        }
        crate::nnc_profile::record(1, __nnc_started);
        Ok(())
    }
}
";
        assert_eq!(instrumented.source, expected);
        assert_eq!(layer_name(&instrumented.labels[0]), "fc1");
    }

    #[test]
    fn a_block_that_names_its_iterations_layer_records_the_name() {
        let source = "\
    pub fn forward(&mut self) -> Result<(), E> {
        for layer in self.layers.iter_mut() {
            let names = &layer.names;
            // embeddings.LayerNorm: layer_norm -> f32[1, 128, 384]
            {
                k::norm::layer_norm(x, output).map_err(rt::error::at(names[12]))?;
            }
            // a: relu -> f32[1, 4]
            {
                relu().map_err(rt::error::at(\"a\"))?;
            }
            // b: relu -> f32[1, 4]
            {
                relu().map_err(rt::error::at(names[x]))?;
            }
        }
        Ok(())
    }
";
        let instrumented = instrument(source);
        assert_eq!(instrumented.labels.len(), 3);
        let records: Vec<&str> = instrumented
            .source
            .lines()
            .filter(|line| line.contains("crate::nnc_profile::"))
            .map(str::trim)
            .collect();
        assert_eq!(
            records,
            [
                "crate::nnc_profile::record_named(0, names[12], __nnc_started);",
                "crate::nnc_profile::record(1, __nnc_started);",
                "crate::nnc_profile::record(2, __nnc_started);",
            ]
        );
    }
}
