//! Errors as data, and their rendering.
//!
//! Every stage reports problems as [`Diagnostic`]s: a message, a primary span with a label,
//! optional secondary spans and hints. Stages collect all the diagnostics they can instead of
//! stopping at the first. Rendering happens once, at the edge: [`render`] prints them like rustc
//! (file:line:col, the source line, a caret under the offending text), and the `network!` macro
//! turns them into `compile_error!`s spanned on the offending tokens.

use std::fmt;

use codespan_reporting::diagnostic::{Diagnostic as Report, Label as ReportLabel};
use codespan_reporting::files::SimpleFile;
use codespan_reporting::term;

/// A byte range in the source text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    /// The span `start..end`.
    pub fn new(start: usize, end: usize) -> Self {
        Span {
            start: to_u32(start),
            end: to_u32(end.max(start)),
        }
    }

    /// The smallest span covering both.
    pub fn to(self, other: Span) -> Span {
        Span {
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }

    /// The byte range, for slicing the source.
    pub fn range(self) -> std::ops::Range<usize> {
        self.start as usize..self.end as usize
    }
}

fn to_u32(offset: usize) -> u32 {
    u32::try_from(offset).unwrap_or(u32::MAX)
}

/// A secondary place a diagnostic points at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Label {
    pub span: Span,
    pub message: String,
}

/// One problem found in the source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// What is wrong, as one sentence without a trailing period.
    pub message: String,
    /// Where it is.
    pub span: Span,
    /// A short note printed under the caret.
    pub label: String,
    /// Other places that explain the problem.
    pub secondary: Vec<Label>,
    /// How to fix it.
    pub hints: Vec<String>,
}

impl Diagnostic {
    /// An error at `span`.
    pub fn error(span: Span, message: impl Into<String>) -> Self {
        Diagnostic {
            message: message.into(),
            span,
            label: String::new(),
            secondary: Vec::new(),
            hints: Vec::new(),
        }
    }

    /// Sets the note under the caret.
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    /// Adds another place to look at.
    pub fn with_secondary(mut self, span: Span, message: impl Into<String>) -> Self {
        self.secondary.push(Label {
            span,
            message: message.into(),
        });
        self
    }

    /// Adds a hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hints.push(hint.into());
        self
    }
}

/// The diagnostics of a failed compilation, in source order.
#[derive(Clone, Debug, Default, PartialEq, Eq, thiserror::Error)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let messages: Vec<&str> = self
            .0
            .iter()
            .map(|diagnostic| diagnostic.message.as_str())
            .collect();
        f.write_str(&messages.join("; "))
    }
}

/// Renders diagnostics like rustc does, for the file `file_name` with contents `source`.
pub fn render(diagnostics: &[Diagnostic], file_name: &str, source: &str) -> String {
    let file = SimpleFile::new(file_name, source);
    let config = term::Config::default();
    let mut output = String::new();
    for diagnostic in diagnostics {
        let mut labels = vec![
            ReportLabel::primary((), clamp(diagnostic.span, source))
                .with_message(&diagnostic.label),
        ];
        labels.extend(diagnostic.secondary.iter().map(|label| {
            ReportLabel::secondary((), clamp(label.span, source)).with_message(&label.message)
        }));
        let notes = diagnostic
            .hints
            .iter()
            .map(|hint| format!("help: {hint}"))
            .collect();
        let report = Report::error()
            .with_message(&diagnostic.message)
            .with_labels(labels)
            .with_notes(notes);
        match term::emit_into_string(&config, &file, &report) {
            Ok(text) => output.push_str(&text),
            // Spans are clamped to the source, so this only happens if the renderer itself fails;
            // the message alone is still worth printing.
            Err(_) => output.push_str(&format!("error: {}\n", diagnostic.message)),
        }
    }
    output
}

/// Keeps a span inside the source and on character boundaries, so rendering cannot fail.
fn clamp(span: Span, source: &str) -> std::ops::Range<usize> {
    let mut start = (span.start as usize).min(source.len());
    let mut end = (span.end as usize).clamp(start, source.len());
    while !source.is_char_boundary(start) {
        start -= 1;
    }
    while !source.is_char_boundary(end) {
        end += 1;
    }
    start..end
}
