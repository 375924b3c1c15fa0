//! Limits at the runtime's API boundary: buffers larger than memory are errors naming the
//! buffer, the types generated models hold are `Send` and `Sync`, and kernels keep to their
//! documented outputs on extreme values (docs/reliability.md).

use nnc_runtime::kernels::norm::{LayerNormOptions, layer_norm};
use nnc_runtime::kernels::softmax::softmax;
use nnc_runtime::kv_cache::{KvCache, PagedKvCache};
use nnc_runtime::weights::{Init, WeightSpec, WeightsError, try_random_weights};
use nnc_runtime::{KvCacheError, ModelError, arena};

/// 10^15 f32 values: 4 PB, more than any machine's memory, within the address space.
const HUGE: usize = 1_000_000_000_000_000;

#[test]
fn random_weights_larger_than_memory_are_an_error_naming_the_weight() {
    let specs = [
        WeightSpec {
            name: "fc.bias",
            shape: &[2],
            init: Init::Zeros,
        },
        WeightSpec {
            name: "fc.weight",
            shape: &[HUGE / 1_000_000, 1_000_000],
            init: Init::FanIn { fan_in: 1_000_000 },
        },
    ];
    let error = try_random_weights(&specs, 1).unwrap_err();
    assert!(matches!(error, WeightsError::OutOfMemory(_)), "{error:?}");
    assert!(
        error.to_string().starts_with(
            "cannot allocate 4,000,000,000,000,000 bytes (3725290.3 GiB) for weight `fc.weight`: "
        ),
        "{error}"
    );
    // A shape whose element count overflows usize is the same error, not a wrapped count.
    let overflowing = [WeightSpec {
        name: "big",
        shape: &[usize::MAX, 2],
        init: Init::Ones,
    }];
    let error = try_random_weights(&overflowing, 1).unwrap_err();
    assert!(error.to_string().contains("for weight `big`"), "{error}");
}

#[test]
fn an_arena_larger_than_memory_is_an_error_naming_it() {
    let error = arena::zeroed::<f32>("the f32 arena", HUGE).unwrap_err();
    assert!(matches!(error, ModelError::OutOfMemory(_)), "{error:?}");
    assert!(error.to_string().contains("for the f32 arena"), "{error}");
    let small = arena::zeroed::<i64>("the i64 arena", 3).unwrap();
    assert_eq!(*small, [0, 0, 0]);
    assert_eq!(
        small.as_ptr() as usize % 64,
        0,
        "an arena starts on a cache line"
    );
}

#[test]
fn kv_caches_larger_than_memory_are_errors() {
    for error in [
        KvCache::try_new(2, HUGE, 1, 1).unwrap_err(),
        KvCache::try_rolling(2, HUGE, 1, 1).unwrap_err(),
        KvCache::try_new(1, usize::MAX, usize::MAX, 2).unwrap_err(),
        PagedKvCache::try_new(1, HUGE, 1, 1, 1).unwrap_err(),
    ] {
        assert!(matches!(error, KvCacheError::OutOfMemory(_)), "{error:?}");
        assert!(error.to_string().contains("KV cache"), "{error}");
    }
    assert_eq!(
        PagedKvCache::try_new(1, 4, 0, 1, 1).unwrap_err(),
        KvCacheError::ZeroBlockSize
    );
    assert!(KvCache::try_new(2, 8, 1, 4).is_ok());
}

#[test]
fn what_generated_models_hold_is_send_and_sync() {
    fn send_and_sync<T: Send + Sync>() {}
    send_and_sync::<nnc_runtime::kernels::linear::PackedLinear>();
    send_and_sync::<nnc_runtime::kernels::conv::ConvWorkspace>();
    send_and_sync::<KvCache>();
    send_and_sync::<PagedKvCache>();
    send_and_sync::<ModelError>();
}

#[test]
fn softmax_of_huge_logits_is_finite_and_of_an_all_minus_infinity_row_is_nan() {
    let input = [f32::MAX, 1e30, -f32::MAX, 0.0, 3.0e38, -3.0e38];
    let mut output = [0.0; 6];
    softmax(&input, &mut output, &[6], 0).unwrap();
    assert!(output.iter().all(|value| value.is_finite()), "{output:?}");
    assert!(
        (output.iter().sum::<f32>() - 1.0).abs() < 1e-6,
        "{output:?}"
    );
    // A row with one finite logit among -inf ones puts all its weight there.
    let mut output = [0.0; 3];
    softmax(
        &[f32::NEG_INFINITY, 2.0, f32::NEG_INFINITY],
        &mut output,
        &[3],
        0,
    )
    .unwrap();
    assert_eq!(output, [0.0, 1.0, 0.0]);
    // All -inf: NaN, as torch.softmax gives (documented in docs/reliability.md); attention masks
    // rows in its own kernels, which do not go through here.
    softmax(&[f32::NEG_INFINITY; 3], &mut output, &[3], 0).unwrap();
    assert!(output.iter().all(|value| value.is_nan()), "{output:?}");
}

#[test]
fn layer_norm_of_a_constant_row_is_its_bias() {
    for value in [0.0, 1.0, -7.5, 1e30] {
        let input = [value; 5];
        let mut output = [f32::NAN; 5];
        let bias = [0.5, -0.5, 0.0, 1.0, 2.0];
        let options = LayerNormOptions {
            weight: None,
            bias: Some(&bias),
            eps: 1e-5,
        };
        layer_norm(&input, &mut output, 5, &options).unwrap();
        assert_eq!(output, bias, "constant row of {value}");
    }
}
