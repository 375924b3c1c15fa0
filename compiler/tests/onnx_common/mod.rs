//! What the ONNX import and round-trip tests share.

use ndarray::ArrayD;

/// The largest difference relative to the reference's largest magnitude.
pub fn relative_error(actual: &ArrayD<f32>, expected: &ArrayD<f32>) -> f32 {
    assert_eq!(actual.shape(), expected.shape());
    let scale = expected.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    let worst = actual
        .iter()
        .zip(expected)
        .fold(0f32, |m, (a, e)| m.max((a - e).abs()));
    worst / scale
}
