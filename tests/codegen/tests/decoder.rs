//! Generated decoders: decoding token by token with the KV cache gives the logits of the full
//! sequence at every position, and `generate` samples reproducibly.

use nnc::runtime::sampling::Sampler;
use nnc_codegen_tests::example_llama_decoder::{LlamaDecoder, LlamaDecoderDecoder};
use nnc_codegen_tests::example_tiny_gpt::{TinyGpt, TinyGptDecoder};

const TOLERANCE: f32 = 1e-4;

/// The largest `|a - b| / max(|b|, 1)` between decoded and full-sequence logits.
fn max_error(decoded: &[f32], full: &[f32]) -> f32 {
    decoded
        .iter()
        .zip(full)
        .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
        .fold(0.0, f32::max)
}

/// The worst error, over every position of `tokens`, between the logits `decode` returns for
/// the token and the full forward's logits at that position (`full_logits` is `[1, seq, vocab]`).
fn worst_decode_error(
    tokens: &[i64],
    full_logits: &ndarray::Array3<f32>,
    mut decode: impl FnMut(i64) -> Vec<f32>,
) -> f32 {
    let mut worst = 0.0f32;
    for (position, &token) in tokens.iter().enumerate() {
        let expected = full_logits.slice(ndarray::s![0, position, ..]);
        worst = worst.max(max_error(&decode(token), expected.as_slice().unwrap()));
    }
    worst
}

/// What `check_prefill_of_every_length` asks a decoder to do.
enum Step<'a> {
    Reset,
    Prefill(&'a [i64]),
    Decode(i64),
}

/// Prefill agrees with decoding token by token to this relative error: the same layers over
/// the same rows, but the GEMM runs one row and several rows with other tiles, blockings and
/// thread splits (and the AVX-512 kernel where the processor has it), so its sums round in
/// another order (1.1e-5 seen on a 4-token prompt).
const PREFILL_TOLERANCE: f32 = TOLERANCE;

/// Prefill of every prompt length from 1 to 40 (at least two chunks and three tokens), against
/// decoding the same tokens one by one: the prefill's logits equal those of the prompt's last
/// token, the decoder is at the prompt's length, and the next two decoded tokens (which attend
/// over every cached position, so a wrong or extra key shows) give the same logits too. `run`
/// performs a step and returns the logits (empty after a reset) and the position.
fn check_prefill_of_every_length(
    chunk: usize,
    tokens: &[i64],
    mut run: impl FnMut(Step<'_>) -> (Vec<f32>, usize),
) {
    let longest = (2 * chunk + 3).max(40);
    assert!(tokens.len() >= longest + 2);
    run(Step::Reset);
    let one_by_one: Vec<Vec<f32>> = tokens[..longest + 2]
        .iter()
        .map(|&token| run(Step::Decode(token)).0)
        .collect();
    for length in 1..=longest {
        run(Step::Reset);
        let (logits, position) = run(Step::Prefill(&tokens[..length]));
        let error = max_error(&logits, &one_by_one[length - 1]);
        assert!(
            error <= PREFILL_TOLERANCE,
            "prompt of {length}: error {error}"
        );
        assert_eq!(position, length, "prompt of {length}");
        for next in length..length + 2 {
            let (logits, position) = run(Step::Decode(tokens[next]));
            let error = max_error(&logits, &one_by_one[next]);
            assert!(
                error <= PREFILL_TOLERANCE,
                "prompt of {length}, then token {next}: error {error}"
            );
            assert_eq!(position, next + 1);
        }
    }
}

/// The `run` of `check_prefill_of_every_length` for a decoder with its own contiguous cache.
macro_rules! steps_of {
    ($decoder:ident) => {
        |step| {
            let logits = match step {
                Step::Reset => {
                    $decoder.reset();
                    Vec::new()
                }
                Step::Prefill(prompt) => $decoder.prefill(prompt).unwrap().to_vec(),
                Step::Decode(token) => $decoder.decode(token).unwrap().to_vec(),
            };
            (logits, $decoder.position())
        }
    };
}

#[test]
fn prefill_of_every_length_equals_decoding_token_by_token() {
    use nnc_codegen_tests::model_small_llama::SmallLlamaDecoder;
    use nnc_codegen_tests::model_window_gpt::WindowGptDecoder;
    let tokens: Vec<i64> = (0..64).map(|i| (i * 29 + 11) % 64).collect();

    let mut gpt = TinyGptDecoder::with_random_weights(4);
    check_prefill_of_every_length(TinyGptDecoder::PREFILL_CHUNK, &tokens, steps_of!(gpt));
    let mut llama = SmallLlamaDecoder::with_random_weights(4);
    assert_eq!(SmallLlamaDecoder::PREFILL_CHUNK, 16);
    check_prefill_of_every_length(SmallLlamaDecoder::PREFILL_CHUNK, &tokens, steps_of!(llama));
    // The rolling cache of the window of 8: a short chunk must not push out positions the
    // window still needs.
    let mut window = WindowGptDecoder::with_random_weights(4);
    assert_eq!(WindowGptDecoder::PREFILL_CHUNK, 8);
    check_prefill_of_every_length(WindowGptDecoder::PREFILL_CHUNK, &tokens, steps_of!(window));

    // A paged sequence, in a pool of blocks of 4 that is reset by freeing the sequence: a short
    // chunk takes only the blocks of its own positions.
    let mut cache = SmallLlamaDecoder::paged_cache(16, 4);
    let mut seq = cache.add_sequence();
    check_prefill_of_every_length(SmallLlamaDecoder::PREFILL_CHUNK, &tokens, |step| {
        let logits = match step {
            Step::Reset => {
                cache.free_sequence(seq).unwrap();
                assert_eq!(cache.free_block_count(), 16);
                seq = cache.add_sequence();
                Vec::new()
            }
            Step::Prefill(prompt) => llama
                .prefill_paged(&mut cache, seq, prompt)
                .unwrap()
                .to_vec(),
            Step::Decode(token) => llama.decode_paged(&mut cache, seq, token).unwrap().to_vec(),
        };
        let position = cache.sequence_len(seq).unwrap();
        assert_eq!(cache.block_table(seq).unwrap().len(), position.div_ceil(4));
        (logits, position)
    });
}

#[test]
fn a_short_chunk_takes_only_its_own_positions_in_the_context_and_the_pool() {
    use nnc_codegen_tests::model_small_llama::SmallLlamaDecoder;
    let tokens: Vec<i64> = (0..96).map(|i| (i * 13 + 5) % 256).collect();
    let mut decoder = SmallLlamaDecoder::with_random_weights(7);
    let one_by_one: Vec<Vec<f32>> = tokens
        .iter()
        .map(|&token| decoder.decode(token).unwrap().to_vec())
        .collect();
    // The context holds 96 positions: after 84, a chunk of 5 runs with its 5 rows (a chunk of 16
    // would run past the context), and the last 7 fill the context exactly.
    decoder.reset();
    decoder.prefill(&tokens[..84]).unwrap();
    let logits = decoder.prefill(&tokens[84..89]).unwrap().to_vec();
    assert!(max_error(&logits, &one_by_one[88]) <= TOLERANCE);
    let logits = decoder.prefill(&tokens[89..]).unwrap().to_vec();
    assert!(max_error(&logits, &one_by_one[95]) <= TOLERANCE);
    assert_eq!(decoder.position(), SmallLlamaDecoder::MAX_CONTEXT);
    let error = decoder.prefill(&[1, 2]).unwrap_err().to_string();
    assert!(error.contains("full"), "{error}");

    // Two blocks of 4 positions hold a prompt of 5, run as one chunk of 5 rows.
    let mut cache = SmallLlamaDecoder::paged_cache(2, 4);
    let seq = cache.add_sequence();
    let logits = decoder
        .prefill_paged(&mut cache, seq, &tokens[..5])
        .unwrap()
        .to_vec();
    assert!(max_error(&logits, &one_by_one[4]) <= TOLERANCE);
    assert_eq!(cache.free_block_count(), 0);
}

#[test]
fn tiny_gpt_incremental_decoding_equals_the_full_forward() {
    let tokens: Vec<i64> = (0..64).map(|i| (i * 37 % 512) as i64).collect();
    let mut full = TinyGpt::with_random_weights(3);
    let input = ndarray::Array2::from_shape_vec((1, 64), tokens.clone()).unwrap();
    let full_logits = full.forward(input.view()).unwrap().to_owned();

    let mut decoder = TinyGptDecoder::with_random_weights(3);
    let worst = worst_decode_error(&tokens, &full_logits, |token| {
        decoder.decode(token).unwrap().to_vec()
    });
    assert!(worst <= TOLERANCE, "worst error {worst}");
    assert_eq!(decoder.position(), 64);

    // After a reset the same prompt gives the same logits again.
    decoder.reset();
    let again = decoder.prefill(&tokens).unwrap().to_owned();
    assert!(
        max_error(
            again.as_slice().unwrap(),
            full_logits
                .slice(ndarray::s![0, 63, ..])
                .as_slice()
                .unwrap()
        ) <= TOLERANCE
    );
}

#[test]
fn llama_incremental_decoding_equals_the_full_forward() {
    let tokens: Vec<i64> = (0..64).map(|i| (i * 7919 % 49152) as i64).collect();
    let mut full = LlamaDecoder::with_random_weights(5);
    let input = ndarray::Array2::from_shape_vec((1, 64), tokens.clone()).unwrap();
    let full_logits = full.forward(input.view()).unwrap().to_owned();
    drop(full);

    let mut decoder = LlamaDecoderDecoder::with_random_weights(5);
    let worst = worst_decode_error(&tokens, &full_logits, |token| {
        decoder.decode(token).unwrap().to_vec()
    });
    assert!(worst <= TOLERANCE, "worst error {worst}");

    // Prefill in chunks: rotary positions and grouped-query heads in a 16-token step; 40
    // tokens end with a chunk of 8 rows, a prompt of 5 is one chunk of 5.
    assert_eq!(LlamaDecoderDecoder::PREFILL_CHUNK, 16);
    for prompt in [40, 5] {
        decoder.reset();
        let logits = decoder.prefill(&tokens[..prompt]).unwrap().to_vec();
        let expected = full_logits.slice(ndarray::s![0, prompt - 1, ..]).to_vec();
        assert!(
            max_error(&logits, &expected) <= TOLERANCE,
            "prompt {prompt}"
        );
        let logits = decoder.decode(tokens[prompt]).unwrap().to_vec();
        let expected = full_logits.slice(ndarray::s![0, prompt, ..]).to_vec();
        assert!(max_error(&logits, &expected) <= TOLERANCE, "after {prompt}");
    }
}

#[test]
fn generation_is_reproducible_and_stops_at_the_context() {
    let mut decoder = TinyGptDecoder::with_random_weights(1);
    let greedy = decoder
        .generate(&[1, 2, 3], 10, &mut Sampler::greedy())
        .unwrap();
    decoder.reset();
    assert_eq!(
        decoder
            .generate(&[1, 2, 3], 10, &mut Sampler::greedy())
            .unwrap(),
        greedy
    );

    let mut sample = |seed| {
        decoder.reset();
        decoder
            .generate(&[5], 20, &mut Sampler::top_k(8, 0.8, seed))
            .unwrap()
    };
    assert_eq!(sample(4), sample(4));

    // The context holds 128 positions: generation stops there, and a further token is an error.
    decoder.reset();
    let generated = decoder.generate(&[1], 500, &mut Sampler::greedy()).unwrap();
    assert_eq!(generated.len(), 128);
    assert_eq!(decoder.position(), TinyGptDecoder::MAX_CONTEXT);
    let error = decoder.decode(0).unwrap_err().to_string();
    assert!(error.contains("full"), "{error}");

    assert!(decoder.prefill(&[]).is_err());
}

#[test]
fn sliding_window_decoding_with_a_rolling_cache_equals_the_windowed_forward() {
    use nnc_codegen_tests::model_window_gpt::{WindowGpt, WindowGptDecoder};
    let tokens: Vec<i64> = (0..32).map(|i| (i * 13 % 64) as i64).collect();
    let mut full = WindowGpt::with_random_weights(2);
    let input = ndarray::Array2::from_shape_vec((1, 32), tokens.clone()).unwrap();
    let full_logits = full.forward(input.view()).unwrap().to_owned();

    // The window is 8 positions: the decoder's cache rolls over 4 times in 32 tokens.
    let mut decoder = WindowGptDecoder::with_random_weights(2);
    let worst = worst_decode_error(&tokens, &full_logits, |token| {
        decoder.decode(token).unwrap().to_vec()
    });
    assert!(worst <= TOLERANCE, "worst error {worst}");

    // The rolling window of 8 caps the prefill chunk at 8 tokens; decoding goes on from it.
    decoder.reset();
    assert_eq!(WindowGptDecoder::PREFILL_CHUNK, 8);
    let logits = decoder.prefill(&tokens[..27]).unwrap().to_vec();
    let expected = full_logits.slice(ndarray::s![0, 26, ..]).to_vec();
    assert!(max_error(&logits, &expected) <= TOLERANCE);
    for (position, &token) in tokens.iter().enumerate().skip(27) {
        let logits = decoder.decode(token).unwrap().to_vec();
        let expected = full_logits.slice(ndarray::s![0, position, ..]).to_vec();
        assert!(max_error(&logits, &expected) <= TOLERANCE, "{position}");
    }
}

#[test]
fn paged_decoding_of_interleaved_sequences_equals_decoding_each_alone() {
    // Three prompts of different lengths, decoded alone with the contiguous cache.
    let prompts: [Vec<i64>; 3] = [
        (0..20).map(|i| (i * 37 % 512) as i64).collect(),
        (0..33).map(|i| (i * 11 + 5) % 512).collect(),
        (0..9).map(|i| (i * 101 + 7) % 512).collect(),
    ];
    let mut decoder = TinyGptDecoder::with_random_weights(8);
    let alone: Vec<Vec<Vec<f32>>> = prompts
        .iter()
        .map(|prompt| {
            decoder.reset();
            prompt
                .iter()
                .map(|&token| decoder.decode(token).unwrap().to_vec())
                .collect()
        })
        .collect();

    // Blocks of 4 positions, 16 blocks: the three need 5 + 9 + 3 = 17 in all, so the long one
    // finishes only with blocks the others freed.
    let mut cache = TinyGptDecoder::paged_cache(16, 4);
    let mut sequences: Vec<Option<_>> = (0..3).map(|_| Some(cache.add_sequence())).collect();
    let mut worst = 0.0f32;
    for step in 0..=33 {
        for (index, prompt) in prompts.iter().enumerate() {
            let Some(seq) = sequences[index] else {
                continue;
            };
            if step == prompt.len() {
                cache.free_sequence(seq).unwrap();
                sequences[index] = None;
                continue;
            }
            let logits = decoder.decode_paged(&mut cache, seq, prompt[step]).unwrap();
            worst = worst.max(max_error(logits.as_slice().unwrap(), &alone[index][step]));
        }
    }
    assert!(worst <= TOLERANCE, "worst error {worst}");
    assert_eq!(cache.free_block_count(), 16);

    // A fourth sequence reuses the freed blocks; prefill equals decoding alone.
    let seq = cache.add_sequence();
    let logits = decoder.prefill_paged(&mut cache, seq, &prompts[1]).unwrap();
    assert!(max_error(logits.as_slice().unwrap(), &alone[1][32]) <= TOLERANCE);
    assert_eq!(cache.sequence_len(seq).unwrap(), 33);

    // A pool too small for the next block is a clear error, not a wrap.
    let mut small = TinyGptDecoder::paged_cache(1, 4);
    let seq = small.add_sequence();
    decoder
        .prefill_paged(&mut small, seq, &[1, 2, 3, 4])
        .unwrap();
    let error = decoder
        .decode_paged(&mut small, seq, 5)
        .unwrap_err()
        .to_string();
    assert!(error.contains("exhausted"), "{error}");
}

#[test]
fn seq2seq_decoding_with_a_cached_encoder_equals_the_full_forward() {
    use nnc_codegen_tests::example_seq2seq::{Seq2seq, Seq2seqDecoder, Seq2seqInputs};
    let source: Vec<i64> = (0..64).map(|i| (i * 31 + 3) % 1000).collect();
    let target: Vec<i64> = (0..48).map(|i| (i * 17 + 1) % 1000).collect();
    let src = ndarray::Array2::from_shape_vec((1, 64), source.clone()).unwrap();
    let tgt = ndarray::Array2::from_shape_vec((1, 48), target.clone()).unwrap();
    let mut full = Seq2seq::with_random_weights(6);
    let full_logits = full
        .forward(Seq2seqInputs {
            src: src.view(),
            tgt: tgt.view(),
        })
        .unwrap()
        .to_owned();

    let mut decoder = Seq2seqDecoder::with_random_weights(6);
    let error = decoder.decode(1).unwrap_err().to_string();
    assert!(error.contains("encode"), "{error}");
    decoder.encode(src.view()).unwrap();
    let worst = worst_decode_error(&target, &full_logits, |token| {
        decoder.decode(token).unwrap().to_vec()
    });
    assert!(worst <= TOLERANCE, "worst error {worst}");

    // A new source starts a new target sequence.
    let other: Vec<i64> = source.iter().rev().copied().collect();
    let other = ndarray::Array2::from_shape_vec((1, 64), other).unwrap();
    decoder.encode(other.view()).unwrap();
    assert_eq!(decoder.position(), 0);
    decoder.encode(src.view()).unwrap();
    let last = decoder.prefill(&target).unwrap().to_owned();
    let expected = full_logits.slice(ndarray::s![0, 47, ..]);
    assert!(max_error(last.as_slice().unwrap(), expected.as_slice().unwrap()) <= TOLERANCE);
}

#[test]
fn chunked_prefill_equals_the_full_forward_and_decoding_continues_from_it() {
    // 37 tokens: two chunks of 16, then one of 5; 32 tokens: whole chunks only.
    assert_eq!(TinyGptDecoder::PREFILL_CHUNK, 16);
    let tokens: Vec<i64> = (0..64).map(|i| (i * 29 + 11) % 512).collect();
    let mut full = TinyGpt::with_random_weights(9);
    let input = ndarray::Array2::from_shape_vec((1, 64), tokens.clone()).unwrap();
    let full_logits = full.forward(input.view()).unwrap().to_owned();
    let at = |position: usize| full_logits.slice(ndarray::s![0, position, ..]).to_vec();

    let mut decoder = TinyGptDecoder::with_random_weights(9);
    for prompt in [37, 32, 16, 5] {
        decoder.reset();
        let logits = decoder.prefill(&tokens[..prompt]).unwrap().to_vec();
        assert!(
            max_error(&logits, &at(prompt - 1)) <= TOLERANCE,
            "prompt {prompt}"
        );
        assert_eq!(decoder.position(), prompt);
        // Decoding after a prefill sees every prefilled position.
        for (position, &token) in tokens.iter().enumerate().skip(prompt).take(3) {
            let logits = decoder.decode(token).unwrap().to_vec();
            assert!(
                max_error(&logits, &at(position)) <= TOLERANCE,
                "prompt {prompt}, {position}"
            );
        }
    }

    // Prefill past the context is the cache's error, for a chunk as for a token.
    decoder.reset();
    decoder.prefill(&vec![1; 120]).unwrap();
    let error = decoder.prefill(&[1; 16]).unwrap_err().to_string();
    assert!(error.contains("full"), "{error}");

    // Paged sequences prefill in chunks too, with the same result.
    let mut cache = TinyGptDecoder::paged_cache(8, 16);
    let seq = cache.add_sequence();
    let logits = decoder
        .prefill_paged(&mut cache, seq, &tokens[..48])
        .unwrap()
        .to_vec();
    assert!(max_error(&logits, &at(47)) <= TOLERANCE);
}
