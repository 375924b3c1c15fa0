//! SVG charts of a report: MACs per layer, and the activation arena over time.

use super::svg::{Svg, category_colour, escape, text_width, ticks};
use super::{Report, group_digits, human_bytes, human_count};
use crate::codegen::MemoryPlan;
use crate::cost::{live_ranges, memory_figures};
use crate::ir::{DType, Graph, ValueDef};

const TITLE_SIZE: f64 = 15.0;
const LABEL_SIZE: f64 = 11.0;
const MARGIN: f64 = 16.0;

/// A horizontal bar per layer with MACs, in execution order, labelled with the layer and its count.
pub fn macs_bar_chart(report: &Report) -> String {
    let layers: Vec<_> = report
        .layers
        .iter()
        .filter(|layer| layer.macs > 0)
        .collect();
    let omitted = report.layers.len() - layers.len();
    let row_height = 16.0;
    let bar_width = 520.0;
    let labels: Vec<String> = layers
        .iter()
        .map(|layer| format!("{} ({})", layer.name, layer.op))
        .collect();
    let label_width = labels
        .iter()
        .map(|label| text_width(label, LABEL_SIZE))
        .fold(120.0, f64::max);
    let max_macs = layers.iter().map(|layer| layer.macs).max().unwrap_or(1) as f64;
    let value_width = text_width("999.99 M (99.9%)", LABEL_SIZE) + 8.0;
    let chart_left = MARGIN + label_width + 8.0;
    let chart_top = MARGIN + TITLE_SIZE + 26.0;
    let width = chart_left + bar_width + value_width + MARGIN;
    let chart_height = row_height * layers.len().max(1) as f64;
    let height = chart_top + chart_height + 44.0 + MARGIN;

    let mut svg = Svg::new();
    svg.text(
        MARGIN,
        MARGIN + TITLE_SIZE,
        TITLE_SIZE,
        "start",
        r#"font-weight="bold""#,
        &format!(
            "{}: MACs per layer ({} in total)",
            report.network,
            human_count(report.totals.macs)
        ),
    );
    svg.text(
        MARGIN,
        MARGIN + TITLE_SIZE + 16.0,
        LABEL_SIZE,
        "start",
        r##"fill="#555""##,
        &{
            let mut subtitle = if omitted > 0 {
                format!(
                    "{omitted} layers without MACs (norms, activations, data movement) not shown"
                )
            } else {
                "every layer".to_string()
            };
            if report.totals.integer_macs > 0 {
                subtitle.push_str(&format!(
                    "; {} of the MACs in integers (quantized weights, fast mode)",
                    human_count(report.totals.integer_macs)
                ));
            }
            subtitle
        },
    );
    // Grid and axis.
    let scale = bar_width / max_macs;
    for tick in ticks(max_macs, 5) {
        let x = chart_left + tick * scale;
        svg.line(
            x,
            chart_top,
            x,
            chart_top + chart_height,
            r##"stroke="#ddd" stroke-width="1""##,
        );
        svg.text(
            x,
            chart_top + chart_height + 14.0,
            LABEL_SIZE,
            "middle",
            r##"fill="#555""##,
            &human_count(tick as u64),
        );
    }
    svg.text(
        chart_left + bar_width / 2.0,
        chart_top + chart_height + 32.0,
        LABEL_SIZE,
        "middle",
        "",
        "multiply-accumulates",
    );
    let total = report.totals.macs.max(1) as f64;
    for (row, (layer, label)) in layers.iter().zip(&labels).enumerate() {
        let y = chart_top + row as f64 * row_height;
        let length = (layer.macs as f64 * scale).max(1.0);
        svg.text(
            chart_left - 6.0,
            y + row_height - 4.0,
            LABEL_SIZE,
            "end",
            "",
            label,
        );
        svg.rect(
            chart_left,
            y + 2.0,
            length,
            row_height - 4.0,
            &format!(r#"fill="{}""#, category_colour(layer.category)),
            &if layer.integer_macs > 0 {
                format!(
                    "{} ({}): {} MACs in integers ({} OPS), {} FLOPs",
                    layer.name,
                    layer.op,
                    group_digits(layer.integer_macs),
                    group_digits(layer.ops),
                    group_digits(layer.flops)
                )
            } else {
                format!(
                    "{} ({}): {} MACs, {} FLOPs",
                    layer.name,
                    layer.op,
                    group_digits(layer.macs),
                    group_digits(layer.flops)
                )
            },
        );
        svg.text(
            chart_left + length + 4.0,
            y + row_height - 4.0,
            LABEL_SIZE,
            "start",
            r##"fill="#333""##,
            &format!(
                "{} ({:.1}%)",
                human_count(layer.macs),
                100.0 * layer.macs as f64 / total
            ),
        );
    }
    svg.line(
        chart_left,
        chart_top,
        chart_left,
        chart_top + chart_height,
        r##"stroke="#333" stroke-width="1""##,
    );
    svg.finish(width, height)
}

/// The activation arenas over time: each tensor a rectangle spanning the steps it is live (x) and
/// the bytes it occupies (y), the bytes live at each step as a line, and the lower bound (the
/// most bytes live at once) and the planned arena size as horizontal rules.
pub fn memory_timeline(graph: &Graph, plan: &MemoryPlan) -> String {
    let figures = memory_figures(graph, plan);
    let ranges = live_ranges(graph);
    let steps = graph.nodes.len() + 2;
    let plot_width = (steps as f64 * 6.0).clamp(640.0, 1400.0);
    let plot_height = 420.0;
    let left = MARGIN + 84.0;
    let top = MARGIN + TITLE_SIZE + 48.0;
    let legend_width = 250.0;
    let width = left + plot_width + legend_width + MARGIN;
    let height = top + plot_height + 56.0 + MARGIN;
    let step_width = plot_width / steps as f64;
    let max_bytes = figures.planned_bytes.max(figures.lower_bound_bytes).max(1) as f64;
    let (unit, unit_name) = byte_unit(max_bytes);
    let y_ticks = ticks(max_bytes / unit, 6);
    let y_max = y_ticks.last().copied().unwrap_or(1.0).max(max_bytes / unit) * unit;
    let y_of = |bytes: f64| top + plot_height - bytes / y_max * plot_height;

    let mut svg = Svg::new();
    svg.text(
        MARGIN,
        MARGIN + TITLE_SIZE,
        TITLE_SIZE,
        "start",
        r#"font-weight="bold""#,
        &format!("{}: activation memory over time", graph.name),
    );
    svg.text(
        MARGIN,
        MARGIN + TITLE_SIZE + 18.0,
        LABEL_SIZE,
        "start",
        r##"fill="#555""##,
        &format!(
            "planned {} · lower bound {} · naive {}",
            human_bytes(figures.planned_bytes),
            human_bytes(figures.lower_bound_bytes),
            human_bytes(figures.naive_bytes)
        ),
    );
    for tick in &y_ticks {
        let y = y_of(tick * unit);
        svg.line(
            left,
            y,
            left + plot_width,
            y,
            r##"stroke="#eee" stroke-width="1""##,
        );
        svg.text(
            left - 6.0,
            y + 4.0,
            LABEL_SIZE,
            "end",
            r##"fill="#555""##,
            &format!("{} {unit_name}", trim_number(*tick)),
        );
    }

    // The tensors. The i64 arena sits above the f32 arena, as in one address space.
    let f32_arena = figures.f32_arena_bytes as f64;
    for (value, data) in graph.values.iter() {
        let (Some(range), Some(slot)) = (ranges[value], plan.slots[value]) else {
            continue;
        };
        let element_bytes = slot.dtype.size_in_bytes() as f64;
        let base = if slot.dtype == DType::I64 {
            f32_arena
        } else {
            0.0
        };
        let low = base + slot.offset as f64 * element_bytes;
        let high = low + slot.len as f64 * element_bytes;
        let (name, colour_key) = match data.def {
            ValueDef::Input { index } => (format!("input {}", graph.inputs[index].name), index),
            ValueDef::Node { node, .. } => (graph.nodes[node].name.clone(), node.index() + 1),
            ValueDef::Param(_) => continue,
        };
        let x = left + range.start as f64 * step_width;
        let span = (range.end - range.start + 1) as f64 * step_width;
        svg.rect(
            x,
            y_of(high),
            span,
            (y_of(low) - y_of(high)).max(0.5),
            &format!(
                r#"fill="{}" fill-opacity="0.8" stroke="white" stroke-width="0.5""#,
                palette(colour_key)
            ),
            &format!(
                "{name}: {} {}, {} at offset {}, steps {}..={}",
                data.ty,
                slot.dtype.name(),
                human_bytes(slot.len as u64 * slot.dtype.size_in_bytes()),
                group_digits(low as u64),
                range.start,
                range.end
            ),
        );
    }
    if figures.i64_arena_bytes > 0 {
        let y = y_of(f32_arena);
        svg.line(
            left,
            y,
            left + plot_width,
            y,
            r##"stroke="#666" stroke-width="1" stroke-dasharray="2 3""##,
        );
        svg.text(
            left + plot_width - 4.0,
            y + LABEL_SIZE,
            LABEL_SIZE - 1.0,
            "end",
            r##"fill="#666""##,
            &format!(
                "i64 arena ({}) above, f32 arena below",
                human_bytes(figures.i64_arena_bytes)
            ),
        );
    }

    // Bytes live at each step, as a step line.
    let mut d = String::new();
    for (step, bytes) in figures.live_bytes.iter().enumerate() {
        let x0 = left + step as f64 * step_width;
        let y = y_of(*bytes as f64);
        if step == 0 {
            d.push_str(&format!("M{x0:.2},{y:.2}"));
        } else {
            d.push_str(&format!(" L{x0:.2},{y:.2}"));
        }
        d.push_str(&format!(" L{:.2},{y:.2}", x0 + step_width));
    }
    svg.path(&d, r##"fill="none" stroke="#222" stroke-width="1.5""##);
    let planned_y = y_of(figures.planned_bytes as f64);
    svg.line(
        left,
        planned_y,
        left + plot_width,
        planned_y,
        r##"stroke="#1f77b4" stroke-width="1.5""##,
    );
    let lower_bound_y = y_of(figures.lower_bound_bytes as f64);
    svg.line(
        left,
        lower_bound_y,
        left + plot_width,
        lower_bound_y,
        r##"stroke="#d62728" stroke-width="1.5" stroke-dasharray="6 4""##,
    );

    // Axes.
    svg.line(
        left,
        top + plot_height,
        left + plot_width,
        top + plot_height,
        r##"stroke="#333""##,
    );
    svg.line(left, top, left, top + plot_height, r##"stroke="#333""##);
    for tick in ticks((steps - 1) as f64, 10) {
        let x = left + (tick + 0.5) * step_width;
        svg.line(
            x,
            top + plot_height,
            x,
            top + plot_height + 4.0,
            r##"stroke="#333""##,
        );
        svg.text(
            x,
            top + plot_height + 16.0,
            LABEL_SIZE,
            "middle",
            r##"fill="#555""##,
            &format!("{tick}"),
        );
    }
    svg.text(
        left + plot_width / 2.0,
        top + plot_height + 36.0,
        LABEL_SIZE,
        "middle",
        "",
        "step (0: inputs; i + 1: layer i)",
    );
    svg.text(
        MARGIN,
        top - 10.0,
        LABEL_SIZE,
        "start",
        r##"fill="#555""##,
        "arena offset (f32 arena, then i64)",
    );

    // Legend.
    let legend_x = left + plot_width + 20.0;
    let mut legend_y = top + 10.0;
    let entries = [
        (
            r##"stroke="#1f77b4" stroke-width="1.5""##,
            format!("planned arena {}", human_bytes(figures.planned_bytes)),
        ),
        (
            r##"stroke="#d62728" stroke-width="1.5" stroke-dasharray="6 4""##,
            if figures.lower_bound_bytes == figures.planned_bytes {
                format!(
                    "lower bound {} (= planned)",
                    human_bytes(figures.lower_bound_bytes)
                )
            } else {
                format!("lower bound {}", human_bytes(figures.lower_bound_bytes))
            },
        ),
        (
            r##"stroke="#222" stroke-width="1.5""##,
            "bytes live at each step".to_string(),
        ),
    ];
    for (style, label) in entries {
        svg.line(legend_x, legend_y, legend_x + 24.0, legend_y, style);
        svg.text(
            legend_x + 30.0,
            legend_y + 4.0,
            LABEL_SIZE,
            "start",
            "",
            &label,
        );
        legend_y += 18.0;
    }
    svg.rect(
        legend_x,
        legend_y - 6.0,
        24.0,
        10.0,
        &format!(r#"fill="{}" fill-opacity="0.8""#, palette(3)),
        "",
    );
    svg.text(
        legend_x + 30.0,
        legend_y + 4.0,
        LABEL_SIZE,
        "start",
        "",
        "a tensor: live steps × bytes",
    );
    let waste = figures
        .planned_bytes
        .saturating_sub(figures.lower_bound_bytes);
    svg.text(
        legend_x,
        legend_y + 28.0,
        LABEL_SIZE,
        "start",
        r##"fill="#555""##,
        &format!("planner overhead {}", human_bytes(waste)),
    );
    svg.raw(&format!("<!-- {} -->", escape(&graph.name)));
    svg.finish(width, height)
}

/// A binary unit for a byte axis: its size and name.
fn byte_unit(max_bytes: f64) -> (f64, &'static str) {
    if max_bytes >= 1024.0 * 1024.0 * 1024.0 {
        (1024.0 * 1024.0 * 1024.0, "GiB")
    } else if max_bytes >= 1024.0 * 1024.0 {
        (1024.0 * 1024.0, "MiB")
    } else if max_bytes >= 1024.0 {
        (1024.0, "KiB")
    } else {
        (1.0, "B")
    }
}

/// `2`, `2.5`, `0.25`: a tick value without trailing zeros.
fn trim_number(value: f64) -> String {
    let text = format!("{value:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// A qualitative palette, cycled by `index`.
fn palette(index: usize) -> &'static str {
    const COLOURS: [&str; 10] = [
        "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
        "#9c755f", "#bab0ac",
    ];
    COLOURS[index % COLOURS.len()]
}
