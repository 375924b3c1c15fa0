//! Element-wise loops compiled twice: for the baseline target and with AVX2 + FMA enabled,
//! picked at run time, so that simple closures vectorise with 8-wide registers where they can.
//! The costly functions' loops (`map_in_place_interleaved`, `map_interleaved`) are compiled a
//! third time with AVX-512F, where the processor has it.
//!
//! The two versions compute the same values: Rust never contracts `a * b + c` into a fused
//! multiply-add on its own, and an explicit `f32::mul_add` is fused in both (an instruction with
//! FMA, a call to `fmaf` without), so enabling FMA changes only which instructions run.

/// `values[i] = function(values[i])`.
pub(crate) fn map_in_place(values: &mut [f32], function: impl Fn(f32) -> f32 + Copy) {
    map_in_place_with::<false>(values, function)
}

/// `output[i] = function(input[i])`; the slices must have the same length.
pub(crate) fn map(input: &[f32], output: &mut [f32], function: impl Fn(f32) -> f32 + Copy) {
    map_with::<false>(input, output, function)
}

/// [`map_in_place`] for a costly `function` (`exp`, `erf`, `tanh` inside): four vectors per
/// step, computed side by side (see [`map_body`]). Cheap functions must not use it: unrolled
/// 32 wide, LLVM turns some of them (`leaky_relu`, `relu6`) into lane-by-lane shuffles.
pub(crate) fn map_in_place_interleaved(values: &mut [f32], function: impl Fn(f32) -> f32 + Copy) {
    map_in_place_with::<true>(values, function)
}

/// [`map`] for a costly `function`, as [`map_in_place_interleaved`].
pub(crate) fn map_interleaved(
    input: &[f32],
    output: &mut [f32],
    function: impl Fn(f32) -> f32 + Copy,
) {
    map_with::<true>(input, output, function)
}

fn map_in_place_with<const INTERLEAVE: bool>(
    values: &mut [f32],
    function: impl Fn(f32) -> f32 + Copy,
) {
    #[cfg(target_arch = "x86_64")]
    if INTERLEAVE && has_avx512f() {
        // SAFETY: The processor supports AVX-512F, AVX2 and FMA, checked just above.
        unsafe { map_in_place_avx512(values, function) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: The processor supports AVX2 and FMA, checked just above.
        unsafe { map_in_place_avx2::<INTERLEAVE>(values, function) };
        return;
    }
    map_in_place_body::<INTERLEAVE>(values, function);
}

fn map_with<const INTERLEAVE: bool>(
    input: &[f32],
    output: &mut [f32],
    function: impl Fn(f32) -> f32 + Copy,
) {
    debug_assert_eq!(input.len(), output.len());
    #[cfg(target_arch = "x86_64")]
    if INTERLEAVE && has_avx512f() {
        // SAFETY: The processor supports AVX-512F, AVX2 and FMA, checked just above.
        unsafe { map_avx512(input, output, function) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: The processor supports AVX2 and FMA, checked just above.
        unsafe { map_avx2::<INTERLEAVE>(input, output, function) };
        return;
    }
    map_body::<INTERLEAVE>(input, output, function);
}

/// `output[i] = function(left[i], right[i])`; the slices must have the same length.
pub(crate) fn zip_map(
    left: &[f32],
    right: &[f32],
    output: &mut [f32],
    function: impl Fn(f32, f32) -> f32 + Copy,
) {
    debug_assert!(left.len() == output.len() && right.len() == output.len());
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: The processor supports AVX2 and FMA, checked just above.
        unsafe { zip_map_avx2(left, right, output, function) };
        return;
    }
    zip_map_body(left, right, output, function);
}

/// `values[i] = function(values[i], other[i])`; the slices must have the same length.
pub(crate) fn zip_map_in_place(
    values: &mut [f32],
    other: &[f32],
    function: impl Fn(f32, f32) -> f32 + Copy,
) {
    debug_assert_eq!(values.len(), other.len());
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: The processor supports AVX2 and FMA, checked just above.
        unsafe { zip_map_in_place_avx2(values, other, function) };
        return;
    }
    zip_map_in_place_body(values, other, function);
}

/// Which instructions a kernel's hand-written vector loops use, decided once per kernel call
/// (pooling's rows, the norms' row sums): the widest the processor has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Isa {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// AVX-512F, with AVX2.
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Isa {
    /// AVX-512 or AVX2 where the processor has it, else the portable loops.
    pub(crate) fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") {
            if is_x86_feature_detected!("avx512f") {
                return Isa::Avx512;
            }
            return Isa::Avx2;
        }
        Isa::Portable
    }

    /// Every form this machine can run, for tests that compare them.
    #[cfg(test)]
    pub(crate) fn available() -> Vec<Self> {
        let mut forms = vec![Isa::Portable];
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") {
            forms.push(Isa::Avx2);
            if is_x86_feature_detected!("avx512f") {
                forms.push(Isa::Avx512);
            }
        }
        forms
    }
}

/// Work made of plain loops that [`with_widest_vectors`] builds for the chosen instructions.
/// `run` must be `#[inline(always)]`, and so must what it calls: it is inlined into a function
/// compiled for those instructions, and a closure in its place was not (LLVM tail-called it,
/// built for the baseline target).
pub(crate) trait VectorWork {
    type Output;
    fn run(self) -> Self::Output;
}

/// Runs `work` compiled for the widest vectors the processor has (AVX-512F, else AVX2 and FMA,
/// else the baseline target), chosen once per call. For kernels made of several plain loops
/// over short slices, such as a norm's passes over each row, where choosing for each loop
/// apart costs more than the loop.
#[inline(always)]
pub(crate) fn with_widest_vectors<W: VectorWork>(work: W) -> W::Output {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx512f() {
            // SAFETY: The processor supports AVX-512F, AVX2 and FMA, checked just above.
            return unsafe { run_avx512(work) };
        }
        if has_avx2_fma() {
            // SAFETY: The processor supports AVX2 and FMA, checked just above.
            return unsafe { run_avx2(work) };
        }
    }
    work.run()
}

/// `work.run()` built with AVX-512F.
///
/// # Safety
///
/// The processor must support AVX-512F, AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn run_avx512<W: VectorWork>(work: W) -> W::Output {
    work.run()
}

/// `work.run()` built with AVX2 and FMA.
///
/// # Safety
///
/// The processor must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2<W: VectorWork>(work: W) -> W::Output {
    work.run()
}

/// The AVX-512 lane mask of the first `count` of sixteen lanes, all sixteen from 16 on: the
/// lanes of a vector's tail.
#[cfg(target_arch = "x86_64")]
#[inline]
pub(crate) fn first_lanes16(count: usize) -> std::arch::x86_64::__mmask16 {
    ((1u32 << count.min(16)) - 1) as std::arch::x86_64::__mmask16
}

/// Whether the processor has AVX2 and FMA (the result is cached by the standard library).
#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx2_fma() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
}

/// Whether the processor has AVX-512F besides AVX2 and FMA: the costly functions' loops are
/// compiled a third time for it, sixteen lanes a vector.
#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx512f() -> bool {
    is_x86_feature_detected!("avx512f") && has_avx2_fma()
}

/// Elements of the stack buffer [`map_in_place_body`] maps through: 256 bytes, in L1.
const IN_PLACE_BUFFER: usize = 64;

/// Maps each piece of `values` into a small buffer and copies it back. The direct loop
/// `*value = function(*value)` lets LLVM skip the stores that would write an unchanged value
/// (`relu` leaves `x >= 0` as it is), and it then stores with `vmaskmovps`, which is slow on
/// AMD processors; a store of every element from the buffer is plain and cheap.
#[inline(always)]
fn map_in_place_body<const INTERLEAVE: bool>(
    values: &mut [f32],
    function: impl Fn(f32) -> f32 + Copy,
) {
    map_in_place_lanes::<INTERLEAVE, INTERLEAVED>(values, function)
}

/// [`map_in_place_body`] with `LANES` elements a step when interleaved.
#[inline(always)]
fn map_in_place_lanes<const INTERLEAVE: bool, const LANES: usize>(
    values: &mut [f32],
    function: impl Fn(f32) -> f32 + Copy,
) {
    let mut buffer = [0.0f32; IN_PLACE_BUFFER];
    for piece in values.chunks_mut(IN_PLACE_BUFFER) {
        let buffer = &mut buffer[..piece.len()];
        map_lanes::<INTERLEAVE, LANES>(piece, buffer, function);
        piece.copy_from_slice(buffer);
    }
}

/// Elements [`map_body`] maps per step of its main loop: four 8-wide vectors.
const INTERLEAVED: usize = 32;

/// The same for 16-wide vectors (the AVX-512 build); also the in-place buffer's length.
const INTERLEAVED_AVX512: usize = IN_PLACE_BUFFER;

/// With `INTERLEAVE`, maps `INTERLEAVED` elements per step, then the rest one by one: the
/// fixed-length inner loop compiles to four independent vector computations side by side, so
/// the long dependency chains of `exp` and `erf` (a dozen fused multiply-adds each, one after
/// the other) overlap, where one vector per step left the processor waiting on each chain.
/// Without, one plain loop that LLVM vectorises as it likes.
#[inline(always)]
fn map_body<const INTERLEAVE: bool>(
    input: &[f32],
    output: &mut [f32],
    function: impl Fn(f32) -> f32 + Copy,
) {
    map_lanes::<INTERLEAVE, INTERLEAVED>(input, output, function)
}

/// [`map_body`] with `LANES` elements a step when interleaved.
#[inline(always)]
fn map_lanes<const INTERLEAVE: bool, const LANES: usize>(
    input: &[f32],
    output: &mut [f32],
    function: impl Fn(f32) -> f32 + Copy,
) {
    if !INTERLEAVE {
        for (output, &input) in output.iter_mut().zip(input) {
            *output = function(input);
        }
        return;
    }
    let mut output_pieces = output.chunks_exact_mut(LANES);
    let mut input_pieces = input.chunks_exact(LANES);
    for (output, input) in (&mut output_pieces).zip(&mut input_pieces) {
        for lane in 0..LANES {
            output[lane] = function(input[lane]);
        }
    }
    let output_tail = output_pieces.into_remainder();
    let input_tail = input_pieces.remainder();
    for (output, &input) in output_tail.iter_mut().zip(input_tail) {
        *output = function(input);
    }
}

#[inline(always)]
fn zip_map_body(
    left: &[f32],
    right: &[f32],
    output: &mut [f32],
    function: impl Fn(f32, f32) -> f32 + Copy,
) {
    for ((output, &left), &right) in output.iter_mut().zip(left).zip(right) {
        *output = function(left, right);
    }
}

#[inline(always)]
fn zip_map_in_place_body(
    values: &mut [f32],
    other: &[f32],
    function: impl Fn(f32, f32) -> f32 + Copy,
) {
    for (value, &other) in values.iter_mut().zip(other) {
        *value = function(*value, other);
    }
}

/// The interleaved [`map_in_place_body`], four 16-wide vectors a step.
///
/// # Safety
///
/// The processor must support AVX-512F, AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn map_in_place_avx512(values: &mut [f32], function: impl Fn(f32) -> f32 + Copy) {
    map_in_place_lanes::<true, INTERLEAVED_AVX512>(values, function);
}

/// The interleaved [`map_body`], four 16-wide vectors a step.
///
/// # Safety
///
/// The processor must support AVX-512F, AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn map_avx512(input: &[f32], output: &mut [f32], function: impl Fn(f32) -> f32 + Copy) {
    map_lanes::<true, INTERLEAVED_AVX512>(input, output, function);
}

/// # Safety
///
/// The processor must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn map_in_place_avx2<const INTERLEAVE: bool>(
    values: &mut [f32],
    function: impl Fn(f32) -> f32 + Copy,
) {
    map_in_place_body::<INTERLEAVE>(values, function);
}

/// # Safety
///
/// The processor must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn map_avx2<const INTERLEAVE: bool>(
    input: &[f32],
    output: &mut [f32],
    function: impl Fn(f32) -> f32 + Copy,
) {
    map_body::<INTERLEAVE>(input, output, function);
}

/// # Safety
///
/// The processor must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn zip_map_avx2(
    left: &[f32],
    right: &[f32],
    output: &mut [f32],
    function: impl Fn(f32, f32) -> f32 + Copy,
) {
    zip_map_body(left, right, output, function);
}

/// # Safety
///
/// The processor must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn zip_map_in_place_avx2(
    values: &mut [f32],
    other: &[f32],
    function: impl Fn(f32, f32) -> f32 + Copy,
) {
    zip_map_in_place_body(values, other, function);
}
