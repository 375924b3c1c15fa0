//! The report as text: a terminal table in the style of torchinfo, and Markdown.

use super::{Report, group_digits, human_bytes, human_count};
use crate::ir::types::format_shape;

/// The per-layer table and the totals, for a terminal.
pub fn render_text(report: &Report) -> String {
    let headers = [
        "Layer (op)",
        "Output shape",
        "Params",
        "MACs",
        "FLOPs",
        "Act. bytes",
        "Group",
    ];
    let rows: Vec<[String; 7]> = report
        .layers
        .iter()
        .map(|layer| {
            [
                format!("{} ({})", layer.name, layer.op),
                format_shape(&layer.output_shape),
                parameter_cell(layer.parameters, layer.tied_parameters),
                group_digits(layer.macs),
                group_digits(layer.flops),
                group_digits(layer.activation_bytes),
                layer.group.to_string(),
            ]
        })
        .collect();
    let mut widths = headers.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line_width = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
    let rule = "=".repeat(line_width);
    let format_row = |cells: &[String]| {
        let mut line = String::new();
        for (index, (cell, width)) in cells.iter().zip(widths).enumerate() {
            if index > 0 {
                line.push_str("  ");
            }
            // Names and shapes read left to right; numbers line up on the right.
            if index < 2 {
                line.push_str(&format!("{cell:<width$}"));
            } else {
                line.push_str(&format!("{cell:>width$}"));
            }
        }
        line.trim_end().to_string() + "\n"
    };

    let mut out = String::new();
    out.push_str(&format!("{}\n", title(report)));
    out.push_str(&format!("{rule}\n"));
    out.push_str(&format_row(&headers.map(String::from)));
    out.push_str(&format!("{rule}\n"));
    for row in &rows {
        out.push_str(&format_row(row));
    }
    out.push_str(&format!("{rule}\n"));
    for (label, value) in totals(report) {
        out.push_str(&format!("{label:<26}{value}\n"));
    }
    if report.layers.iter().any(|layer| layer.tied_parameters > 0) {
        out.push_str("(n) in Params: tied weights, counted at the layer that first uses them.\n");
    }
    out.push_str(&format!("{rule}\n"));
    out
}

/// The same table and totals as GitHub-flavoured Markdown.
pub fn render_markdown(report: &Report) -> String {
    let mut out = format!("## {}\n\n", title(report));
    out.push_str(
        "| # | Layer | Op | Output shape | Params | MACs | FLOPs | Activation bytes | Group |\n",
    );
    out.push_str("|---:|---|---|---|---:|---:|---:|---:|---:|\n");
    for layer in &report.layers {
        out.push_str(&format!(
            "| {} | `{}` | {} | {} | {} | {} | {} | {} | {} |\n",
            layer.index,
            layer.name.replace('|', "\\|"),
            layer.op,
            format_shape(&layer.output_shape),
            parameter_cell(layer.parameters, layer.tied_parameters),
            group_digits(layer.macs),
            group_digits(layer.flops),
            group_digits(layer.activation_bytes),
            layer.group,
        ));
    }
    out.push_str("\n| Total | |\n|---|---:|\n");
    for (label, value) in totals(report) {
        out.push_str(&format!(
            "| {} | {} |\n",
            label.trim_end_matches(':'),
            value
        ));
    }
    if report.layers.iter().any(|layer| layer.tied_parameters > 0) {
        out.push_str("\n(n) in Params: tied weights, counted at the layer that first uses them.\n");
    }
    out
}

/// `mlp (batch = 1)`: the network and the sizes it was counted at.
fn title(report: &Report) -> String {
    let dims: Vec<String> = report
        .dims
        .iter()
        .map(|dim| format!("{} = {}", dim.name, dim.size))
        .collect();
    if dims.is_empty() {
        report.network.clone()
    } else {
        format!("{} ({})", report.network, dims.join(", "))
    }
}

/// The parameters of a layer, with reused tied weights in parentheses.
fn parameter_cell(parameters: u64, tied: u64) -> String {
    match (parameters, tied) {
        (_, 0) => group_digits(parameters),
        (0, _) => format!("({})", group_digits(tied)),
        _ => format!("{} ({})", group_digits(parameters), group_digits(tied)),
    }
}

/// `(label, value)` lines of the totals.
fn totals(report: &Report) -> Vec<(&'static str, String)> {
    let totals = &report.totals;
    let memory = &report.memory;
    let exact_and_human = |value: u64| format!("{} ({})", group_digits(value), human_count(value));
    let bytes = |value: u64| format!("{} bytes ({})", group_digits(value), human_bytes(value));
    let peak_layer = match memory.lower_bound_step {
        0 => "the inputs".to_string(),
        step => report
            .layers
            .get(step - 1)
            .map(|layer| format!("`{}`", layer.name))
            .unwrap_or_else(|| "the outputs".to_string()),
    };
    let mut lines = vec![
        (
            "Layers:",
            format!("{} in {} fused groups", totals.layers, totals.groups),
        ),
        ("Parameters:", exact_and_human(totals.parameters)),
    ];
    if totals.buffers > 0 {
        lines.push((
            "Buffers:",
            format!(
                "{} (not trainable; in the model size)",
                group_digits(totals.buffers)
            ),
        ));
    }
    lines.extend([
        (
            "Model size:",
            format!(
                "{} of {} weights",
                bytes(totals.weight_bytes),
                totals.weight_dtype
            ),
        ),
        ("MACs:", exact_and_human(totals.macs)),
        (
            "FLOPs:",
            format!(
                "{} = 2 x MACs + {} other",
                exact_and_human(totals.flops),
                group_digits(totals.flops.saturating_sub(2 * totals.macs))
            ),
        ),
        (
            "Activations, naive:",
            format!("{}, one buffer per tensor", bytes(memory.naive_bytes)),
        ),
        (
            "Activations, planned:",
            format!(
                "{}, the arenas of generated code",
                bytes(memory.planned_bytes)
            ),
        ),
        (
            "Activations, lower bound:",
            format!(
                "{}, live at once at step {} ({peak_layer})",
                bytes(memory.lower_bound_bytes),
                memory.lower_bound_step
            ),
        ),
    ]);
    match &report.kv_cache {
        Some(cache) => {
            let batch = report
                .dims
                .iter()
                .find(|dim| dim.name == "batch")
                .map(|dim| format!(", batch {}", dim.size))
                .unwrap_or_default();
            lines.push((
                "KV cache per token:",
                format!(
                    "{} over {} layers",
                    bytes(cache.bytes_per_token),
                    cache.cached_layers
                ),
            ));
            lines.push((
                "KV cache at max context:",
                format!(
                    "{} at {} tokens{batch}",
                    bytes(cache.bytes_at_max_context),
                    group_digits(cache.max_context as u64)
                ),
            ));
        }
        None => lines.push(("KV cache:", "none".to_string())),
    }
    lines
}
