//! MobileNetV2 compiled to Rust by `build.rs` with `nnc_compiler::Builder`.
//!
//! `cargo run --release --example mobilenet_build [-- weights.safetensors]`: random weights unless
//! a safetensors file with torchvision's names is given.

use std::time::Instant;

use nnc_examples::mobilenet_v2::MobilenetV2;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut model = match std::env::args().nth(1) {
        Some(path) => MobilenetV2::from_safetensors(path)?,
        None => MobilenetV2::with_random_weights(0),
    };
    let image = nnc::runtime::ndarray::Array4::from_shape_fn(
        (1, 3, 224, 224),
        |(_, channel, row, column)| {
            ((row * 7 + column * 3 + channel * 11) % 255) as f32 / 255.0 - 0.5
        },
    );

    let logits = model.forward(image.view())?.to_owned();
    let mut ranked: Vec<(usize, f32)> = logits.iter().copied().enumerate().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    println!("top-5 classes: {:?}", &ranked[..5]);

    let warmup = 3;
    for _ in 0..warmup {
        model.forward(image.view())?;
    }
    let runs = 20;
    let start = Instant::now();
    for _ in 0..runs {
        model.forward(image.view())?;
    }
    let per_pass = start.elapsed() / runs;
    println!(
        "{runs} forward passes at 224x224: {per_pass:?} per pass ({:.1} images/s)",
        1.0 / per_pass.as_secs_f64()
    );
    Ok(())
}
