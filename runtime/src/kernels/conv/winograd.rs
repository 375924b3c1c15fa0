//! Winograd convolution of 3x3 kernels with unit stride and dilation and one group: F(4x4, 3x3)
//! up to [`MAX_F4X4_CHANNELS`] channels, F(2x2, 3x3) above (see [`Variant`]; the automatic
//! choice runs such layers on the GEMM instead, see `Conv2dOptions::prefers_winograd`).
//!
//! The description below is of F(4x4, 3x3); F(2x2, 3x3) is the same with 4x4 input tiles, 2x2
//! output tiles and 16 points (Lavin and Gray's F(2, 3), interpolation points 0, +-1 and
//! infinity, whose transforms only add and halve).
//!
//! A 4x4 tile of outputs needs a 6x6 tile `d` of inputs. With the matrices `B^T` (6x6), `G` (6x3)
//! and `A^T` (4x6) of Lavin and Gray's F(4, 3) (interpolation points 0, +-1, +-2 and infinity),
//!
//! ```text
//! y[o] = A^T ( sum_i (G g[o, i] G^T) .* (B^T d[i] B) ) A
//! ```
//!
//! so the 36 points of the transformed tiles are 36 independent matrix products
//! `M[p] = U[p] * V[p]` of `U[p]`, `[out, in]` (the transformed filters, packed once at load as
//! the GEMM's left operand), by `V[p]`, `[in, tiles]` (the transformed inputs). That is 36
//! multiply-adds per input channel and tile where direct convolution needs 16 * 9 = 144: four
//! times fewer, paid for by the transforms, which are additions and cheap multiplications.
//!
//! The work is cut into blocks of tiles (over the whole batch, in row-major order within each
//! image) small enough that a block's `V` and `M` stay in L2. A task transforms one block of
//! inputs into its thread's scratch, runs the 36 products on the calling thread
//! (`gemm_sequential`) for one chunk of output channels at a time, and transforms each chunk's
//! `M` back into the output, adding the bias and the residual and applying the activation on
//! the way (the `PackedConv2d` epilogue contract: `activation(conv + bias + residual)`). When
//! there are too few blocks to keep every thread busy (small images), tasks also split the
//! output channels, each transforming the same block of inputs.
//!
//! The transforms work on [`LANES`] tiles at once, one tile per lane of an array, so that the
//! AVX2 build of the same code (chosen at run time) does each step as one vector operation.
//!
//! Precision: the transforms multiply values by up to 5 (B), 1/24 (G) and 8 (A), which costs
//! a few bits over direct convolution; `tests.rs` measures the error against the f64 reference
//! at ResNet depths.

use crate::alloc::AlignedBuffer;
use crate::error::KernelResult;
use crate::kernels::activation::{Activation, apply_activation_in_place};
use crate::kernels::gemm::{
    GemmOptions, Lhs, MatrixRef, PackedLhsMatrix, PackedRhsRef, gemm_sequential_prepacked,
    packed_rhs_index, packed_rhs_size,
};
use crate::threading;
use nnc_ops::activation::relu;
use nnc_ops::conv::MAX_F4X4_CHANNELS;
use std::cell::RefCell;
use std::ops::Range;

#[cfg(target_arch = "x86_64")]
mod x86_64;

/// Outputs per side of one tile of F(4x4, 3x3), the largest tile.
const OUTPUT_TILE: usize = 4;
/// Inputs per side of one tile of F(4x4, 3x3) (`OUTPUT_TILE + 3 - 1`).
const INPUT_TILE: usize = 6;
/// Points of a transformed tile of F(4x4, 3x3), and so independent matrix products.
const POINTS: usize = INPUT_TILE * INPUT_TILE;
/// Inputs per side, and points, of one tile of F(2x2, 3x3).
const F2X2_INPUT_TILE: usize = 4;
const F2X2_POINTS: usize = F2X2_INPUT_TILE * F2X2_INPUT_TILE;
/// Tiles transformed together, one per lane (one AVX2 register of f32).
const LANES: usize = 8;
/// Output channels per chunk: one chunk's `M` (`36 x 64 x tiles`) stays in L2 beside `V`.
const OUT_CHUNK_CHANNELS: usize = 64;
/// The bounds on the tiles of one block: the products' `n`, a multiple of the GEMM's `NR`.
const MIN_BLOCK_TILES: usize = 16;
const MAX_BLOCK_TILES: usize = 64;

/// The bytes of `V` and `M` one block may use: half of one core's L2, the other half left to
/// the transformed filters streaming through. The larger the block, the fewer times the filters
/// (2.4 MB at 128 channels) are read for one layer, and the wider the products: on a 2 MiB L2,
/// ResNet-18's 128-channel layers at 28x28 take blocks of 32 tiles instead of the 16 of a
/// fixed 512 KiB budget, 16% faster (`winograd_timing`, 1 thread 1000 to 843 us, 2 threads 547
/// to 461), and its 64-channel layers at 56x56 blocks of 48 (4% faster).
fn block_scratch_bytes() -> usize {
    crate::cache::l2_bytes() / 2
}

/// Which Winograd algorithm a layer runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Variant {
    /// F(4x4, 3x3): 36 products for 16 outputs, four times fewer multiply-adds than direct
    /// convolution; the transformed filters take four times the weight's memory.
    F4x4,
    /// F(2x2, 3x3): 16 products for 4 outputs, 2.25 times fewer multiply-adds; the transformed
    /// filters take 16/9 of the weight's memory. For the widest layers, which sit at the end of
    /// a network on small images: a 7x7 image is 16 tiles, one full panel of the GEMM's `NR`
    /// columns, where F(4x4) has 4 (a quarter of a panel) and direct convolution 49 columns (3
    /// panels and one column, a fourth panel almost empty); and their filters, 9.4 MB at 512
    /// channels, grow by 7 MB instead of 28.
    F2x2,
}

impl Variant {
    /// The variant for a layer of these channels: F(4x4, 3x3) up to `MAX_F4X4_CHANNELS`.
    fn for_channels(in_channels: usize, out_channels: usize) -> Self {
        if in_channels.max(out_channels) <= MAX_F4X4_CHANNELS {
            Variant::F4x4
        } else {
            Variant::F2x2
        }
    }

    /// Outputs per side of one tile.
    fn output_tile(self) -> usize {
        match self {
            Variant::F4x4 => OUTPUT_TILE,
            Variant::F2x2 => 2,
        }
    }

    /// Inputs per side of one tile.
    fn input_tile(self) -> usize {
        self.output_tile() + 2
    }

    /// Points of a transformed tile.
    fn points(self) -> usize {
        self.input_tile() * self.input_tile()
    }

    /// `G g G^T` for one 3x3 filter; the first `points()` values, row-major.
    fn transform_filter(self, filter: &[f32]) -> [f32; POINTS] {
        match self {
            Variant::F4x4 => transform_filter(filter),
            Variant::F2x2 => {
                let mut transformed = [0.0; POINTS];
                transformed[..F2X2_POINTS].copy_from_slice(&transform_filter_f2x2(filter));
                transformed
            }
        }
    }
}

/// The transformed filters of one layer, `U[p] = (G g G^T)[p]` for each point `p` of its
/// variant's tiles.
#[derive(Clone, Debug)]
pub(super) struct WinogradWeights {
    variant: Variant,
    in_channels: usize,
    out_channels: usize,
    chunks: Vec<WeightChunk>,
    /// The bytes of `V` and `M` one block may use (see [`block_scratch_bytes`]).
    block_scratch_bytes: usize,
}

/// The transformed filters of a run of output channels.
#[derive(Clone, Debug)]
struct WeightChunk {
    first_out_channel: usize,
    out_channels: usize,
    /// One packed `[out_channels, in_channels]` matrix per point.
    matrices: Vec<PackedLhsMatrix>,
}

/// One call's data and sizes, as `PackedConv2d::run` checked them.
pub(super) struct WinogradCall<'a> {
    pub(super) input: &'a [f32],
    pub(super) batch: usize,
    pub(super) in_h: usize,
    pub(super) in_w: usize,
    pub(super) out_h: usize,
    pub(super) out_w: usize,
    pub(super) padding: [usize; 2],
    pub(super) bias: Option<&'a [f32]>,
    pub(super) residual: Option<&'a [f32]>,
    pub(super) activation: Option<Activation>,
}

impl WinogradWeights {
    /// Transforms and packs a `[out_channels, in_channels, 3, 3]` weight for the variant its
    /// channels call for.
    pub(super) fn new(
        weight: &[f32],
        out_channels: usize,
        in_channels: usize,
    ) -> KernelResult<Self> {
        let variant = Variant::for_channels(in_channels, out_channels);
        Self::with_variant(weight, out_channels, in_channels, variant)
    }

    /// `new` with the variant chosen by the caller.
    fn with_variant(
        weight: &[f32],
        out_channels: usize,
        in_channels: usize,
        variant: Variant,
    ) -> KernelResult<Self> {
        let points = variant.points();
        let matrix_length = out_channels * in_channels;
        let mut transformed = vec![0.0f32; points * matrix_length];
        // Filter `o * in_channels + i` lands at row `o`, column `i` of every point's matrix.
        for (filter_index, filter) in weight.chunks_exact(9).enumerate() {
            let values = variant.transform_filter(filter);
            for (point, &value) in values[..points].iter().enumerate() {
                transformed[point * matrix_length + filter_index] = value;
            }
        }
        let chunks = (0..out_channels)
            .step_by(OUT_CHUNK_CHANNELS)
            .map(|first_out_channel| {
                let chunk_channels = OUT_CHUNK_CHANNELS.min(out_channels - first_out_channel);
                let matrices = (0..points)
                    .map(|point| {
                        let start = point * matrix_length + first_out_channel * in_channels;
                        MatrixRef::row_major(
                            &transformed[start..start + chunk_channels * in_channels],
                            chunk_channels,
                            in_channels,
                        )
                        .map(PackedLhsMatrix::from_matrix)
                    })
                    .collect::<KernelResult<Vec<_>>>()?;
                Ok(WeightChunk {
                    first_out_channel,
                    out_channels: chunk_channels,
                    matrices,
                })
            })
            .collect::<KernelResult<Vec<_>>>()?;
        Ok(Self {
            variant,
            in_channels,
            out_channels,
            chunks,
            block_scratch_bytes: block_scratch_bytes(),
        })
    }

    /// Runs the convolution into `output`, `[batch, out_channels, out_h, out_w]`.
    pub(super) fn forward(&self, call: &WinogradCall<'_>, output: &mut [f32]) -> KernelResult<()> {
        let output_tile = self.variant.output_tile();
        let tiles_x = call.out_w.div_ceil(output_tile);
        let tiles_per_image = call.out_h.div_ceil(output_tile) * tiles_x;
        let total_tiles = call.batch * tiles_per_image;
        if total_tiles == 0 {
            return Ok(());
        }
        let block_tiles = self.block_tiles(total_tiles);
        let blocks = total_tiles.div_ceil(block_tiles);
        // With fewer blocks than two per thread, tasks split the output channels too, each
        // transforming its block's inputs again: into the fewest groups that give every thread
        // as many tasks. (Twice as many groups as that repeated the transforms for nothing:
        // ResNet-18's 3x3 256@14, one block, took 530 us on two threads in four groups and 433
        // in two.)
        let threads = threading::parallel_width();
        let wanted_groups = if threads > 1 && blocks < 2 * threads {
            (1..=threads)
                .find(|groups| (blocks * groups).is_multiple_of(threads))
                .unwrap_or(threads)
        } else {
            1
        };
        let chunks_per_group = self
            .chunks
            .len()
            .div_ceil(wanted_groups.min(self.chunks.len()));
        let chunk_groups = self.chunks.len().div_ceil(chunks_per_group);
        let layout = TileLayout {
            variant: self.variant,
            tiles_x,
            tiles_per_image,
            in_channels: self.in_channels,
            out_channels: self.out_channels,
        };
        let destination = OutputPointer {
            data: output.as_mut_ptr(),
            length: output.len(),
        };
        let first_error = threading::FirstError::new();
        threading::run_tasks(blocks * chunk_groups, |task| {
            let (block, group) = (task / chunk_groups, task % chunk_groups);
            let tiles = block * block_tiles..((block + 1) * block_tiles).min(total_tiles);
            let chunks = &self.chunks[group * chunks_per_group..]
                [..chunks_per_group.min(self.chunks.len() - group * chunks_per_group)];
            first_error.record(self.run_block(call, &layout, tiles, chunks, &destination));
        });
        first_error.into_result()
    }

    /// Tiles per block: as many as keep `V` and one chunk's `M` within `block_scratch_bytes`.
    fn block_tiles(&self, total_tiles: usize) -> usize {
        let chunk_channels = OUT_CHUNK_CHANNELS.min(self.out_channels);
        let bytes_per_tile =
            self.variant.points() * (self.in_channels + chunk_channels) * size_of::<f32>();
        let budget = (self.block_scratch_bytes / bytes_per_tile / MIN_BLOCK_TILES
            * MIN_BLOCK_TILES)
            .clamp(MIN_BLOCK_TILES, MAX_BLOCK_TILES);
        budget.min(total_tiles.div_ceil(LANES) * LANES)
    }

    /// Transforms the inputs of `tiles`, then multiplies and transforms back each chunk.
    fn run_block(
        &self,
        call: &WinogradCall<'_>,
        layout: &TileLayout,
        tiles: Range<usize>,
        chunks: &[WeightChunk],
        destination: &OutputPointer,
    ) -> KernelResult<()> {
        // `V` is 36 `[in_channels, tiles]` matrices already in the GEMM's packed layout for its
        // right operand, so the products read it without packing it again; `M` is 36
        // `[chunk_channels][row_stride]` matrices. Each is `point_stride` floats from the next.
        // Tile lanes past `tiles.end` are padding.
        let row_stride = tiles.len().div_ceil(LANES) * LANES;
        let input_length = packed_rhs_size(self.in_channels, tiles.len());
        let chunk_channels = chunks
            .iter()
            .map(|chunk| chunk.out_channels)
            .max()
            .unwrap_or(0);
        let points = self.variant.points();
        let (v_stride, m_stride) = (
            point_stride(input_length),
            point_stride(chunk_channels * row_stride),
        );
        let v_length = points * v_stride;
        let m_length = points * m_stride;
        SCRATCH.with(|cell| {
            let mut scratch = cell.borrow_mut();
            if scratch.len() < v_length + m_length {
                scratch.resize(v_length + m_length);
            }
            let (transformed_input, products) = scratch.split_at_mut(v_length);
            let products = &mut products[..m_length];
            transform_inputs(call, layout, tiles.clone(), v_stride, transformed_input);
            for chunk in chunks {
                let chunk_length = chunk.out_channels * row_stride;
                for (point, matrix) in chunk.matrices.iter().enumerate() {
                    let rhs = PackedRhsRef::new(
                        &transformed_input[point * v_stride..][..input_length],
                        self.in_channels,
                        tiles.len(),
                    )?;
                    gemm_sequential_prepacked(
                        Lhs::Packed(matrix),
                        rhs,
                        &mut products[point * m_stride..][..chunk_length],
                        row_stride,
                        &GemmOptions::default(),
                    )?;
                }
                transform_outputs(
                    call,
                    layout,
                    tiles.clone(),
                    (row_stride, m_stride),
                    chunk,
                    products,
                    destination,
                );
            }
            Ok(())
        })
    }
}

/// The floats from one point's matrix to the next in `V` and `M`, for matrices of `length`
/// floats: whole cache lines, an odd number of them. At a multiple of 4 KiB apart (ResNet-18's
/// layers: 64 channels in blocks of 16 or 48 tiles, 128 of 32, 256 of 16), the 36 matrices'
/// lines that a group of tiles writes (input transform) or reads (output transform) all fell
/// into one set of the L1 cache, which holds 12; an odd number of lines apart they take 36 sets.
/// (`winograd_timing`, 1 thread: 5-13% faster layers.)
fn point_stride(length: usize) -> usize {
    const LINE: usize = 64 / size_of::<f32>();
    (length.div_ceil(LINE) | 1) * LINE
}

thread_local! {
    /// Each thread's `V` and `M`; grown once, then reused. On a cache line: `V` is read as
    /// packed panels of B.
    static SCRATCH: RefCell<AlignedBuffer> = RefCell::new(AlignedBuffer::default());
    /// Each thread's bands of input (see [`Band`]); grown once, then reused.
    static BANDS: RefCell<BandScratch> = const {
        RefCell::new(BandScratch {
            bands: Vec::new(),
            buffer: Vec::new(),
            patches: Vec::new(),
        })
    };
}

/// What `transform_inputs` keeps between blocks, so that a warm call does not allocate.
struct BandScratch {
    bands: Vec<Band>,
    /// The copied bands, one after the other.
    buffer: Vec<f32>,
    /// Per tile of the block: its band and the offset of its patch in the band's data.
    patches: Vec<(usize, usize)>,
}

/// Where the tiles are.
struct TileLayout {
    variant: Variant,
    tiles_x: usize,
    tiles_per_image: usize,
    in_channels: usize,
    out_channels: usize,
}

impl TileLayout {
    /// The image of tile `tile` and the top-left output of the tile.
    fn tile_origin(&self, tile: usize) -> (usize, usize, usize) {
        let (image, index) = (tile / self.tiles_per_image, tile % self.tiles_per_image);
        let (tile_y, tile_x) = (index / self.tiles_x, index % self.tiles_x);
        let output_tile = self.variant.output_tile();
        (image, tile_y * output_tile, tile_x * output_tile)
    }
}

/// The output, shared by the tasks, which write disjoint elements.
struct OutputPointer {
    data: *mut f32,
    length: usize,
}

// SAFETY: Every output element belongs to one tile and one output channel, so to exactly one
// task (block, chunk group), and `run_tasks` returns only after every task has finished, while
// the `&mut` borrow the pointer came from is still held by `forward`.
unsafe impl Sync for OutputPointer {}

impl OutputPointer {
    /// Writes `values` at `index..index + values.len()`.
    fn write(&self, index: usize, values: &[f32]) {
        assert!(
            index + values.len() <= self.length,
            "winograd: output index out of range"
        );
        // Whole tile rows (the usual case) get a copy of known length, which compiles to one
        // vector move instead of a call to `memcpy`.
        if let Ok(row) = <&[f32; OUTPUT_TILE]>::try_from(values) {
            // SAFETY: The range is in bounds (checked above), `row` is a local buffer that
            // cannot overlap the output, and no other task writes or reads these elements (see
            // the `Sync` implementation).
            unsafe {
                self.data
                    .add(index)
                    .cast::<[f32; OUTPUT_TILE]>()
                    .write_unaligned(*row)
            };
        } else if let Ok(row) = <&[f32; 2]>::try_from(values) {
            // SAFETY: As above, for F(2x2, 3x3)'s rows.
            unsafe {
                self.data
                    .add(index)
                    .cast::<[f32; 2]>()
                    .write_unaligned(*row)
            };
        } else {
            for (offset, &value) in values.iter().enumerate() {
                // SAFETY: As above, for one element of the checked range.
                unsafe { self.data.add(index + offset).write(value) };
            }
        }
    }
}

/// `G g G^T` for one 3x3 filter, computed in f64; the 6x6 result row-major.
fn transform_filter(filter: &[f32]) -> [f32; POINTS] {
    const G: [[f64; 3]; INPUT_TILE] = [
        [1.0 / 4.0, 0.0, 0.0],
        [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
        [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
        [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
        [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
        [0.0, 0.0, 1.0],
    ];
    let mut left = [[0.0f64; 3]; INPUT_TILE];
    for (row, g_row) in left.iter_mut().zip(&G) {
        for (column, value) in row.iter_mut().enumerate() {
            *value = (0..3)
                .map(|k| g_row[k] * f64::from(filter[k * 3 + column]))
                .sum();
        }
    }
    let mut transformed = [0.0f32; POINTS];
    for (row, left_row) in left.iter().enumerate() {
        for (column, g_row) in G.iter().enumerate() {
            let value: f64 = (0..3).map(|k| left_row[k] * g_row[k]).sum();
            transformed[row * INPUT_TILE + column] = value as f32;
        }
    }
    transformed
}

/// Eight values, one per tile.
type Lanes = [f32; LANES];

/// The 4x4 outputs of each lane's tile, row-major.
type OutputTiles = [[f32; OUTPUT_TILE * OUTPUT_TILE]; LANES];

/// Where one lane's input patch (6x6, or 4x4 for F(2x2, 3x3)) is: element `(row, column)` is
/// `data[offset + row * row_stride + column]`.
#[derive(Clone, Copy)]
struct PatchSource<'a> {
    data: &'a [f32],
    offset: usize,
    row_stride: usize,
}

impl PatchSource<'_> {
    /// Row `row` of a 6-wide patch.
    #[inline(always)]
    fn row(&self, row: usize) -> &[f32] {
        self.row_of(row, INPUT_TILE)
    }

    /// Row `row` of a patch `width` wide.
    #[inline(always)]
    fn row_of(&self, row: usize, width: usize) -> &[f32] {
        &self.data[self.offset + row * self.row_stride..][..width]
    }
}

/// Whether to use the AVX2 transforms (detected once per call).
fn avx2_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Transforms the inputs of `tiles` into `V`: one `[in_channels, tiles]` matrix per point, in
/// the GEMM's packed layout (`packed_rhs_index`), `matrix_length` floats apart.
fn transform_inputs(
    call: &WinogradCall<'_>,
    layout: &TileLayout,
    tiles: Range<usize>,
    matrix_length: usize,
    transformed: &mut [f32],
) {
    BANDS.with(|cell| {
        let scratch = &mut *cell.borrow_mut();
        Band::of_block(call, layout, tiles.clone(), &mut scratch.bands);
        let bands = &scratch.bands;
        // Zeros in the padding, for every channel (`Band::copy` writes only inside the image).
        let buffer_length = bands.iter().map(Band::copied_length).sum();
        scratch.buffer.clear();
        scratch.buffer.resize(buffer_length, 0.0);
        scratch.patches.clear();
        scratch.patches.extend(tiles.clone().map(|tile| {
            let (image, out_y, out_x) = layout.tile_origin(tile);
            let band = bands
                .iter()
                .position(|band| band.image == image)
                .expect("every tile's image has a band");
            (band, bands[band].patch_offset(call, out_y, out_x))
        }));
        transform_input_bands(
            call,
            layout,
            tiles,
            matrix_length,
            bands,
            &mut scratch.buffer,
            &scratch.patches,
            transformed,
        );
    });
}

/// `transform_inputs` once the block's bands are laid out: `band_buffer` holds the copied bands
/// (zeros in the padding) and `patches` each tile's band and patch offset.
#[allow(clippy::too_many_arguments)]
fn transform_input_bands(
    call: &WinogradCall<'_>,
    layout: &TileLayout,
    tiles: Range<usize>,
    matrix_length: usize,
    bands: &[Band],
    band_buffer: &mut [f32],
    patches: &[(usize, usize)],
    transformed: &mut [f32],
) {
    let use_avx2 = avx2_available();
    let variant = layout.variant;
    let input_tile = variant.input_tile();
    let input_plane = call.in_h * call.in_w;
    let zeros = [0.0f32; POINTS];
    for channel in 0..layout.in_channels {
        let plane = |image: usize| {
            &call.input[(image * layout.in_channels + channel) * input_plane..][..input_plane]
        };
        for band in bands {
            if let Some(start) = band.copied_at {
                band.copy(call, plane(band.image), &mut band_buffer[start..]);
            }
        }
        for first_tile in tiles.clone().step_by(LANES) {
            let column = first_tile - tiles.start;
            // Lanes past the block's last tile read zeros. A loop, not `std::array::from_fn`:
            // that kept its closure out of line, a call per lane whose result was copied back
            // through a stalled store forward (5% of ResNet-18's time).
            let mut sources = [PatchSource {
                data: &zeros,
                offset: 0,
                row_stride: input_tile,
            }; LANES];
            for (source, &(band, offset)) in sources.iter_mut().zip(&patches[column..]) {
                let band = &bands[band];
                let (data, row_stride) = match band.copied_at {
                    Some(start) => (&band_buffer[start..][..band.copied_length()], band.columns),
                    None => (plane(band.image), call.in_w),
                };
                *source = PatchSource {
                    data,
                    offset,
                    row_stride,
                };
            }
            // The 8 lanes of a group are contiguous: they share a panel of 16 columns.
            let start = packed_rhs_index(layout.in_channels, tiles.len(), channel, column);
            let destination = &mut transformed[start..];
            #[cfg(target_arch = "x86_64")]
            if use_avx2 {
                // SAFETY: The processor supports AVX2 and FMA (`avx2_available`).
                unsafe {
                    match variant {
                        Variant::F4x4 => {
                            x86_64::transform_input_group(&sources, destination, matrix_length)
                        }
                        Variant::F2x2 => {
                            x86_64::transform_input_group_f2x2(&sources, destination, matrix_length)
                        }
                    }
                };
                continue;
            }
            let _ = use_avx2;
            match variant {
                Variant::F4x4 => transform_input_group(&sources, destination, matrix_length),
                Variant::F2x2 => transform_input_group_f2x2(&sources, destination, matrix_length),
            }
        }
    }
}

/// The rectangle of one image's input that the patches of a block's tiles in that image read
/// (whole rows of tiles, so all tile columns): read in place when it lies inside the image, else
/// copied for each channel, with zeros where it reaches into the padding, into a buffer where
/// every patch is a plain strided read. A tile on the image's edge then costs what any tile
/// does, instead of a copy of its own patch per channel.
struct Band {
    image: usize,
    /// The input row and column of the rectangle's top-left corner (negative in the padding).
    top: isize,
    left: isize,
    rows: usize,
    columns: usize,
    /// Where the rectangle starts in the bands' buffer, when it is copied.
    copied_at: Option<usize>,
}

impl Band {
    /// The bands of the images that `tiles` cover, each placed after the previous in the buffer
    /// when copied.
    fn of_block(
        call: &WinogradCall<'_>,
        layout: &TileLayout,
        tiles: Range<usize>,
        bands: &mut Vec<Band>,
    ) {
        let output_tile = layout.variant.output_tile();
        let input_tile = layout.variant.input_tile();
        let first_image = tiles.start / layout.tiles_per_image;
        let last_image = (tiles.end - 1) / layout.tiles_per_image;
        let mut buffer_length = 0;
        bands.clear();
        bands.extend((first_image..=last_image).map(|image| {
            let image_tiles = image * layout.tiles_per_image..(image + 1) * layout.tiles_per_image;
            let first = tiles.start.max(image_tiles.start) - image_tiles.start;
            let last = tiles.end.min(image_tiles.end) - 1 - image_tiles.start;
            let (first_row, last_row) = (first / layout.tiles_x, last / layout.tiles_x);
            let top = (first_row * output_tile) as isize - call.padding[0] as isize;
            let left = -(call.padding[1] as isize);
            let rows = (last_row - first_row) * output_tile + input_tile;
            let columns = (layout.tiles_x - 1) * output_tile + input_tile;
            let inside = top >= 0
                && left >= 0
                && top + rows as isize <= call.in_h as isize
                && left + columns as isize <= call.in_w as isize;
            let copied_at = (!inside).then(|| {
                let start = buffer_length;
                buffer_length += rows * columns;
                start
            });
            Band {
                image,
                top,
                left,
                rows,
                columns,
                copied_at,
            }
        }));
    }

    /// The floats the band takes in the buffer.
    fn copied_length(&self) -> usize {
        if self.copied_at.is_some() {
            self.rows * self.columns
        } else {
            0
        }
    }

    /// Where the patch of the tile whose top-left output is `(out_y, out_x)` starts in the
    /// band's data: the buffer when copied, else the image plane.
    fn patch_offset(&self, call: &WinogradCall<'_>, out_y: usize, out_x: usize) -> usize {
        let y = out_y as isize - call.padding[0] as isize;
        let x = out_x as isize - call.padding[1] as isize;
        match self.copied_at {
            Some(_) => (y - self.top) as usize * self.columns + (x - self.left) as usize,
            None => y as usize * call.in_w + x as usize,
        }
    }

    /// Copies the part of the band inside the image from one channel's `plane` into
    /// `destination`. The rest, the padding, is the same in every channel: `destination` holds
    /// zeros there from the start, and nothing writes them.
    fn copy(&self, call: &WinogradCall<'_>, plane: &[f32], destination: &mut [f32]) {
        let width = call.in_w as isize;
        // The band columns inside the image, the same for every row.
        let first_column = (-self.left).clamp(0, self.columns as isize) as usize;
        let end_column =
            (width - self.left).clamp(first_column as isize, self.columns as isize) as usize;
        for (row, band_row) in destination[..self.rows * self.columns]
            .chunks_exact_mut(self.columns)
            .enumerate()
        {
            let y = self.top + row as isize;
            if y < 0 || y >= call.in_h as isize {
                continue;
            }
            let first_x = (self.left + first_column as isize) as usize;
            let source = &plane[y as usize * call.in_w + first_x..][..end_column - first_column];
            band_row[first_column..end_column].copy_from_slice(source);
        }
    }
}

/// `B^T d B` for the patches of one group of tiles, written as point `p` of lane `l` at
/// `destination[p * matrix_length + l]`; the portable twin of `x86_64::transform_input_group`.
fn transform_input_group(
    sources: &[PatchSource<'_>; LANES],
    destination: &mut [f32],
    matrix_length: usize,
) {
    let patches: [Lanes; POINTS] = std::array::from_fn(|point| {
        std::array::from_fn(|lane| sources[lane].row(point / INPUT_TILE)[point % INPUT_TILE])
    });
    let points = transform_input_tile(&patches);
    for (point, values) in points.iter().enumerate() {
        destination[point * matrix_length..][..LANES].copy_from_slice(values);
    }
}

/// `B^T d B` for the tile in each lane.
#[inline(always)]
fn transform_input_tile(patches: &[Lanes; POINTS]) -> [Lanes; POINTS] {
    let mut rows_done = [[0.0f32; LANES]; POINTS];
    for row in 0..INPUT_TILE {
        let values: [&Lanes; INPUT_TILE] =
            std::array::from_fn(|column| &patches[row * INPUT_TILE + column]);
        let points = input_points(values);
        for (column, point) in points.into_iter().enumerate() {
            rows_done[row * INPUT_TILE + column] = point;
        }
    }
    let mut transformed = [[0.0f32; LANES]; POINTS];
    for column in 0..INPUT_TILE {
        let values: [&Lanes; INPUT_TILE] =
            std::array::from_fn(|row| &rows_done[row * INPUT_TILE + column]);
        let points = input_points(values);
        for (row, point) in points.into_iter().enumerate() {
            transformed[row * INPUT_TILE + column] = point;
        }
    }
    transformed
}

/// `B^T x` for six values `x` per lane.
#[inline(always)]
fn input_points(x: [&Lanes; INPUT_TILE]) -> [Lanes; INPUT_TILE] {
    let mut points = [[0.0f32; LANES]; INPUT_TILE];
    for lane in 0..LANES {
        let [x0, x1, x2, x3, x4, x5] = x.map(|values| values[lane]);
        points[0][lane] = 4.0 * x0 - 5.0 * x2 + x4;
        points[1][lane] = (x3 + x4) - 4.0 * (x1 + x2);
        points[2][lane] = (x4 - x3) + 4.0 * (x1 - x2);
        points[3][lane] = (x4 - x2) + 2.0 * (x3 - x1);
        points[4][lane] = (x4 - x2) - 2.0 * (x3 - x1);
        points[5][lane] = 4.0 * x1 - 5.0 * x3 + x5;
    }
    points
}

/// Transforms one chunk's products `M`, 36 `[chunk_channels][row_stride]` matrices
/// `matrix_length` floats apart, back into the output tiles of `tiles`, with the epilogue.
fn transform_outputs(
    call: &WinogradCall<'_>,
    layout: &TileLayout,
    tiles: Range<usize>,
    (row_stride, matrix_length): (usize, usize),
    chunk: &WeightChunk,
    products: &[f32],
    destination: &OutputPointer,
) {
    let use_avx2 = avx2_available();
    let variant = layout.variant;
    let output_tile = variant.output_tile();
    let output_plane = call.out_h * call.out_w;
    let mut outputs: OutputTiles = [[0.0; OUTPUT_TILE * OUTPUT_TILE]; LANES];
    for first_tile in tiles.clone().step_by(LANES) {
        let column = first_tile - tiles.start;
        let lane_tiles = LANES.min(tiles.end - first_tile);
        let origins: [(usize, usize, usize); LANES] =
            std::array::from_fn(|lane| layout.tile_origin(first_tile + lane.min(lane_tiles - 1)));
        // Eight whole tiles, and an epilogue the vector code finishes in registers.
        let whole_group = use_avx2
            && variant == Variant::F4x4
            && lane_tiles == LANES
            && origins.iter().all(|&(_, top, left)| {
                top + OUTPUT_TILE <= call.out_h && left + OUTPUT_TILE <= call.out_w
            })
            && matches!(call.activation, None | Some(Activation::Relu));
        for chunk_channel in 0..chunk.out_channels {
            let channel = chunk.first_out_channel + chunk_channel;
            let bias = call.bias.map_or(0.0, |bias| bias[channel]);
            let group_products = &products[chunk_channel * row_stride + column..];
            let plane_start = |image: usize| (image * layout.out_channels + channel) * output_plane;
            #[cfg(target_arch = "x86_64")]
            if whole_group {
                let starts =
                    origins.map(|(image, top, left)| plane_start(image) + top * call.out_w + left);
                // SAFETY: `whole_group` implies `use_avx2`: the processor supports AVX2 and FMA.
                unsafe {
                    x86_64::transform_output_group_into(
                        group_products,
                        matrix_length,
                        bias,
                        &starts,
                        call.out_w,
                        call.residual,
                        call.activation.is_some(),
                        destination,
                    )
                };
                continue;
            }
            let _ = whole_group;
            transform_output_group_of(
                variant,
                use_avx2,
                group_products,
                matrix_length,
                bias,
                &mut outputs,
            );
            if let Some(residual) = call.residual {
                for (tile, &(image, top, left)) in outputs.iter_mut().zip(&origins).take(lane_tiles)
                {
                    for_each_output_row(call, output_tile, top, left, |row, index, columns| {
                        let values = &mut tile[row * output_tile..][..columns];
                        let skips = &residual[plane_start(image) + index..][..columns];
                        for (value, &skip) in values.iter_mut().zip(skips) {
                            *value += skip;
                        }
                    });
                }
            }
            match call.activation {
                // ReLU inline: a call per 128 values costs as much as the transform.
                Some(Activation::Relu) => {
                    for value in outputs.as_flattened_mut() {
                        *value = relu(*value);
                    }
                }
                Some(activation) => {
                    for tile in &mut outputs {
                        apply_activation_in_place(
                            &mut tile[..output_tile * output_tile],
                            activation,
                        );
                    }
                }
                None => {}
            }
            for (tile, &(image, top, left)) in outputs.iter().zip(&origins).take(lane_tiles) {
                for_each_output_row(call, output_tile, top, left, |row, index, columns| {
                    destination.write(
                        plane_start(image) + index,
                        &tile[row * output_tile..][..columns],
                    );
                });
            }
        }
    }
}

/// `A^T m A + bias` of `variant` for the products of one group of tiles, with the AVX2 code when
/// `use_avx2` (which `avx2_available` must have said).
#[inline(always)]
fn transform_output_group_of(
    variant: Variant,
    use_avx2: bool,
    products: &[f32],
    matrix_length: usize,
    bias: f32,
    outputs: &mut OutputTiles,
) {
    #[cfg(target_arch = "x86_64")]
    if use_avx2 {
        // SAFETY: The processor supports AVX2 and FMA (the caller checked `avx2_available`).
        unsafe {
            match variant {
                Variant::F4x4 => {
                    x86_64::transform_output_group(products, matrix_length, bias, outputs)
                }
                Variant::F2x2 => {
                    x86_64::transform_output_group_f2x2(products, matrix_length, bias, outputs)
                }
            }
        };
        return;
    }
    let _ = use_avx2;
    match variant {
        Variant::F4x4 => transform_output_group(products, matrix_length, bias, outputs),
        Variant::F2x2 => transform_output_group_f2x2(products, matrix_length, bias, outputs),
    }
}

/// Calls `visit(row, index in the plane of the row's first output, outputs in the row)` for
/// each row of the `output_tile`-sided tile at `(top, left)` inside the output (edge tiles are
/// clipped).
#[inline(always)]
fn for_each_output_row(
    call: &WinogradCall<'_>,
    output_tile: usize,
    top: usize,
    left: usize,
    mut visit: impl FnMut(usize, usize, usize),
) {
    let rows = output_tile.min(call.out_h - top);
    let columns = output_tile.min(call.out_w - left);
    for row in 0..rows {
        visit(row, (top + row) * call.out_w + left, columns);
    }
}

/// `A^T m A + bias` for the products of one group of tiles (point `p` of lane `l` at
/// `products[p * matrix_length + l]`), into each lane's 4x4 outputs; the portable twin of
/// `x86_64::transform_output_group`.
fn transform_output_group(
    products: &[f32],
    matrix_length: usize,
    bias: f32,
    outputs: &mut OutputTiles,
) {
    let points: [Lanes; POINTS] = std::array::from_fn(|point| {
        std::array::from_fn(|lane| products[point * matrix_length + lane])
    });
    let results = transform_output_tile(&points);
    for (index, values) in results.iter().enumerate() {
        for (tile, &value) in outputs.iter_mut().zip(values) {
            tile[index] = value + bias;
        }
    }
}

/// `A^T m A` for the 6x6 products in each lane: the 4x4 outputs, row-major.
#[inline(always)]
fn transform_output_tile(points: &[Lanes; POINTS]) -> [Lanes; OUTPUT_TILE * OUTPUT_TILE] {
    let mut rows_done = [[0.0f32; LANES]; INPUT_TILE * OUTPUT_TILE];
    for row in 0..INPUT_TILE {
        let values: [&Lanes; INPUT_TILE] =
            std::array::from_fn(|column| &points[row * INPUT_TILE + column]);
        let outputs = output_points(values);
        for (column, output) in outputs.into_iter().enumerate() {
            rows_done[row * OUTPUT_TILE + column] = output;
        }
    }
    let mut outputs = [[0.0f32; LANES]; OUTPUT_TILE * OUTPUT_TILE];
    for column in 0..OUTPUT_TILE {
        let values: [&Lanes; INPUT_TILE] =
            std::array::from_fn(|row| &rows_done[row * OUTPUT_TILE + column]);
        let results = output_points(values);
        for (row, result) in results.into_iter().enumerate() {
            outputs[row * OUTPUT_TILE + column] = result;
        }
    }
    outputs
}

/// `A^T m` for six values `m` per lane.
#[inline(always)]
fn output_points(m: [&Lanes; INPUT_TILE]) -> [Lanes; OUTPUT_TILE] {
    let mut outputs = [[0.0f32; LANES]; OUTPUT_TILE];
    for lane in 0..LANES {
        let [m0, m1, m2, m3, m4, m5] = m.map(|values| values[lane]);
        let (sum_12, difference_12) = (m1 + m2, m1 - m2);
        let (sum_34, difference_34) = (m3 + m4, m3 - m4);
        outputs[0][lane] = m0 + sum_12 + sum_34;
        outputs[1][lane] = difference_12 + 2.0 * difference_34;
        outputs[2][lane] = sum_12 + 4.0 * sum_34;
        outputs[3][lane] = difference_12 + 8.0 * difference_34 + m5;
    }
    outputs
}

/// F(2x2, 3x3)'s `G g G^T` for one 3x3 filter, computed in f64; the 4x4 result row-major.
/// `G` is `[[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]`.
fn transform_filter_f2x2(filter: &[f32]) -> [f32; F2X2_POINTS] {
    const G: [[f64; 3]; F2X2_INPUT_TILE] = [
        [1.0, 0.0, 0.0],
        [0.5, 0.5, 0.5],
        [0.5, -0.5, 0.5],
        [0.0, 0.0, 1.0],
    ];
    let mut transformed = [0.0f32; F2X2_POINTS];
    for (row, g_row) in G.iter().enumerate() {
        for (column, g_column) in G.iter().enumerate() {
            let value: f64 = (0..3)
                .flat_map(|k| (0..3).map(move |l| (k, l)))
                .map(|(k, l)| g_row[k] * f64::from(filter[k * 3 + l]) * g_column[l])
                .sum();
            transformed[row * F2X2_INPUT_TILE + column] = value as f32;
        }
    }
    transformed
}

/// F(2x2, 3x3)'s `B^T d B` for the 4x4 patches of one group of tiles, written as point `p` of
/// lane `l` at `destination[p * matrix_length + l]`. Inlined into `x86_64`'s AVX2 build of it.
#[inline(always)]
fn transform_input_group_f2x2(
    sources: &[PatchSource<'_>; LANES],
    destination: &mut [f32],
    matrix_length: usize,
) {
    const SIDE: usize = F2X2_INPUT_TILE;
    let patches: [Lanes; F2X2_POINTS] = std::array::from_fn(|point| {
        std::array::from_fn(|lane| sources[lane].row_of(point / SIDE, SIDE)[point % SIDE])
    });
    let mut rows_done = [[0.0f32; LANES]; F2X2_POINTS];
    for row in 0..SIDE {
        let points = input_points_f2x2(std::array::from_fn(|column| &patches[row * SIDE + column]));
        rows_done[row * SIDE..][..SIDE].copy_from_slice(&points);
    }
    for column in 0..SIDE {
        let points = input_points_f2x2(std::array::from_fn(|row| &rows_done[row * SIDE + column]));
        for (row, values) in points.iter().enumerate() {
            destination[(row * SIDE + column) * matrix_length..][..LANES].copy_from_slice(values);
        }
    }
}

/// F(2x2, 3x3)'s `B^T x` for four values `x` per lane: `B^T` is `[[1, 0, -1, 0], [0, 1, 1, 0],
/// [0, -1, 1, 0], [0, 1, 0, -1]]`.
#[inline(always)]
fn input_points_f2x2(x: [&Lanes; F2X2_INPUT_TILE]) -> [Lanes; F2X2_INPUT_TILE] {
    let mut points = [[0.0f32; LANES]; F2X2_INPUT_TILE];
    for lane in 0..LANES {
        let [x0, x1, x2, x3] = x.map(|values| values[lane]);
        points[0][lane] = x0 - x2;
        points[1][lane] = x1 + x2;
        points[2][lane] = x2 - x1;
        points[3][lane] = x1 - x3;
    }
    points
}

/// F(2x2, 3x3)'s `A^T m A + bias` for the products of one group of tiles (point `p` of lane `l`
/// at `products[p * matrix_length + l]`), into the first four values (2x2, row-major) of each
/// lane's outputs. Inlined into `x86_64`'s AVX2 build of it.
#[inline(always)]
fn transform_output_group_f2x2(
    products: &[f32],
    matrix_length: usize,
    bias: f32,
    outputs: &mut OutputTiles,
) {
    const SIDE: usize = F2X2_INPUT_TILE;
    let points: [Lanes; F2X2_POINTS] = std::array::from_fn(|point| {
        products[point * matrix_length..][..LANES]
            .try_into()
            .expect("LANES values")
    });
    let mut rows_done = [[0.0f32; LANES]; SIDE * 2];
    for row in 0..SIDE {
        let results =
            output_points_f2x2(std::array::from_fn(|column| &points[row * SIDE + column]));
        rows_done[row * 2..][..2].copy_from_slice(&results);
    }
    for column in 0..2 {
        let results = output_points_f2x2(std::array::from_fn(|row| &rows_done[row * 2 + column]));
        for (row, values) in results.iter().enumerate() {
            for (tile, &value) in outputs.iter_mut().zip(values) {
                tile[row * 2 + column] = value + bias;
            }
        }
    }
}

/// F(2x2, 3x3)'s `A^T m` for four values `m` per lane: `A^T` is `[[1, 1, 1, 0], [0, 1, -1,
/// -1]]`.
#[inline(always)]
fn output_points_f2x2(m: [&Lanes; F2X2_INPUT_TILE]) -> [Lanes; 2] {
    let mut outputs = [[0.0f32; LANES]; 2];
    for lane in 0..LANES {
        let [m0, m1, m2, m3] = m.map(|values| values[lane]);
        outputs[0][lane] = m0 + m1 + m2;
        outputs[1][lane] = m1 - m2 - m3;
    }
    outputs
}

#[cfg(test)]
mod tests;
