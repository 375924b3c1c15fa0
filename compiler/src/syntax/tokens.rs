//! The `network!` macro's view of the language: Rust tokens in, `.nn` text out.
//!
//! The macro receives a token stream, not text. [`TokenSource::new`] prints the tokens back to
//! text for the one grammar, remembering which byte range each token became, so that a diagnostic's
//! byte span maps back to the span of the token it points at ([`TokenSource::span_at`]). Doc
//! comments (`///`, which Rust turns into `#[doc = ".."]`) are dropped like `//` comments.

use std::ops::Range;

use proc_macro2::{Delimiter, Spacing, Span, TokenStream, TokenTree};

/// Text printed from tokens, and the token span of each byte range.
pub struct TokenSource {
    pub text: String,
    /// Byte ranges of the text and the spans of the tokens they came from, in text order.
    tokens: Vec<(Range<usize>, Span)>,
}

impl TokenSource {
    /// Prints `tokens` as `.nn` text.
    pub fn new(tokens: TokenStream) -> Self {
        let mut source = TokenSource {
            text: String::new(),
            tokens: Vec::new(),
        };
        source.push_stream(tokens);
        source
    }

    fn push_stream(&mut self, tokens: TokenStream) {
        let mut tokens = tokens.into_iter().peekable();
        while let Some(token) = tokens.next() {
            match token {
                TokenTree::Punct(punct) if punct.as_char() == '#' => {
                    // `#[doc = ".."]`, a doc comment: skip the attribute's bracket group.
                    if let Some(TokenTree::Group(group)) = tokens.peek()
                        && group.delimiter() == Delimiter::Bracket
                    {
                        tokens.next();
                        continue;
                    }
                    self.push_token("#", punct.span(), true);
                }
                TokenTree::Punct(punct) => {
                    let joint = punct.spacing() == Spacing::Joint;
                    self.push_token(&punct.as_char().to_string(), punct.span(), !joint);
                }
                TokenTree::Ident(ident) => self.push_token(&ident.to_string(), ident.span(), true),
                TokenTree::Literal(literal) => {
                    self.push_token(&literal.to_string(), literal.span(), true)
                }
                TokenTree::Group(group) => {
                    let (open, close) = match group.delimiter() {
                        Delimiter::Parenthesis => ("(", ")"),
                        Delimiter::Bracket => ("[", "]"),
                        Delimiter::Brace => ("{", "}"),
                        Delimiter::None => ("", ""),
                    };
                    self.push_token(open, group.span_open(), true);
                    self.push_stream(group.stream());
                    self.push_token(close, group.span_close(), true);
                }
            }
        }
    }

    fn push_token(&mut self, text: &str, span: Span, space_after: bool) {
        let start = self.text.len();
        self.text.push_str(text);
        self.tokens.push((start..self.text.len(), span));
        if space_after {
            self.text.push(' ');
        }
    }

    /// The span of the token at or after byte `offset` of the text; the last token's past the end.
    pub fn span_at(&self, offset: usize) -> Span {
        let index = self
            .tokens
            .partition_point(|(range, _)| range.end <= offset);
        match self.tokens.get(index).or_else(|| self.tokens.last()) {
            Some((_, span)) => *span,
            None => Span::call_site(),
        }
    }

    /// The tokens that the byte range `range` of the text covers, first and last.
    pub fn spans_of(&self, range: Range<usize>) -> (Span, Span) {
        let first = self.span_at(range.start);
        let last = self.span_at(range.end.saturating_sub(1).max(range.start));
        (first, last)
    }
}

#[cfg(test)]
mod tests {
    use super::TokenSource;

    #[test]
    fn prints_tokens_so_the_grammar_reads_them() {
        let tokens: proc_macro2::TokenStream =
            "/// An MLP.\nnetwork mlp(x: f32[1, 784]) -> (y) { y = linear(x, 10, bias = false) as fc }".parse().unwrap();
        let source = TokenSource::new(tokens);
        assert_eq!(
            source.text,
            "network mlp ( x : f32 [ 1 , 784 ] ) -> ( y ) { y = linear ( x , 10 , bias = false ) as fc } "
        );
        assert!(crate::compile_to_ir(&source.text, &Default::default()).is_ok());
    }

    #[test]
    fn maps_offsets_to_tokens() {
        let tokens: proc_macro2::TokenStream = "a = conv2x(b)".parse().unwrap();
        let source = TokenSource::new(tokens);
        let offset = source.text.find("conv2x").unwrap();
        // Outside a proc macro, proc-macro2's fallback spans carry no position, so compare text.
        assert_eq!(
            source
                .tokens
                .iter()
                .position(|(range, _)| range.start == offset),
            Some(2)
        );
        assert_eq!(
            source
                .tokens
                .partition_point(|(range, _)| range.end <= offset + 3),
            2
        );
    }
}
