//! Random small valid networks (chains, branches, residuals, every activation) compute the same
//! outputs at -O0 and -O2, and their memory plans pass the overlap checker at both levels.

use nnc_compiler::codegen::memory;
use nnc_compiler::interpret::{self, Interpreter, Tensor};
use nnc_compiler::ir::Activation;
use nnc_compiler::passes::{self, OptLevel};
use nnc_compiler::{FrontendOptions, compile_to_ir};
use proptest::prelude::*;

/// A call of every activation of the language that is finite on finite inputs (random values
/// are negative and may be large: `sqrt`, `exp` and `pow` are left out) on `h`, from
/// `Activation::ALL`, so that a new activation is in these tests without a change here.
static ACTIVATIONS: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
    Activation::ALL
        .iter()
        .filter(|activation| activation.is_finite_on_finite_inputs())
        .map(|activation| match activation {
            Activation::LeakyRelu { negative_slope } => {
                format!("leaky_relu(h, {negative_slope:?})")
            }
            Activation::GeluTanh => "gelu(h, approximate = \"tanh\")".to_string(),
            other => format!("{}(h)", other.name()),
        })
        .collect()
});

/// One step of a random network, applied to the current tensor `h` of shape [1, channels, 6, 6].
#[derive(Clone, Debug)]
enum Step {
    Conv {
        channels: usize,
        kernel: usize,
        batch_norm: bool,
        activation: Option<usize>,
    },
    Depthwise {
        batch_norm: bool,
    },
    Activation(usize),
    Affine {
        scale: i8,
        shift: i8,
    },
    /// Adds the tensor saved `back` steps ago, if it has the same shape.
    Residual {
        back: usize,
    },
    /// A second branch from `h`, joined by multiplication (a gate).
    Gate {
        activation: usize,
    },
    MaxPool,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (
            1usize..6,
            prop_oneof![Just(1usize), Just(3)],
            any::<bool>(),
            prop::option::of(0..ACTIVATIONS.len())
        )
            .prop_map(|(channels, kernel, batch_norm, activation)| Step::Conv {
                channels,
                kernel,
                batch_norm,
                activation
            }),
        any::<bool>().prop_map(|batch_norm| Step::Depthwise { batch_norm }),
        (0..ACTIVATIONS.len()).prop_map(Step::Activation),
        (-3i8..4, -3i8..4).prop_map(|(scale, shift)| Step::Affine { scale, shift }),
        (1usize..4).prop_map(|back| Step::Residual { back }),
        (0..ACTIVATIONS.len()).prop_map(|activation| Step::Gate { activation }),
        Just(Step::MaxPool),
    ]
}

/// A step of a MobileNet-like chain (depthwise and 1×1 convolutions, gates, residuals), where
/// channels-last regions pay, so that the layout pass runs and its transposes meet every kind of
/// neighbour.
fn mobile_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => any::<bool>().prop_map(|batch_norm| Step::Depthwise { batch_norm }),
        2 => (1usize..6, any::<bool>(), prop::option::of(0..ACTIVATIONS.len())).prop_map(
            |(channels, batch_norm, activation)| Step::Conv {
                channels,
                kernel: 1,
                batch_norm,
                activation
            }
        ),
        1 => (1usize..4).prop_map(|back| Step::Residual { back }),
        1 => (0..ACTIVATIONS.len()).prop_map(|activation| Step::Gate { activation }),
        1 => Just(Step::MaxPool),
    ]
}

/// The `.nn` text of a network made of `steps`.
fn network(steps: &[Step]) -> String {
    let mut body = String::new();
    let mut channels = 3;
    let mut saved: Vec<(String, usize)> = vec![("x".to_string(), 3)];
    body.push_str("    h = x\n");
    for (index, step) in steps.iter().enumerate() {
        match step {
            Step::Conv {
                channels: out,
                kernel,
                batch_norm,
                activation,
            } => {
                body.push_str(&format!(
                    "    h = conv2d(h, {out}, kernel = {kernel}, padding = {}) as conv[{index}]\n",
                    kernel / 2
                ));
                if *batch_norm {
                    body.push_str(&format!("    h = batch_norm(h) as bn[{index}]\n"));
                }
                if let Some(activation) = activation {
                    body.push_str(&format!("    h = {}\n", ACTIVATIONS[*activation]));
                }
                channels = *out;
            }
            Step::Depthwise { batch_norm } => {
                body.push_str(&format!("    h = conv2d(h, {channels}, kernel = 3, padding = 1, groups = {channels}) as dw[{index}]\n"));
                if *batch_norm {
                    body.push_str(&format!("    h = batch_norm(h) as bn[{index}]\n"));
                }
            }
            Step::Activation(activation) => {
                body.push_str(&format!("    h = {}\n", ACTIVATIONS[*activation]))
            }
            Step::Affine { scale, shift } => {
                body.push_str(&format!("    h = h * {scale}.5 + {shift}.0\n"))
            }
            Step::Residual { back } => {
                if let Some((name, saved_channels)) = saved.iter().rev().nth(*back)
                    && *saved_channels == channels
                {
                    body.push_str(&format!("    h = h + {name}\n"));
                }
            }
            Step::Gate { activation } => {
                let gate = ACTIVATIONS[*activation].replace("(h", "(g");
                body.push_str(&format!("    g = h * 0.5\n    g = {gate}\n    h = h * g\n"));
            }
            Step::MaxPool => {
                body.push_str("    h = max_pool2d(h, kernel = 3, stride = 1, padding = 1)\n")
            }
        }
        let name = format!("s{index}");
        body.push_str(&format!("    {name} = h\n"));
        saved.push((name, channels));
    }
    format!(
        "network random(x: f32[1, 3, 6, 6]) -> (y, pooled) {{\n{body}    y = h\n    pooled = linear(flatten(global_avg_pool(h)), 4) as head\n}}\n"
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn o0_equals_o2_and_plans_do_not_overlap(
        steps in prop_oneof![
            proptest::collection::vec(step(), 1..10),
            proptest::collection::vec(mobile_step(), 4..12),
        ],
        seed in 0u64..1000,
    ) {
        let source = network(&steps);
        let unoptimized = compile_to_ir(&source, &FrontendOptions::default())
            .unwrap_or_else(|errors| panic!("{source}\n{errors}"))
            .networks
            .remove(0);
        let mut optimized = unoptimized.clone();
        passes::optimize(&mut optimized, OptLevel::O2, |_, _| {});
        for graph in [&unoptimized, &optimized] {
            let plan = memory::plan(graph);
            memory::check(graph, &plan).unwrap_or_else(|error| panic!("{source}\n{error}"));
        }

        let weights = interpret::random_weights(&unoptimized, seed);
        let input = ndarray::ArrayD::from_shape_fn(vec![1, 3, 6, 6], |index| ((index[1] * 36 + index[2] * 6 + index[3]) as f32 * 0.37).sin());
        let inputs = [("x", Tensor::F32(input))];
        let expected = Interpreter::new(&unoptimized, weights.clone()).unwrap().run(&inputs).unwrap();
        let actual = Interpreter::new(&optimized, weights).unwrap().run(&inputs).unwrap();
        for ((name, expected), (_, actual)) in expected.iter().zip(&actual) {
            let error = actual.iter().zip(expected).map(|(a, e)| (a - e).abs() / e.abs().max(1.0)).fold(0.0f32, f32::max);
            prop_assert!(error <= 1e-4, "{name}: error {error}\n{source}");
        }
    }
}
