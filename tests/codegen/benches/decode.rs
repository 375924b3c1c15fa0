//! Decoding speed against context length: tokens/s of the generated one-token decoders of the
//! tiny GPT (context 128) and the SmolLM2-sized Llama (context 2048) when the KV cache already
//! holds `context` positions; paged against contiguous decoding; and prefill in chunks against
//! prefill token by token, and the time of a short (5-token) prompt's prefill. Set
//! `NNC_NUM_THREADS` to compare thread counts, and `NNC_BENCH_CONTEXTS` (say `0,256`) to time
//! the Llama at fewer context lengths than the default five, whose filling takes minutes.
//! `cargo bench -p nnc-codegen-tests --bench decode`.

use std::hint::black_box;
use std::time::Instant;

use nnc_codegen_tests::example_llama_decoder::LlamaDecoderDecoder;
use nnc_codegen_tests::example_tiny_gpt::TinyGptDecoder;

/// Tokens per second of `steps` decode steps after filling the cache to `context` positions;
/// `decode(None)` resets the decoder.
fn tokens_per_second(mut decode: impl FnMut(Option<i64>), context: usize, steps: usize) -> f64 {
    decode(None);
    for position in 0..context {
        decode(Some((position % 50) as i64));
    }
    let start = Instant::now();
    for step in 0..steps {
        decode(Some((step % 50) as i64));
    }
    steps as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let mut gpt = TinyGptDecoder::with_random_weights(0);
    println!("tiny_gpt (4 layers, hidden 128), tokens/s by context length:");
    for context in [0, 32, 64, 96, 112] {
        let rate = tokens_per_second(
            |token| match token {
                Some(token) => drop(gpt.decode(token).unwrap()),
                None => gpt.reset(),
            },
            context,
            16,
        );
        println!("  context {context:>5}: {rate:>8.0} tokens/s");
    }
    let mut llama = LlamaDecoderDecoder::with_random_weights(0);
    println!(
        "llama_decoder (30 layers, hidden 576, SmolLM2-135M size), tokens/s by context length:"
    );
    let contexts: Vec<usize> = match std::env::var("NNC_BENCH_CONTEXTS") {
        Ok(list) => list
            .split(',')
            .map(|context| context.trim().parse().expect("NNC_BENCH_CONTEXTS: numbers"))
            .collect(),
        Err(_) => vec![0, 256, 512, 1024, 2000],
    };
    for context in contexts {
        let rate = tokens_per_second(
            |token| match token {
                Some(token) => drop(llama.decode(token).unwrap()),
                None => llama.reset(),
            },
            context,
            8,
        );
        println!(
            "  context {context:>5}: {rate:>8.1} tokens/s ({:.1} ms/token)",
            1000.0 / rate
        );
    }

    paged_against_contiguous();
    prefill_in_chunks_against_token_by_token(&mut gpt, &mut llama);
    short_prompt_prefill(&mut llama);
    one_thread_against_two(&mut llama);
}

/// The Llama's decoding step and 5-token prefill at 1 and at 2 threads, alternating in one
/// process, best of many: on a loaded machine the best time is the one least disturbed by other
/// work, and alternating gives both thread counts the same conditions.
fn one_thread_against_two(llama: &mut LlamaDecoderDecoder) {
    let prompt = [1, 9915, 314, 253, 3874];
    let (mut step, mut prefill) = ([f64::MAX; 2], [f64::MAX; 2]);
    for round in 0..24 {
        let threads = 1 + round % 2;
        nnc::runtime::set_num_threads(threads);
        llama.reset();
        let start = Instant::now();
        black_box(llama.prefill(&prompt).unwrap());
        prefill[threads - 1] = prefill[threads - 1].min(start.elapsed().as_secs_f64());
        for token in 0..4 {
            let start = Instant::now();
            black_box(llama.decode(token).unwrap());
            step[threads - 1] = step[threads - 1].min(start.elapsed().as_secs_f64());
        }
    }
    nnc::runtime::set_num_threads(0);
    println!(
        "llama_decoder, best of 48 steps after a 5-token prompt: 1 thread {:.1} ms/token, 2 threads {:.1} ms/token ({:.2}x)",
        step[0] * 1000.0,
        step[1] * 1000.0,
        step[0] / step[1]
    );
    println!(
        "llama_decoder, best of 12 prefills of a 5-token prompt: 1 thread {:.1} ms, 2 threads {:.1} ms ({:.2}x)",
        prefill[0] * 1000.0,
        prefill[1] * 1000.0,
        prefill[0] / prefill[1]
    );
}

/// The median time of a 5-token prompt's prefill by the Llama decoder: shorter than a chunk.
fn short_prompt_prefill(llama: &mut LlamaDecoderDecoder) {
    let prompt = [1, 9915, 314, 253, 3874];
    let mut times: Vec<f64> = (0..7)
        .map(|_| {
            llama.reset();
            let start = Instant::now();
            black_box(llama.prefill(&prompt).unwrap());
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    println!(
        "llama_decoder prefill of a {}-token prompt: {:.1} ms (median of {})",
        prompt.len(),
        times[times.len() / 2] * 1000.0,
        times.len()
    );
}

/// Tiny GPT: 4 sequences of 100 tokens decoded interleaved from a paged cache (blocks of 16),
/// against the same tokens decoded one sequence at a time with the contiguous cache.
fn paged_against_contiguous() {
    let mut gpt = TinyGptDecoder::with_random_weights(0);
    let token = |sequence: usize, position: usize| ((sequence * 31 + position * 7) % 512) as i64;
    let (sequences, length) = (4, 100);
    let start = Instant::now();
    for sequence in 0..sequences {
        gpt.reset();
        for position in 0..length {
            black_box(gpt.decode(token(sequence, position)).unwrap());
        }
    }
    let contiguous = (sequences * length) as f64 / start.elapsed().as_secs_f64();
    let mut cache = TinyGptDecoder::paged_cache(sequences * 8, 16);
    let ids: Vec<_> = (0..sequences).map(|_| cache.add_sequence()).collect();
    let start = Instant::now();
    for position in 0..length {
        for (sequence, &id) in ids.iter().enumerate() {
            black_box(
                gpt.decode_paged(&mut cache, id, token(sequence, position))
                    .unwrap(),
            );
        }
    }
    let paged = (sequences * length) as f64 / start.elapsed().as_secs_f64();
    println!(
        "tiny_gpt, {sequences} sequences x {length} tokens: contiguous {contiguous:.0} tokens/s, paged interleaved {paged:.0} tokens/s ({:.2}x)",
        paged / contiguous
    );
}

/// Prompt tokens per second of `prefill` (chunks of `PREFILL_CHUNK`) against `decode` of each
/// prompt token.
fn prefill_in_chunks_against_token_by_token(
    gpt: &mut TinyGptDecoder,
    llama: &mut LlamaDecoderDecoder,
) {
    let prompt: Vec<i64> = (0..112).map(|i| (i * 37 % 512) as i64).collect();
    let time = |run: &mut dyn FnMut()| {
        let start = Instant::now();
        run();
        start.elapsed().as_secs_f64()
    };
    let chunked = time(&mut || {
        gpt.reset();
        black_box(gpt.prefill(&prompt).unwrap());
    });
    let single = time(&mut || {
        gpt.reset();
        for &token in &prompt {
            black_box(gpt.decode(token).unwrap());
        }
    });
    println!(
        "tiny_gpt prefill of {} tokens: chunks of {} {:.0} tokens/s, token by token {:.0} tokens/s ({:.1}x)",
        prompt.len(),
        TinyGptDecoder::PREFILL_CHUNK,
        prompt.len() as f64 / chunked,
        prompt.len() as f64 / single,
        single / chunked
    );
    let prompt: Vec<i64> = (0..256).map(|i| (i * 7919 % 49152) as i64).collect();
    let chunked = time(&mut || {
        llama.reset();
        black_box(llama.prefill(&prompt).unwrap());
    });
    let single = time(&mut || {
        llama.reset();
        for &token in &prompt {
            black_box(llama.decode(token).unwrap());
        }
    });
    println!(
        "llama_decoder prefill of {} tokens: chunks of {} {:.1} tokens/s, token by token {:.1} tokens/s ({:.1}x)",
        prompt.len(),
        LlamaDecoderDecoder::PREFILL_CHUNK,
        prompt.len() as f64 / chunked,
        prompt.len() as f64 / single,
        single / chunked
    );
}
