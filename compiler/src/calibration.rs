//! Calibration of int8 convolutions: the range of values each 2-D convolution's input takes on
//! sample inputs (`nnc calibrate`), from which `--quantize int8` derives the u8 quantization of
//! that input (ONNX Runtime's MinMax rule, [`ActivationQuantization::from_range`]).
//!
//! A calibration names layers as the `.nn` does (`layer1.0.conv1`): it is taken on the graph as
//! lowered, before any pass, and applied there too (`lower/quantize.rs`). A convolution's input is
//! the same tensor whatever the passes fuse around it, so ranges taken before the passes hold
//! after them.

use std::collections::BTreeMap;

use nnc_ops::quant::ActivationQuantization;

use crate::ir::{Graph, NodeData, Op};

/// The observed range of one layer's input.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ActivationRange {
    pub min: f32,
    pub max: f32,
}

impl ActivationRange {
    /// The range of `values`; `None` if it has no finite value.
    pub fn of(values: &[f32]) -> Option<Self> {
        let mut finite = values.iter().copied().filter(|value| value.is_finite());
        let first = finite.next()?;
        let (min, max) = finite.fold((first, first), |(min, max), value| {
            (min.min(value), max.max(value))
        });
        Some(Self { min, max })
    }

    /// The smallest range holding both.
    pub fn union(self, other: Self) -> Self {
        Self {
            min: self.min.min(other.min),
            max: self.max.max(other.max),
        }
    }
}

/// The input ranges of a model's int8-eligible convolutions, by layer name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Calibration {
    /// How many sample inputs the ranges were taken over.
    pub samples: usize,
    pub layers: BTreeMap<String, ActivationRange>,
}

impl Calibration {
    /// How the input of `layer` is quantized, if the calibration saw it.
    pub fn input_quantization(&self, layer: &str) -> Option<ActivationQuantization> {
        let range = self.layers.get(layer)?;
        Some(ActivationQuantization::from_range(range.min, range.max))
    }

    /// Widens `layer`'s range to hold `range`.
    pub fn observe(&mut self, layer: &str, range: ActivationRange) {
        self.layers
            .entry(layer.to_string())
            .and_modify(|known| *known = known.union(range))
            .or_insert(range);
    }
}

/// Whether `node` is a convolution that `--quantize int8` runs in integers: 2-D, and ungrouped or
/// depthwise (the forms the int8 kernel has).
pub fn is_int8_conv(graph: &Graph, node: &NodeData) -> bool {
    let Op::Conv(attrs) = &node.op else {
        return false;
    };
    if attrs.kernel.len() != 2 {
        return false;
    }
    // The weight is [out, in / groups, kh, kw].
    let weight_shape = &graph.ty(node.inputs[1]).shape;
    attrs.groups == 1 || (weight_shape[1] == 1 && weight_shape[0] == attrs.groups)
}

mod json {
    //! The file `nnc calibrate` writes:
    //!
    //! ```json
    //! { "format": "nnc-calibration", "version": 1, "method": "minmax", "samples": 16,
    //!   "layers": { "conv1": { "min": -2.1, "max": 2.6, "scale": 0.0185, "zero_point": 113 } } }
    //! ```
    //!
    //! `scale` and `zero_point` are written for the reader; they are derived from `min` and `max`
    //! again when the file is read, so an edited range takes effect.

    use super::{ActivationRange, Calibration};
    use nnc_ops::quant::ActivationQuantization;
    use serde::{Deserialize, Serialize};
    use std::collections::BTreeMap;

    const FORMAT: &str = "nnc-calibration";
    const VERSION: u32 = 1;

    #[derive(Serialize, Deserialize)]
    struct File {
        format: String,
        version: u32,
        method: String,
        samples: usize,
        layers: BTreeMap<String, Layer>,
    }

    #[derive(Serialize, Deserialize)]
    struct Layer {
        min: f32,
        max: f32,
        #[serde(default, skip_deserializing)]
        scale: f32,
        #[serde(default, skip_deserializing)]
        zero_point: u8,
    }

    impl Calibration {
        /// The calibration as the JSON `nnc calibrate` writes.
        pub fn to_json(&self) -> String {
            let layers = self
                .layers
                .iter()
                .map(|(name, range)| {
                    let ActivationQuantization { scale, zero_point } =
                        ActivationQuantization::from_range(range.min, range.max);
                    let layer = Layer {
                        min: range.min,
                        max: range.max,
                        scale,
                        zero_point,
                    };
                    (name.clone(), layer)
                })
                .collect();
            let file = File {
                format: FORMAT.to_string(),
                version: VERSION,
                method: "minmax".to_string(),
                samples: self.samples,
                layers,
            };
            serde_json::to_string_pretty(&file).expect("a calibration serializes")
        }

        /// Reads what [`Calibration::to_json`] writes.
        pub fn from_json(text: &str) -> Result<Self, String> {
            let file: File = serde_json::from_str(text).map_err(|error| error.to_string())?;
            if file.format != FORMAT {
                return Err(format!(
                    "the file's format is `{}`, not `{FORMAT}`",
                    file.format
                ));
            }
            if file.version != VERSION {
                return Err(format!(
                    "calibration version {} is not supported (this nnc reads version {VERSION})",
                    file.version
                ));
            }
            let mut layers = BTreeMap::new();
            for (name, layer) in file.layers {
                if !(layer.min.is_finite() && layer.max.is_finite() && layer.min <= layer.max) {
                    return Err(format!(
                        "layer `{name}`: the range [{}, {}] is not a finite interval",
                        layer.min, layer.max
                    ));
                }
                let range = ActivationRange {
                    min: layer.min,
                    max: layer.max,
                };
                layers.insert(name, range);
            }
            Ok(Calibration {
                samples: file.samples,
                layers,
            })
        }
    }
}

/// Runs `graph` (as lowered, before any pass) on each sample and records the range of every
/// int8-eligible convolution's input.
#[cfg(feature = "interpreter")]
pub fn calibrate(
    interpreter: &crate::interpret::Interpreter<'_>,
    samples: &[Vec<(&str, crate::interpret::Tensor)>],
) -> Result<Calibration, crate::interpret::InterpretError> {
    let graph = interpreter.graph();
    let mut calibration = Calibration::default();
    for sample in samples {
        interpreter.run_observing(sample, &mut |node, input| {
            if is_int8_conv(graph, node)
                && let Some(range) = ActivationRange::of(input)
            {
                calibration.observe(&node.name, range);
            }
        })?;
        calibration.samples += 1;
    }
    Ok(calibration)
}
