//! `set_max_isa` caps the GEMM's micro-kernel for the whole process, so it is tested here, in a
//! test binary of its own with a single test: no other test can run a product while the cap
//! changes under it.

use nnc_runtime::kernels::activation::Activation;
use nnc_runtime::kernels::gemm::{
    Bias, Epilogue, GemmIsa, GemmOptions, MatrixRef, PackedMatrix, gemm, selected_isa, set_max_isa,
};

/// Under each cap, the selected kernel is the fastest available up to the cap, and a product
/// with a fused epilogue (odd sizes: 12-row tiles, a last short tile, a short last panel, two
/// blocks of k) matches the same sums in `f64`.
#[test]
fn each_cap_selects_its_kernel_and_computes_the_product() {
    let fastest = selected_isa();
    assert!(fastest.is_available());
    let (rows, depth, cols) = (29, 300, 37);
    let value = |index: usize, salt: usize| ((index * salt + 3) % 17) as f32 / 8.0 - 1.0;
    let a: Vec<f32> = (0..rows * depth).map(|index| value(index, 7)).collect();
    let b: Vec<f32> = (0..depth * cols).map(|index| value(index, 5)).collect();
    let bias: Vec<f32> = (0..cols).map(|index| value(index, 3)).collect();
    let residual: Vec<f32> = (0..rows * cols).map(|index| value(index, 11)).collect();
    let packed_b = PackedMatrix::from_matrix(MatrixRef::row_major(&b, depth, cols).unwrap());
    let a_matrix = MatrixRef::row_major(&a, rows, depth).unwrap();
    let options = GemmOptions {
        epilogue: Epilogue::BiasActivation(Bias::PerColumn(&bias), Activation::Relu),
        residual: Some(&residual),
        ..GemmOptions::default()
    };
    for cap in [GemmIsa::Portable, GemmIsa::Avx2Fma, GemmIsa::Avx512] {
        set_max_isa(cap);
        let selected = selected_isa();
        assert!(
            selected <= cap && selected.is_available(),
            "{cap:?}: {selected:?}"
        );
        if cap.is_available() {
            assert_eq!(selected, cap);
        }
        let mut c = vec![f32::NAN; rows * cols];
        gemm(a_matrix.into(), (&packed_b).into(), &mut c, cols, &options).unwrap();
        for row in 0..rows {
            for column in 0..cols {
                let product: f64 = (0..depth)
                    .map(|step| {
                        f64::from(a[row * depth + step]) * f64::from(b[step * cols + column])
                    })
                    .sum();
                let expected =
                    (product + f64::from(bias[column]) + f64::from(residual[row * cols + column]))
                        .max(0.0);
                let actual = f64::from(c[row * cols + column]);
                assert!(
                    (actual - expected).abs() <= 1e-4 * expected.abs().max(1.0),
                    "{cap:?}, ({row}, {column}): {actual} against {expected}"
                );
            }
        }
    }
    set_max_isa(GemmIsa::Avx512);
    assert_eq!(selected_isa(), fastest);
}
