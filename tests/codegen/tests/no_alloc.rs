//! Generated `forward` does no heap allocation once the model is built and warmed up: every
//! activation lives in the arena allocated at construction, and a contiguous input is read
//! where the caller holds it (these inputs are; one with other strides is copied first). Checked with a counting allocator,
//! with the kernels on one thread (the thread pool's own bookkeeping is not the model's). Only
//! the measuring thread's allocations count: the test harness's other threads (reporting a
//! finished test, say) allocate at any time.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use nnc_codegen_tests::example_bert_encoder::{BertEncoder, BertEncoderInputs};
use nnc_codegen_tests::example_longformer::Longformer;
use nnc_codegen_tests::example_seq2seq::{Seq2seq, Seq2seqInputs};
use nnc_codegen_tests::example_tiny_gpt::TinyGpt;
use nnc_codegen_tests::{
    example_mlp::Mlp, example_mobilenet_v2::MobilenetV2, example_resnet18::Resnet18,
};

struct CountingAllocator;

thread_local! {
    /// Whether this thread's allocations are counted (const-initialized: reading it never
    /// allocates, so the allocator may).
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: delegates to the system allocator; counting has no effect on the memory returned.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.try_with(Cell::get).unwrap_or(false) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which we pass on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout`, as the caller guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.try_with(Cell::get).unwrap_or(false) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract, which we pass on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Held by each test: the count is global, so tests must not overlap.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Allocations made while `run` runs.
fn allocations_during(run: impl FnOnce()) -> usize {
    ALLOCATIONS.store(0, Ordering::Relaxed);
    COUNTING.with(|counting| counting.set(true));
    run();
    COUNTING.with(|counting| counting.set(false));
    ALLOCATIONS.load(Ordering::Relaxed)
}

#[test]
fn forward_does_not_allocate() {
    let _alone = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    nnc::runtime::set_num_threads(1);

    let mut mlp = Mlp::with_random_weights(0);
    let x = ndarray::Array2::<f32>::ones((1, 784));
    mlp.forward(x.view()).unwrap();
    assert_eq!(
        allocations_during(|| {
            mlp.forward(x.view()).unwrap();
        }),
        0,
        "mlp"
    );

    let image = ndarray::Array4::<f32>::from_elem((1, 3, 224, 224), 0.5);
    let mut mobilenet = MobilenetV2::with_random_weights(0);
    mobilenet.forward(image.view()).unwrap();
    assert_eq!(
        allocations_during(|| {
            mobilenet.forward(image.view()).unwrap();
        }),
        0,
        "mobilenet_v2"
    );

    let mut resnet = Resnet18::with_random_weights(0);
    resnet.forward(image.view()).unwrap();
    assert_eq!(
        allocations_during(|| {
            resnet.forward(image.view()).unwrap();
        }),
        0,
        "resnet18"
    );

    // Transformers: tiled attention with a workspace, and a block-sparse layout for Longformer.
    let ids = ndarray::Array2::<i64>::from_shape_fn((1, 128), |(_, i)| (i % 2) as i64);
    // The last 8 positions are padding: the key padding mask is read in place.
    let attention_mask =
        ndarray::Array2::<i64>::from_shape_fn((1, 128), |(_, i)| i64::from(i < 120));
    let mut bert = BertEncoder::with_random_weights(0);
    let inputs = || BertEncoderInputs {
        input_ids: ids.view(),
        token_type_ids: ids.view(),
        attention_mask: attention_mask.view(),
    };
    bert.forward(inputs()).unwrap();
    assert_eq!(
        allocations_during(|| {
            bert.forward(inputs()).unwrap();
        }),
        0,
        "bert_encoder"
    );

    let tokens = ndarray::Array2::<i64>::from_shape_fn((1, 64), |(_, i)| (i % 7) as i64);
    let mut gpt = TinyGpt::with_random_weights(0);
    gpt.forward(tokens.view()).unwrap();
    assert_eq!(
        allocations_during(|| {
            gpt.forward(tokens.view()).unwrap();
        }),
        0,
        "tiny_gpt"
    );

    let (src, tgt) = (
        ndarray::Array2::<i64>::ones((1, 64)),
        ndarray::Array2::<i64>::ones((1, 48)),
    );
    let mut seq2seq = Seq2seq::with_random_weights(0);
    let inputs = || Seq2seqInputs {
        src: src.view(),
        tgt: tgt.view(),
    };
    seq2seq.forward(inputs()).unwrap();
    assert_eq!(
        allocations_during(|| {
            seq2seq.forward(inputs()).unwrap();
        }),
        0,
        "seq2seq"
    );

    let long_ids = ndarray::Array2::<i64>::ones((1, 1024));
    let mut longformer = Longformer::with_random_weights(0);
    longformer.forward(long_ids.view()).unwrap();
    assert_eq!(
        allocations_during(|| {
            longformer.forward(long_ids.view()).unwrap();
        }),
        0,
        "longformer"
    );
}

#[test]
fn decoding_steps_do_not_allocate() {
    use nnc_codegen_tests::example_seq2seq::Seq2seqDecoder;
    use nnc_codegen_tests::example_tiny_gpt::TinyGptDecoder;
    let _alone = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    nnc::runtime::set_num_threads(1);

    let mut gpt = TinyGptDecoder::with_random_weights(0);
    // Warm up both step kinds: the kernels' scratch grows on first use.
    gpt.prefill(&[1; 17]).unwrap();
    gpt.reset();
    gpt.prefill(&[1, 2, 3]).unwrap();
    assert_eq!(
        allocations_during(|| {
            gpt.decode(4).unwrap();
            gpt.prefill(&[5, 6]).unwrap();
            gpt.prefill(&[7; 20]).unwrap();
        }),
        0,
        "tiny_gpt decode"
    );

    let mut cache = TinyGptDecoder::paged_cache(8, 16);
    let (first, second) = (cache.add_sequence(), cache.add_sequence());
    // Warm up: a chunked prefill grows the gather scratch to 32 positions.
    gpt.prefill_paged(&mut cache, first, &[1; 40]).unwrap();
    gpt.prefill_paged(&mut cache, second, &[4]).unwrap();
    assert_eq!(
        allocations_during(|| {
            gpt.decode_paged(&mut cache, first, 4).unwrap();
            gpt.decode_paged(&mut cache, second, 5).unwrap();
            gpt.prefill_paged(&mut cache, second, &[6; 17]).unwrap();
        }),
        0,
        "tiny_gpt paged decode"
    );

    let src = ndarray::Array2::<i64>::ones((1, 64));
    let mut seq2seq = Seq2seqDecoder::with_random_weights(0);
    seq2seq.encode(src.view()).unwrap();
    seq2seq.decode(1).unwrap();
    assert_eq!(
        allocations_during(|| {
            seq2seq.decode(2).unwrap();
            seq2seq.encode(src.view()).unwrap();
            seq2seq.decode(3).unwrap();
        }),
        0,
        "seq2seq decode"
    );
}
