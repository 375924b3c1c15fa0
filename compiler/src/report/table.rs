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
fn totals(report: &Report) -> Vec<(String, String)> {
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
            "Layers:".to_string(),
            format!("{} in {} fused groups", totals.layers, totals.groups),
        ),
        (
            "Parameters:".to_string(),
            exact_and_human(totals.parameters),
        ),
    ];
    if totals.buffers > 0 {
        lines.push((
            "Buffers:".to_string(),
            format!(
                "{} (not trainable; in the model size)",
                group_digits(totals.buffers)
            ),
        ));
    }
    lines.push((
        "Model size:".to_string(),
        format!(
            "{} of {} weights",
            bytes(totals.weight_bytes),
            totals.weight_dtype
        ),
    ));
    if totals.weight_storage.len() > 1 {
        for storage in &totals.weight_storage {
            lines.push((
                format!("  in {}:", storage.storage),
                format!(
                    "{} in {} tensor{} ({} elements)",
                    bytes(storage.bytes),
                    storage.tensors,
                    if storage.tensors == 1 { "" } else { "s" },
                    group_digits(storage.elements)
                ),
            ));
        }
    }
    if let Some(per_token) = totals.weight_bytes_per_token {
        lines.push((
            "Weights read per token:".to_string(),
            format!(
                "{}, each weight once per decode step (time >= this / memory bandwidth)",
                bytes(per_token)
            ),
        ));
    }
    if totals.integer_macs > 0 {
        lines.extend([
            (
                "MACs:".to_string(),
                format!(
                    "{} = {} float + {} integer",
                    exact_and_human(totals.macs),
                    group_digits(totals.float_macs),
                    group_digits(totals.integer_macs)
                ),
            ),
            (
                "FLOPs:".to_string(),
                format!(
                    "{} = 2 x float MACs + {} other",
                    exact_and_human(totals.flops),
                    group_digits(totals.flops.saturating_sub(2 * totals.float_macs))
                ),
            ),
            (
                "OPS (integer):".to_string(),
                format!("{} = 2 x integer MACs", exact_and_human(totals.ops)),
            ),
        ]);
    } else {
        lines.extend([
            ("MACs:".to_string(), exact_and_human(totals.macs)),
            (
                "FLOPs:".to_string(),
                format!(
                    "{} = 2 x MACs + {} other",
                    exact_and_human(totals.flops),
                    group_digits(totals.flops.saturating_sub(2 * totals.macs))
                ),
            ),
        ]);
    }
    lines.extend([
        (
            "Activations, naive:".to_string(),
            format!("{}, one buffer per tensor", bytes(memory.naive_bytes)),
        ),
        (
            "Activations, planned:".to_string(),
            format!(
                "{}, the arenas of generated code",
                bytes(memory.planned_bytes)
            ),
        ),
        (
            "Activations, lower bound:".to_string(),
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
                "KV cache per token:".to_string(),
                format!(
                    "{} over {} layers",
                    bytes(cache.bytes_per_token),
                    cache.cached_layers
                ),
            ));
            lines.push((
                "KV cache at max context:".to_string(),
                format!(
                    "{} at {} tokens{batch}",
                    bytes(cache.bytes_at_max_context),
                    group_digits(cache.max_context as u64)
                ),
            ));
        }
        None => lines.push(("KV cache:".to_string(), "none".to_string())),
    }
    lines
}
