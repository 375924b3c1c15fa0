//! The IR printer's view of an op's attributes: `key = value` pairs in a fixed order.

use std::fmt;

use super::{Activation, ElementwiseStep, Epilogue, Op};

/// Prints the attributes of an op as `key = value` pairs, the way the IR printer shows them.
pub struct DisplayAttrs<'a>(pub &'a Op);

impl fmt::Display for DisplayAttrs<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut attrs: Vec<String> = Vec::new();
        let mut push = |key: &str, value: String| attrs.push(format!("{key} = {value}"));
        match self.0 {
            Op::Linear { epilogue, .. } => push_epilogue(&mut push, epilogue),
            Op::GlobalAvgPool { channels_last } | Op::GlobalMaxPool { channels_last } => {
                if *channels_last {
                    push("layout", "\"nhwc\"".to_string());
                }
            }
            Op::MatMul | Op::Embedding | Op::PositionEmbedding | Op::Binary(_) => {}
            Op::Conv(conv) => {
                push("kernel", list(&conv.kernel));
                push("stride", list(&conv.stride));
                push("padding", list(&conv.padding));
                push("dilation", list(&conv.dilation));
                push("groups", conv.groups.to_string());
                if conv.channels_last {
                    let layout = if conv.nchw_input {
                        "\"nchw_to_nhwc\""
                    } else {
                        "\"nhwc\""
                    };
                    push("layout", layout.to_string());
                }
                push_epilogue(&mut push, &conv.epilogue);
                if let Some(pointwise) = &conv.pointwise {
                    let attrs = DisplayAttrs(&Op::Conv((**pointwise).clone())).to_string();
                    push("pointwise", format!("{{{attrs}}}"));
                }
                if let Some(pool) = &conv.max_pool {
                    let attrs = DisplayAttrs(&Op::MaxPool(pool.clone())).to_string();
                    push("max_pool", format!("{{{attrs}}}"));
                }
                if let Some(depthwise) = &conv.depthwise {
                    let attrs = DisplayAttrs(&Op::Conv((**depthwise).clone())).to_string();
                    push("depthwise", format!("{{{attrs}}}"));
                }
            }
            Op::ConvTranspose(conv) => {
                push("kernel", list(&conv.kernel));
                push("stride", list(&conv.stride));
                push("padding", list(&conv.padding));
                push("output_padding", list(&conv.output_padding));
                push("dilation", list(&conv.dilation));
                push("groups", conv.groups.to_string());
            }
            Op::Resize(options) => {
                push("size", list(&options.output_size));
                push(
                    "scale",
                    format!("[{}, {}]", float(options.scale[0]), float(options.scale[1])),
                );
                push("mode", format!("\"{}\"", options.mode.name()));
                push("coordinates", format!("\"{}\"", options.coordinates.name()));
                if options.mode == super::ResizeMode::Nearest {
                    push("nearest", format!("\"{}\"", options.nearest.name()));
                }
            }
            Op::Pad {
                before,
                after,
                mode,
                value,
            } => {
                push("before", list(before));
                push("after", list(after));
                push("mode", format!("\"{}\"", mode.name()));
                if *mode == super::PadMode::Constant {
                    push("value", float(*value));
                }
            }
            Op::MaxPool(pool) | Op::AvgPool(pool) => {
                push("kernel", list(&pool.kernel));
                push("stride", list(&pool.stride));
                push("padding", list(&pool.padding));
                if matches!(self.0, Op::MaxPool(_)) {
                    push("dilation", list(&pool.dilation));
                } else {
                    push("count_include_pad", pool.count_include_pad.to_string());
                }
                push("ceil_mode", pool.ceil_mode.to_string());
                if pool.channels_last {
                    push("layout", "\"nhwc\"".to_string());
                }
            }
            Op::BatchNorm { eps } => push("eps", float(*eps)),
            // Printed only when off: the weighted form is the usual one.
            Op::RmsNorm { eps, affine } => {
                push("eps", float(*eps));
                if !affine {
                    push("affine", "false".to_string());
                }
            }
            Op::LayerNorm { eps, affine } => {
                push("eps", float(*eps));
                push("affine", affine.to_string());
            }
            Op::Rope {
                heads,
                theta,
                interleaved,
            } => {
                push("heads", heads.to_string());
                push("theta", float(*theta));
                push("interleaved", interleaved.to_string());
            }
            Op::Attention(attention) => {
                push("heads", attention.heads.to_string());
                push("kv_heads", attention.kv_heads.to_string());
                push("head_dim", attention.head_dim.to_string());
                push("causal", attention.causal.to_string());
                push("scale", float(attention.scale));
                let pattern = &attention.pattern;
                if let Some(window) = pattern.window {
                    push("window", window.to_string());
                    push("dilation", pattern.dilation.to_string());
                }
                if !pattern.global_tokens.is_empty() {
                    push("global_tokens", list(&pattern.global_tokens));
                }
                if let Some(stride) = pattern.strided {
                    push("strided", stride.to_string());
                }
                if let Some(block_mask) = &pattern.block_mask {
                    push("block_size", block_mask.block_size.to_string());
                    let rows: Vec<String> = block_mask
                        .rows()
                        .map(|row| {
                            row.iter()
                                .map(|&keep| if keep { '1' } else { '0' })
                                .collect()
                        })
                        .collect();
                    push("block_mask", format!("[{}]", rows.join(" ")));
                }
                if let Some(max_context) = attention.kv_cache {
                    push("kv_cache", max_context.to_string());
                }
            }
            Op::Activation(Activation::LeakyRelu { negative_slope }) => {
                push("negative_slope", float(*negative_slope));
            }
            Op::Activation(Activation::GeluTanh) => {
                push("approximate", "\"tanh\"".to_string());
            }
            Op::Activation(Activation::Pow { exponent }) => push("exponent", float(*exponent)),
            Op::Activation(_) => {}
            Op::Softmax { axis } | Op::LogSoftmax { axis } => push("axis", axis.to_string()),
            Op::Reduce { axes, keepdims, .. } => {
                push("axes", list(axes));
                push("keepdims", keepdims.to_string());
            }
            Op::Affine { scale, shift } => {
                push("scale", float(*scale));
                push("shift", float(*shift));
            }
            Op::ElementwiseChain(steps) => {
                let steps: Vec<String> = steps
                    .iter()
                    .map(|step| match step {
                        ElementwiseStep::Activation(activation) => activation_text(*activation),
                        ElementwiseStep::Affine { scale, shift } => {
                            format!("affine({}, {})", float(*scale), float(*shift))
                        }
                    })
                    .collect();
                push("steps", format!("[{}]", steps.join(", ")));
            }
            Op::Reshape { shape } => push("shape", list(shape)),
            Op::Transpose { perm } => push("perm", list(perm)),
            Op::Concat { axis } => push("axis", axis.to_string()),
            Op::Slice { axis, start, end } => {
                push("axis", axis.to_string());
                push("start", start.to_string());
                push("end", end.to_string());
            }
            Op::Select { axis, index } => {
                push("axis", axis.to_string());
                push("index", index.to_string());
            }
        }
        f.write_str(&attrs.join(", "))
    }
}

fn push_epilogue(push: &mut impl FnMut(&str, String), epilogue: &Epilogue) {
    if let Some(eps) = epilogue.batch_norm {
        push("batch_norm", float(eps));
    }
    if epilogue.residual {
        push("residual", "true".to_string());
    }
    if let Some(activation) = epilogue.activation {
        push("activation", activation_text(activation));
    }
}

fn activation_text(activation: Activation) -> String {
    match activation {
        Activation::LeakyRelu { negative_slope } => {
            format!("leaky_relu({})", float(negative_slope))
        }
        Activation::GeluTanh => "gelu_tanh".to_string(),
        Activation::Pow { exponent } => format!("pow({})", float(exponent)),
        other => other.name().to_string(),
    }
}

fn list(values: &[usize]) -> String {
    let items: Vec<String> = values.iter().map(|value| value.to_string()).collect();
    format!("[{}]", items.join(", "))
}

/// Formats a float so that it reads back to the same `f32` and always shows it is a float.
fn float(value: f32) -> String {
    let text = format!("{value:?}");
    if text.contains(['.', 'e', 'E', 'N', 'i']) {
        text
    } else {
        format!("{text}.0")
    }
}
