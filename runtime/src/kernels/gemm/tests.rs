use super::tile::{MAX_STRIP_PANELS, RowMajorTileKernelWithEpilogue, TileOutput};
use super::*;
use crate::reference;
use crate::test_support::{assert_close, values};
use proptest::prelude::*;

/// One random product: shapes, layouts, packing and epilogue.
#[derive(Debug, Clone)]
struct Case {
    rows: usize,
    depth: usize,
    cols: usize,
    a_transposed: bool,
    b_transposed: bool,
    a_packed: bool,
    b_packed: bool,
    accumulate: bool,
    row_padding: usize,
    bias: Option<bool>,
    /// A residual laid out like C (padding included), when present.
    residual: Option<Vec<f32>>,
    activation: Option<Activation>,
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
    bias_values: Vec<f32>,
}

/// No activation, or any one finite on finite inputs (random products may be negative or
/// large): the clamps the micro-kernels apply in registers (relu, relu6, leaky relu) and the
/// others the driver applies to finished rows.
fn activations() -> impl Strategy<Value = Option<Activation>> {
    let finite: Vec<Activation> = Activation::ALL
        .into_iter()
        .filter(|activation| activation.is_finite_on_finite_inputs())
        .collect();
    prop_oneof![Just(None), prop::sample::select(finite).prop_map(Some),]
}

fn cases(max_rows: usize, max_depth: usize, max_cols: usize) -> impl Strategy<Value = Case> {
    cases_of_depths(max_rows, 1..=max_depth, max_cols)
}

/// [`cases`] with depths drawn from `depths`.
fn cases_of_depths(
    max_rows: usize,
    depths: impl Strategy<Value = usize>,
    max_cols: usize,
) -> impl Strategy<Value = Case> {
    cases_of_shapes(1..=max_rows, depths, max_cols)
}

fn cases_of_shapes(
    rows: impl Strategy<Value = usize>,
    depths: impl Strategy<Value = usize>,
    max_cols: usize,
) -> impl Strategy<Value = Case> {
    (rows, depths, 1..=max_cols, 0..3usize)
        .prop_flat_map(|(rows, depth, cols, row_padding)| {
            let c_length = rows * (cols + row_padding);
            (
                (
                    Just((rows, depth, cols, row_padding)),
                    any::<[bool; 5]>(),
                    prop::option::of(any::<bool>()),
                    activations(),
                    prop::option::of(values(c_length)),
                ),
                (
                    values(rows * depth),
                    values(depth * cols),
                    values(c_length),
                    values(rows.max(cols)),
                ),
            )
        })
        .prop_map(
            |(
                ((rows, depth, cols, row_padding), flags, bias, activation, residual),
                (a, b, c, bias_values),
            )| {
                Case {
                    rows,
                    depth,
                    cols,
                    a_transposed: flags[0],
                    b_transposed: flags[1],
                    a_packed: flags[2],
                    b_packed: flags[3],
                    accumulate: flags[4],
                    row_padding,
                    bias,
                    residual,
                    activation,
                    a,
                    b,
                    c,
                    bias_values,
                }
            },
        )
}

impl Case {
    fn a_matrix(&self) -> MatrixRef<'_> {
        if self.a_transposed {
            MatrixRef::row_major(&self.a, self.depth, self.rows)
                .unwrap()
                .transposed()
        } else {
            MatrixRef::row_major(&self.a, self.rows, self.depth).unwrap()
        }
    }

    fn b_matrix(&self) -> MatrixRef<'_> {
        if self.b_transposed {
            MatrixRef::row_major(&self.b, self.cols, self.depth)
                .unwrap()
                .transposed()
        } else {
            MatrixRef::row_major(&self.b, self.depth, self.cols).unwrap()
        }
    }

    fn bias(&self) -> Option<Bias<'_>> {
        self.bias.map(|per_row| {
            if per_row {
                Bias::PerRow(&self.bias_values[..self.rows])
            } else {
                Bias::PerColumn(&self.bias_values[..self.cols])
            }
        })
    }

    fn epilogue(&self) -> Epilogue<'_> {
        match (self.bias(), self.activation) {
            (None, None) => Epilogue::None,
            (Some(bias), None) => Epilogue::Bias(bias),
            (None, Some(activation)) => Epilogue::Activation(activation),
            (Some(bias), Some(activation)) => Epilogue::BiasActivation(bias, activation),
        }
    }

    /// The case's accumulation, epilogue and residual.
    fn options(&self) -> GemmOptions<'_> {
        GemmOptions {
            accumulate: self.accumulate,
            epilogue: self.epilogue(),
            residual: self.residual.as_deref(),
        }
    }

    /// Runs the fast kernel and returns C.
    fn run(&self, execution: Execution) -> Vec<f32> {
        let packed_a = PackedLhsMatrix::from_matrix(self.a_matrix());
        let packed_b = PackedMatrix::from_matrix(self.b_matrix());
        let a = if self.a_packed {
            Lhs::Packed(&packed_a)
        } else {
            Lhs::Matrix(self.a_matrix())
        };
        let matrix_source = MatrixSource(self.b_matrix());
        let b = if self.b_packed {
            RhsOperand::Packed(packed_b.view(), packed_b.cols)
        } else {
            RhsOperand::Source {
                source: &matrix_source,
                depth: self.depth,
                cols: self.cols,
            }
        };
        let mut c = self.c.clone();
        gemm_with(
            a,
            b,
            &mut c,
            self.cols + self.row_padding,
            &self.options(),
            execution,
        )
        .unwrap();
        c
    }

    /// The reference result, with C's padding left as it was.
    fn expected(&self) -> Vec<f32> {
        let product = reference::gemm(self.a_matrix(), self.b_matrix());
        let stride = self.cols + self.row_padding;
        let mut c = self.c.clone();
        for i in 0..self.rows {
            for j in 0..self.cols {
                let mut value = product[i * self.cols + j];
                if self.accumulate {
                    value += self.c[i * stride + j];
                }
                match self.bias() {
                    Some(Bias::PerRow(bias)) => value += bias[i],
                    Some(Bias::PerColumn(bias)) => value += bias[j],
                    None => {}
                }
                if let Some(residual) = &self.residual {
                    value += residual[i * stride + j];
                }
                if let Some(activation) = self.activation {
                    value = reference::activation(value, activation);
                }
                c[i * stride + j] = value;
            }
        }
        c
    }
}

fn portable() -> Execution {
    Execution {
        parallel: false,
        kernel: tile::GemmKernels::PORTABLE,
        source_column_block: SOURCE_NC,
        rows_only: false,
        one_row_kernels: false,
    }
}

fn detected(parallel: bool) -> Execution {
    Execution::detected(parallel)
}

/// The kernels of every instruction set this processor has (portable, AVX2, AVX-512), so that
/// each path is tested whatever `detected` picks.
fn every_available_kernel() -> Vec<(GemmIsa, tile::GemmKernels)> {
    [GemmIsa::Portable, GemmIsa::Avx2Fma, GemmIsa::Avx512]
        .into_iter()
        .filter_map(|isa| Some((isa, tile::GemmKernels::for_isa(isa)?)))
        .collect()
}

/// A sequential execution with one instruction set's kernels.
fn with_kernel(kernel: tile::GemmKernels) -> Execution {
    Execution {
        kernel,
        ..detected(false)
    }
}

/// Packs an unpacked B in blocks of 16 or 32 columns, to cross several column blocks.
fn banded(source_column_block: usize) -> Execution {
    Execution {
        parallel: false,
        kernel: tile::GemmKernels::detected(),
        source_column_block,
        rows_only: false,
        one_row_kernels: false,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn detected_kernel_matches_reference(case in cases(20, 40, 40)) {
        assert_close(&case.run(detected(false)), &case.expected(), 1e-4);
    }

    #[test]
    fn portable_kernel_matches_reference(case in cases(20, 40, 40)) {
        assert_close(&case.run(portable()), &case.expected(), 1e-4);
    }

    #[test]
    fn banded_packing_matches_reference(
        case in cases(10, 40, 70),
        source_column_block in prop_oneof![Just(NR), Just(2 * NR)],
    ) {
        assert_close(&case.run(banded(source_column_block)), &case.expected(), 1e-4);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Products of one row through `GemmKernels::for_one_row` (a decoding step's projections;
    /// AVX2 reads each strip's steps in two parts side by side): depths of one step, odd and
    /// even ones, across blocks of `KC`; strips of a left half only; every epilogue, packed and
    /// row-major A, every kernel.
    #[test]
    fn one_row_products_match_reference(
        case in cases_of_shapes(Just(1), prop_oneof![1..=9usize, 10..=2 * KC + 5], 40),
    ) {
        for (_, kernel) in every_available_kernel() {
            assert_close(&case.run(with_kernel(kernel.for_one_row())), &case.expected(), 1e-4);
        }
    }

    /// `gemm_of_weights` (a linear layer's product) runs a row alone on the one-row kernels and
    /// several rows on the usual ones: the same bits as those kernels run sequentially (a
    /// thread's share of columns changes no sum). The two round differently on AVX2, whose
    /// one-row kernel adds two parts of the steps, so the wrong choice shows in the bits.
    #[test]
    fn weights_products_pick_the_one_row_kernels_for_one_row(
        case in cases_of_shapes(prop_oneof![Just(1), 2..=8usize], 2..=2 * KC + 5, 70),
    ) {
        let kernel = tile::GemmKernels::detected();
        let expected_kernel = if case.rows == 1 { kernel.for_one_row() } else { kernel };
        let packed_b = PackedMatrix::from_matrix(case.b_matrix());
        let mut c = case.c.clone();
        gemm_of_weights(
            Lhs::Matrix(case.a_matrix()),
            Rhs::Packed(&packed_b),
            &mut c,
            case.cols + case.row_padding,
            &case.options(),
        )
        .unwrap();
        let sequential = Case {
            a_packed: false,
            b_packed: true,
            ..case.clone()
        }
        .run(with_kernel(expected_kernel));
        prop_assert_eq!(bits(&c), bits(&sequential));
    }
}

/// The bit patterns of `values`, for results that must agree exactly (not within a tolerance).
fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|value| value.to_bits()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Depths past `KC = 384` take several blocks of k, and the epilogue must apply on the last
    /// one only; shallower ones take the row-major A path when A is row-major and unpacked.
    #[test]
    fn deep_products_match_reference_with_every_epilogue(case in cases(14, 600, 37)) {
        for (_, kernel) in every_available_kernel() {
            assert_close(&case.run(with_kernel(kernel)), &case.expected(), 1e-4);
        }
    }

    /// Every kernel (AVX2 and AVX-512 forced where the processor has them) on strips of more
    /// than two tiles, so the AVX-512 kernel's 12-row tiles and each of its shorter last tiles
    /// (1 to 11 rows) meet every epilogue, deep and shallow, packed and row-major A.
    #[test]
    fn every_kernel_matches_reference(case in cases(40, 300, 40)) {
        for (_, kernel) in every_available_kernel() {
            assert_close(&case.run(with_kernel(kernel)), &case.expected(), 1e-4);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Strips one row longer than a whole number of the AVX-512 kernel's 12-row tiles end in a
    /// tile of 13 rows (A over three packed panels), with every epilogue, packed and row-major A.
    #[test]
    fn strips_ending_in_a_thirteen_row_tile_match_reference(
        case in cases_of_shapes(prop::sample::select(vec![13, 25, 37, 49]), 1..=200usize, 40),
    ) {
        for (_, kernel) in every_available_kernel() {
            assert_close(&case.run(with_kernel(kernel)), &case.expected(), 1e-4);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(8))]

    /// Deep products cross several `KC` blocks, tall ones several `MC` blocks, and both are big
    /// enough to be split across threads.
    #[test]
    fn large_products_match_reference(case in cases(160, 600, 70)) {
        assert_close(&case.run(detected(true)), &case.expected(), 1e-4);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// Products split into a grid of tasks on one and on two threads, with B packed at load or
    /// by the tasks themselves (in blocks of 16 to 256 columns), match the reference; sizes are
    /// rarely multiples of `MR` or `NR`.
    #[test]
    fn threaded_grids_match_reference(
        case in cases(90, 300, 300),
        threads in 1..3usize,
        source_column_block in prop_oneof![Just(NR), Just(3 * NR), Just(SOURCE_NC)],
    ) {
        crate::set_num_threads(threads);
        let execution = Execution {
            source_column_block,
            ..detected(true)
        };
        assert_close(&case.run(execution), &case.expected(), 1e-4);
        crate::set_num_threads(0);
    }

    /// Cut by rows only (`gemm_by_rows`, as channels-last convolutions run), a product has the
    /// very values of the grid `gemm` picks: each element is the same kernel's sum over the same
    /// steps, whichever task computes it.
    #[test]
    fn rows_only_cut_gives_the_same_values(case in cases(90, 300, 120), threads in 1..3usize) {
        crate::set_num_threads(threads);
        let packed_b = PackedMatrix::from_matrix(case.b_matrix());
        let stride = case.cols + case.row_padding;
        let options = case.options();
        let mut by_grid = case.c.clone();
        gemm(case.a_matrix().into(), (&packed_b).into(), &mut by_grid, stride, &options).unwrap();
        let mut by_rows = case.c.clone();
        gemm_by_rows(case.a_matrix().into(), (&packed_b).into(), &mut by_rows, stride, &options)
            .unwrap();
        crate::set_num_threads(0);
        prop_assert_eq!(bits(&by_grid), bits(&by_rows));
        assert_close(&by_rows, &case.expected(), 1e-4);
    }

    /// A B packed by the tasks from a source gives exactly the product of the same B packed
    /// beforehand: the panels are the same, so are the sums.
    #[test]
    fn source_packing_matches_prepacked_matrix(case in cases(40, 300, 120), threads in 1..3usize) {
        crate::set_num_threads(threads);
        let packed_a = PackedLhsMatrix::from_matrix(case.a_matrix());
        let packed_b = PackedMatrix::from_matrix(case.b_matrix());
        let stride = case.cols + case.row_padding;
        let options = case.options();
        let mut from_packed = case.c.clone();
        gemm((&packed_a).into(), (&packed_b).into(), &mut from_packed, stride, &options).unwrap();
        let mut from_source = case.c.clone();
        let source = MatrixSource(case.b_matrix());
        gemm_from_source(
            (&packed_a).into(),
            &source,
            case.depth,
            case.cols,
            &mut from_source,
            stride,
            &options,
        )
        .unwrap();
        crate::set_num_threads(0);
        prop_assert_eq!(bits(&from_packed), bits(&from_source));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// A row-major A no deeper than `KC`, read in place by the micro-kernel, against a B that the
    /// tasks pack from a source (blocks of 16 to 256 columns), on one and on two threads, with
    /// every epilogue: the two paths meet in `run_rectangle`.
    #[test]
    fn row_major_lhs_with_source_rhs_matches_reference(
        case in cases(90, KC, 300),
        threads in 1..3usize,
        source_column_block in prop_oneof![Just(NR), Just(3 * NR), Just(SOURCE_NC)],
    ) {
        let case = Case {
            a_transposed: false,
            a_packed: false,
            b_packed: false,
            ..case
        };
        crate::set_num_threads(threads);
        let execution = Execution {
            source_column_block,
            ..detected(true)
        };
        assert_close(&case.run(execution), &case.expected(), 1e-4);
        crate::set_num_threads(0);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// A row-major A deeper than four blocks of `KC`, which every kernel packs on one thread;
    /// on two threads with the columns cut, the AVX-512 kernel reads it in place up to twelve
    /// blocks (`ROW_MAJOR_LHS_MAX_DEPTH_COLUMN_CUT_AVX512`) and packs it past that.
    #[test]
    fn deep_row_major_lhs_matches_reference(
        case in cases_of_depths(
            14,
            prop_oneof![4 * KC + 1..4 * KC + 64, 12 * KC - 2..12 * KC + 3],
            100,
        ),
    ) {
        let case = Case {
            a_transposed: false,
            a_packed: false,
            ..case
        };
        let expected = case.expected();
        // The f32 sums' rounding grows with the depth: the 1e-4 of the shallower tests (up to
        // 600 steps) scaled by the square root of the depth over 600. One case 12 blocks deep
        // was off by 1.07e-4 (kept in proptest-regressions); a wrong block of A or B is off by
        // the size of the products, about 1.
        let tolerance = 1e-4 * (case.depth as f32 / 600.0).sqrt();
        for (_, kernel) in every_available_kernel() {
            assert_close(&case.run(with_kernel(kernel)), &expected, tolerance);
        }
        crate::set_num_threads(2);
        let parallel = case.run(detected(true));
        crate::set_num_threads(0);
        assert_close(&parallel, &expected, tolerance);
    }
}

/// The time to finish `grid` on `threads` threads, in tile steps, if each task costs its tiles
/// and tasks go to threads in rounds.
fn grid_finish_time(
    grid: TaskGrid,
    row_panels: usize,
    column_panels: usize,
    threads: usize,
) -> usize {
    let tasks = grid.row_tasks * grid.column_tasks;
    let largest_task =
        row_panels.div_ceil(grid.row_tasks) * column_panels.div_ceil(grid.column_tasks);
    tasks.div_ceil(threads) * largest_task
}

const PACKS_RHS: GridPacking = GridPacking {
    rhs_cost: driver::PANEL_PACKING_COST,
    lhs: LhsAccess::Prepacked,
};
const PACKS_NOTHING: GridPacking = GridPacking {
    rhs_cost: 0,
    lhs: LhsAccess::Prepacked,
};

#[test]
fn task_grid_cuts_rows_when_each_task_reads_its_rows_of_a() {
    // MobileNetV2's projection of 576 to 96 channels on 14x14 pixels in channels-last: A is the
    // 196 x 576 input (33 panels of rows, deeper than a row-major A is read in place), B the
    // packed weights (6 panels). Cutting the columns would pack all of A in every task; cutting
    // the rows packs each row once, and both threads get half the tiles.
    let packs_lhs = GridPacking {
        rhs_cost: 0,
        lhs: LhsAccess::PackedPerTask,
    };
    let grid = task_grid(33, 6, 2, packs_lhs);
    assert_eq!(grid.column_tasks, 1, "{grid:?}");
    assert!(grid.row_tasks >= 2, "{grid:?}");
    assert!(grid_finish_time(grid, 33, 6, 2) <= 17 * 6, "{grid:?}");
    // With A packed at load, the same shape may cut the columns (ties go to fewer row cuts).
    let prepacked = task_grid(33, 6, 2, PACKS_NOTHING);
    assert_eq!(
        grid_finish_time(prepacked, 33, 6, 2),
        33 * 3,
        "{prepacked:?}"
    );
    // MobileNetV2's expansion of 16 to 96 channels on 112x112 pixels: A (12544 x 16) is read in
    // place. A column cut would stream all of A in both tasks, each writing half of every row of
    // C; the rows are cut instead.
    let in_place = GridPacking {
        rhs_cost: 0,
        lhs: LhsAccess::InPlace,
    };
    let grid = task_grid(2091, 6, 2, in_place);
    assert_eq!(grid.column_tasks, 1, "{grid:?}");
    assert!(grid.row_tasks >= 2, "{grid:?}");
}

#[test]
fn task_grid_cuts_the_rows_of_a_large_packed_a() {
    // ResNet-18's 512-channel 3x3 layers on 7x7 images in NCHW: A is the packed weight (86
    // panels of rows, 9.4 MB, more than a core's cache), B the 49 pixels' im2col panels packed
    // during the call (4 panels). A column cut ties with a row cut in tiles but makes both
    // threads stream all of A from memory; the rows are cut.
    let streamed = GridPacking {
        rhs_cost: crate::kernels::conv::IMAGE_PANEL_ROW_COST,
        lhs: LhsAccess::PrepackedStreamed,
    };
    let grid = task_grid(86, 4, 2, streamed);
    assert_eq!(grid.column_tasks, 1, "{grid:?}");
    assert!(grid.row_tasks >= 2, "{grid:?}");
    // A packed A that stays in cache keeps the tie-break: the columns are cut.
    let cached = task_grid(86, 4, 2, PACKS_RHS);
    assert_eq!(cached.row_tasks, 1, "{cached:?}");
}

#[test]
fn task_grid_gives_every_thread_an_equal_share() {
    // ResNet-18 at batch 1: 56x56x64 (196 pixel panels, 11 channel panels) and 7x7x512 (4 pixel
    // panels, the last of one pixel, and 86 channel panels), at two threads.
    let wide = task_grid(11, 196, 2, PACKS_RHS);
    assert_eq!(wide.row_tasks, 1, "{wide:?}: many columns need no row cut");
    assert_eq!(grid_finish_time(wide, 11, 196, 2), 11 * 98);
    let tall = task_grid(86, 4, 2, PACKS_RHS);
    assert_eq!(grid_finish_time(tall, 86, 4, 2), 86 * 2, "{tall:?}");
    // Three columns on two threads: only a row cut shares them evenly.
    let narrow = task_grid(40, 3, 2, PACKS_RHS);
    assert!(narrow.row_tasks > 1, "{narrow:?}");
    assert!(
        grid_finish_time(narrow, 40, 3, 2) <= 20 * 3 + 3,
        "{narrow:?}"
    );
    // Whatever the shape, no task is empty and nothing is lost.
    for (row_panels, column_panels, threads) in [(1, 1, 2), (1, 200, 3), (300, 1, 2), (7, 5, 4)] {
        let grid = task_grid(row_panels, column_panels, threads, PACKS_NOTHING);
        assert!(grid.row_tasks <= row_panels && grid.column_tasks <= column_panels);
        // The driver cuts the rows with `row_share`, the columns with `even_share`.
        let rows = row_panels * MR;
        let covered: usize = (0..grid.row_tasks)
            .map(|task| row_share(rows, grid.row_tasks, task, MR).len())
            .sum();
        assert_eq!(covered, rows);
        assert!(
            (0..grid.column_tasks)
                .all(|task| !even_share(column_panels, grid.column_tasks, task).is_empty())
        );
    }
}

#[test]
fn row_shares_cut_at_panels_and_balance_rows() {
    for step in [1, MR] {
        for rows in 1..200 {
            for count in 1..6 {
                let shares: Vec<_> = (0..count)
                    .map(|share| row_share(rows, count, share, step))
                    .collect();
                assert_eq!(shares[0].start, 0);
                assert_eq!(shares[count - 1].end, rows, "{rows} rows, {count} shares");
                for pair in shares.windows(2) {
                    assert_eq!(pair[0].end, pair[1].start, "{rows} rows: {shares:?}");
                }
                let panels = rows.div_ceil(step);
                for share in &shares {
                    assert!(
                        share.start.is_multiple_of(step) || share.start == rows,
                        "{rows} rows: {shares:?}"
                    );
                    // No share is empty while every one can have a panel, and none takes more
                    // than the panel an equal share of rows ends in, plus one.
                    assert!(panels < count || !share.is_empty(), "{rows}: {shares:?}");
                    assert!(
                        share.len() <= (rows.div_ceil(count).div_ceil(step) + 1) * step,
                        "{rows} rows: {shares:?}"
                    );
                }
                // Cut at any row, shares differ by one row at most.
                if step == 1 {
                    let (shortest, longest) = (
                        shares.iter().map(Range::len).min().unwrap(),
                        shares.iter().map(Range::len).max().unwrap(),
                    );
                    assert!(longest - shortest <= 1, "{rows} rows: {shares:?}");
                }
            }
        }
    }
    // MobileNetV2's 7x7 images on two threads, in panels: 24 and 25 pixels, not 30 and 19.
    assert_eq!(row_share(49, 2, 0, MR), 0..24);
    assert_eq!(row_share(49, 2, 1, MR), 24..49);
    assert_eq!(row_share(13, 3, 1, MR), 6..12);
    // The encoder's 128 rows: 64 each at any row, 66 and 62 in panels.
    assert_eq!(row_share(128, 2, 0, 1), 0..64);
    assert_eq!(row_share(128, 2, 0, MR), 0..66);
}

/// A packed B's rows cut out (deeper than one block, ranges inside and across blocks) are those
/// rows packed on their own, and the column ranges read in place give the product's columns
/// with their biases, exactly; ranges that do not start a panel or split one are refused.
#[test]
fn packed_row_and_column_ranges_are_the_matrix_parts() {
    let matrix_values = |rows: usize, cols: usize| -> Vec<f32> {
        (0..rows * cols)
            .map(|i| ((i * 7) % 23) as f32 / 11.0 - 1.0)
            .collect()
    };
    let (depth, cols) = (KC + 100, 37);
    let values = matrix_values(depth, cols);
    let packed = PackedMatrix::from_matrix(MatrixRef::row_major(&values, depth, cols).unwrap());
    for rows in [0..depth, 0..1, 10..KC, KC - 3..KC + 40, KC..depth, 5..5] {
        let part = &values[rows.start * cols..rows.end * cols];
        let expected =
            PackedMatrix::from_matrix(MatrixRef::row_major(part, rows.len(), cols).unwrap());
        let cut = packed.row_range(rows.clone());
        assert_eq!((cut.depth(), cut.cols()), (rows.len(), cols));
        assert_eq!(
            cut.data.as_slice(),
            expected.data.as_slice(),
            "rows {rows:?}"
        );
    }

    let (depth, cols, rows) = (20, 3 * NR + 5, 7);
    let b = matrix_values(depth, cols);
    let packed = PackedMatrix::from_matrix(MatrixRef::row_major(&b, depth, cols).unwrap());
    let a: Vec<f32> = (0..rows * depth).map(|i| (i % 5) as f32 - 2.0).collect();
    let a = MatrixRef::row_major(&a, rows, depth).unwrap();
    let bias: Vec<f32> = (0..cols).map(|i| i as f32 / 8.0).collect();
    let mut whole = vec![0.0; rows * cols];
    let options = GemmOptions {
        epilogue: Epilogue::BiasActivation(Bias::PerColumn(&bias), Activation::Relu6),
        ..GemmOptions::default()
    };
    gemm_sequential(a.into(), (&packed).into(), &mut whole, cols, &options).unwrap();
    for (first, width) in [
        (0, cols),
        (0, NR),
        (NR, 2 * NR),
        (2 * NR, NR + 5),
        (3 * NR, 5),
    ] {
        let columns = packed.column_range(first, width).unwrap();
        let mut part = vec![f32::NAN; rows * width];
        let options = GemmOptions {
            epilogue: Epilogue::BiasActivation(
                Bias::PerColumn(&bias[first..first + width]),
                Activation::Relu6,
            ),
            ..GemmOptions::default()
        };
        gemm_sequential_prepacked(a.into(), columns, &mut part, width, &options).unwrap();
        for row in 0..rows {
            assert_eq!(
                part[row * width..][..width],
                whole[row * cols + first..][..width],
                "columns {first}..{}",
                first + width
            );
        }
    }
    for (first, width) in [(1, NR), (0, NR + 1), (3 * NR, 3), (0, cols + 1)] {
        assert!(
            packed.column_range(first, width).is_none(),
            "{first}, {width}"
        );
    }
    let deep = PackedMatrix::from_matrix(
        MatrixRef::row_major(&matrix_values(KC + 1, NR), KC + 1, NR).unwrap(),
    );
    assert!(deep.column_range(0, NR).is_none(), "deeper than one block");
}

#[test]
fn empty_depth_gives_zero_then_epilogue() {
    let a: [f32; 0] = [];
    let a = MatrixRef::row_major(&a, 2, 0).unwrap();
    let b = MatrixRef::row_major(&[], 0, 3).unwrap();
    let mut c = [5.0; 6];
    let bias = [1.0, -2.0, 3.0];
    let options = GemmOptions {
        accumulate: false,
        epilogue: Epilogue::BiasActivation(Bias::PerColumn(&bias), Activation::Relu),
        residual: None,
    };
    gemm(a.into(), b.into(), &mut c, 3, &options).unwrap();
    assert_eq!(c, [1.0, 0.0, 3.0, 1.0, 0.0, 3.0]);
}

#[test]
fn mismatched_shapes_are_errors() {
    let data = [1.0; 12];
    let a = MatrixRef::row_major(&data, 3, 4).unwrap();
    let b = MatrixRef::row_major(&data, 3, 4).unwrap();
    let mut c = [0.0; 12];
    let result = gemm(a.into(), b.into(), &mut c, 4, &GemmOptions::default());
    assert!(matches!(result, Err(KernelError::ShapeMismatch { .. })));

    let b = MatrixRef::row_major(&data, 4, 3).unwrap();
    let mut short = [0.0; 8];
    let result = gemm(a.into(), b.into(), &mut short, 3, &GemmOptions::default());
    assert!(matches!(result, Err(KernelError::BufferLength { .. })));

    let bias = [0.0; 2];
    let options = GemmOptions {
        accumulate: false,
        epilogue: Epilogue::Bias(Bias::PerColumn(&bias)),
        residual: None,
    };
    let result = gemm(a.into(), b.into(), &mut c, 3, &options);
    assert!(matches!(result, Err(KernelError::BufferLength { .. })));

    let residual = [0.0; 8];
    let options = GemmOptions {
        residual: Some(&residual),
        ..GemmOptions::default()
    };
    let result = gemm(a.into(), b.into(), &mut c, 3, &options);
    assert!(matches!(result, Err(KernelError::BufferLength { .. })));

    assert!(MatrixRef::new(&data, 4, 4, 4, 1).is_err());
}

#[test]
fn linear_weight_packing_computes_x_times_w_transposed() {
    // W is [out = 2, in = 3].
    let weight = [1.0, 2.0, 3.0, -1.0, 0.5, 0.0];
    let packed = PackedMatrix::from_linear_weight(&weight, 2, 3).unwrap();
    let x = [1.0, 1.0, 1.0, 2.0, 0.0, -1.0];
    let mut y = [0.0; 4];
    let a = MatrixRef::row_major(&x, 2, 3).unwrap();
    gemm(
        a.into(),
        (&packed).into(),
        &mut y,
        2,
        &GemmOptions::default(),
    )
    .unwrap();
    assert_eq!(y, [6.0, -0.5, -1.0, -2.0]);
}

/// The length of the B panels a test strip reads: `MAX_STRIP_PANELS` panels of `depth` steps.
fn strip_b_length(depth: usize) -> usize {
    MAX_STRIP_PANELS * depth * NR
}

/// Where column `column` of step `step` of a strip's B lies: panel `column / NR`, `depth * NR`
/// floats a panel.
fn strip_b_index(depth: usize, step: usize, column: usize) -> usize {
    column / NR * depth * NR + step * NR + column % NR
}

/// One strip of a row-major A times packed B panels, through `kernel` (a strip of any number
/// of rows, tiles of `MR` or `2 * MR` and a shorter last one), against a plain sum.
fn check_row_major_strip_kernel(
    kernel: RowMajorTileKernelWithEpilogue,
    (rows, cols, depth, stride_padding, accumulate): (usize, usize, usize, usize, bool),
    values: &[f32],
) {
    let a_row_stride = depth + stride_padding;
    let a: Vec<f32> = (0..(rows - 1) * a_row_stride + depth)
        .map(|index| values[index % values.len()])
        .collect();
    let b: Vec<f32> = (0..strip_b_length(depth))
        .map(|index| values[(index * 7 + 3) % values.len()])
        .collect();
    let c_row_stride = cols + 2;
    let initial: Vec<f32> = (0..rows * c_row_stride)
        .map(|index| values[(index * 5 + 1) % values.len()])
        .collect();
    let mut c = initial.clone();
    let output = TileOutput {
        c: c.as_mut_ptr(),
        c_row_stride,
        rows,
        cols,
        accumulate,
        epilogue: TileEpilogue::default(),
    };
    // SAFETY: `a` holds `(rows - 1) * a_row_stride + depth` elements, `b` holds the panels of
    // `cols`, which the kernel's strip covers (the caller's bound), `c` holds `rows` rows of
    // `c_row_stride >= cols`, and the epilogue reads nothing.
    unsafe { kernel(depth, &a, a_row_stride, &b, &output) };
    for row in 0..rows {
        for column in 0..c_row_stride {
            let index = row * c_row_stride + column;
            let expected = if column < cols {
                let product: f64 = (0..depth)
                    .map(|step| {
                        f64::from(a[row * a_row_stride + step])
                            * f64::from(b[strip_b_index(depth, step, column)])
                    })
                    .sum();
                let base = if accumulate {
                    f64::from(initial[index])
                } else {
                    0.0
                };
                (base + product) as f32
            } else {
                initial[index]
            };
            assert!(
                (c[index] - expected).abs() <= 1e-4 * expected.abs().max(1.0),
                "row {row}, column {column}: got {}, expected {expected}",
                c[index]
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Every instruction set's row-major kernel (flash attention multiplies its probabilities
    /// with it), on strips up to three tiles of the widest kernel, over as many B panels as
    /// each kernel's strip covers.
    #[test]
    fn row_major_strip_kernels_match_reference(
        (rows, cols, depth, padding, accumulate) in
            (1..=3 * 2 * MR + 1, 1..=MAX_STRIP_PANELS * NR, 1..40usize, 0..3usize, any::<bool>()),
        values in values(97),
    ) {
        for isa in [GemmIsa::Portable, GemmIsa::Avx2Fma, GemmIsa::Avx512] {
            if let Some(kernels) = GemmKernels::for_isa(isa) {
                let cols = cols.min(kernels.strip_panels * NR);
                let shape = (rows, cols, depth, padding, accumulate);
                check_row_major_strip_kernel(kernels.row_major_a, shape, &values);
            }
        }
    }
}

/// One row against a weight past `PARALLEL_MIN_BYTES` but with few multiply-adds (a decoding
/// step's projection) splits its columns across threads, with the result of one thread.
#[test]
fn one_row_products_with_large_weights_split_by_columns() {
    use super::driver::{PARALLEL_MIN_BYTES, PARALLEL_MIN_MULTIPLY_ADDS};
    let (depth, cols) = (300, 250);
    assert!(depth * cols * 4 >= PARALLEL_MIN_BYTES && depth * cols < PARALLEL_MIN_MULTIPLY_ADDS);
    let a: Vec<f32> = (0..depth).map(|i| (i % 13) as f32 / 13.0 - 0.4).collect();
    let b: Vec<f32> = (0..depth * cols)
        .map(|i| (i % 29) as f32 / 29.0 - 0.5)
        .collect();
    let (a, b) = (
        MatrixRef::row_major(&a, 1, depth).unwrap(),
        MatrixRef::row_major(&b, depth, cols).unwrap(),
    );
    let packed = PackedMatrix::from_matrix(b);
    let residual: Vec<f32> = (0..cols).map(|i| i as f32).collect();
    let mut results = Vec::new();
    for threads in [1, 2, 3] {
        crate::set_num_threads(threads);
        let mut c = vec![0.0; cols];
        let options = GemmOptions {
            residual: Some(&residual),
            ..GemmOptions::default()
        };
        gemm(a.into(), (&packed).into(), &mut c, cols, &options).unwrap();
        results.push(c);
    }
    crate::set_num_threads(0);
    assert!(results.iter().all(|c| *c == results[0]));
    let expected: Vec<f32> = reference::gemm(a, b)
        .iter()
        .zip(&residual)
        .map(|(product, skip)| product + skip)
        .collect();
    assert_close(&results[0], &expected, 1e-4);
}

/// Every term of a strip's epilogue but the clamp: a residual laid out like C (rows
/// `c_row_stride` apart), a bias per column and one per row, for the strip checks below.
struct FullEpilogue {
    residual: Vec<f32>,
    column_bias: Vec<f32>,
    row_bias: Vec<f32>,
    c_row_stride: usize,
}

impl FullEpilogue {
    fn new(rows: usize, cols: usize, c_row_stride: usize, value: impl Fn(usize) -> f32) -> Self {
        Self {
            residual: (0..rows * c_row_stride)
                .map(|index| value(index * 3 + 2))
                .collect(),
            column_bias: (0..cols).map(|index| value(index * 11 + 5)).collect(),
            row_bias: (0..rows).map(|index| value(index * 13 + 7)).collect(),
            c_row_stride,
        }
    }

    fn tile(&self, clamp: tile::Clamp) -> tile::TileEpilogue<'_> {
        tile::TileEpilogue {
            column_bias: Some(&self.column_bias),
            row_bias: Some(&self.row_bias),
            residual: Some(&self.residual),
            clamp,
        }
    }

    /// Element `(row, column)` of the strip: `clamp(sum + column bias + row bias + residual)`,
    /// `sum` being the product (and the old C where the kernel accumulates), added in `f64`.
    fn expected(&self, sum: f64, row: usize, column: usize, clamp: tile::Clamp) -> f32 {
        let total = sum
            + f64::from(self.column_bias[column])
            + f64::from(self.row_bias[row])
            + f64::from(self.residual[row * self.c_row_stride + column]);
        clamp.apply(total as f32)
    }
}

/// One strip of tiles through a micro-kernel with a full epilogue (both biases, a residual, a
/// clamp), against the same sums computed here in `f64`.
#[allow(clippy::too_many_arguments)]
fn check_tile_epilogue(
    kernels: tile::GemmKernels,
    row_major_a: bool,
    (rows, cols, depth, accumulate): (usize, usize, usize, bool),
    clamp: tile::Clamp,
    values: &[f32],
) {
    let value = |index: usize| values[index % values.len()];
    // A row-major with a padded stride, and the same A packed into panels (zero below).
    let a_row_stride = depth + 1;
    let a: Vec<f32> = (0..rows * a_row_stride)
        .map(|index| 4.0 * value(index))
        .collect();
    let a_panel: Vec<f32> = (0..rows.div_ceil(MR) * depth * MR)
        .map(|index| {
            let (panel, step, lane) = (index / (depth * MR), index / MR % depth, index % MR);
            let row = panel * MR + lane;
            if row < rows {
                a[row * a_row_stride + step]
            } else {
                0.0
            }
        })
        .collect();
    let b: Vec<f32> = (0..strip_b_length(depth))
        .map(|index| value(index * 7 + 3))
        .collect();
    let cols = cols.min(kernels.strip_panels * NR);
    let c_row_stride = cols + 3;
    let initial: Vec<f32> = (0..rows * c_row_stride)
        .map(|index| value(index * 5 + 1))
        .collect();
    let epilogue = FullEpilogue::new(rows, cols, c_row_stride, value);
    let mut c = initial.clone();
    let output = tile::TileOutput {
        c: c.as_mut_ptr(),
        c_row_stride,
        rows,
        cols,
        accumulate,
        epilogue: epilogue.tile(clamp),
    };
    // SAFETY: `a` holds `MR` rows of `a_row_stride >= depth`, the panels `depth` steps, `c` and
    // `residual` `rows` rows of `c_row_stride >= cols`, the biases `cols` and `rows` values, and
    // the kernels come from `GemmKernels`, which checks the processor.
    unsafe {
        if row_major_a {
            (kernels.row_major_a)(depth, &a, a_row_stride, &b, &output);
        } else {
            (kernels.packed_a)(depth, &a_panel, &b, &output);
        }
    }
    for row in 0..rows {
        for column in 0..c_row_stride {
            let index = row * c_row_stride + column;
            let expected = if column < cols {
                let product: f64 = (0..depth)
                    .map(|step| {
                        f64::from(a[row * a_row_stride + step])
                            * f64::from(b[strip_b_index(depth, step, column)])
                    })
                    .sum();
                let old = if accumulate {
                    f64::from(initial[index])
                } else {
                    0.0
                };
                epilogue.expected(product + old, row, column, clamp)
            } else {
                initial[index]
            };
            assert!(
                (c[index] - expected).abs() <= 1e-4 * expected.abs().max(1.0),
                "{clamp:?}, row {row}, column {column}: got {}, expected {expected}",
                c[index]
            );
        }
    }
}

fn clamps() -> impl Strategy<Value = tile::Clamp> {
    prop_oneof![
        Just(tile::Clamp::None),
        Just(tile::Clamp::Relu),
        Just(tile::Clamp::Relu6),
        Just(tile::Clamp::LeakyRelu {
            negative_slope: 0.1
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Strips of one to five tiles (a last tile of fewer than MR rows, a last panel of fewer
    /// than NR columns included), packed and row-major A, every kernel, over as many B panels
    /// as each kernel's strip covers.
    #[test]
    fn tile_kernels_apply_the_epilogue(
        shape in (1..=5 * MR, 1..=MAX_STRIP_PANELS * NR, 1..24usize, any::<bool>()),
        clamp in clamps(),
        values in values(89),
    ) {
        for row_major_a in [false, true] {
            for (_, kernels) in every_available_kernel() {
                check_tile_epilogue(kernels, row_major_a, shape, clamp, &values);
            }
        }
    }
}

/// The clamps keep NaN, as `relu` and `relu6` do, in registers as in the portable kernel.
#[test]
fn clamps_let_nan_through() {
    for (_, kernels) in every_available_kernel() {
        for clamp in [tile::Clamp::Relu, tile::Clamp::Relu6] {
            let a_panel = [f32::NAN; MR];
            let b_panel = [1.0; NR];
            let mut c = [0.0; MR * NR];
            let output = tile::TileOutput {
                c: c.as_mut_ptr(),
                c_row_stride: NR,
                rows: MR,
                cols: NR,
                accumulate: false,
                epilogue: tile::TileEpilogue {
                    clamp,
                    ..tile::TileEpilogue::default()
                },
            };
            // SAFETY: One step of each panel, and a full `MR x NR` tile of C.
            unsafe { (kernels.packed_a)(1, &a_panel, &b_panel, &output) };
            assert!(c.iter().all(|value| value.is_nan()), "{clamp:?}: {c:?}");
        }
    }
}

/// A B written by the caller through `packed_rhs_index` (across a `KC` block boundary and with
/// a partial last panel) multiplies like the same B packed by the GEMM.
#[test]
fn prepacked_rhs_matches_packing() {
    let (rows, depth, cols) = (7, KC + 45, 2 * NR + 5);
    let a: Vec<f32> = (0..rows * depth)
        .map(|i| ((i * 7) % 13) as f32 / 6.0 - 1.0)
        .collect();
    let b: Vec<f32> = (0..depth * cols)
        .map(|i| ((i * 5) % 11) as f32 / 5.0 - 1.0)
        .collect();
    let a = MatrixRef::row_major(&a, rows, depth).unwrap();
    let b_matrix = MatrixRef::row_major(&b, depth, cols).unwrap();
    let mut packed = vec![f32::NAN; packed_rhs_size(depth, cols)];
    for row in 0..depth {
        for column in 0..cols {
            packed[packed_rhs_index(depth, cols, row, column)] = b[row * cols + column];
        }
    }
    let mut expected = vec![0.0; rows * cols];
    gemm(
        Lhs::Matrix(a),
        Rhs::Matrix(b_matrix),
        &mut expected,
        cols,
        &GemmOptions::default(),
    )
    .unwrap();
    let mut actual = vec![0.0; rows * cols];
    let rhs = PackedRhsRef::new(&packed, depth, cols).unwrap();
    gemm_sequential_prepacked(
        Lhs::Matrix(a),
        rhs,
        &mut actual,
        cols,
        &GemmOptions::default(),
    )
    .unwrap();
    assert_eq!(actual, expected);
    assert!(PackedRhsRef::new(&packed[1..], depth, cols).is_err());
}

/// The kernels this machine has are the ones `selected_isa` offers. (`set_max_isa` is tested in
/// `runtime/tests/gemm_max_isa.rs`, a process of its own: the cap is process-wide, and tests here
/// that compare two products bit for bit must not see it change between them.)
#[test]
fn the_selected_isa_is_available_and_the_fastest() {
    let available = every_available_kernel();
    assert_eq!(available[0].0, GemmIsa::Portable);
    let fastest = available.last().unwrap().0;
    assert_eq!(selected_isa(), fastest);
    assert!(selected_isa().is_available());
    #[cfg(target_arch = "x86_64")]
    {
        assert_eq!(
            GemmIsa::Avx512.is_available(),
            is_x86_feature_detected!("avx512f")
        );
    }
}

/// One strip through an instruction set's indirect kernel, against sums computed here in `f64`:
/// with `a_in_place`, rows read from an image at `offsets[k] + row` and B in packed panels (the
/// channels-last convolution of an NCHW image); otherwise A in packed panels and B's columns
/// read from the image at `offsets[k] + column` (the NCHW convolution). Every epilogue term is
/// on: both biases, a residual, the clamp.
fn check_indirect_strip(
    kernels: IndirectKernels,
    a_in_place: bool,
    (rows, cols, offsets): (usize, usize, &[usize]),
    clamp: tile::Clamp,
    values: &[f32],
) {
    let value = |index: usize| values[index % values.len()];
    let depth = offsets.len();
    let cols = cols.min(kernels.strip_columns);
    // The image reaches the farthest read: `rows` floats past an offset (A in place) or whole
    // panels of the strip's columns (B in place).
    let reach = if a_in_place {
        rows
    } else {
        cols.div_ceil(NR) * NR
    };
    let image_len = offsets.iter().max().copied().unwrap_or(0) + reach;
    let image: Vec<f32> = (0..image_len).map(|index| value(index * 3 + 1)).collect();
    let a_panels: Vec<f32> = (0..rows.div_ceil(MR) * depth * MR)
        .map(|index| value(index * 5 + 2))
        .collect();
    let b_panels: Vec<f32> = (0..strip_b_length(depth))
        .map(|index| value(index * 7 + 3))
        .collect();
    let a_at = |row: usize, step: usize| {
        if a_in_place {
            image[offsets[step] + row]
        } else {
            a_panels[(row / MR) * depth * MR + step * MR + row % MR]
        }
    };
    let b_at = |step: usize, column: usize| {
        if a_in_place {
            b_panels[strip_b_index(depth, step, column)]
        } else {
            image[offsets[step] + column]
        }
    };
    let c_row_stride = cols + 3;
    let epilogue = FullEpilogue::new(rows, cols, c_row_stride, value);
    let mut c = vec![f32::NAN; rows * c_row_stride];
    let output = TileOutput {
        c: c.as_mut_ptr(),
        c_row_stride,
        rows,
        cols,
        accumulate: false,
        epilogue: epilogue.tile(clamp),
    };
    // SAFETY: The image reaches every read (`reach` floats past the farthest offset), the
    // packed operand holds the strip's panels of `depth` steps, `c` and `residual` hold `rows`
    // rows of `c_row_stride >= cols`, the biases `cols` and `rows` values, and the kernels come
    // from `indirect_kernels`, which checks the processor.
    unsafe {
        if a_in_place {
            (kernels.a_in_place)(depth, image.as_ptr(), offsets, &b_panels, &output);
        } else {
            (kernels.b_in_place)(depth, &a_panels, image.as_ptr(), offsets, &output);
        }
    }
    for row in 0..rows {
        for column in 0..c_row_stride {
            let got = c[row * c_row_stride + column];
            // Past the strip's columns, C is left alone.
            if column >= cols {
                assert!(got.is_nan(), "row {row}, column {column} was written");
                continue;
            }
            let product: f64 = (0..depth)
                .map(|step| f64::from(a_at(row, step)) * f64::from(b_at(step, column)))
                .sum();
            let expected = epilogue.expected(product, row, column, clamp);
            assert!(
                (got - expected).abs() <= 1e-4 * expected.abs().max(1.0),
                "a in place {a_in_place}, {clamp:?}, row {row}, column {column}: got {got}, \
                 expected {expected}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Every instruction set's indirect kernels (AVX2, AVX-512, where the processor has them),
    /// both operands read in place, on strips of one to three tiles of the widest kernel and a
    /// shorter one, up to the widest strip's columns, steps at any offsets (repeated ones
    /// included) and up to one block deep.
    #[test]
    fn indirect_strip_kernels_match_reference(
        (rows, cols) in (1..=3 * 2 * MR + 1, 1..=MAX_STRIP_PANELS * NR),
        offsets in prop::collection::vec(0..200usize, 1..KC + 1),
        clamp in clamps(),
        values in values(83),
    ) {
        for isa in [GemmIsa::Portable, GemmIsa::Avx2Fma, GemmIsa::Avx512] {
            let Some(kernels) = indirect_kernels(isa) else { continue };
            for a_in_place in [false, true] {
                check_indirect_strip(kernels, a_in_place, (rows, cols, &offsets), clamp, &values);
            }
        }
    }
}

/// The indirect kernels exist for the instruction sets with a kernel of their own, and the
/// selected one's are what the convolutions get.
#[test]
fn indirect_kernels_follow_the_selected_isa() {
    assert!(indirect_kernels(GemmIsa::Portable).is_none());
    let selected = indirect_kernels(selected_isa());
    assert_eq!(selected.is_some(), selected_isa() != GemmIsa::Portable);
    assert_eq!(
        indirect_strip_kernel().map(|(_, columns)| columns),
        selected.map(|kernels| kernels.strip_columns)
    );
    assert_eq!(
        indirect_lhs_strip_kernel().map(|(_, columns)| columns),
        selected.map(|kernels| kernels.strip_columns)
    );
}
