//! Generated `forward` does no heap allocation once the model is built and warmed up: every
//! activation lives in the arena allocated at construction. Checked with a counting allocator,
//! with the kernels on one thread (the thread pool's own bookkeeping is not the model's).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use nnc_codegen_tests::{
    example_mlp::Mlp, example_mobilenet_v2::MobilenetV2, example_resnet18::Resnet18,
};

struct CountingAllocator;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: delegates to the system allocator; counting has no effect on the memory returned.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
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
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract, which we pass on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Allocations made while `run` runs.
fn allocations_during(run: impl FnOnce()) -> usize {
    ALLOCATIONS.store(0, Ordering::Relaxed);
    COUNTING.store(true, Ordering::Relaxed);
    run();
    COUNTING.store(false, Ordering::Relaxed);
    ALLOCATIONS.load(Ordering::Relaxed)
}

#[test]
fn forward_does_not_allocate() {
    nnc::runtime::set_num_threads(1);

    let mut mlp = Mlp::with_random_weights(0);
    let x = ndarray::Array2::<f32>::ones((1, 784));
    mlp.forward(x.view()).unwrap();
    assert_eq!(
        allocations_during(|| drop(mlp.forward(x.view()).unwrap())),
        0,
        "mlp"
    );

    let image = ndarray::Array4::<f32>::from_elem((1, 3, 224, 224), 0.5);
    let mut mobilenet = MobilenetV2::with_random_weights(0);
    mobilenet.forward(image.view()).unwrap();
    assert_eq!(
        allocations_during(|| drop(mobilenet.forward(image.view()).unwrap())),
        0,
        "mobilenet_v2"
    );

    let mut resnet = Resnet18::with_random_weights(0);
    resnet.forward(image.view()).unwrap();
    assert_eq!(
        allocations_during(|| drop(resnet.forward(image.view()).unwrap())),
        0,
        "resnet18"
    );
}
