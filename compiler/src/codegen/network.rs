//! The generator of one network's code: its struct, fields, constructors, `forward`, and the
//! input and output types. The weights' part is in [`super::weights`], each node's call in
//! [`super::node`], a decoder's methods in [`super::decoder`].
//!
//! Every access to a node's prepared field, a raw weight field or an attention workspace goes
//! through [`Generator::field`], every KV-cache layer index through
//! [`Generator::cache_layer_tokens`], and every layer name in error mapping through
//! [`Generator::layer_name`]: in a rolled run's body ([`super::rolled`]) those three read the
//! loop's `layer`, `index` and `names` instead.

use std::collections::{HashMap, HashSet};

use nnc_ops::AttentionShape;
use proc_macro2::TokenStream;
use quote::{format_ident, quote};

use super::chunk_rows::ChunkRows;
use super::decoder::ChunkStep;
use super::decoding::Decoding;
use super::rolled::{self, LayerItems, Rolling};
use super::tokens::{
    ToRust, arena_field, dimension_type, element_type, lit, literal_list, range_tokens,
    sanitized_name,
};
use super::{CodegenOptions, MemoryPlan, struct_name};
use crate::ir::{self, Graph, Op, ValueDef};
use crate::kernel_call::{self, Site};

/// The state of generating one network's (or one decoder's) code.
pub(super) struct Generator<'g> {
    pub(super) graph: &'g Graph,
    pub(super) plan: MemoryPlan,
    /// Field names of prepared nodes.
    pub(super) node_fields: HashMap<ir::Node, syn::Ident>,
    /// Field names of weights used raw (not only through a prepared node).
    pub(super) param_fields: HashMap<ir::Value, syn::Ident>,
    /// For each attention node, its workspace field and, for sparse patterns, its layout field.
    pub(super) attention_fields: HashMap<ir::Node, (syn::Ident, Option<syn::Ident>)>,
    /// The local each weight is bound to in `from_weights`, by param index: its raw field's
    /// name, or a name made from the weight's.
    pub(super) weight_bindings: Vec<syn::Ident>,
    used_names: HashSet<String>,
    /// Set when generating the one-token step of a decoder with a KV cache.
    pub(super) decoding: Option<Decoding>,
    /// A decoder's prefill step of several tokens, when it has one.
    pub(super) chunk: Option<ChunkStep>,
    /// Set when generating a decoder's chunk step that runs with its real row count.
    pub(super) chunk_rows: Option<ChunkRows>,
    /// The runs of identical layers emitted as loops ([`super::rolled`]).
    pub(super) rolling: Option<Rolling>,
    /// The fields that live in a layer struct of a rolled run rather than in the network's.
    layer_fields: HashSet<syn::Ident>,
}

impl<'g> Generator<'g> {
    pub(super) fn new(graph: &'g Graph, options: &CodegenOptions) -> Self {
        let (plan, rolling) = rolled::plan(graph, &[], &[]);
        Self::with_plan(graph, options, plan, rolling, &[])
    }

    /// A generator using `plan` and `rolling`, with `reserved` field names kept free.
    pub(super) fn with_plan(
        graph: &'g Graph,
        _options: &CodegenOptions,
        plan: MemoryPlan,
        rolling: Option<Rolling>,
        reserved: &[&str],
    ) -> Self {
        let mut generator = Generator {
            graph,
            plan,
            node_fields: HashMap::new(),
            param_fields: HashMap::new(),
            attention_fields: HashMap::new(),
            weight_bindings: Vec::new(),
            decoding: None,
            chunk: None,
            chunk_rows: None,
            rolling,
            layer_fields: HashSet::new(),
            // Names of fields and of `from_weights`'s locals, which share one namespace.
            used_names: [
                "arena",
                "arena_i64",
                "workspace",
                "weights",
                "folded",
                "layer",
                "layers",
                "names",
                "names_of_layer",
                "index",
            ]
            .iter()
            .chain(reserved)
            .map(|name| name.to_string())
            .collect(),
        };
        for (node, data) in graph.nodes.iter() {
            // A run's later iterations use the first one's fields, which are named without the
            // layer index and live in the run's layer struct.
            if generator.is_repeat(node) {
                continue;
            }
            let in_run = generator.run_of_node(node).is_some();
            let field_name = generator.field_name(node, &data.name);
            let mut new_fields = Vec::new();
            // A prepared node consumes its weights (all inputs after the first) when it is built.
            let prepared = kernel_call::preparation(graph, data, &Site::default()).is_some();
            let raw_inputs = match prepared {
                true => {
                    let field = generator.fresh_name(&field_name);
                    new_fields.push(field.clone());
                    generator.node_fields.insert(node, field);
                    &data.inputs[..1]
                }
                false => &data.inputs[..],
            };
            if let Op::Attention(attrs) = &data.op {
                let workspace = generator.fresh_name(&format!("{field_name}_workspace"));
                let layout = (!attrs.pattern.is_dense())
                    .then(|| generator.fresh_name(&format!("{field_name}_layout")));
                new_fields.push(workspace.clone());
                new_fields.extend(layout.clone());
                generator.attention_fields.insert(node, (workspace, layout));
            }
            if in_run {
                generator.layer_fields.extend(new_fields);
            }
            for &input in raw_inputs {
                if matches!(graph.values[input].def, ValueDef::Param(_))
                    && !generator.param_fields.contains_key(&input)
                {
                    let name = &graph.param_of(input).expect("a param").name;
                    let name = generator.weight_field_name(input, name);
                    let field = generator.fresh_name(&name);
                    if generator.run_of_weight(input).is_some() {
                        generator.layer_fields.insert(field.clone());
                    }
                    generator.param_fields.insert(input, field);
                }
            }
        }
        generator.weight_bindings = graph
            .params
            .iter()
            .map(|(index, param)| {
                if generator.is_repeated_weight(param.value) {
                    // Never printed: the layer loop binds the first iteration's local.
                    return format_ident!("repeated_weight_{}", index.index());
                }
                match generator.param_fields.get(&param.value) {
                    Some(field) => field.clone(),
                    None => {
                        let name = generator.weight_field_name(param.value, &param.name);
                        generator.fresh_name(&name)
                    }
                }
            })
            .collect();
        generator
    }

    /// A field name from a layer name, unique in the struct: `layer1.0.conv1` is `layer1_0_conv1`.
    fn fresh_name(&mut self, name: &str) -> syn::Ident {
        let base = sanitized_name(name);
        let mut candidate = base.clone();
        let mut counter = 1;
        while !self.used_names.insert(candidate.clone()) {
            counter += 1;
            candidate = format!("{base}_{counter}");
        }
        format_ident!("{}", candidate)
    }

    pub(super) fn network(&self) -> TokenStream {
        let graph = self.graph;
        let name = match self.decoding {
            Some(_) => format_ident!("{}Decoder", struct_name(&graph.name)),
            None => format_ident!("{}", struct_name(&graph.name)),
        };
        let doc = format!(
            " The `{}` network: {} parameters, {} bytes of activations.",
            graph.name,
            ir::print::group_digits(graph.parameter_count()),
            ir::print::group_digits((self.plan.f32_len * 4 + self.plan.i64_len * 8) as u64)
        );

        // Fields; a rolled run's go to its layer struct (`layer_fields[run]`).
        let mut fields = Vec::new();
        let mut layer_fields = vec![Vec::new(); self.run_count()];
        let mut layer_inits = vec![Vec::new(); self.run_count()];
        for (node, data) in graph.nodes.iter() {
            if let Some(field) = self.node_fields.get(&node) {
                let preparation = kernel_call::preparation(graph, data, &self.site(node))
                    .expect("nodes with fields are prepared");
                let ty = super::weights::prepared_type(&preparation);
                match self.run_of_node(node) {
                    Some(run) => {
                        layer_fields[run].push(quote!(#field: #ty));
                        layer_inits[run].push(quote!(#field,));
                    }
                    None => fields.push(quote!(#field: #ty)),
                }
            }
        }
        for (value, field) in self.sorted_param_fields() {
            let ty = match graph.is_stored_table(value) {
                true => quote!(rt::weights::Weight),
                false => quote!(Vec<f32>),
            };
            match self.run_of_weight(value) {
                Some(run) => {
                    layer_fields[run].push(quote!(#field: #ty));
                    let init = self.raw_field_init(value, &field);
                    layer_inits[run].push(quote!(#init,));
                }
                None => fields.push(quote!(#field: #ty)),
            }
        }
        let mut attention_inits = Vec::new();
        for (node, data) in graph.nodes.iter() {
            let (Some((workspace, layout)), Op::Attention(attrs)) =
                (self.attention_fields.get(&node), &data.op)
            else {
                continue;
            };
            // Sized for the largest step, so that decoding never grows it.
            let shape = match self
                .chunk
                .as_ref()
                .and_then(|chunk| chunk.attention_shapes.get(&node))
            {
                Some(shape) => *shape,
                None => self.attention_shape(node, data, attrs),
            }
            .to_rust();
            let (fields, attention_inits) = match self.run_of_node(node) {
                Some(run) => (&mut layer_fields[run], &mut layer_inits[run]),
                None => (&mut fields, &mut attention_inits),
            };
            fields.push(quote!(#workspace: k::flash_attention::FlashAttentionWorkspace));
            attention_inits.push(
                quote!(#workspace: k::flash_attention::FlashAttentionWorkspace::new(&#shape),),
            );
            if let Some(layout) = layout {
                fields.push(quote!(#layout: k::flash_attention::BlockSparseLayout));
                let layer = self.layer_name(node, data);
                let pattern = self.pattern_tokens(&attrs.pattern);
                let (query_len, key_len) = (
                    lit(graph.ty(data.inputs[0]).shape[1]),
                    lit(graph.ty(data.inputs[1]).shape[1]),
                );
                attention_inits.push(quote!(
                    #layout: k::flash_attention::BlockSparseLayout::from_predicate(
                        k::flash_attention::DEFAULT_BLOCK_SIZE, #query_len, #key_len, |query, key| #pattern.allows(query, key),
                    ).map_err(rt::error::at(#layer))?,
                ));
            }
        }
        let (layers_fields, layers_inits) = self.layers_fields(&name);
        fields.extend(layers_fields);
        fields.push(quote!(arena: rt::arena::Arena<f32>));
        if self.plan.i64_len > 0 {
            fields.push(quote!(arena_i64: rt::arena::Arena<i64>));
        }
        let uses_workspace = graph
            .nodes
            .iter()
            .any(|(_, data)| matches!(data.op, Op::Conv(_) | Op::ConvTranspose(_)));
        if uses_workspace {
            fields.push(quote!(workspace: k::conv::ConvWorkspace));
        }

        // Weights.
        let weights = self.weights_code();
        let spec_helpers = &weights.spec_helpers;
        let (specs, prepare, raw_fields) =
            (&weights.specs, &weights.prepare, &weights.raw_field_inits);
        let node_field_inits = graph
            .nodes
            .iter()
            .filter(|(node, _)| self.run_of_node(*node).is_none())
            .filter_map(|(node, _)| self.node_fields.get(&node))
            .map(|field| quote!(#field))
            .chain(layers_inits);
        let LayerItems {
            structs: layer_structs,
            loops: layer_loops,
            constants: layer_constants,
        } = self.layer_items(&name, layer_fields, layer_inits);
        // With rolled runs, the layer loops take their layers' weights out of `weights`.
        let bind_weights = self.bind_weights_outside_runs();
        let let_weights = if graph.params.is_empty() {
            quote!(let weights: Vec<rt::weights::Weight>)
        } else {
            quote!(let mut weights: Vec<rt::weights::Weight>)
        };
        let from_gguf = self.gguf_constructor();
        // A decoder's prefill chunk runs in the same arena, under its own plan.
        let (f32_len, i64_len) = match &self.chunk {
            Some(chunk) => (
                self.plan.f32_len.max(chunk.f32_len),
                self.plan.i64_len.max(chunk.i64_len),
            ),
            None => (self.plan.f32_len, self.plan.i64_len),
        };
        let arena_i64_init = (i64_len > 0).then(|| {
            let i64_len = lit(i64_len);
            quote!(arena_i64: rt::arena::zeroed("the i64 arena", #i64_len)?,)
        });
        let f32_len = lit(f32_len);
        let workspace_init =
            uses_workspace.then(|| quote!(workspace: k::conv::ConvWorkspace::new(),));

        // Inputs and outputs.
        let (input_items, forward_params, input_bindings) = match &self.decoding {
            None => self.inputs(&name),
            // A decoder takes the token and the encoder's inputs in methods of their own.
            Some(_) => (TokenStream::new(), TokenStream::new(), Vec::new()),
        };
        let (output_items, output_type, output_expr) = self.outputs(&name);
        let copy_inputs = self.copy_inputs(&input_bindings);
        let body = self.body_code();

        let (forward, decoder_api) = match &self.decoding {
            None => (
                quote! {
                    /// Runs the network. The outputs borrow the network's arena until the next call.
                    pub fn forward(&mut self, #forward_params) -> Result<#output_type, rt::ModelError> {
                        #copy_inputs
                        #(#body)*
                        Ok(#output_expr)
                    }
                },
                TokenStream::new(),
            ),
            Some(decoding) => (
                self.step_code(decoding, &body),
                self.decoder_api(&name, decoding),
            ),
        };
        let cache_field = self.decoding.as_ref().map(|decoding| {
            let (layers, max_context, kv_heads, head_dim) =
                (lit(decoding.layers.len()), lit(decoding.max_context), lit(decoding.kv_heads), lit(decoding.head_dim));
            (
                quote!(cache: rt::kv_cache::KvCache,),
                match decoding.rolling_window {
                    Some(window) => {
                        let window = lit(window);
                        quote!(cache: rt::kv_cache::KvCache::try_rolling(#layers, #window, #kv_heads, #head_dim)?,)
                    }
                    None => quote!(cache: rt::kv_cache::KvCache::try_new(#layers, #max_context, #kv_heads, #head_dim)?,),
                },
            )
        });
        let (mut cache_field, mut cache_init) = cache_field.unzip();
        if self
            .decoding
            .as_ref()
            .is_some_and(|decoding| decoding.has_encoder(graph))
        {
            cache_field = Some(quote!(#cache_field encoded: bool,));
            cache_init = Some(quote!(#cache_init encoded: false,));
        }
        quote! {
            #layer_structs

            #[doc = #doc]
            pub struct #name {
                #(#fields,)*
                #cache_field
            }

            #input_items
            #output_items

            impl #name {
                /// The weights this network needs, in the order [`Self::from_weights`] takes them.
                pub const WEIGHTS: &'static [rt::weights::WeightSpec<'static>] = &[#(#specs),*];

                #(#spec_helpers)*

                #layer_constants

                /// Loads the weights from a safetensors file (or a sharded checkpoint's index), by
                /// name, strictly but for known non-persistent buffers.
                pub fn from_safetensors(path: impl AsRef<std::path::Path>) -> Result<Self, rt::ModelError> {
                    let weights = rt::weights::read_safetensors(path.as_ref(), Self::WEIGHTS)?;
                    Self::from_weights(weights)
                }

                #from_gguf

                /// Loads the weights as PyTorch's `load_state_dict` does, with `options`, from a
                /// safetensors or GGUF file, a sharded checkpoint's `model.safetensors.index.json`
                /// or a folder; also returns what loading ignored (non-persistent buffers such as
                /// `position_ids`, a prefix on every name, unused tensors when not strict).
                pub fn from_checkpoint(
                    path: impl AsRef<std::path::Path>,
                    options: &rt::weights::LoadOptions,
                ) -> Result<(Self, Vec<rt::weights::LoadNote>), rt::ModelError> {
                    let loaded = rt::weights::read_weights_with(path.as_ref(), Self::WEIGHTS, options)?;
                    Ok((Self::from_weights(loaded.weights)?, loaded.notes))
                }

                /// Draws the weights from their initializers, deterministically from `seed`.
                /// Panics when the weights or the arena do not fit in memory; see
                /// [`Self::try_with_random_weights`].
                pub fn with_random_weights(seed: u64) -> Self {
                    Self::try_with_random_weights(seed).unwrap_or_else(|error| panic!("{error}"))
                }

                /// [`Self::with_random_weights`], with an error naming the weight or buffer and
                /// its bytes when it does not fit in memory.
                pub fn try_with_random_weights(seed: u64) -> Result<Self, rt::ModelError> {
                    Self::from_weights(rt::weights::try_random_weights(Self::WEIGHTS, seed)?)
                }

                /// Builds the network from weights in the order of [`Self::WEIGHTS`], packing them
                /// for the kernels.
                pub fn from_weights<W: Into<rt::weights::Weight>>(weights: Vec<W>) -> Result<Self, rt::ModelError> {
                    #let_weights = weights.into_iter().map(Into::into).collect();
                    rt::arena::check_weights(&weights, Self::WEIGHTS)?;
                    #bind_weights
                    #(#prepare)*
                    #layer_loops
                    Ok(Self {
                        #(#node_field_inits,)*
                        #(#raw_fields,)*
                        #(#attention_inits)*
                        arena: rt::arena::zeroed("the f32 arena", #f32_len)?,
                        #arena_i64_init
                        #workspace_init
                        #cache_init
                    })
                }

                #forward
            }
            #decoder_api
        }
    }

    /// The input struct (if several inputs), the `forward` parameters, and (name, binding) pairs.
    fn inputs(
        &self,
        name: &syn::Ident,
    ) -> (TokenStream, TokenStream, Vec<(ir::Value, TokenStream)>) {
        let graph = self.graph;
        let view_type = |value: ir::Value, lifetime: TokenStream| {
            let ty = graph.ty(value);
            let element = element_type(ty.dtype);
            let dimension = dimension_type(ty.rank());
            quote!(rt::ndarray::ArrayView<#lifetime, #element, #dimension>)
        };
        if let [input] = graph.inputs.as_slice() {
            let parameter = format_ident!("{}", input.name);
            let ty = view_type(input.value, quote!('_));
            return (
                TokenStream::new(),
                quote!(#parameter: #ty),
                vec![(input.value, quote!(#parameter))],
            );
        }
        let struct_name = format_ident!("{}Inputs", name);
        let doc = format!(" The inputs of [`{name}::forward`].");
        let fields = graph.inputs.iter().map(|input| {
            let field = format_ident!("{}", input.name);
            let ty = view_type(input.value, quote!('a));
            let field_doc = format!(" `{}`: {}.", input.name, graph.ty(input.value));
            quote!(#[doc = #field_doc] pub #field: #ty)
        });
        let items = quote! {
            #[doc = #doc]
            pub struct #struct_name<'a> {
                #(#fields,)*
            }
        };
        let bindings = graph
            .inputs
            .iter()
            .map(|input| {
                let field = format_ident!("{}", input.name);
                (input.value, quote!(inputs.#field))
            })
            .collect();
        (items, quote!(inputs: #struct_name<'_>), bindings)
    }

    /// The output struct (if several outputs), the output type and the expression returning them.
    pub(super) fn outputs(&self, name: &syn::Ident) -> (TokenStream, TokenStream, TokenStream) {
        let graph = self.graph;
        let view = |value: ir::Value| {
            let ty = graph.ty(value);
            let slot = self.plan.slots[value].expect("outputs have slots");
            let range = range_tokens(slot.range());
            let arena = arena_field(ty.dtype);
            let shape = literal_list(&ty.shape);
            quote!(rt::arena::output_view(&self.#arena[#range], #shape))
        };
        let view_type = |value: ir::Value, lifetime: TokenStream| {
            let ty = graph.ty(value);
            let element = element_type(ty.dtype);
            let dimension = dimension_type(ty.rank());
            quote!(rt::ndarray::ArrayView<#lifetime, #element, #dimension>)
        };
        if let [output] = graph.outputs.as_slice() {
            return (
                TokenStream::new(),
                view_type(output.value, quote!('_)),
                view(output.value),
            );
        }
        let struct_name = format_ident!("{}Outputs", name);
        let doc = format!(" The outputs of [`{name}::forward`].");
        let fields = graph.outputs.iter().map(|output| {
            let field = format_ident!("{}", output.name);
            let ty = view_type(output.value, quote!('a));
            let field_doc = format!(" `{}`: {}.", output.name, graph.ty(output.value));
            quote!(#[doc = #field_doc] pub #field: #ty)
        });
        let values = graph.outputs.iter().map(|output| {
            let field = format_ident!("{}", output.name);
            let view = view(output.value);
            quote!(#field: #view)
        });
        let items = quote! {
            #[doc = #doc]
            pub struct #struct_name<'a> {
                #(#fields,)*
            }
        };
        (
            items,
            quote!(#struct_name<'_>),
            quote!(#struct_name { #(#values,)* }),
        )
    }

    /// The statements that take the inputs in: each is checked and either bound where the
    /// caller holds it (see [`Self::borrowed_input`]) or copied into its arena slot.
    pub(super) fn copy_inputs(&self, bindings: &[(ir::Value, TokenStream)]) -> TokenStream {
        let copies = bindings.iter().map(|(value, binding)| {
            let input = self
                .graph
                .inputs
                .iter()
                .find(|input| input.value == *value)
                .expect("an input");
            let name = &input.name;
            let ty = self.graph.ty(*value);
            let shape = literal_list(&ty.shape);
            if let Some(local) = self.borrowed_input(*value) {
                return quote!(let #local = rt::arena::input_data(#name, #binding, &#shape)?;);
            }
            let arena = arena_field(ty.dtype);
            let range = range_tokens(self.plan.slots[*value].expect("inputs have slots").range());
            quote!(rt::arena::copy_input(#name, #binding, &#shape, &mut self.#arena[#range])?;)
        });
        quote!(#(#copies)*)
    }

    /// The local that holds the network input `value` where the caller keeps it (`input_0`,
    /// `input_1`, ... by the input's position), if `forward` reads it there rather than copying
    /// it into its arena slot (see [`Self::readable_outside_arena`]). Its slot stays in the
    /// plan, unused.
    pub(super) fn borrowed_input(&self, value: ir::Value) -> Option<syn::Ident> {
        let ir::ValueDef::Input { index } = self.graph.values[value].def else {
            return None;
        };
        self.readable_outside_arena(value)
            .then(|| format_ident!("input_{}", index))
    }

    /// The rows of its table that a position embedding from position 0 would copy, where
    /// `forward` reads them in the table instead (`self.<table>[..rows * dim]`, the rows of
    /// positions 0 to `seq - 1`), and the node runs no code: in a network (a decoder's positions
    /// follow its cache) whose table is plain f32 values, when `value` can be read outside the
    /// arena (see [`Self::readable_outside_arena`]). MiniLM's copy of 196 KB took 13–17 µs a
    /// call, before the add that reads it. Its slot stays in the plan, unused.
    pub(super) fn borrowed_positions(&self, value: ir::Value) -> Option<TokenStream> {
        let ir::ValueDef::Node { node, .. } = self.graph.values[value].def else {
            return None;
        };
        let data = &self.graph.nodes[node];
        if !matches!(data.op, ir::Op::PositionEmbedding) || !self.readable_outside_arena(value) {
            return None;
        }
        let table = data.inputs[1];
        let field = self.param_fields.get(&table)?;
        if self.graph.is_stored_table(table) {
            return None;
        }
        let length = lit(usize::try_from(self.graph.ty(value).element_count()).ok()?);
        let field = self.field(field);
        Some(quote!(#field[..#length]))
    }

    /// What `forward` reads in place of `value`'s arena slot, if anything: a network input
    /// where the caller holds it ([`Self::borrowed_input`]) or a position embedding's rows in
    /// their table ([`Self::borrowed_positions`]). An expression of a slice, and where it lies
    /// for a comment (empty for an input, whose source names it).
    pub(super) fn borrowed(&self, value: ir::Value) -> Option<(TokenStream, &'static str)> {
        match self.borrowed_input(value) {
            Some(local) => Some((quote!(#local), "")),
            None => self
                .borrowed_positions(value)
                .map(|rows| (rows, " in its table")),
        }
    }

    /// Whether `forward` may read `value` somewhere other than its arena slot: in a network
    /// (a decoder copies its inputs and computes its positions), when no node overwrites it in
    /// place (a reshape of it included), no rolled run carries a value into its slot or out of
    /// it, and it is not an output (whose view the caller gets is its slot).
    fn readable_outside_arena(&self, value: ir::Value) -> bool {
        let overwritten = self
            .graph
            .values
            .iter()
            .any(|(other, _)| other != value && self.plan.group[other] == value);
        let carried = self.rolling.as_ref().is_some_and(|rolling| {
            rolling
                .copies
                .iter()
                .flatten()
                .any(|&(from, to)| from == value || to == value)
        });
        let is_output = self
            .graph
            .outputs
            .iter()
            .any(|output| output.value == value);
        self.decoding.is_none()
            && self.chunk_rows.is_none()
            && !overwritten
            && !carried
            && !is_output
    }

    /// Where `node` runs: in a network's `forward`, a decoder's `encode`, or a decoder's step.
    pub(super) fn site(&self, node: ir::Node) -> Site {
        match &self.decoding {
            None => Site::default(),
            Some(decoding) => Site {
                max_context: Some(decoding.max_context),
                in_step: decoding.is_step(node),
                cache_layer: decoding.layers.get(&node).copied(),
            },
        }
    }

    /// The sizes of an attention node's call here.
    pub(super) fn attention_shape(
        &self,
        node: ir::Node,
        data: &ir::NodeData,
        attrs: &ir::AttentionAttrs,
    ) -> AttentionShape {
        kernel_call::attention_shape(self.graph, data, attrs, &self.site(node))
    }

    /// A field of the network's struct that belongs to one layer: a prepared node, a raw weight,
    /// an attention workspace or layout.
    /// In a rolled run's body it is a field of the loop's `layer`.
    pub(super) fn field(&self, field: &syn::Ident) -> TokenStream {
        match self.layer_fields.contains(field) {
            true => quote!(layer.#field),
            false => quote!(self.#field),
        }
    }

    /// The KV-cache layer index of the cached attention `node`, `layer` in the first iteration
    /// of a rolled run.
    pub(super) fn cache_layer_tokens(&self, node: ir::Node, layer: usize) -> TokenStream {
        if let Some(layer) = self.rolled_cache_layer(node, layer) {
            return layer;
        }
        let layer = lit(layer);
        quote!(#layer)
    }

    /// The name of a layer, as errors report it.
    pub(super) fn layer_name(&self, node: ir::Node, data: &ir::NodeData) -> TokenStream {
        if let Some(name) = self.rolled_layer_name(node) {
            return name;
        }
        let name = &data.name;
        quote!(#name)
    }
}
