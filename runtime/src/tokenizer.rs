//! Text in and out of a language model: Hugging Face's `tokenizers` loading a `tokenizer.json`,
//! or the byte-level BPE vocabulary that a GGUF file stores in its metadata (so that such a file
//! is all a user needs), with the special tokens a decoding loop needs (BOS, the stop tokens).
//!
//! Only with the runtime's `tokenizer` feature: the generated code itself never needs it.

use std::path::Path;

use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, PreTokenizerWrapper};

use crate::weights::gguf::{GgufFile, MetadataValue};

/// Why a tokenizer could not be loaded or could not encode or decode.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TokenizerError(pub String);

fn error(message: impl Into<String>) -> TokenizerError {
    TokenizerError(message.into())
}

/// Names of end-of-text tokens in common `tokenizer.json` files. A `tokenizer.json` does not
/// say which token ends a reply (that is in the model's `generation_config.json`), so every
/// special token with one of these names stops generation.
const STOP_TOKEN_NAMES: &[&str] = &[
    "</s>",
    "<|endoftext|>",
    "<|im_end|>",
    "<|eot_id|>",
    "<|end_of_text|>",
    "<|end|>",
    "<end_of_turn>",
    "<eos>",
];

/// llama.cpp's GGUF token type of control tokens (`LLAMA_TOKEN_TYPE_CONTROL`).
const GGUF_TOKEN_TYPE_CONTROL: u64 = 3;

/// A tokenizer with the special tokens of its model.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// Prepended to every prompt when set (GGUF's `tokenizer.ggml.add_bos_token`; a
    /// `tokenizer.json` adds its own through its post-processor instead).
    bos: Option<u32>,
    /// Whether encoding adds the special tokens of the `tokenizer.json`'s post-processor.
    post_processor_specials: bool,
    /// Tokens that end generation.
    stop: Vec<u32>,
}

impl Tokenizer {
    /// Loads a Hugging Face `tokenizer.json`. Its post-processor adds BOS where the model
    /// wants it; the special tokens named in [`STOP_TOKEN_NAMES`] stop generation.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, TokenizerError> {
        let path = path.as_ref();
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| error(format!("cannot load {}: {e}", path.display())))?;
        let mut stop: Vec<u32> = inner
            .get_added_tokens_decoder()
            .iter()
            .filter(|(_, token)| token.special && STOP_TOKEN_NAMES.contains(&&*token.content))
            .map(|(&id, _)| id)
            .collect();
        stop.sort_unstable();
        Ok(Tokenizer {
            inner,
            bos: None,
            post_processor_specials: true,
            stop,
        })
    }

    /// The tokenizer stored in the metadata of a GGUF file: `tokenizer.ggml.model` "gpt2"
    /// (byte-level BPE) with `tokenizer.ggml.tokens`, `.merges`, `.token_type`, and the
    /// BOS/EOS ids.
    pub fn from_gguf(file: &GgufFile<'_>) -> Result<Self, TokenizerError> {
        let string = |key: &str| file.metadata(key).and_then(MetadataValue::as_str);
        let id = |key: &str| {
            file.metadata(key)
                .and_then(MetadataValue::as_u64)
                .and_then(|id| u32::try_from(id).ok())
        };
        let strings = |key: &str| -> Result<Vec<String>, TokenizerError> {
            match file.metadata(key) {
                Some(MetadataValue::Array(values)) => values
                    .iter()
                    .map(|value| {
                        value
                            .as_str()
                            .map(str::to_string)
                            .ok_or_else(|| error(format!("{key} holds a value that is not text")))
                    })
                    .collect(),
                _ => Err(error(format!("the GGUF file has no {key}"))),
            }
        };
        match string("tokenizer.ggml.model") {
            Some("gpt2") => {}
            Some(other) => {
                return Err(error(format!(
                    "the GGUF file's tokenizer is `{other}`; only byte-level BPE (`gpt2`) is \
                     supported: pass a tokenizer.json"
                )));
            }
            None => {
                return Err(error(
                    "the GGUF file has no tokenizer (tokenizer.ggml.model): pass a tokenizer.json",
                ));
            }
        }
        let tokens = strings("tokenizer.ggml.tokens")?;
        let merges = strings("tokenizer.ggml.merges")?;
        let control: Vec<bool> = match file.metadata("tokenizer.ggml.token_type") {
            Some(MetadataValue::Array(types)) => types
                .iter()
                .map(|kind| kind.as_u64() == Some(GGUF_TOKEN_TYPE_CONTROL))
                .collect(),
            _ => vec![false; tokens.len()],
        };
        let add_bos = matches!(
            file.metadata("tokenizer.ggml.add_bos_token"),
            Some(MetadataValue::Bool(true))
        );
        let vocabulary = BpeVocabulary {
            tokens,
            merges,
            control,
            bos: id("tokenizer.ggml.bos_token_id"),
            eos: id("tokenizer.ggml.eos_token_id"),
            add_bos,
            pre: string("tokenizer.ggml.pre").unwrap_or("gpt2").to_string(),
        };
        Self::from_bpe_vocabulary(vocabulary)
    }

    /// [`Self::from_gguf`] of the GGUF file at `path`.
    pub fn from_gguf_path(path: impl AsRef<Path>) -> Result<Self, TokenizerError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path)
            .map_err(|e| error(format!("cannot read {}: {e}", path.display())))?;
        let file = GgufFile::parse(&bytes)
            .map_err(|e| error(format!("cannot read {}: {e}", path.display())))?;
        Self::from_gguf(&file)
    }

    /// A byte-level BPE tokenizer (GPT-2's) from its vocabulary and merges.
    pub fn from_bpe_vocabulary(vocabulary: BpeVocabulary) -> Result<Self, TokenizerError> {
        let BpeVocabulary {
            tokens,
            merges,
            control,
            bos,
            eos,
            add_bos,
            pre,
        } = vocabulary;
        let vocab: Vocab = tokens
            .iter()
            .enumerate()
            .map(|(id, token)| (token.clone(), id as u32))
            .collect();
        let merges = merges
            .iter()
            .map(|merge| {
                merge
                    .split_once(' ')
                    .map(|(left, right)| (left.to_string(), right.to_string()))
                    .ok_or_else(|| error(format!("the BPE merge `{merge}` is not two tokens")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let model = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| error(format!("invalid BPE vocabulary: {e}")))?;
        let mut inner = tokenizers::Tokenizer::new(model);
        // GPT-2's split of words, spaces and punctuation; SmolLM's also splits digits one by
        // one (llama.cpp's pre-tokenizer `smollm`). Other pre-tokenizers split like GPT-2.
        let byte_level = ByteLevel::new(false, true, true);
        let pre_tokenizer: PreTokenizerWrapper = match pre.as_str() {
            "smollm" => Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into(),
            _ => byte_level.into(),
        };
        inner.with_pre_tokenizer(Some(pre_tokenizer));
        inner.with_decoder(Some(ByteLevel::default()));
        let specials: Vec<AddedToken> = tokens
            .iter()
            .zip(&control)
            .filter(|&(_, &control)| control)
            .map(|(token, _)| AddedToken::from(token.clone(), true))
            .collect();
        inner.add_special_tokens(&specials);
        Ok(Tokenizer {
            inner,
            bos: bos.filter(|_| add_bos),
            post_processor_specials: false,
            stop: eos.into_iter().collect(),
        })
    }

    /// The token ids of `text`, with BOS first when the model wants it.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let encoding = self
            .inner
            .encode(text, self.post_processor_specials)
            .map_err(|e| error(format!("cannot encode the prompt: {e}")))?;
        Ok(self
            .bos
            .into_iter()
            .chain(encoding.get_ids().iter().copied())
            .collect())
    }

    /// `texts` as an encoder (BERT, a sentence-transformers model) takes them: each text with
    /// the special tokens of the `tokenizer.json`'s post-processor (`[CLS]`, `[SEP]`), truncated
    /// as the file says, and padded on the right to the longest text of the batch (not to the
    /// file's fixed padding length, which would only cost time) with the pad token, where the
    /// attention mask is 0.
    pub fn encode_batch(&self, texts: &[&str]) -> Result<EncodedBatch, TokenizerError> {
        let padding = self.inner.get_padding();
        let pad_id = i64::from(padding.map_or(0, |padding| padding.pad_id));
        let pad_type_id = i64::from(padding.map_or(0, |padding| padding.pad_type_id));
        let mut rows = Vec::with_capacity(texts.len());
        for text in texts {
            let encoding = self
                .inner
                .encode(*text, self.post_processor_specials)
                .map_err(|e| error(format!("cannot encode `{text}`: {e}")))?;
            // Keep the real tokens only: the file's own padding (if any) is redone below.
            let real: Vec<usize> = (0..encoding.len())
                .filter(|&position| encoding.get_attention_mask()[position] != 0)
                .collect();
            let bos = self.bos.map(i64::from);
            let ids: Vec<i64> = bos
                .into_iter()
                .chain(real.iter().map(|&p| i64::from(encoding.get_ids()[p])))
                .collect();
            let type_ids: Vec<i64> = bos
                .map(|_| 0)
                .into_iter()
                .chain(real.iter().map(|&p| i64::from(encoding.get_type_ids()[p])))
                .collect();
            rows.push((ids, type_ids));
        }
        let seq = rows.iter().map(|(ids, _)| ids.len()).max().unwrap_or(0);
        let mut batch = EncodedBatch {
            texts: texts.len(),
            seq,
            ..EncodedBatch::default()
        };
        for (ids, type_ids) in rows {
            let padding = seq - ids.len();
            batch.lengths.push(ids.len());
            batch
                .attention_mask
                .extend(std::iter::repeat_n(1, ids.len()).chain(std::iter::repeat_n(0, padding)));
            batch
                .input_ids
                .extend(ids.into_iter().chain(std::iter::repeat_n(pad_id, padding)));
            batch.token_type_ids.extend(
                type_ids
                    .into_iter()
                    .chain(std::iter::repeat_n(pad_type_id, padding)),
            );
        }
        Ok(batch)
    }

    /// The text of `ids`, without special tokens.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        self.inner
            .decode(ids, true)
            .map_err(|e| error(format!("cannot decode: {e}")))
    }

    /// Whether generation stops at `id`.
    pub fn is_stop(&self, id: u32) -> bool {
        self.stop.contains(&id)
    }

    /// The tokens that end generation.
    pub fn stop_tokens(&self) -> &[u32] {
        &self.stop
    }

    /// The id of `token`, if it is in the vocabulary.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// A decoder of generated tokens one at a time into text: it holds back a token until its
    /// bytes make whole UTF-8 characters (a character may be split over several tokens).
    pub fn stream(&self) -> TextStream<'_> {
        TextStream {
            inner: self.inner.decode_stream(true),
        }
    }
}

/// Texts encoded for an encoder by [`Tokenizer::encode_batch`]: three `[texts, seq]` arrays in
/// row-major order, as Hugging Face's tokenizers return them with `padding=True`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EncodedBatch {
    /// How many texts (rows).
    pub texts: usize,
    /// The length of the longest text in tokens, to which the others are padded (columns).
    pub seq: usize,
    /// The number of real tokens of each text.
    pub lengths: Vec<usize>,
    /// The token ids, the pad token after each text's end.
    pub input_ids: Vec<i64>,
    /// The token type (segment) ids: 0 for a single text.
    pub token_type_ids: Vec<i64>,
    /// 1 on a real token, 0 on padding.
    pub attention_mask: Vec<i64>,
}

/// Decodes tokens one at a time; see [`Tokenizer::stream`].
pub struct TextStream<'a> {
    inner: tokenizers::tokenizer::DecodeStream<
        'a,
        tokenizers::ModelWrapper,
        tokenizers::NormalizerWrapper,
        tokenizers::PreTokenizerWrapper,
        tokenizers::PostProcessorWrapper,
        tokenizers::DecoderWrapper,
    >,
}

impl TextStream<'_> {
    /// The new text that `id` completes, if any.
    pub fn step(&mut self, id: u32) -> Result<Option<String>, TokenizerError> {
        self.inner
            .step(id)
            .map_err(|e| error(format!("cannot decode token {id}: {e}")))
    }
}

/// A byte-level BPE vocabulary as GGUF stores it.
#[derive(Clone, Debug, Default)]
pub struct BpeVocabulary {
    /// Each token's text, in GPT-2's byte-to-character mapping, indexed by id.
    pub tokens: Vec<String>,
    /// Merges by priority, each two tokens separated by a space.
    pub merges: Vec<String>,
    /// Whether each token is a control (special) token, indexed by id.
    pub control: Vec<bool>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    /// Whether encoding prepends `bos`.
    pub add_bos: bool,
    /// llama.cpp's name of the pre-tokenizer (`tokenizer.ggml.pre`).
    pub pre: String,
}

#[cfg(test)]
mod tests {
    use super::{BpeVocabulary, Tokenizer};

    /// A hand-made vocabulary: the letters of "hello world" (`Ġ` is GPT-2's space), merges up
    /// to "hello" and "Ġworld", and two control tokens.
    fn tiny(add_bos: bool) -> Tokenizer {
        let tokens = [
            "<s>", "</s>", "h", "e", "l", "o", "Ġ", "w", "r", "d", "!", "he", "ll", "hell",
            "hello", "Ġw", "or", "Ġwor", "ld", "Ġworld", "1", "2", "Ã", "©",
        ];
        let merges = [
            "h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld",
        ];
        let mut control = vec![false; tokens.len()];
        control[0] = true;
        control[1] = true;
        Tokenizer::from_bpe_vocabulary(BpeVocabulary {
            tokens: tokens.iter().map(|t| t.to_string()).collect(),
            merges: merges.iter().map(|m| m.to_string()).collect(),
            control,
            bos: Some(0),
            eos: Some(1),
            add_bos,
            pre: "smollm".to_string(),
        })
        .expect("a valid vocabulary")
    }

    /// The 16-word BERT-style fixture: `[CLS] … [SEP]`, padded to a fixed 12 tokens.
    fn bert_style() -> Tokenizer {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/embed/tokenizer.json"
        );
        Tokenizer::from_file(path).expect("the fixture loads")
    }

    #[test]
    fn encode_batch_pads_to_the_longest_text_with_masks() {
        let tokenizer = bert_style();
        let batch = tokenizer
            .encode_batch(&["A man is playing guitar.", "The weather", "unknown words"])
            .unwrap();
        assert_eq!((batch.texts, batch.seq), (3, 8));
        assert_eq!(batch.lengths, vec![8, 4, 4]);
        #[rustfmt::skip]
        assert_eq!(batch.input_ids, vec![
            2, 4, 5, 6, 7, 8, 15, 3,
            2, 11, 12, 3, 0, 0, 0, 0,
            2, 1, 1, 3, 0, 0, 0, 0,
        ]);
        #[rustfmt::skip]
        assert_eq!(batch.attention_mask, vec![
            1, 1, 1, 1, 1, 1, 1, 1,
            1, 1, 1, 1, 0, 0, 0, 0,
            1, 1, 1, 1, 0, 0, 0, 0,
        ]);
        assert_eq!(batch.token_type_ids, vec![0; 24]);
    }

    #[test]
    fn encode_batch_truncates_as_the_file_says_and_takes_an_empty_batch() {
        let tokenizer = bert_style();
        let long = ["a"; 20].join(" ");
        let batch = tokenizer.encode_batch(&[&long, ""]).unwrap();
        // The file truncates to 12 tokens, [CLS] and [SEP] included.
        assert_eq!((batch.seq, batch.lengths.clone()), (12, vec![12, 2]));
        assert_eq!(batch.input_ids[11], 3);
        assert_eq!(&batch.input_ids[12..15], &[2, 3, 0]);
        let empty = tokenizer.encode_batch(&[]).unwrap();
        assert_eq!((empty.texts, empty.seq), (0, 0));
        assert!(empty.input_ids.is_empty());
    }

    #[test]
    fn byte_level_bpe_round_trips_and_adds_bos() {
        let tokenizer = tiny(true);
        let ids = tokenizer.encode("hello world!").unwrap();
        assert_eq!(ids, vec![0, 14, 19, 10]);
        assert_eq!(tokenizer.decode(&ids).unwrap(), "hello world!");
        // Digits split one by one, as SmolLM's pre-tokenizer does.
        assert_eq!(tokenizer.encode("12").unwrap(), vec![0, 20, 21]);
        assert!(tokenizer.is_stop(1));
        assert!(!tokenizer.is_stop(0));
        assert_eq!(tiny(false).encode("hello").unwrap(), vec![14]);
        // Special tokens in the text are matched whole.
        assert_eq!(tiny(false).encode("hello</s>").unwrap(), vec![14, 1]);
    }

    #[test]
    fn the_stream_gives_the_same_text_as_decoding_at_once() {
        let tokenizer = tiny(false);
        let ids = tokenizer.encode("hello world hello").unwrap();
        let mut stream = tokenizer.stream();
        let mut text = String::new();
        for &id in &ids {
            if let Some(piece) = stream.step(id).unwrap() {
                text.push_str(&piece);
            }
        }
        assert_eq!(text, tokenizer.decode(&ids).unwrap());
        // "é" is two bytes, here two tokens: the first alone is no text yet.
        let ids = tokenizer.encode("é").unwrap();
        assert_eq!(ids, vec![22, 23]);
        let mut stream = tokenizer.stream();
        assert_eq!(stream.step(22).unwrap(), None);
        assert_eq!(stream.step(23).unwrap().as_deref(), Some("é"));
    }
}
