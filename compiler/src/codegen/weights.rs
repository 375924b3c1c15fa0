//! The weights' part of a network's code: the `WEIGHTS` specs, the binding of each weight to a
//! named local in `from_weights`, and the printing of each node's [`Preparation`] (packing,
//! batch-norm folding, rope tables) that runs there once.

use proc_macro2::TokenStream;
use quote::quote;

use super::network::Generator;
use super::tokens::{ToRust, f32_lit, lit, literal_list};
use crate::ir::{self, ParamInit, ValueDef, WeightStorage};
use crate::kernel_call::{self, BatchNormWeights, Conv2dLayout, LayerWeights, Preparation};

/// The pieces of `from_weights` and `WEIGHTS`.
pub(super) struct WeightsCode {
    /// A `WeightSpec` per param, in param order, each one short line built by a helper of
    /// [`WeightsCode::spec_helpers`].
    pub(super) specs: Vec<TokenStream>,
    /// The `const fn`s building the specs, one per kind of initializer in use.
    pub(super) spec_helpers: Vec<TokenStream>,
    /// `let field = ...;` per prepared node outside rolled runs (a run's are in its layer loop).
    pub(super) prepare: Vec<TokenStream>,
    /// The struct's raw weight fields outside rolled runs, each initialized by its same-named
    /// local: `field` or `field: field.into_f32()`.
    pub(super) raw_field_inits: Vec<TokenStream>,
}

/// The type of the field holding what `preparation` builds.
pub(super) fn prepared_type(preparation: &Preparation) -> TokenStream {
    match preparation {
        Preparation::Linear {
            storage: WeightStorage::F32,
            ..
        } => quote!(k::linear::PackedLinear),
        Preparation::Linear {
            storage:
                WeightStorage::Quantized(ir::Quantization {
                    format: ir::QuantTarget::Format(_),
                    ..
                }),
            ..
        } => quote!(k::quantized::QuantizedLinear),
        Preparation::Linear {
            storage:
                WeightStorage::Quantized(ir::Quantization {
                    format: ir::QuantTarget::AsStored,
                    ..
                }),
            ..
        } => quote!(k::quantized::StoredLinear),
        Preparation::Linear {
            storage: WeightStorage::Int8(_),
            ..
        } => unreachable!("prepared_type: linear weights are never stored in int8"),
        Preparation::Conv2d {
            storage: WeightStorage::Int8(_),
            ..
        } => quote!(k::int8::PackedConv2dInt8),
        Preparation::Conv1d { .. } => quote!(k::conv::PackedConv1d),
        Preparation::Conv2d {
            layout: Conv2dLayout::Nchw,
            ..
        } => quote!(k::conv::PackedConv2d),
        Preparation::Conv2d {
            layout: Conv2dLayout::ChannelsLast | Conv2dLayout::NchwToChannelsLast,
            ..
        } => quote!(k::conv::PackedConv2dChannelsLast),
        Preparation::DepthwiseBlock { .. } => quote!(k::conv::PackedDepthwiseBlock),
        Preparation::ConvMaxPool { .. } => quote!(k::conv::PackedConv2dMaxPool),
        Preparation::BatchNorm { .. } => quote!(k::norm::BatchNorm),
        Preparation::Rope { .. } => quote!(k::rope::RopeTable),
    }
}

/// The `const fn`s that build one weight spec for each kind of initializer (fan-in, normal,
/// ones, zeros) that `kinds_in_use` marks, so that no helper goes unused.
fn spec_helpers(kinds_in_use: [bool; 4]) -> Vec<TokenStream> {
    let helpers = [
        quote! {
            /// A weight drawn with a fan-in scaled uniform, in one line of [`Self::WEIGHTS`].
            const fn fan_in(name: &'static str, shape: &'static [usize], fan_in: usize) -> rt::weights::WeightSpec<'static> {
                rt::weights::WeightSpec { name, shape, init: rt::weights::Init::FanIn { fan_in } }
            }
        },
        quote! {
            /// A weight drawn from a normal distribution, in one line of [`Self::WEIGHTS`].
            const fn normal(name: &'static str, shape: &'static [usize]) -> rt::weights::WeightSpec<'static> {
                rt::weights::WeightSpec { name, shape, init: rt::weights::Init::Normal }
            }
        },
        quote! {
            /// A weight of ones, in one line of [`Self::WEIGHTS`].
            const fn ones(name: &'static str, shape: &'static [usize]) -> rt::weights::WeightSpec<'static> {
                rt::weights::WeightSpec { name, shape, init: rt::weights::Init::Ones }
            }
        },
        quote! {
            /// A weight of zeros, in one line of [`Self::WEIGHTS`].
            const fn zeros(name: &'static str, shape: &'static [usize]) -> rt::weights::WeightSpec<'static> {
                rt::weights::WeightSpec { name, shape, init: rt::weights::Init::Zeros }
            }
        },
    ];
    helpers
        .into_iter()
        .zip(kinds_in_use)
        .filter_map(|(helper, in_use)| in_use.then_some(helper))
        .collect()
}

impl Generator<'_> {
    pub(super) fn weights_code(&self) -> WeightsCode {
        let graph = self.graph;
        // A network has hundreds of weights: one short line each keeps `WEIGHTS` readable and
        // the generated file small.
        let mut kinds_in_use = [false; 4];
        let specs = graph
            .params
            .iter()
            .map(|(_, param)| {
                let weight_name = &param.name;
                let shape = literal_list(&graph.ty(param.value).shape);
                let kind = match param.init {
                    ParamInit::FanIn { .. } => 0,
                    ParamInit::Normal => 1,
                    ParamInit::Ones => 2,
                    ParamInit::Zeros => 3,
                };
                kinds_in_use[kind] = true;
                match param.init {
                    ParamInit::FanIn { fan_in } => {
                        let fan_in = lit(fan_in);
                        quote!(Self::fan_in(#weight_name, &#shape, #fan_in))
                    }
                    ParamInit::Normal => quote!(Self::normal(#weight_name, &#shape)),
                    ParamInit::Ones => quote!(Self::ones(#weight_name, &#shape)),
                    ParamInit::Zeros => quote!(Self::zeros(#weight_name, &#shape)),
                }
            })
            .collect();
        let spec_helpers = spec_helpers(kinds_in_use);
        let prepare = graph
            .nodes
            .iter()
            .filter(|(node, _)| self.run_of_node(*node).is_none())
            .filter_map(|(node, _)| self.prepare_statement(node))
            .collect();
        let raw_field_inits = self
            .sorted_param_fields()
            .into_iter()
            .filter(|(value, _)| self.run_of_weight(*value).is_none())
            .map(|(value, field)| self.raw_field_init(value, &field))
            .collect();
        WeightsCode {
            specs,
            spec_helpers,
            prepare,
            raw_field_inits,
        }
    }

    /// `let field = ...;` if `node` is prepared.
    pub(super) fn prepare_statement(&self, node: ir::Node) -> Option<TokenStream> {
        let field = self.node_fields.get(&node)?;
        let data = &self.graph.nodes[node];
        let preparation = kernel_call::preparation(self.graph, data, &self.site(node))
            .expect("nodes with fields are prepared");
        let init = self.preparation_code(node, data, &preparation);
        Some(quote!(let #field = #init;))
    }

    /// The initializer of the raw weight field `field` from its same-named local: a stored
    /// embedding table ([`ir::Graph::is_stored_table`]) stays as it is bound; another weight
    /// bound as loaded is dequantized if it came as blocks (an operation other than its quantized
    /// layer reads it as a tensor).
    pub(super) fn raw_field_init(&self, value: ir::Value, field: &syn::Ident) -> TokenStream {
        if self.binds_loaded_weight(value) && !self.graph.is_stored_table(value) {
            quote!(#field: #field.into_f32())
        } else {
            quote!(#field)
        }
    }

    /// `let binding = ...;` taking weight `param` out of `from_weights`'s `weights` at
    /// `position`: as loaded (blocks or f32) for the weights that quantized layers store, as f32
    /// values for the others.
    ///
    /// A stored embedding table to be quantized at load is quantized here, once: its embedding
    /// and the layers tied to it then share its blocks.
    pub(super) fn take_weight(&self, param: ir::Param, position: TokenStream) -> TokenStream {
        let binding = &self.weight_bindings[param.index()];
        let data = &self.graph.params[param];
        match data.storage {
            WeightStorage::Quantized(ir::Quantization {
                format: ir::QuantTarget::Format(format),
                ..
            }) if self.graph.is_stored_table(data.value) => {
                let (format, name) = (format.to_rust(), &data.name);
                let [rows, cols] = match self.graph.ty(data.value).shape[..] {
                    [rows, cols] => [lit(rows), lit(cols)],
                    _ => unreachable!("take_weight: an embedding table is a matrix"),
                };
                quote!(let #binding = weights[#position].take().into_quantized(#format, #rows, #cols).map_err(rt::error::at(#name))?;)
            }
            _ if self.binds_loaded_weight(data.value) => {
                quote!(let #binding = weights[#position].take();)
            }
            _ => quote!(let #binding = weights[#position].take_f32();),
        }
    }

    /// The raw weight fields with their weights, in param order.
    pub(super) fn sorted_param_fields(&self) -> Vec<(ir::Value, syn::Ident)> {
        let mut raw_fields: Vec<(ir::Value, syn::Ident)> = self
            .param_fields
            .iter()
            .map(|(value, field)| (*value, field.clone()))
            .collect();
        raw_fields.sort_by_key(|(value, _)| *value);
        raw_fields
    }

    /// The expression building what `preparation` describes, from `from_weights`'s locals.
    fn preparation_code(
        &self,
        node: ir::Node,
        data: &ir::NodeData,
        preparation: &Preparation,
    ) -> TokenStream {
        let at = {
            let layer = self.layer_name(node, data);
            quote!(.map_err(rt::error::at(#layer))?)
        };
        match preparation {
            Preparation::Linear {
                out_features,
                in_features,
                weights,
                activation,
                storage,
            } => {
                let (out_features, in_features) = (lit(*out_features), lit(*in_features));
                match storage {
                    WeightStorage::F32 => {
                        self.packed_layer(weights, *activation, &at, |weight, bias| {
                            quote!(k::linear::PackedLinear::new(#weight, #out_features, #in_features, #bias))
                        })
                    }
                    WeightStorage::Int8(_) => {
                        unreachable!("preparation_code: linear weights are never stored in int8")
                    }
                    WeightStorage::Quantized(quantization) => {
                        let mode = quantization.mode.to_rust();
                        // `weight` is an `rt::weights::Weight`: a GGUF tensor's blocks, or f32.
                        match quantization.format {
                            ir::QuantTarget::Format(format) => {
                                let format = format.to_rust();
                                self.packed_layer(weights, *activation, &at, |weight, bias| {
                                    quote!(k::quantized::QuantizedLinear::new(
                                        #weight.quantized(#format, #out_features, #in_features)#at,
                                        #bias,
                                        #mode,
                                    ))
                                })
                            }
                            ir::QuantTarget::AsStored => {
                                self.packed_layer(weights, *activation, &at, |weight, bias| {
                                    quote!(#weight.linear_as_stored(#out_features, #in_features, #bias, #mode))
                                })
                            }
                        }
                    }
                }
            }
            Preparation::Conv1d {
                weight_shape,
                options,
                weights,
                activation,
            } => {
                let (weight_shape, options) = (literal_list(weight_shape), options.to_rust());
                self.packed_layer(weights, *activation, &at, |weight, bias| {
                    quote!(k::conv::PackedConv1d::new(#weight, #weight_shape, #bias, #options))
                })
            }
            Preparation::Conv2d {
                weight_shape,
                options,
                layout,
                weights,
                activation,
                storage: WeightStorage::Int8(int8),
            } => {
                let (weight_shape, options) = (literal_list(weight_shape), options.to_rust());
                let channels_last = *layout == Conv2dLayout::ChannelsLast;
                let input = int8.input.to_rust();
                self.packed_layer(weights, *activation, &at, |weight, bias| {
                    quote!(k::int8::PackedConv2dInt8::new(#weight, #weight_shape, #bias, #options, #channels_last, #input))
                })
            }
            Preparation::Conv2d {
                weight_shape,
                options,
                layout,
                weights,
                activation,
                storage: _,
            } => {
                let (weight_shape, options) = (literal_list(weight_shape), options.to_rust());
                let packed = match layout {
                    Conv2dLayout::Nchw => quote!(PackedConv2d),
                    Conv2dLayout::ChannelsLast | Conv2dLayout::NchwToChannelsLast => {
                        quote!(PackedConv2dChannelsLast)
                    }
                };
                self.packed_layer(weights, *activation, &at, |weight, bias| {
                    quote!(k::conv::#packed::new(#weight, #weight_shape, #bias, #options))
                })
            }
            Preparation::DepthwiseBlock {
                expand,
                depthwise,
                project,
            } => {
                let optional = |layer: &Option<Box<Preparation>>| match layer {
                    Some(layer) => {
                        let layer = self.preparation_code(node, data, layer);
                        quote!(Some(#layer))
                    }
                    None => quote!(None),
                };
                let (expand, project) = (optional(expand), optional(project));
                let depthwise = self.preparation_code(node, data, depthwise);
                quote!(k::conv::PackedDepthwiseBlock::new(#expand, #depthwise, #project)#at)
            }
            Preparation::ConvMaxPool { conv, pool } => {
                let conv = self.preparation_code(node, data, conv);
                let pool = pool.to_rust();
                quote!(k::conv::PackedConv2dMaxPool::new(#conv, #pool))
            }
            Preparation::BatchNorm { parameters } => {
                let BatchNormWeights {
                    weight,
                    bias,
                    mean,
                    variance,
                    eps,
                } = *parameters;
                let (weight, bias, mean, variance) = (
                    self.weight_binding(weight),
                    self.weight_binding(bias),
                    self.weight_binding(mean),
                    self.weight_binding(variance),
                );
                let eps = f32_lit(eps);
                quote!(k::norm::BatchNorm::new(&k::norm::BatchNormParams {
                    mean: &#mean, variance: &#variance, weight: Some(&#weight), bias: Some(&#bias), eps: #eps,
                })#at)
            }
            Preparation::Rope {
                head_dim,
                theta,
                positions,
            } => {
                let (head_dim, theta, positions) =
                    (lit(*head_dim), f32_lit(*theta), lit(*positions));
                quote!(k::rope::RopeTable::new(#head_dim, #theta, #positions)#at)
            }
        }
    }

    /// A packed conv or linear layer: `new(weight, bias)` builds it, after folding a batch norm
    /// into the weight and bias if the layer has one; the activation is the kernel's epilogue.
    fn packed_layer(
        &self,
        weights: &LayerWeights,
        activation: Option<nnc_ops::Activation>,
        at: &TokenStream,
        new: impl Fn(TokenStream, TokenStream) -> TokenStream,
    ) -> TokenStream {
        let weight = self.weight_binding(weights.weight);
        let bias = match weights.bias.map(|bias| self.weight_binding(bias)) {
            Some(bias) => quote!(Some(&#bias)),
            None => quote!(None),
        };
        // A weight bound as loaded is the receiver of a method; f32 values are borrowed.
        let loaded = self.binds_loaded_weight(weights.weight);
        let layer = match weights.batch_norm {
            None if loaded => {
                let new = new(quote!(#weight), bias);
                quote!(#new #at)
            }
            None => {
                let new = new(quote!(&#weight), bias);
                quote!(#new #at)
            }
            Some(batch_norm) => {
                // A weight bound as an `rt::weights::Weight` is folded in f32 (blocks are
                // dequantized) and the layer built from the folded values.
                let (weight, folded_weight) = if loaded {
                    (
                        quote!(#weight.clone().into_f32()),
                        quote!(rt::weights::Weight::F32(folded.weight)),
                    )
                } else {
                    (quote!(#weight), quote!(&folded.weight))
                };
                let (bn_weight, bn_bias, mean, variance) = (
                    self.weight_binding(batch_norm.weight),
                    self.weight_binding(batch_norm.bias),
                    self.weight_binding(batch_norm.mean),
                    self.weight_binding(batch_norm.variance),
                );
                let eps = f32_lit(batch_norm.eps);
                let new = new(folded_weight, quote!(Some(&folded.bias)));
                quote!({
                    let folded = k::norm::fold_batch_norm(&#weight, #bias, &k::norm::BatchNormToFold {
                        weight: &#bn_weight, bias: &#bn_bias, mean: &#mean, variance: &#variance, eps: #eps,
                    })#at;
                    #new #at
                })
            }
        };
        match activation {
            None => layer,
            Some(_) => {
                let activation = activation.to_rust();
                quote!(#layer.with_activation(#activation))
            }
        }
    }

    /// `from_gguf`: reads the file, keeping the blocks of the weights that quantized layers
    /// store (when the file has them in a block format the kernels run).
    pub(super) fn gguf_constructor(&self) -> TokenStream {
        let keep_blocks: Vec<usize> = self
            .graph
            .params
            .iter()
            .filter(|(_, param)| self.binds_loaded_weight(param.value))
            .map(|(index, _)| index.index())
            .collect();
        if keep_blocks.is_empty() {
            return quote! {
                /// Loads the weights from a GGUF file, by name (llama.cpp's names mapped to Hugging
                /// Face's for llama models); quantized tensors are dequantized to f32.
                pub fn from_gguf(path: impl AsRef<std::path::Path>) -> Result<Self, rt::ModelError> {
                    let weights = rt::weights::read_gguf(path.as_ref(), Self::WEIGHTS)?;
                    Self::from_weights(weights)
                }
            };
        }
        let keep_blocks = literal_list(&keep_blocks);
        quote! {
            /// Loads the weights from a GGUF file, by name (llama.cpp's names mapped to Hugging
            /// Face's for llama models). The weights of the quantized layers keep the file's
            /// blocks as they are when it stores them as Q8_0, Q4_0 or Q4_1; other quantized
            /// tensors are dequantized to f32.
            pub fn from_gguf(path: impl AsRef<std::path::Path>) -> Result<Self, rt::ModelError> {
                let weights = rt::weights::read_gguf_keeping_blocks(path.as_ref(), Self::WEIGHTS, &#keep_blocks)?;
                Self::from_weights(weights)
            }
        }
    }

    /// Whether `from_weights` binds `value` as an `rt::weights::Weight` (blocks or f32, as
    /// loaded) rather than as f32 values: the weights that quantized layers store.
    pub(super) fn binds_loaded_weight(&self, value: ir::Value) -> bool {
        match self.graph.values[value].def {
            ValueDef::Param(param) => {
                matches!(
                    self.graph.params[param].storage,
                    WeightStorage::Quantized(_)
                )
            }
            _ => false,
        }
    }

    /// The local a weight is bound to in `from_weights`.
    fn weight_binding(&self, value: ir::Value) -> &syn::Ident {
        match self.graph.values[value].def {
            ValueDef::Param(param) => &self.weight_bindings[param.index()],
            _ => unreachable!("weight_binding: {value:?} is not a weight"),
        }
    }
}
