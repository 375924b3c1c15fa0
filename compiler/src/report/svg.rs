//! A minimal SVG writer: shapes and text appended to a string, sized at the end.

use std::fmt::Write as _;

use crate::ir::OpCategory;

/// The font of every chart; monospace so that text widths can be computed from character counts.
pub const FONT: &str = "DejaVu Sans Mono, Menlo, Consolas, monospace";

/// The advance of one character of [`FONT`], in multiples of the font size.
const CHARACTER_WIDTH: f64 = 0.61;

/// The fill colours of op categories, shared by the charts and the graph.
pub fn category_colour(category: OpCategory) -> &'static str {
    match category {
        OpCategory::Dense | OpCategory::Convolution => "#4e79a7",
        OpCategory::Attention => "#b07aa1",
        OpCategory::Normalization => "#59a14f",
        OpCategory::Pooling => "#76b7b2",
        OpCategory::Embedding => "#edc948",
        OpCategory::Arithmetic => "#f28e2b",
        OpCategory::Shape => "#bab0ac",
        OpCategory::Activation => "#e15759",
    }
}

/// The width of `text` at `font_size`, in user units.
pub fn text_width(text: &str, font_size: f64) -> f64 {
    text.chars().count() as f64 * font_size * CHARACTER_WIDTH
}

/// Escapes `&`, `<`, `>` and `"` for text and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(character),
        }
    }
    out
}

/// An SVG document under construction.
pub struct Svg {
    body: String,
}

impl Svg {
    pub fn new() -> Self {
        Svg {
            body: String::new(),
        }
    }

    /// A rectangle; `tooltip` becomes a `<title>` that viewers show on hover.
    pub fn rect(&mut self, x: f64, y: f64, width: f64, height: f64, attrs: &str, tooltip: &str) {
        let _ = write!(
            self.body,
            r#"<rect x="{x:.2}" y="{y:.2}" width="{width:.2}" height="{height:.2}" {attrs}"#
        );
        if tooltip.is_empty() {
            self.body.push_str("/>\n");
        } else {
            let _ = writeln!(self.body, "><title>{}</title></rect>", escape(tooltip));
        }
    }

    /// Text with its anchor point at `(x, y)`; `anchor` is `start`, `middle` or `end`.
    pub fn text(&mut self, x: f64, y: f64, size: f64, anchor: &str, attrs: &str, text: &str) {
        let _ = writeln!(
            self.body,
            r#"<text x="{x:.2}" y="{y:.2}" font-size="{size}" text-anchor="{anchor}" {attrs}>{}</text>"#,
            escape(text)
        );
    }

    pub fn line(&mut self, x1: f64, y1: f64, x2: f64, y2: f64, attrs: &str) {
        let _ = writeln!(
            self.body,
            r#"<line x1="{x1:.2}" y1="{y1:.2}" x2="{x2:.2}" y2="{y2:.2}" {attrs}/>"#
        );
    }

    /// A path with data `d`.
    pub fn path(&mut self, d: &str, attrs: &str) {
        let _ = writeln!(self.body, r#"<path d="{d}" {attrs}/>"#);
    }

    /// Raw markup, for groups and definitions.
    pub fn raw(&mut self, markup: &str) {
        self.body.push_str(markup);
        self.body.push('\n');
    }

    /// The document, `width × height` user units on a white background.
    pub fn finish(self, width: f64, height: f64) -> String {
        format!(
            concat!(
                r#"<?xml version="1.0" encoding="UTF-8"?>"#,
                "\n",
                r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w:.0}" height="{h:.0}" viewBox="0 0 {w:.0} {h:.0}" font-family="{font}">"#,
                "\n",
                r#"<rect x="0" y="0" width="{w:.0}" height="{h:.0}" fill="white"/>"#,
                "\n{body}</svg>\n"
            ),
            w = width.ceil(),
            h = height.ceil(),
            font = FONT,
            body = self.body
        )
    }
}

/// Round tick values covering `0..=max`: about `count` steps of 1, 2 or 5 times a power of ten.
pub fn ticks(max: f64, count: usize) -> Vec<f64> {
    if max <= 0.0 {
        return vec![0.0];
    }
    let raw_step = max / count.max(1) as f64;
    let magnitude = 10f64.powf(raw_step.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|factor| factor * magnitude)
        .find(|step| *step >= raw_step)
        .unwrap_or(10.0 * magnitude);
    let mut values = Vec::new();
    let mut value = 0.0;
    while value <= max * (1.0 + 1e-9) {
        values.push(value);
        value += step;
    }
    values
}
