//! Generated models promise that `forward` allocates nothing once the model is built. This
//! checks the kernels they call: with one thread, each kernel runs once to warm up (the GEMM's
//! per-thread packing buffers grow then), and a second, identical call must not allocate.

mod counting_allocator;

use counting_allocator::{CountingAllocator, measure};
use nnc_runtime::kernels::activation::{Activation, apply_activation, apply_activation_in_place};
use nnc_runtime::kernels::attention::{
    AttentionMask, AttentionOptions, AttentionShape, AttentionWorkspace,
    scaled_dot_product_attention_with_workspace,
};
use nnc_runtime::kernels::conv::{
    Conv1dOptions, Conv2dOptions, ConvWorkspace, PackedConv1d, PackedConv2d,
};
use nnc_runtime::kernels::elementwise::{
    BinaryOp, binary, binary_row_vector, binary_same_shape, binary_same_shape_in_place,
};
use nnc_runtime::kernels::embedding::embedding;
use nnc_runtime::kernels::flash_attention::{
    BlockSparseLayout, FlashAttentionWorkspace, flash_attention,
};
use nnc_runtime::kernels::int8::{ActivationQuantization, PackedConv2dInt8};
use nnc_runtime::kernels::linear::PackedLinear;
use nnc_runtime::kernels::matmul::matmul;
use nnc_runtime::kernels::norm::{
    BatchNorm, BatchNormParams, LayerNormOptions, RmsNormOptions, batch_norm, layer_norm,
    rms_norm_in_place,
};
use nnc_runtime::kernels::pool::{
    AvgPool1dOptions, AvgPool2dOptions, MaxPool1dOptions, MaxPool2dOptions, avg_pool1d, avg_pool2d,
    global_avg_pool, global_max_pool, max_pool1d, max_pool2d,
};
use nnc_runtime::kernels::reduce::{ReduceOp, reduce};
use nnc_runtime::kernels::rope::{RopeConvention, RopeOptions, RopeTable, apply_rope_in_place};
use nnc_runtime::kernels::shape::{concat, permute, select, slice_axis, transpose};
use nnc_runtime::kernels::softmax::{log_softmax, log_softmax_in_place, softmax, softmax_in_place};
use nnc_runtime::{TensorRef, set_num_threads};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// The thread count is global: the tests take turns so that none changes it under another.
static THREAD_SETTING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Deterministic values in about [-1, 1].
fn ramp(length: usize, seed: usize) -> Vec<f32> {
    (0..length)
        .map(|index| ((index * 7 + seed * 13) % 23) as f32 / 11.0 - 1.0)
        .collect()
}

/// Runs `call` twice and returns what the second run allocated, as `(count, bytes)`.
fn allocations_after_warm_up(mut call: impl FnMut()) -> (usize, usize) {
    call();
    let ((), allocations) = measure(&mut call);
    (allocations.count, allocations.bytes)
}

/// Checks every kernel, then reports all that allocated at once.
#[test]
fn kernels_do_not_allocate_after_warm_up() {
    let _turn = THREAD_SETTING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    set_num_threads(1);
    let mut offenders: Vec<(&str, (usize, usize))> = Vec::new();
    let mut check = |name: &'static str, call: &mut dyn FnMut()| {
        let allocations = allocations_after_warm_up(call);
        if allocations != (0, 0) {
            offenders.push((name, allocations));
        }
    };

    // Layers with packed weights.
    let linear = PackedLinear::new(&ramp(48 * 40, 1), 48, 40, Some(&ramp(48, 2)))
        .unwrap()
        .with_activation(Some(Activation::Gelu));
    let linear_input = ramp(17 * 40, 3);
    let mut linear_output = vec![0.0; 17 * 48];
    check("PackedLinear::forward", &mut || {
        linear
            .forward(&linear_input, 17, &mut linear_output)
            .unwrap()
    });
    // A GEMM big enough to use several column blocks and row panels.
    let wide = PackedLinear::new(&ramp(700 * 300, 4), 700, 300, None).unwrap();
    let wide_input = ramp(70 * 300, 5);
    let mut wide_output = vec![0.0; 70 * 700];
    check("PackedLinear::forward (large)", &mut || {
        wide.forward(&wide_input, 70, &mut wide_output).unwrap()
    });

    let image_shape = [2, 8, 13, 11];
    let image = ramp(image_shape.iter().product(), 6);
    let mut workspace = ConvWorkspace::new();
    let general = PackedConv2d::new(
        &ramp(16 * 4 * 3 * 3, 7),
        [16, 4, 3, 3],
        Some(&ramp(16, 8)),
        Conv2dOptions {
            stride: [2, 1],
            padding: [1, 1],
            dilation: [1, 2],
            groups: 2,
        },
    )
    .unwrap()
    .with_activation(Some(Activation::Relu));
    let mut general_output = vec![0.0; general.output_shape(image_shape).unwrap().iter().product()];
    check("PackedConv2d::forward (general)", &mut || {
        general
            .forward(&image, image_shape, &mut general_output, &mut workspace)
            .unwrap()
    });
    let depthwise = PackedConv2d::new(
        &ramp(16 * 3 * 3, 9),
        [16, 1, 3, 3],
        None,
        Conv2dOptions {
            padding: [1, 1],
            groups: 8,
            ..Conv2dOptions::default()
        },
    )
    .unwrap();
    let mut depthwise_output = vec![
        0.0;
        depthwise
            .output_shape(image_shape)
            .unwrap()
            .iter()
            .product()
    ];
    check("PackedConv2d::forward (depthwise)", &mut || {
        depthwise
            .forward(&image, image_shape, &mut depthwise_output, &mut workspace)
            .unwrap()
    });
    let pointwise = PackedConv2d::new(
        &ramp(12 * 8, 10),
        [12, 8, 1, 1],
        Some(&ramp(12, 11)),
        Conv2dOptions::default(),
    )
    .unwrap();
    let mut pointwise_output = vec![
        0.0;
        pointwise
            .output_shape(image_shape)
            .unwrap()
            .iter()
            .product()
    ];
    check("PackedConv2d::forward (1x1)", &mut || {
        pointwise
            .forward(&image, image_shape, &mut pointwise_output, &mut workspace)
            .unwrap()
    });
    // A 3x3 stride-1 layer with enough channels for the Winograd method, with a residual.
    let winograd_shape = [2, 24, 13, 11];
    let winograd_image = ramp(winograd_shape.iter().product(), 30);
    let winograd = PackedConv2d::new(
        &ramp(20 * 24 * 3 * 3, 31),
        [20, 24, 3, 3],
        Some(&ramp(20, 32)),
        Conv2dOptions {
            padding: [1, 1],
            ..Conv2dOptions::default()
        },
    )
    .unwrap()
    .with_activation(Some(Activation::Relu));
    let winograd_length = winograd
        .output_shape(winograd_shape)
        .unwrap()
        .iter()
        .product();
    let winograd_residual = ramp(winograd_length, 33);
    let mut winograd_output = vec![0.0; winograd_length];
    check("PackedConv2d::forward_residual (winograd)", &mut || {
        winograd
            .forward_residual(
                &winograd_image,
                winograd_shape,
                &winograd_residual,
                &mut winograd_output,
                &mut workspace,
            )
            .unwrap()
    });
    // Int8 convolutions: a 3x3 layer in both layouts (NCHW with a residual), a 1x1 and a
    // depthwise one, channels-last.
    let int8_quantization = ActivationQuantization::from_range(-1.0, 1.0);
    let mut int8_check = |name: &'static str, weight_shape: [usize; 4], options, channels_last| {
        let input_shape = if channels_last {
            [2, 13, 11, 8]
        } else {
            [2, 8, 13, 11]
        };
        let input = ramp(input_shape.iter().product(), 40);
        let conv = PackedConv2dInt8::new(
            &ramp(weight_shape.iter().product(), 41),
            weight_shape,
            Some(&ramp(weight_shape[0], 42)),
            options,
            channels_last,
            int8_quantization,
        )
        .unwrap()
        .with_activation(Some(Activation::Relu6));
        let length = conv.output_shape(input_shape).unwrap().iter().product();
        let residual = ramp(length, 43);
        let mut output = vec![0.0; length];
        check(name, &mut || {
            conv.forward_residual(&input, input_shape, &residual, &mut output, &mut workspace)
                .unwrap()
        });
    };
    let padded = Conv2dOptions {
        padding: [1, 1],
        ..Conv2dOptions::default()
    };
    int8_check(
        "PackedConv2dInt8::forward_residual (3x3, NHWC)",
        [20, 8, 3, 3],
        padded,
        true,
    );
    int8_check(
        "PackedConv2dInt8::forward_residual (3x3, NCHW)",
        [20, 8, 3, 3],
        padded,
        false,
    );
    int8_check(
        "PackedConv2dInt8::forward_residual (1x1, NHWC)",
        [20, 8, 1, 1],
        Conv2dOptions::default(),
        true,
    );
    int8_check(
        "PackedConv2dInt8::forward_residual (depthwise, NHWC)",
        [8, 1, 3, 3],
        Conv2dOptions {
            groups: 8,
            ..padded
        },
        true,
    );
    let sequence_shape = [2, 6, 30];
    let sequence = ramp(sequence_shape.iter().product(), 12);
    let conv1d = PackedConv1d::new(
        &ramp(10 * 6 * 5, 13),
        [10, 6, 5],
        Some(&ramp(10, 14)),
        Conv1dOptions {
            padding: 2,
            ..Conv1dOptions::default()
        },
    )
    .unwrap();
    let mut conv1d_output = vec![
        0.0;
        conv1d
            .output_shape(sequence_shape)
            .unwrap()
            .iter()
            .product()
    ];
    check("PackedConv1d::forward", &mut || {
        conv1d
            .forward(
                &sequence,
                sequence_shape,
                &mut conv1d_output,
                &mut workspace,
            )
            .unwrap()
    });

    // Pools.
    let mut pooled = vec![0.0; 2 * 8 * 6 * 5];
    check("max_pool2d", &mut || {
        max_pool2d(
            &image,
            image_shape,
            &MaxPool2dOptions::new([2, 2]),
            &mut pooled,
        )
        .unwrap()
    });
    check("avg_pool2d", &mut || {
        avg_pool2d(
            &image,
            image_shape,
            &AvgPool2dOptions::new([2, 2]),
            &mut pooled,
        )
        .unwrap()
    });
    let mut pooled_sequence = vec![0.0; 2 * 6 * 15];
    check("max_pool1d", &mut || {
        let options = MaxPool1dOptions {
            kernel: 2,
            stride: 2,
            padding: 0,
            dilation: 1,
            ceil_mode: false,
        };
        max_pool1d(&sequence, sequence_shape, &options, &mut pooled_sequence).unwrap()
    });
    check("avg_pool1d", &mut || {
        let options = AvgPool1dOptions {
            kernel: 2,
            stride: 2,
            padding: 0,
            ceil_mode: false,
            count_include_pad: true,
        };
        avg_pool1d(&sequence, sequence_shape, &options, &mut pooled_sequence).unwrap()
    });
    let mut channels = vec![0.0; 16];
    check("global_avg_pool", &mut || {
        global_avg_pool(&image, &image_shape, &mut channels).unwrap()
    });
    check("global_max_pool", &mut || {
        global_max_pool(&image, &image_shape, &mut channels).unwrap()
    });

    // Norms and activations.
    let norm = BatchNorm::new(&BatchNormParams {
        mean: &ramp(8, 15),
        variance: &[1.5; 8],
        weight: Some(&ramp(8, 16)),
        bias: None,
        eps: 1e-5,
    })
    .unwrap();
    let mut normalised = vec![0.0; image.len()];
    check("batch_norm", &mut || {
        batch_norm(&image, &mut normalised, &image_shape, &norm).unwrap()
    });
    let weight = ramp(11, 17);
    let bias = ramp(11, 18);
    check("layer_norm", &mut || {
        let options = LayerNormOptions {
            weight: Some(&weight),
            bias: Some(&bias),
            eps: 1e-5,
        };
        layer_norm(&image, &mut normalised, 11, &options).unwrap()
    });
    check("rms_norm_in_place", &mut || {
        let options = RmsNormOptions {
            weight: Some(&weight),
            eps: 1e-6,
        };
        rms_norm_in_place(&mut normalised, 11, &options).unwrap()
    });
    check("apply_activation", &mut || {
        apply_activation(&image, &mut normalised, Activation::Silu).unwrap()
    });
    check("apply_activation_in_place", &mut || {
        apply_activation_in_place(&mut normalised, Activation::GeluTanh)
    });

    // Softmax along the last axis and along a middle one (wider than one strip).
    let logits_shape = [3, 5, 70];
    let logits = ramp(3 * 5 * 70, 19);
    let mut probabilities = vec![0.0; logits.len()];
    check("softmax (last axis)", &mut || {
        softmax(&logits, &mut probabilities, &logits_shape, 2).unwrap()
    });
    check("softmax (middle axis)", &mut || {
        softmax(&logits, &mut probabilities, &logits_shape, 1).unwrap()
    });
    check("softmax_in_place (first axis)", &mut || {
        softmax_in_place(&mut probabilities, &logits_shape, 0).unwrap()
    });
    check("log_softmax (middle axis)", &mut || {
        log_softmax(&logits, &mut probabilities, &logits_shape, 1).unwrap()
    });
    check("log_softmax_in_place (last axis)", &mut || {
        log_softmax_in_place(&mut probabilities, &logits_shape, 2).unwrap()
    });

    // Reductions over the last axis, a middle axis and two axes.
    let mut reduced = vec![0.0; 3 * 70];
    check("reduce_sum (last axis)", &mut || {
        reduce(
            &logits,
            &mut reduced[..15],
            &logits_shape,
            &[2],
            ReduceOp::Sum,
        )
        .unwrap()
    });
    check("reduce_max (middle axis)", &mut || {
        reduce(&logits, &mut reduced, &logits_shape, &[1], ReduceOp::Max).unwrap()
    });
    check("reduce_mean (two axes)", &mut || {
        reduce(
            &logits,
            &mut reduced[..5],
            &logits_shape,
            &[0, 2],
            ReduceOp::Mean,
        )
        .unwrap()
    });

    // Embedding.
    let table = ramp(50 * 16, 20);
    let ids: Vec<i64> = (0..9).map(|index| (index * 11) % 50).collect();
    let mut embedded = vec![0.0; 9 * 16];
    check("embedding", &mut || {
        embedding(&table, 50, 16, &ids, &mut embedded).unwrap()
    });

    // Element-wise binary operations.
    let lhs_shape = [4, 1, 6, 5];
    let rhs_shape = [3, 1, 5];
    let lhs = ramp(4 * 6 * 5, 21);
    let rhs = ramp(3 * 5, 22);
    let mut broadcast = vec![0.0; 4 * 3 * 6 * 5];
    check("binary (general broadcast)", &mut || {
        binary(
            BinaryOp::Mul,
            TensorRef::new(&lhs, &lhs_shape).unwrap(),
            TensorRef::new(&rhs, &rhs_shape).unwrap(),
            &mut broadcast,
        )
        .unwrap()
    });
    let row = ramp(5, 23);
    let mut same = vec![0.0; lhs.len()];
    check("binary (row vector)", &mut || {
        binary(
            BinaryOp::Add,
            TensorRef::new(&lhs, &lhs_shape).unwrap(),
            TensorRef::new(&row, &[5]).unwrap(),
            &mut same,
        )
        .unwrap()
    });
    check("binary (same shape)", &mut || {
        binary(
            BinaryOp::Sub,
            TensorRef::new(&lhs, &lhs_shape).unwrap(),
            TensorRef::new(&lhs, &lhs_shape).unwrap(),
            &mut same,
        )
        .unwrap()
    });
    check("binary_same_shape", &mut || {
        binary_same_shape(BinaryOp::Div, &lhs, &lhs, &mut same).unwrap()
    });
    check("binary_same_shape_in_place", &mut || {
        binary_same_shape_in_place(BinaryOp::Add, &mut same, &lhs).unwrap()
    });
    check("binary_row_vector", &mut || {
        binary_row_vector(BinaryOp::Mul, &lhs, &row, &mut same).unwrap()
    });

    // Batched matmul: broadcast batch axes (one product per batch) and a shared right operand
    // (one tall product).
    let a = ramp(3 * 2 * 7 * 9, 24);
    let b = ramp(2 * 9 * 6, 25);
    let mut product = vec![0.0; 3 * 2 * 7 * 6];
    check("matmul (batched)", &mut || {
        matmul(
            TensorRef::new(&a, &[3, 2, 7, 9]).unwrap(),
            TensorRef::new(&b, &[1, 2, 9, 6]).unwrap(),
            &mut product,
        )
        .unwrap()
    });
    check("matmul (shared right operand)", &mut || {
        matmul(
            TensorRef::new(&a, &[3, 2, 7, 9]).unwrap(),
            TensorRef::new(&b[..54], &[9, 6]).unwrap(),
            &mut product,
        )
        .unwrap()
    });

    // Data movement.
    let tensor_shape = [3, 4, 5, 6];
    let tensor = ramp(360, 26);
    let mut moved = vec![0.0; 360];
    check("permute (rows)", &mut || {
        permute(
            TensorRef::new(&tensor, &tensor_shape).unwrap(),
            &[1, 0, 2, 3],
            &mut moved,
        )
        .unwrap()
    });
    check("permute (tiles)", &mut || {
        permute(
            TensorRef::new(&tensor, &tensor_shape).unwrap(),
            &[0, 3, 1, 2],
            &mut moved,
        )
        .unwrap()
    });
    check("transpose", &mut || {
        transpose(
            TensorRef::new(&tensor, &tensor_shape).unwrap(),
            1,
            3,
            &mut moved,
        )
        .unwrap()
    });
    let mut joined = vec![0.0; 720];
    check("concat", &mut || {
        let part = TensorRef::new(&tensor, &tensor_shape).unwrap();
        concat(&[part, part], 2, &mut joined).unwrap()
    });
    let mut sliced = vec![0.0; 3 * 4 * 2 * 6];
    check("slice_axis", &mut || {
        slice_axis(
            TensorRef::new(&tensor, &tensor_shape).unwrap(),
            2,
            1,
            3,
            &mut sliced,
        )
        .unwrap()
    });
    let mut selected = vec![0.0; 3 * 5 * 6];
    check("select", &mut || {
        select(
            TensorRef::new(&tensor, &tensor_shape).unwrap(),
            1,
            2,
            &mut selected,
        )
        .unwrap()
    });

    // Rotary embedding.
    let rope_table = RopeTable::new(8, 10000.0, 64).unwrap();
    let mut rotated = ramp(2 * 5 * 3 * 8, 27);
    check("apply_rope_in_place", &mut || {
        let options = RopeOptions {
            n_heads: 3,
            convention: RopeConvention::HalfSplit,
            position_offset: 7,
        };
        apply_rope_in_place(&mut rotated, 2, 5, &rope_table, &options).unwrap()
    });

    // Attention: the plain kernel with a workspace (dense, and with a sparse mask function)
    // and the tiled one (dense, and with a block-sparse layout).
    let shape = AttentionShape {
        batch: 2,
        query_len: 70,
        key_len: 90,
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 16,
    };
    let q = ramp(2 * 70 * 4 * 16, 28);
    let k = ramp(2 * 90 * 2 * 16, 29);
    let v = ramp(2 * 90 * 2 * 16, 30);
    let padding: Vec<i64> = (0..180).map(|index| i64::from(index % 7 != 3)).collect();
    let window = |i: usize, j: usize| (i + 20).abs_diff(j) < 24;
    let mut attended = vec![0.0; q.len()];
    let mut attention_workspace = AttentionWorkspace::new(&shape);
    check("scaled_dot_product_attention_with_workspace", &mut || {
        let options = AttentionOptions {
            causal: true,
            query_position_offset: 20,
            key_padding_mask: Some(&padding),
            ..AttentionOptions::default()
        };
        scaled_dot_product_attention_with_workspace(
            &q,
            &k,
            &v,
            &shape,
            &options,
            &mut attended,
            &mut attention_workspace,
        )
        .unwrap()
    });
    check(
        "scaled_dot_product_attention_with_workspace (mask function)",
        &mut || {
            let options = AttentionOptions {
                mask: AttentionMask::Function(&window),
                ..AttentionOptions::default()
            };
            scaled_dot_product_attention_with_workspace(
                &q,
                &k,
                &v,
                &shape,
                &options,
                &mut attended,
                &mut attention_workspace,
            )
            .unwrap()
        },
    );
    let mut flash_workspace = FlashAttentionWorkspace::with_block_size(&shape, 32);
    let layout = BlockSparseLayout::from_predicate(32, 70, 90, window).unwrap();
    check("flash_attention (dense)", &mut || {
        let options = AttentionOptions {
            causal: true,
            query_position_offset: 20,
            key_padding_mask: Some(&padding),
            ..AttentionOptions::default()
        };
        flash_attention(
            &q,
            &k,
            &v,
            &shape,
            &options,
            None,
            &mut attended,
            &mut flash_workspace,
        )
        .unwrap()
    });
    check("flash_attention (block-sparse)", &mut || {
        let options = AttentionOptions {
            mask: AttentionMask::Function(&window),
            ..AttentionOptions::default()
        };
        flash_attention(
            &q,
            &k,
            &v,
            &shape,
            &options,
            Some(&layout),
            &mut attended,
            &mut flash_workspace,
        )
        .unwrap()
    });

    // The counting itself works: the wrapper that builds a fresh workspace per call is caught.
    let (count, _) = allocations_after_warm_up(|| {
        nnc_runtime::kernels::attention::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            &shape,
            &AttentionOptions::default(),
            &mut attended,
        )
        .unwrap()
    });
    assert!(count > 0, "the counting allocator saw nothing");

    set_num_threads(0);
    assert!(
        offenders.is_empty(),
        "these kernels allocated after warm-up (count, bytes): {offenders:?}"
    );
}

/// The tiled kernel at a sequence length where the score matrix alone would take 256 MiB: the
/// workspace and the call together never ask for anything close to that, and the call itself
/// allocates nothing.
#[test]
fn tiled_attention_memory_stays_linear_in_the_sequence_length() {
    const N: usize = 8192;
    let _turn = THREAD_SETTING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    set_num_threads(1);
    let shape = AttentionShape {
        batch: 1,
        query_len: N,
        key_len: N,
        n_heads: 1,
        n_kv_heads: 1,
        head_dim: 64,
    };
    let q = ramp(N * 64, 31);
    let k = ramp(N * 64, 32);
    let v = ramp(N * 64, 33);
    let mut output = vec![0.0; N * 64];
    let options = AttentionOptions {
        causal: true,
        ..AttentionOptions::default()
    };
    let (mut workspace, creation) = measure(|| FlashAttentionWorkspace::new(&shape));
    let ((), call) = measure(|| {
        flash_attention(
            &q,
            &k,
            &v,
            &shape,
            &options,
            None,
            &mut output,
            &mut workspace,
        )
        .unwrap()
    });
    set_num_threads(0);
    let limit = N * N * 4 / 64;
    assert!(
        creation.largest < limit,
        "the workspace's largest allocation is {} bytes (limit {limit})",
        creation.largest
    );
    assert_eq!(call.count, 0, "the call allocated {} bytes", call.bytes);
    assert!(
        output.iter().all(|value| value.is_finite()),
        "the output is not finite"
    );
    // Spot-check a few rows against a direct computation in f64.
    for row in [0, 1, 4095, N - 1] {
        let query = &q[row * 64..][..64];
        let scores: Vec<f64> = (0..=row)
            .map(|key| {
                let key_row = &k[key * 64..][..64];
                query
                    .iter()
                    .zip(key_row)
                    .map(|(&a, &b)| f64::from(a) * f64::from(b))
                    .sum::<f64>()
                    / 8.0
            })
            .collect();
        let maximum = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let weights: Vec<f64> = scores.iter().map(|score| (score - maximum).exp()).collect();
        let total: f64 = weights.iter().sum();
        for column in 0..64 {
            let expected: f64 = weights
                .iter()
                .enumerate()
                .map(|(key, weight)| weight * f64::from(v[key * 64 + column]))
                .sum::<f64>()
                / total;
            let actual = f64::from(output[row * 64 + column]);
            assert!(
                (actual - expected).abs() < 1e-4,
                "row {row}, column {column}: got {actual}, expected {expected}"
            );
        }
    }
}
