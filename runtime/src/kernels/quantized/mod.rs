//! Linear layers on quantized weights: `y = x * W^T + b` with `W` stored in a GGUF block format
//! (Q8_0, Q4_0, Q4_1; see `blocks.rs`) and never dequantized as a whole.
//!
//! Two modes, as llama.cpp offers:
//! - **Exact**: the activations stay `f32`, and each block of weights is dequantized in
//!   registers just before it is multiplied. The result is the f32 layer's on the dequantized
//!   weights, up to the order of additions.
//! - **Fast**: each row of activations is first quantized to 8 bits per 32-value block (a scale
//!   and the block's sum kept in `f32`), and blocks are multiplied in integers (`i8 x u4` or
//!   `i8 x i8` products summed in `i32`), then scaled. This is what llama.cpp does for Q4/Q8
//!   weights: it reads less and computes less, at the cost of rounding the activations. A
//!   prompt's chunk of `TILED_MIN_ROWS` rows or more multiplies the same rounded activations in
//!   f32, on the exact mode's tiles, which the integer kernels cannot match without 8-bit
//!   dot-product instructions: the same values, up to the order of the additions.
//!
//! Decoding one token is bound by streaming the weights from memory, so the row kernels read
//! every weight byte once per call: the weight rows are cut among the threads, and each task
//! multiplies its rows by every input row while a row is in L1. For a prompt's chunk of several
//! input rows, each task dequantizes a few weight rows at a time into f32 and runs the GEMM's
//! micro-kernel on them against the input rows, and for long inputs the GEMM packs its panels
//! straight from the blocks (`QuantizedSource`), so a prompt runs at GEMM speed.
//!
//! Every kernel has a plain twin in `tests.rs`: dequantize with `blocks::dequantize_row`, then
//! multiply in `f64`.

mod blocks;
mod rows;
#[cfg(test)]
mod tests;
#[cfg(target_arch = "x86_64")]
mod x86_64;

pub use nnc_ops::quant::{BLOCK_LENGTH, QuantFormat, QuantizedMode};

use std::sync::Arc;

use crate::error::{KernelError, KernelResult, check_length, invalid_parameter};
use crate::kernels::activation::{Activation, apply_activation_in_place};
use crate::kernels::gemm::{
    Bias, Epilogue, GemmOptions, Lhs, MatrixRef, RhsSource, gemm_from_source,
};
use crate::kernels::linear::PackedLinear;
use rows::{ActivationBlocks, RowKernels};

/// A row-major matrix of `rows x cols` values stored in a block format: each row is
/// `cols / BLOCK_LENGTH` blocks. Cloning shares the bytes (a tied embedding and head hold one
/// copy).
#[derive(Clone, Debug)]
pub struct QuantizedMatrix {
    format: QuantFormat,
    rows: usize,
    cols: usize,
    row_bytes: usize,
    data: Arc<[u8]>,
}

impl QuantizedMatrix {
    /// Wraps bytes laid out as GGUF stores a tensor of shape `[rows, cols]` (GGUF's `ne =
    /// [cols, rows]`). Fails unless `cols` is a whole number of blocks and `data` holds exactly
    /// the bytes of `rows` rows.
    pub fn from_bytes(
        format: QuantFormat,
        rows: usize,
        cols: usize,
        data: impl Into<Arc<[u8]>>,
    ) -> KernelResult<Self> {
        let data = data.into();
        let row_bytes = row_bytes(format, cols)?;
        let length = rows
            .checked_mul(row_bytes)
            .ok_or(KernelError::SizeOverflow {
                operation: "quantized matrix",
            })?;
        check_length("quantized matrix", "data (bytes)", length, data.len())?;
        Ok(Self {
            format,
            rows,
            cols,
            row_bytes,
            data,
        })
    }

    /// Quantizes a row-major `rows x cols` f32 matrix, as llama.cpp's reference quantizers do.
    /// Fails on a non-finite value (it has no quantized form) or a `cols` that is not a whole
    /// number of blocks.
    pub fn quantize(
        format: QuantFormat,
        values: &[f32],
        rows: usize,
        cols: usize,
    ) -> KernelResult<Self> {
        let length = rows.checked_mul(cols).ok_or(KernelError::SizeOverflow {
            operation: "quantize",
        })?;
        check_length("quantize", "values", length, values.len())?;
        let row_bytes = row_bytes(format, cols)?;
        if let Some(index) = values.iter().position(|value| !value.is_finite()) {
            return Err(invalid_parameter(
                "quantize",
                format!(
                    "value {index} (row {}, column {}) is {}; only finite values can be quantized",
                    index / cols,
                    index % cols,
                    values[index]
                ),
            ));
        }
        if format == QuantFormat::F16
            && let Some(index) = values
                .iter()
                .position(|value| value.abs() > f32::from(half::f16::MAX))
        {
            return Err(invalid_parameter(
                "quantize",
                format!(
                    "value {index} (row {}, column {}) is {}, beyond the largest f16 ({}); \
                     keep this layer in f32",
                    index / cols,
                    index % cols,
                    values[index],
                    half::f16::MAX
                ),
            ));
        }
        let mut data = vec![0u8; rows * row_bytes];
        for (block, values) in data
            .chunks_exact_mut(format.block_bytes())
            .zip(values.chunks_exact(BLOCK_LENGTH))
        {
            blocks::quantize_block(format, values, block);
        }
        Self::from_bytes(format, rows, cols, data)
    }

    /// The storage format.
    pub fn format(&self) -> QuantFormat {
        self.format
    }

    /// Rows (output features of a linear layer, entries of an embedding table).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Values per row.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The stored bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }

    /// The bytes of row `row`.
    fn row(&self, row: usize) -> &[u8] {
        &self.data[row * self.row_bytes..][..self.row_bytes]
    }

    /// Writes the values of row `row` into `output` (`cols` values).
    pub fn dequantize_row(&self, row: usize, output: &mut [f32]) -> KernelResult<()> {
        if row >= self.rows {
            return Err(KernelError::IndexOutOfRange {
                operation: "dequantize row",
                index: row,
                length: self.rows,
            });
        }
        check_length("dequantize row", "output", self.cols, output.len())?;
        blocks::dequantize_row(self.format, self.row(row), output);
        Ok(())
    }

    /// Every value, row-major, as f32.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut output = vec![0.0; self.rows * self.cols];
        for (row, output) in output.chunks_exact_mut(self.cols.max(1)).enumerate() {
            blocks::dequantize_row(self.format, self.row(row), output);
        }
        output
    }
}

fn row_bytes(format: QuantFormat, cols: usize) -> KernelResult<usize> {
    format.row_bytes(cols).ok_or_else(|| {
        invalid_parameter(
            "quantized matrix",
            format!(
                "a {format} row holds whole blocks of {BLOCK_LENGTH} values, \
                 but the rows have {cols} values"
            ),
        )
    })
}

/// `output[i, :] = table[ids[i], :]` dequantized, for a quantized embedding table; ids are
/// checked as by [`crate::kernels::embedding`].
pub fn quantized_embedding(
    table: &QuantizedMatrix,
    ids: &[i64],
    output: &mut [f32],
) -> KernelResult<()> {
    let dim = table.cols;
    let output_length = ids
        .len()
        .checked_mul(dim)
        .ok_or(KernelError::SizeOverflow {
            operation: "embedding",
        })?;
    check_length("embedding", "output", output_length, output.len())?;
    crate::kernels::embedding::check_ids(ids, table.rows)?;
    for (output, &id) in output.chunks_exact_mut(dim.max(1)).zip(ids) {
        // Every id was checked above.
        blocks::dequantize_row(table.format, table.row(id as usize), output);
    }
    Ok(())
}

/// [`quantized_embedding`] with the table's size checked against the `[num_embeddings,
/// embedding_dim]` the caller expects, as [`crate::kernels::embedding::embedding`] checks an f32
/// table's length.
pub fn quantized_embedding_of_size(
    table: &QuantizedMatrix,
    num_embeddings: usize,
    embedding_dim: usize,
    ids: &[i64],
    output: &mut [f32],
) -> KernelResult<()> {
    check_length("embedding", "table rows", num_embeddings, table.rows)?;
    check_length("embedding", "table columns", embedding_dim, table.cols)?;
    quantized_embedding(table, ids, output)
}

/// A linear layer on a quantized weight of shape `[out_features, in_features]`, with an
/// optional bias and activation, as [`crate::kernels::PackedLinear`] is for f32 weights.
#[derive(Clone, Debug)]
pub struct QuantizedLinear {
    weight: QuantizedMatrix,
    bias: Option<Vec<f32>>,
    activation: Option<Activation>,
    mode: QuantizedMode,
}

/// From this many input rows on, both modes dequantize groups of weight rows into f32 and run
/// the GEMM's micro-kernel on them (`rows::multiply_exact_tiled`), the fast mode on its rounded
/// activations; below it, each weight block is widened in registers once per four input rows
/// (`x86_64::exact_dot4`, `fast_dot4`, the rest one by one), which costs less than a tile whose
/// panel of 16 input rows is mostly empty. A Q4_1 layer of 1536 x 576, one thread,
/// first-generation Zen, row kernels against tiles, exact mode: 5 rows 530 / 617 us, 6 rows 686
/// / 619, 7 rows 841 / 622, 8 rows 724 / 613, 11 rows 1183 / 839; fast mode: 5 rows 538 / 697,
/// 6 rows 562 / 623, 7 rows 652 / 639, 8 rows 846 / 649.
const TILED_MIN_ROWS: usize = 7;

/// From this many input rows on, the layer runs as a GEMM whose panels are dequantized from the
/// blocks (`QuantizedSource`): for long inputs the GEMM's cache blocking keeps the tiles' input
/// panels in cache, where the tiled path streams them once per group of weight rows. The same
/// layer, one thread, tiles against GEMM: 96 rows 6254 / 8530 us, 128 rows 8246 / 7170, 192 rows
/// 12312 / 10195.
const GEMM_MIN_ROWS: usize = 128;

impl QuantizedLinear {
    /// A layer on `weight` (`[out_features, in_features]`) with an optional bias of length
    /// `out_features`. A weight in F16 multiplies in the exact mode whatever `mode` asks: its
    /// values are floats, with no integer product to take.
    pub fn new(
        weight: QuantizedMatrix,
        bias: Option<&[f32]>,
        mode: QuantizedMode,
    ) -> KernelResult<Self> {
        if let Some(bias) = bias {
            check_length("quantized linear", "bias", weight.rows, bias.len())?;
        }
        let mode = if weight.format == QuantFormat::F16 {
            QuantizedMode::Exact
        } else {
            mode
        };
        Ok(Self {
            weight,
            bias: bias.map(<[f32]>::to_vec),
            activation: None,
            mode,
        })
    }

    /// The same layer with `activation` applied to its output.
    pub fn with_activation(mut self, activation: Option<Activation>) -> Self {
        self.activation = activation;
        self
    }

    /// The length of an input row.
    pub fn in_features(&self) -> usize {
        self.weight.cols
    }

    /// The length of an output row.
    pub fn out_features(&self) -> usize {
        self.weight.rows
    }

    /// The quantized weight.
    pub fn weight(&self) -> &QuantizedMatrix {
        &self.weight
    }

    /// How the layer multiplies.
    pub fn mode(&self) -> QuantizedMode {
        self.mode
    }

    /// `output[rows, out] = activation(input[rows, in] * W^T + b)`; both row-major.
    pub fn forward(&self, input: &[f32], rows: usize, output: &mut [f32]) -> KernelResult<()> {
        self.run(input, rows, None, output)
    }

    /// `output = activation(input * W^T + b + residual)`, `residual` laid out like `output`.
    pub fn forward_residual(
        &self,
        input: &[f32],
        rows: usize,
        residual: &[f32],
        output: &mut [f32],
    ) -> KernelResult<()> {
        self.run(input, rows, Some(residual), output)
    }

    fn run(
        &self,
        input: &[f32],
        rows: usize,
        residual: Option<&[f32]>,
        output: &mut [f32],
    ) -> KernelResult<()> {
        let (in_features, out_features) = (self.in_features(), self.out_features());
        let input_length = rows
            .checked_mul(in_features)
            .ok_or(KernelError::SizeOverflow {
                operation: "quantized linear",
            })?;
        let output_length = rows
            .checked_mul(out_features)
            .ok_or(KernelError::SizeOverflow {
                operation: "quantized linear",
            })?;
        check_length("quantized linear", "input", input_length, input.len())?;
        check_length("quantized linear", "output", output_length, output.len())?;
        if let Some(residual) = residual {
            check_length(
                "quantized linear",
                "residual",
                output_length,
                residual.len(),
            )?;
        }
        if rows == 0 || out_features == 0 {
            return Ok(());
        }
        let kernels = RowKernels::detected();
        if rows >= TILED_MIN_ROWS {
            // The fast mode's activations, rounded as its integer products see them and restored
            // to f32: the f32 tiles then compute the same products (up to the order of the
            // additions), faster than the integer row kernels on a prompt's chunk.
            let restored;
            let input = match self.mode {
                QuantizedMode::Exact => input,
                QuantizedMode::Fast => {
                    restored = ActivationBlocks::rounded(input);
                    &restored
                }
            };
            if rows >= GEMM_MIN_ROWS {
                return self.run_gemm(input, rows, residual, output);
            }
            rows::multiply_exact_tiled(&kernels, &self.weight, input, rows, output);
            self.finish(output, residual);
            return Ok(());
        }
        match self.mode {
            QuantizedMode::Exact => {
                let sums = rows::block_sums(input);
                rows::multiply_exact(&kernels, &self.weight, input, &sums, rows, output);
            }
            QuantizedMode::Fast => {
                let activations = ActivationBlocks::quantize(input, rows, in_features);
                rows::multiply_fast(&kernels, &self.weight, &activations, rows, output);
            }
        }
        self.finish(output, residual);
        Ok(())
    }

    /// Adds the bias and the residual and applies the activation, in the GEMM epilogue's order.
    fn finish(&self, output: &mut [f32], residual: Option<&[f32]>) {
        let out_features = self.out_features();
        if let Some(bias) = &self.bias {
            for row in output.chunks_exact_mut(out_features) {
                for (value, &bias) in row.iter_mut().zip(bias) {
                    *value += bias;
                }
            }
        }
        if let Some(residual) = residual {
            for (value, &residual) in output.iter_mut().zip(residual) {
                *value += residual;
            }
        }
        if let Some(activation) = self.activation {
            apply_activation_in_place(output, activation);
        }
    }

    fn run_gemm(
        &self,
        input: &[f32],
        rows: usize,
        residual: Option<&[f32]>,
        output: &mut [f32],
    ) -> KernelResult<()> {
        let bias = self.bias.as_deref().map(Bias::PerColumn);
        let epilogue = Epilogue::from_parts(bias, self.activation);
        let input = MatrixRef::row_major(input, rows, self.in_features())?;
        gemm_from_source(
            Lhs::Matrix(input),
            &QuantizedSource(&self.weight),
            self.in_features(),
            self.out_features(),
            output,
            self.out_features(),
            &GemmOptions {
                accumulate: false,
                epilogue,
                residual,
            },
        )
    }
}

/// A linear layer whose weight storage was decided when the weight was loaded (`--quantize
/// gguf`: each weight as the file stores it): on blocks, or on f32 weights packed for the GEMM.
/// Both run the same calls.
#[derive(Clone, Debug)]
pub enum StoredLinear {
    F32(PackedLinear),
    Quantized(QuantizedLinear),
}

impl StoredLinear {
    /// The same layer with `activation` applied to its output.
    pub fn with_activation(self, activation: Option<Activation>) -> Self {
        match self {
            StoredLinear::F32(linear) => StoredLinear::F32(linear.with_activation(activation)),
            StoredLinear::Quantized(linear) => {
                StoredLinear::Quantized(linear.with_activation(activation))
            }
        }
    }

    /// `output[rows, out] = activation(input[rows, in] * W^T + b)`; both row-major.
    pub fn forward(&self, input: &[f32], rows: usize, output: &mut [f32]) -> KernelResult<()> {
        match self {
            StoredLinear::F32(linear) => linear.forward(input, rows, output),
            StoredLinear::Quantized(linear) => linear.forward(input, rows, output),
        }
    }

    /// `output = activation(input * W^T + b + residual)`, `residual` laid out like `output`.
    pub fn forward_residual(
        &self,
        input: &[f32],
        rows: usize,
        residual: &[f32],
        output: &mut [f32],
    ) -> KernelResult<()> {
        match self {
            StoredLinear::F32(linear) => linear.forward_residual(input, rows, residual, output),
            StoredLinear::Quantized(linear) => {
                linear.forward_residual(input, rows, residual, output)
            }
        }
    }
}

/// `W^T` (`in_features x out_features`) as a source of GEMM panels: a panel's column `j` is
/// weight row `first_column + j`, dequantized over the panel's rows of k.
struct QuantizedSource<'a>(&'a QuantizedMatrix);

impl RhsSource for QuantizedSource<'_> {
    fn pack_panel(
        &self,
        first_row: usize,
        depth: usize,
        first_column: usize,
        width: usize,
        panel: &mut [f32],
    ) {
        let matrix = self.0;
        let nr = crate::kernels::gemm::NR;
        let panel = &mut panel[..depth * nr];
        let kernels = RowKernels::detected();
        let block_bytes = matrix.format.block_bytes();
        let end = first_row + depth;
        // The blocks that cover rows `first_row..end` of k, dequantized whole for each column,
        // and their part inside the window copied down column `j` of the panel.
        let (first_block, end_block) = (first_row / BLOCK_LENGTH, end.div_ceil(BLOCK_LENGTH));
        let mut values = vec![0.0f32; (end_block - first_block) * BLOCK_LENGTH];
        let offset = first_row - first_block * BLOCK_LENGTH;
        for j in 0..nr {
            if j >= width {
                for row in 0..depth {
                    panel[row * nr + j] = 0.0;
                }
                continue;
            }
            let weight_row = matrix.row(first_column + j);
            let blocks = &weight_row[first_block * block_bytes..end_block * block_bytes];
            kernels.dequantize_row(matrix.format, blocks, &mut values);
            for (k, &value) in values[offset..][..depth].iter().enumerate() {
                panel[k * nr + j] = value;
            }
        }
    }
}
