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

fn activations() -> impl Strategy<Value = Option<Activation>> {
    prop_oneof![
        Just(None),
        Just(Some(Activation::Relu)),
        Just(Some(Activation::Gelu)),
        Just(Some(Activation::Silu)),
    ]
}

fn cases(max_rows: usize, max_depth: usize, max_cols: usize) -> impl Strategy<Value = Case> {
    (1..=max_rows, 1..=max_depth, 1..=max_cols, 0..3usize)
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

    /// Runs the fast kernel and returns C.
    fn run(&self, execution: Execution) -> Vec<f32> {
        let packed_a = PackedLhsMatrix::from_matrix(self.a_matrix());
        let packed_b = PackedMatrix::from_matrix(self.b_matrix());
        let a = if self.a_packed {
            Lhs::Packed(&packed_a)
        } else {
            Lhs::Matrix(self.a_matrix())
        };
        let b = if self.b_packed {
            Rhs::Packed(&packed_b)
        } else {
            Rhs::Matrix(self.b_matrix())
        };
        let mut c = self.c.clone();
        let options = GemmOptions {
            accumulate: self.accumulate,
            epilogue: self.epilogue(),
            residual: self.residual.as_deref(),
        };
        gemm_with(
            a,
            b.into(),
            &mut c,
            self.cols + self.row_padding,
            &options,
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
        kernel: portable::tile_kernel,
        rhs_scratch_limit: RHS_SCRATCH_LIMIT,
    }
}

fn detected(parallel: bool) -> Execution {
    Execution {
        parallel,
        kernel: select_tile_kernel(),
        rhs_scratch_limit: RHS_SCRATCH_LIMIT,
    }
}

/// Packs an unpacked B in bands of 16 or 32 columns, to exercise the banded path.
fn banded() -> Execution {
    Execution {
        parallel: false,
        kernel: select_tile_kernel(),
        rhs_scratch_limit: 600,
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
    fn banded_packing_matches_reference(case in cases(10, 40, 70)) {
        assert_close(&case.run(banded()), &case.expected(), 1e-4);
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

/// One tile of a row-major A times a packed B panel, through `kernel`, against a plain sum.
fn check_row_major_tile_kernel(
    kernel: RowMajorTileKernel,
    (rows, cols, depth, stride_padding, accumulate): (usize, usize, usize, usize, bool),
    values: &[f32],
) {
    let a_row_stride = depth + stride_padding;
    let a: Vec<f32> = (0..(rows - 1) * a_row_stride + depth)
        .map(|index| values[index % values.len()])
        .collect();
    let b: Vec<f32> = (0..depth * NR)
        .map(|index| values[(index * 7 + 3) % values.len()])
        .collect();
    let c_row_stride = cols + 2;
    let initial: Vec<f32> = (0..rows * c_row_stride)
        .map(|index| values[(index * 5 + 1) % values.len()])
        .collect();
    let mut c = initial.clone();
    // SAFETY: `a` holds `(rows - 1) * a_row_stride + depth` elements, `b` holds `depth * NR`,
    // `rows <= MR`, `cols <= NR`, and `c` holds `rows` rows of `c_row_stride >= cols`.
    unsafe {
        kernel(
            depth,
            &a,
            a_row_stride,
            &b,
            c.as_mut_ptr(),
            c_row_stride,
            rows,
            cols,
            accumulate,
        );
    }
    for row in 0..rows {
        for column in 0..c_row_stride {
            let index = row * c_row_stride + column;
            let expected = if column < cols {
                let product: f64 = (0..depth)
                    .map(|step| {
                        f64::from(a[row * a_row_stride + step]) * f64::from(b[step * NR + column])
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

    #[test]
    fn row_major_tile_kernels_match_reference(
        shape in (1..=MR, 1..=NR, 1..40usize, 0..3usize, any::<bool>()),
        values in values(97),
    ) {
        check_row_major_tile_kernel(select_row_major_tile_kernel(), shape, &values);
        check_row_major_tile_kernel(portable::tile_kernel_row_major_a, shape, &values);
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
