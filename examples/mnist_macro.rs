//! An MNIST multilayer perceptron written inline with the `network!` macro.
//!
//! `cargo run --release --example mnist_macro`

use std::time::Instant;

nnc::network! {
    // 784 -> 256 -> 10, as in examples/mlp.nn.
    network mnist(image: f32[1, 784]) -> (logits: f32[1, 10]) {
        h = relu(linear(image, 256)) as fc1
        logits = linear(h, 10) as fc2
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut model = Mnist::with_random_weights(0);
    // A blurry diagonal stroke, standing in for a digit.
    let image = nnc::runtime::ndarray::Array2::from_shape_fn((1, 784), |(_, pixel)| {
        let (row, column) = (pixel / 28, pixel % 28);
        (-((row as f32 - column as f32).powi(2)) / 8.0).exp()
    });

    let logits = model.forward(image.view())?.to_owned();
    println!("logits: {logits:.4}");
    let best = logits
        .iter()
        .enumerate()
        .fold((0, f32::MIN), |best, (class, &logit)| {
            if logit > best.1 { (class, logit) } else { best }
        });
    println!("predicted class (random weights): {}", best.0);

    let runs = 10_000;
    let start = Instant::now();
    for _ in 0..runs {
        model.forward(image.view())?;
    }
    let per_pass = start.elapsed() / runs;
    println!("{runs} forward passes: {per_pass:?} per pass");
    Ok(())
}
