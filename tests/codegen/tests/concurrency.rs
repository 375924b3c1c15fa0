//! Generated models are `Send` and `Sync`, several instances run on several threads at once with
//! the outputs one thread gets, and a decoder's API boundary returns errors, not panics.

use nnc::runtime::ndarray::Array2;
use nnc_codegen_tests::example_mlp::Mlp;
use nnc_codegen_tests::example_resnet18::Resnet18;
use nnc_codegen_tests::example_tiny_gpt::{TinyGpt, TinyGptDecoder};

#[test]
fn generated_models_are_send_and_sync() {
    fn send_and_sync<T: Send + Sync>() {}
    send_and_sync::<Mlp>();
    send_and_sync::<Resnet18>();
    send_and_sync::<TinyGpt>();
    send_and_sync::<TinyGptDecoder>();
}

#[test]
fn instances_on_several_threads_agree_with_one_thread() {
    let input =
        |seed: usize| Array2::from_shape_fn((1, 784), |(_, j)| ((j * 7 + seed) % 13) as f32 / 13.0);
    let expected: Vec<Vec<f32>> = (0..4)
        .map(|seed| {
            let mut mlp = Mlp::with_random_weights(seed as u64);
            mlp.forward(input(seed).view())
                .unwrap()
                .iter()
                .copied()
                .collect()
        })
        .collect();
    let outputs: Vec<Vec<f32>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|seed| {
                scope.spawn(move || {
                    let mut mlp = Mlp::with_random_weights(seed as u64);
                    let mut last = Vec::new();
                    for _ in 0..20 {
                        last = mlp
                            .forward(input(seed).view())
                            .unwrap()
                            .iter()
                            .copied()
                            .collect();
                    }
                    last
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().unwrap())
            .collect()
    });
    assert_eq!(outputs, expected);
}

#[test]
fn decoders_on_several_threads_agree_with_one_thread() {
    let prompt = [1i64, 5, 9, 2];
    let greedy = |decoder: &mut TinyGptDecoder| -> Vec<f32> {
        decoder.prefill(&prompt).unwrap();
        let mut logits = Vec::new();
        for token in [3i64, 4, 5] {
            logits = decoder.decode(token).unwrap().to_vec();
        }
        logits
    };
    let expected = greedy(&mut TinyGptDecoder::with_random_weights(2));
    let outputs: Vec<Vec<f32>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..3)
            .map(|_| scope.spawn(|| greedy(&mut TinyGptDecoder::with_random_weights(2))))
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().unwrap())
            .collect()
    });
    for output in outputs {
        assert_eq!(output, expected);
    }
}

#[test]
fn a_decoder_refuses_bad_tokens_and_pools_without_panicking() {
    let mut decoder = TinyGptDecoder::with_random_weights(1);
    let vocabulary = decoder.decode(0).unwrap().len() as i64;
    for token in [vocabulary, -1, i64::MAX, i64::MIN] {
        decoder.reset();
        let error = decoder.decode(token).unwrap_err();
        assert!(
            error.to_string().contains("out of range"),
            "{token}: {error}"
        );
        decoder.reset();
        let error = decoder.prefill(&[1, 2, token]).unwrap_err();
        assert!(
            error.to_string().contains("out of range"),
            "{token}: {error}"
        );
    }
    // A sequence of another pool is an error.
    let mut pool = TinyGptDecoder::try_paged_cache(8, 4).unwrap();
    let mut other = TinyGptDecoder::try_paged_cache(8, 4).unwrap();
    let _first = other.add_sequence();
    let foreign = other.add_sequence();
    let error = decoder.decode_paged(&mut pool, foreign, 1).unwrap_err();
    assert!(error.to_string().contains("unknown sequence"), "{error}");
    assert!(TinyGptDecoder::try_paged_cache(8, 0).is_err());
    assert!(TinyGptDecoder::try_paged_cache(usize::MAX / 4, 1 << 20).is_err());
    // Huge `max_new_tokens` stops at the full context.
    decoder.reset();
    let mut sampler = nnc::runtime::sampling::Sampler::greedy();
    let generated = decoder.generate(&[1, 2], usize::MAX, &mut sampler).unwrap();
    assert_eq!(generated.len(), TinyGptDecoder::MAX_CONTEXT - 2 + 1);
}

#[test]
fn long_context_decode_to_the_full_context_is_finite_then_an_error() {
    let mut decoder = TinyGptDecoder::with_random_weights(5);
    for position in 0..TinyGptDecoder::MAX_CONTEXT {
        let logits = decoder.decode((position % 50) as i64).unwrap();
        assert!(
            logits.iter().all(|value| value.is_finite()),
            "position {position}"
        );
    }
    let error = decoder.decode(1).unwrap_err();
    assert!(error.to_string().contains("KV cache is full"), "{error}");
}
