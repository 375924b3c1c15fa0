//! The code of one node: its operands bound to slices of the arena (or to weight fields), and
//! its [`KernelCall`] printed as the runtime call it describes.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};

use super::network::Generator;
use super::tokens::{ToRust, arena_field, element_type, f32_lit, lit, literal_list, option_tokens};
use crate::ir::{self, ValueDef};
use crate::kernel_call::{
    self, AttentionCall, BinaryForm, Conv2dLayout, ConvLayout, KernelCall, NodeCall, Position,
};

impl Generator<'_> {
    /// The code of one node: bind its operands, call its kernel.
    pub(super) fn node_code(&self, node: ir::Node, data: &ir::NodeData) -> TokenStream {
        let graph = self.graph;
        let output_type = graph.ty(data.outputs[0]);
        let output_slot = self.plan.slots[data.outputs[0]].expect("node outputs have slots");
        let name = self.comment_name(node, data);
        let comment = format!("{name}: {}{} -> {output_type}", data.op.name(), {
            let attrs = ir::op::DisplayAttrs(&data.op).to_string();
            if attrs.is_empty() {
                String::new()
            } else {
                format!(" {{{attrs}}}")
            }
        });
        if self.borrowed_positions(data.outputs[0]).is_some() {
            let comment = format!("{comment} (read in its table)");
            return quote!(__nnc_comment!(#comment););
        }
        let NodeCall { call, operands } = kernel_call::kernel_call(graph, data, &self.site(node));
        if self.plan.in_place(data.outputs[0], data.inputs[0]) {
            return self.in_place_code(node, data, &call, &comment);
        }

        // Operands: arena inputs of the output's element type come from one split of that arena;
        // weights and inputs of the other element type are borrowed from their own fields.
        let names = operand_names(&call, operands.len());
        let mut split_ranges = Vec::new();
        let mut split_names = Vec::new();
        let mut other_bindings = Vec::new();
        let mut reads = Vec::new();
        for (&value, operand) in operands.iter().zip(&names) {
            if let Some(field) = self.param_fields.get(&value) {
                let field = self.field(field);
                other_bindings.push(match graph.is_stored_table(value) {
                    // An `rt::weights::Weight`: f32 values or blocks (see `Weight::embedding`).
                    true => quote!(let #operand = &#field;),
                    false => quote!(let #operand: &[f32] = &#field;),
                });
                continue;
            }
            let slot = self.plan.slots[value].expect("activations have slots");
            if let Some((source, place)) = self.borrowed(value) {
                reads.push(format!("{operand} = {}{place}", self.value_source(value)));
                let element = element_type(slot.dtype);
                other_bindings.push(quote!(let #operand: &[#element] = &#source;));
                continue;
            }
            reads.push(format!(
                "{operand} = {} at {}[{:?}]",
                self.value_source(value),
                arena_field(slot.dtype),
                slot.range()
            ));
            if slot.dtype == output_slot.dtype {
                split_ranges.push(self.value_pair(value, Some(node)));
                split_names.push(operand.clone());
            } else {
                let arena = arena_field(slot.dtype);
                let range = self.value_range(value, Some(node));
                other_bindings.push(quote!(let #operand = &self.#arena[#range];));
            }
        }
        let output_arena = arena_field(output_slot.dtype);
        let locations = format!(
            "{}{output_arena}[{:?}]",
            if reads.is_empty() {
                String::new()
            } else {
                format!("{} -> ", reads.join(", "))
            },
            output_slot.range()
        );
        // Without operands in the output's arena, the output range is borrowed alone.
        let split = match split_names.is_empty() {
            true => {
                let output_range = self.value_range(data.outputs[0], Some(node));
                quote!(let output = &mut self.#output_arena[#output_range];)
            }
            false => {
                let output_range = self.value_pair(data.outputs[0], Some(node));
                quote! {
                    let (output, [#(#split_names),*]) = rt::arena::split_mut(&mut self.#output_arena, #output_range, [#(#split_ranges),*]);
                }
            }
        };
        let call = self.call_code(node, data, &call, &names);
        quote! {
            __nnc_comment!(#comment);
            {
                __nnc_comment!(#locations);
                #(#other_bindings)*
                #split
                #call
            }
        }
    }

    /// The runtime call of `call`, reading `operands` and writing `output`.
    fn call_code(
        &self,
        node: ir::Node,
        data: &ir::NodeData,
        call: &KernelCall,
        operands: &[syn::Ident],
    ) -> TokenStream {
        let layer = self.layer_name(node, data);
        let at = quote!(.map_err(rt::error::at(#layer))?);
        let prepared = || self.field(&self.node_fields[&node]);
        let operand = |position: usize| &operands[position];
        let x = operand(0);
        match call {
            KernelCall::Linear { rows, residual } => {
                let (prepared, rows) = (prepared(), self.rows_tokens(node, *rows));
                match residual {
                    false => quote!(#prepared.forward(#x, #rows, output)#at;),
                    true => {
                        let residual = operand(1);
                        quote!(#prepared.forward_residual(#x, #rows, #residual, output)#at;)
                    }
                }
            }
            KernelCall::Conv1d {
                input_shape,
                residual,
            } => self.conv_code(
                prepared(),
                x,
                literal_list(input_shape),
                residual.then(|| operand(1)),
                &at,
            ),
            KernelCall::Conv2d {
                input_shape,
                layout: Conv2dLayout::NchwToChannelsLast,
                residual,
            } => {
                assert!(
                    !residual,
                    "the layout pass changes the layout only in convolutions without a residual"
                );
                let (prepared, shape) = (prepared(), literal_list(input_shape));
                quote!(#prepared.forward_from_nchw(#x, #shape, output, &mut self.workspace)#at;)
            }
            KernelCall::Conv2d {
                input_shape,
                residual,
                ..
            } => {
                let successor = self.quantized_successor(node);
                if successor.is_some() || self.reads_quantized(node) {
                    return self.int8_link_code(
                        node,
                        successor,
                        x,
                        literal_list(input_shape),
                        residual.then(|| operand(1)),
                        &at,
                    );
                }
                self.conv_code(
                    prepared(),
                    x,
                    literal_list(input_shape),
                    residual.then(|| operand(1)),
                    &at,
                )
            }
            KernelCall::DepthwiseBlock {
                input_shape,
                residual,
            } => self.conv_code(
                prepared(),
                x,
                literal_list(input_shape),
                residual.then(|| operand(1)),
                &at,
            ),
            KernelCall::ConvMaxPool { input_shape } => {
                self.conv_code(prepared(), x, literal_list(input_shape), None, &at)
            }
            KernelCall::ConvTranspose2d {
                input_shape,
                weight_shape,
                options,
                bias,
            } => {
                let (weight, options) = (operand(1), options.to_rust());
                let (input_shape, weight_shape) =
                    (literal_list(input_shape), literal_list(weight_shape));
                let bias = match bias {
                    true => {
                        let bias = operand(2);
                        quote!(Some(#bias))
                    }
                    false => quote!(None),
                };
                quote!(k::conv::conv_transpose2d(
                    #x, #input_shape, #weight, #weight_shape, #bias, &#options, output,
                    &mut self.workspace,
                )#at;)
            }
            KernelCall::Resize2d {
                input_shape,
                options,
            } => {
                let (shape, options) = (literal_list(input_shape), options.to_rust());
                quote!(k::resize::resize2d(#x, #shape, &#options, output)#at;)
            }
            KernelCall::Pad {
                input_shape,
                before,
                after,
                mode,
                value,
            } => {
                let (shape, before, after) = (
                    literal_list(input_shape),
                    literal_list(before),
                    literal_list(after),
                );
                let (mode, value) = (mode.to_rust(), f32_lit(*value));
                quote!(k::resize::pad(#x, &#shape, &#before, &#after, #mode, #value, output)#at;)
            }
            KernelCall::MatMul { a_shape, b_shape } => {
                let (a, b) = (operand(0), operand(1));
                let (a_shape, b_shape) = (literal_list(a_shape), literal_list(b_shape));
                quote!(k::matmul::matmul(
                    rt::TensorRef::new(#a, &#a_shape)#at,
                    rt::TensorRef::new(#b, &#b_shape)#at,
                    output,
                )#at;)
            }
            KernelCall::MaxPool1d {
                input_shape,
                options,
            } => {
                let (shape, options) = (literal_list(input_shape), options.to_rust());
                quote!(k::pool::max_pool1d(#x, #shape, &#options, output)#at;)
            }
            KernelCall::MaxPool2d {
                input_shape,
                options,
                layout,
            } => {
                let (shape, options) = (literal_list(input_shape), options.to_rust());
                let function = match layout {
                    ConvLayout::Nchw => quote!(max_pool2d),
                    ConvLayout::ChannelsLast => quote!(max_pool2d_channels_last),
                };
                quote!(k::pool::#function(#x, #shape, &#options, output)#at;)
            }
            KernelCall::AvgPool1d {
                input_shape,
                options,
            } => {
                let (shape, options) = (literal_list(input_shape), options.to_rust());
                quote!(k::pool::avg_pool1d(#x, #shape, &#options, output)#at;)
            }
            KernelCall::AvgPool2d {
                input_shape,
                options,
                layout,
            } => {
                let (shape, options) = (literal_list(input_shape), options.to_rust());
                let function = match layout {
                    ConvLayout::Nchw => quote!(avg_pool2d),
                    ConvLayout::ChannelsLast => quote!(avg_pool2d_channels_last),
                };
                quote!(k::pool::#function(#x, #shape, &#options, output)#at;)
            }
            KernelCall::GlobalAvgPool {
                input_shape,
                layout,
            } => {
                let shape = literal_list(input_shape);
                match layout {
                    ConvLayout::Nchw => quote!(k::pool::global_avg_pool(#x, &#shape, output)#at;),
                    ConvLayout::ChannelsLast => {
                        quote!(k::pool::global_avg_pool_channels_last(#x, #shape, output)#at;)
                    }
                }
            }
            KernelCall::GlobalMaxPool {
                input_shape,
                layout,
            } => {
                let shape = literal_list(input_shape);
                match layout {
                    ConvLayout::Nchw => quote!(k::pool::global_max_pool(#x, &#shape, output)#at;),
                    ConvLayout::ChannelsLast => {
                        quote!(k::pool::global_max_pool_channels_last(#x, #shape, output)#at;)
                    }
                }
            }
            KernelCall::BatchNorm { input_shape } => {
                let (shape, prepared) = (literal_list(input_shape), prepared());
                quote!(k::norm::batch_norm(#x, output, &#shape, &#prepared)#at;)
            }
            KernelCall::LayerNorm { size, eps, affine } => {
                let (size, eps) = (lit(*size), f32_lit(*eps));
                let (weight, bias) = match affine {
                    true => {
                        let (weight, bias) = (operand(1), operand(2));
                        (quote!(Some(#weight)), quote!(Some(#bias)))
                    }
                    false => (quote!(None), quote!(None)),
                };
                quote!(k::norm::layer_norm(#x, output, #size, &k::norm::LayerNormOptions {
                    weight: #weight, bias: #bias, eps: #eps,
                })#at;)
            }
            KernelCall::RmsNorm { size, eps, affine } => {
                let (size, eps) = (lit(*size), f32_lit(*eps));
                let weight = match affine {
                    true => {
                        let weight = operand(1);
                        quote!(Some(#weight))
                    }
                    false => quote!(None),
                };
                quote!(k::norm::rms_norm(#x, output, #size, &k::norm::RmsNormOptions { weight: #weight, eps: #eps })#at;)
            }
            KernelCall::Embedding { rows, dim } => {
                let (ids, table, rows, dim) = (operand(0), operand(1), lit(*rows), lit(*dim));
                match self.graph.is_stored_table(data.inputs[1]) {
                    true => quote!(#table.embedding(#rows, #dim, #ids, output)#at;),
                    false => quote!(k::embedding::embedding(#table, #rows, #dim, #ids, output)#at;),
                }
            }
            KernelCall::PositionEmbedding {
                position: Position::Start,
                ..
            } => {
                let table = operand(0);
                quote!(output.copy_from_slice(&#table[..output.len()]);)
            }
            KernelCall::PositionEmbedding {
                dim,
                tokens,
                position: Position::Cached,
            } => {
                let table = operand(0);
                let last = match (tokens, &self.chunk_rows) {
                    (_, Some(_)) => quote!(position + rows - 1),
                    (1, None) => quote!(position),
                    (_, None) => {
                        let before_last = lit(tokens - 1);
                        quote!(position + #before_last)
                    }
                };
                let (dim, tokens) = (lit(*dim), self.rows_tokens(node, *tokens));
                quote! {
                    // The step's positions follow the cached ones.
                    let position = cache.position();
                    let Some(table_rows) = #table.get(position * #dim..(position + #tokens) * #dim) else {
                        return Err(rt::KernelError::IndexOutOfRange {
                            operation: "position_embedding", index: #last, length: #table.len() / #dim,
                        }).map_err(rt::error::at(#layer));
                    };
                    output.copy_from_slice(table_rows);
                }
            }
            KernelCall::Rope {
                batch,
                seq,
                heads,
                convention,
                position,
            } => {
                let (batch, seq, heads) = (lit(*batch), self.rows_tokens(node, *seq), lit(*heads));
                let (convention, table) = (convention.to_rust(), prepared());
                let offset = match position {
                    Position::Start => quote!(0),
                    Position::Cached => quote!(cache.position()),
                };
                quote!(k::rope::apply_rope(#x, output, #batch, #seq, &#table, &k::rope::RopeOptions {
                    n_heads: #heads, convention: #convention, position_offset: #offset,
                })#at;)
            }
            KernelCall::Attention(attention) => {
                self.attention_code(node, data, attention, operands, &at)
            }
            KernelCall::Activation(activation) => {
                let activation = activation.to_rust();
                quote!(k::activation::apply_activation(#x, output, #activation)#at;)
            }
            KernelCall::Softmax { shape, axis } => {
                let (shape, axis) = (literal_list(shape), lit(*axis));
                quote!(k::softmax::softmax(#x, output, &#shape, #axis)#at;)
            }
            KernelCall::LogSoftmax { shape, axis } => {
                let (shape, axis) = (literal_list(shape), lit(*axis));
                quote!(k::softmax::log_softmax(#x, output, &#shape, #axis)#at;)
            }
            KernelCall::Reduce {
                input_shape,
                axes,
                op,
            } => {
                let (shape, axes, op) =
                    (literal_list(input_shape), literal_list(axes), op.to_rust());
                quote!(k::reduce::reduce(#x, output, &#shape, &#axes, #op)#at;)
            }
            KernelCall::Binary { op, form } => {
                let (op, a, b) = (op.to_rust(), operand(0), operand(1));
                match form {
                    BinaryForm::SameShape => {
                        quote!(k::elementwise::binary_same_shape(#op, #a, #b, output)#at;)
                    }
                    BinaryForm::RowVector => {
                        quote!(k::elementwise::binary_row_vector(#op, #a, #b, output)#at;)
                    }
                    BinaryForm::Broadcast { a_shape, b_shape } => {
                        let (a_shape, b_shape) = (literal_list(a_shape), literal_list(b_shape));
                        quote!(k::elementwise::binary(
                            #op,
                            rt::TensorRef::new(#a, &#a_shape)#at,
                            rt::TensorRef::new(#b, &#b_shape)#at,
                            output,
                        )#at;)
                    }
                }
            }
            KernelCall::Affine { scale, shift } => {
                let (scale, shift) = (f32_lit(*scale), f32_lit(*shift));
                quote!(k::elementwise::affine(#x, output, #scale, #shift);)
            }
            KernelCall::ElementwiseChain(steps) => {
                let steps = steps.iter().map(ToRust::to_rust);
                quote!(k::elementwise::elementwise_chain(#x, output, &[#(#steps),*])#at;)
            }
            KernelCall::Copy => quote!(output.copy_from_slice(#x);),
            KernelCall::Permute { input_shape, perm } => {
                let (shape, perm) = (literal_list(input_shape), literal_list(perm));
                quote!(k::shape::permute_any_type(#x, &#shape, &#perm, output)#at;)
            }
            KernelCall::Concat { axis, shapes } => {
                let axis = lit(*axis);
                let parts = operands.iter().zip(shapes).map(|(operand, shape)| {
                    let shape = literal_list(shape);
                    quote!((#operand, &#shape[..]))
                });
                quote!(k::shape::concat_any_type(&[#(#parts),*], #axis, output)#at;)
            }
            KernelCall::Slice {
                input_shape,
                axis,
                start,
                end,
            } => {
                let shape = literal_list(input_shape);
                let (axis, start, end) = (lit(*axis), lit(*start), lit(*end));
                quote!(k::shape::slice_axis_any_type(#x, &#shape, #axis, #start, #end, output)#at;)
            }
        }
    }

    /// A packed convolution's forward, with the fused residual if it has one.
    fn conv_code(
        &self,
        prepared: TokenStream,
        x: &syn::Ident,
        shape: TokenStream,
        residual: Option<&syn::Ident>,
        at: &TokenStream,
    ) -> TokenStream {
        let workspace = quote!(&mut self.workspace);
        match residual {
            None => quote!(#prepared.forward(#x, #shape, output, #workspace)#at;),
            Some(residual) => {
                quote!(#prepared.forward_residual(#x, #shape, #residual, output, #workspace)#at;)
            }
        }
    }

    /// The int8 layer that `node` writes its output for as bytes (see
    /// [`ir::Graph::quantized_successor`]), when both are emitted together: outside rolled runs,
    /// or in the same iteration of one (a reader in the next iteration is another layer struct's),
    /// and not in a decoder's steps.
    fn quantized_successor(&self, node: ir::Node) -> Option<ir::Node> {
        if self.decoding.is_some() || self.chunk.is_some() {
            return None;
        }
        let next = self.graph.quantized_successor(node)?;
        let same_iteration = self.rolling.as_ref().is_none_or(|rolling| {
            rolling.runs.iter().all(|run| {
                match (run.position_of(node.index()), run.position_of(next.index())) {
                    (Some((first, _)), Some((second, _))) => first == second,
                    (None, None) => true,
                    _ => false,
                }
            })
        });
        same_iteration.then_some(next)
    }

    /// Whether the int8 layer `node` reads bytes its producer quantized for it.
    fn reads_quantized(&self, node: ir::Node) -> bool {
        self.graph
            .producer(self.graph.nodes[node].inputs[0])
            .is_some_and(|producer| self.quantized_successor(producer) == Some(node))
    }

    /// An int8 layer next to another: its input is the bytes its producer wrote for it, or its
    /// output is bytes for `successor`, in the f32 arena slot of the value between them (a slot of
    /// `4 * elements` bytes holds the at most `elements + 3` per pixel the reader takes). The
    /// value is then never stored as f32: the interpreter's f32 path quantizes the same values
    /// into the same bytes.
    fn int8_link_code(
        &self,
        node: ir::Node,
        successor: Option<ir::Node>,
        x: &syn::Ident,
        shape: TokenStream,
        residual: Option<&syn::Ident>,
        at: &TokenStream,
    ) -> TokenStream {
        let prepared = self.field(&self.node_fields[&node]);
        let input = match self.reads_quantized(node) {
            true => quote!(k::int8::Int8Input::Quantized(rt::arena::bytes(#x))),
            false => quote!(k::int8::Int8Input::Float(#x)),
        };
        let output = match successor {
            Some(next) => {
                let next = self.field(&self.node_fields[&next]);
                quote!(k::int8::Int8Output::QuantizedFor { next: &#next, bytes: rt::arena::bytes_mut(output) })
            }
            None => quote!(k::int8::Int8Output::Float(output)),
        };
        let residual = match residual {
            Some(residual) => quote!(Some(#residual)),
            None => quote!(None),
        };
        quote!(#prepared.forward_int8(#input, #shape, #residual, #output, &mut self.workspace)#at;)
    }

    /// An attention call: against the decoder's KV cache, or over the whole sequence with the
    /// tiled kernel.
    fn attention_code(
        &self,
        node: ir::Node,
        data: &ir::NodeData,
        attention: &AttentionCall,
        operands: &[syn::Ident],
        at: &TokenStream,
    ) -> TokenStream {
        let (q, key, value) = (&operands[0], &operands[1], &operands[2]);
        let shape = match &self.chunk_rows {
            // The chunk's real tokens are its queries.
            Some(_) => {
                let shape = &attention.shape;
                let (batch, key_len, n_heads, n_kv_heads, head_dim) = (
                    lit(shape.batch),
                    lit(shape.key_len),
                    lit(shape.n_heads),
                    lit(shape.n_kv_heads),
                    lit(shape.head_dim),
                );
                let query_len = self.rows_tokens(node, shape.query_len);
                quote!(k::attention::AttentionShape {
                    batch: #batch, query_len: #query_len, key_len: #key_len,
                    n_heads: #n_heads, n_kv_heads: #n_kv_heads, head_dim: #head_dim,
                })
            }
            None => attention.shape.to_rust(),
        };
        let scale = f32_lit(attention.scale);
        let (workspace, layout) = &self.attention_fields[&node];
        let workspace = self.field(workspace);
        if let Some(cache_layer) = attention.cache_layer {
            let cache_layer = self.cache_layer_tokens(node, cache_layer);
            let layer = self.layer_name(node, data);
            // The cache maps its keys to absolute positions for the pattern.
            let pattern = match &attention.pattern {
                None => quote!(None),
                Some(pattern) => {
                    let pattern = self.pattern_tokens(pattern);
                    quote!(Some(&#pattern))
                }
            };
            return quote! {
                cache.attend(
                    #cache_layer, #layer, #q, #key, #value, &#shape, #scale, #pattern, output,
                    &mut #workspace,
                )?;
            };
        }
        let causal = attention.causal;
        let padding = match attention.key_padding_mask {
            true => {
                let mask = &operands[3];
                quote!(Some(#mask))
            }
            false => quote!(None),
        };
        let (mask, layout) = match (layout, &attention.pattern) {
            (Some(layout), Some(pattern)) => {
                // The layout skips blocks the pattern never keeps; inside partially kept
                // blocks the kernel asks the pattern pair by pair.
                let pattern = self.pattern_tokens(pattern);
                let layout = self.field(layout);
                (
                    quote!(k::attention::AttentionMask::Function(&|query, key| #pattern.allows(query, key))),
                    quote!(Some(&#layout)),
                )
            }
            _ => (quote!(k::attention::AttentionMask::None), quote!(None)),
        };
        quote!(k::flash_attention::flash_attention(
            #q, #key, #value,
            &#shape,
            &k::attention::AttentionOptions {
                scale: Some(#scale), causal: #causal, query_position_offset: 0,
                key_padding_mask: #padding, mask: #mask,
            },
            #layout,
            output,
            &mut #workspace,
        )#at;)
    }

    /// The code of a node that overwrites its first input, which dies here (see the memory plan).
    fn in_place_code(
        &self,
        node: ir::Node,
        data: &ir::NodeData,
        call: &KernelCall,
        comment: &str,
    ) -> TokenStream {
        let layer = self.layer_name(node, data);
        let at = quote!(.map_err(rt::error::at(#layer))?);
        let slot = self.plan.slots[data.outputs[0]].expect("node outputs have slots");
        let arena = arena_field(slot.dtype);
        let range = self.value_range(data.outputs[0], Some(node));
        let comment = format!("{comment} (in place at {arena}[{:?}])", slot.range());
        let call = match call {
            // The same elements in the same order: the output is the input's memory.
            KernelCall::Copy => return quote!(__nnc_comment!(#comment);),
            KernelCall::Activation(activation) => {
                let activation = activation.to_rust();
                quote!(k::activation::apply_activation_in_place(&mut self.#arena[#range], #activation);)
            }
            KernelCall::Affine { scale, shift } => {
                let (scale, shift) = (f32_lit(*scale), f32_lit(*shift));
                quote!(k::elementwise::affine_in_place(&mut self.#arena[#range], #scale, #shift);)
            }
            KernelCall::ElementwiseChain(steps) => {
                let steps = steps.iter().map(ToRust::to_rust);
                quote!(k::elementwise::elementwise_chain_in_place(&mut self.#arena[#range], &[#(#steps),*]);)
            }
            KernelCall::BatchNorm { input_shape } => {
                let prepared = self.field(&self.node_fields[&node]);
                let shape = literal_list(input_shape);
                quote!(k::norm::batch_norm_in_place(&mut self.#arena[#range], &#shape, &#prepared)#at;)
            }
            KernelCall::Binary { op, form } => {
                let op = op.to_rust();
                let function = match form {
                    BinaryForm::SameShape => quote!(binary_same_shape_in_place),
                    BinaryForm::RowVector => quote!(binary_row_vector_in_place),
                    BinaryForm::Broadcast { .. } => unreachable!(
                        "in_place_code: the memory plan runs only same-shape and row-vector binaries in place"
                    ),
                };
                let other = data.inputs[1];
                let pair = self.value_pair(data.outputs[0], Some(node));
                let borrowed = self.borrowed(other).map(|(source, _)| source);
                let bind_other = match (self.param_fields.get(&other), borrowed) {
                    (Some(field), _) => {
                        let field = self.field(field);
                        quote! {
                            let values = &mut self.#arena[#range];
                            let other: &[f32] = &#field;
                        }
                    }
                    (None, Some(source)) => {
                        let element = element_type(slot.dtype);
                        quote! {
                            let values = &mut self.#arena[#range];
                            let other: &[#element] = &#source;
                        }
                    }
                    (None, None) => {
                        let other_range = self.value_pair(other, Some(node));
                        quote!(let (values, [other]) = rt::arena::split_mut(&mut self.#arena, #pair, [#other_range]);)
                    }
                };
                quote! {
                    #bind_other
                    k::elementwise::#function(#op, values, other)#at;
                }
            }
            other => unreachable!("in_place_code: {other:?} cannot run in place"),
        };
        quote! {
            __nnc_comment!(#comment);
            {
                #call
            }
        }
    }

    /// A `SparsePattern` literal.
    pub(super) fn pattern_tokens(&self, pattern: &ir::SparsePattern) -> TokenStream {
        let window = option_tokens(pattern.window);
        let strided = option_tokens(pattern.strided);
        let dilation = lit(pattern.dilation);
        let global_tokens = literal_list(&pattern.global_tokens);
        let (block_size, block_mask) = match &pattern.block_mask {
            Some(blocks) => {
                let mask = &blocks.mask;
                (lit(blocks.block_size), quote!(&[#(#mask),*]))
            }
            None => (lit(1), quote!(&[])),
        };
        quote!(k::attention::SparsePattern {
            window: #window, dilation: #dilation, global_tokens: &#global_tokens, strided: #strided,
            block_size: #block_size, block_mask: #block_mask,
        })
    }

    /// Where a value read from the arena comes from, for comments: a layer, or an input.
    fn value_source(&self, value: ir::Value) -> String {
        match self.graph.values[value].def {
            ValueDef::Node { node, .. } => {
                format!("`{}`", self.comment_name(node, &self.graph.nodes[node]))
            }
            ValueDef::Input { index } => format!("input `{}`", self.graph.inputs[index].name),
            ValueDef::Param(_) => "a weight".to_string(),
        }
    }
}

/// The names of a call's operands in generated code, after what they hold.
fn operand_names(call: &KernelCall, count: usize) -> Vec<syn::Ident> {
    let roles: &[&str] = match call {
        KernelCall::Linear { .. }
        | KernelCall::Conv1d { .. }
        | KernelCall::Conv2d { .. }
        | KernelCall::DepthwiseBlock { .. }
        | KernelCall::ConvMaxPool { .. } => &["x", "residual"],
        KernelCall::MatMul { .. } | KernelCall::Binary { .. } => &["a", "b"],
        KernelCall::LayerNorm { .. } => &["x", "weight", "bias"],
        KernelCall::RmsNorm { .. } => &["x", "weight"],
        KernelCall::Embedding { .. } => &["ids", "table"],
        KernelCall::PositionEmbedding { .. } => &["table"],
        KernelCall::Attention(_) => &["q", "key", "value", "mask"],
        KernelCall::Concat { .. } => &[],
        _ => &["x"],
    };
    (0..count)
        .map(|position| match roles.get(position) {
            Some(role) => format_ident!("{}", role),
            None => format_ident!("part_{}", position),
        })
        .collect()
}
