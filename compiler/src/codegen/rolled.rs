//! Rolled emission: a run of identical layers ([`super::repeat`]) becomes one loop over an array
//! of layer structs instead of one copy of the code per layer.
//!
//! The first segment of each run stands for every iteration: its prepared weights, raw weights
//! and attention workspaces become the fields of a layer struct (one per iteration, built in a
//! loop in `from_weights`), its nodes' code runs once per iteration with `layer.field` in place of
//! `self.field`, the KV-cache layer offset by the iteration, and layer names for errors read from
//! the layer's `names`, split once at load from one line per iteration of a names table. The
//! memory plan is [`memory::plan_rolled`]: the body's slots are the same in every iteration, and
//! carried values that do not land back where they entered are copied there at the end of the
//! body.

use std::collections::HashMap;

use proc_macro2::TokenStream;
use quote::{format_ident, quote};

use super::memory::{self, MemoryPlan};
use super::network::Generator;
use super::repeat::{self, Run};
use super::tokens::{arena_field, lit};
use crate::ir::{self, Graph, Node, Value, ValueDef};

/// The runs a generator rolls, and what their emission needs.
#[derive(Clone, Debug)]
pub(super) struct Rolling {
    pub(super) runs: Vec<Run>,
    /// For each run, the carried copies at the end of the body: (from, to).
    pub(super) copies: Vec<Vec<(Value, Value)>>,
    /// The run, iteration and role of every weight a run reads (the first, should one be read
    /// twice), looked up once per weight input: scanning every run's weights each time made code
    /// generation quadratic in the number of layers.
    weights: HashMap<Value, (usize, usize, usize)>,
}

/// The memory plan of `graph` with its runs rolled, keeping `pinned` values live to the end, and
/// the rolling; only runs that fit within each of `parts` (node ranges that run separately,
/// such as a decoder's encoder and step) are rolled. Without runs, the plain plan and no rolling.
pub(super) fn plan(
    graph: &Graph,
    pinned: &[Value],
    parts: &[std::ops::Range<usize>],
) -> (MemoryPlan, Option<Rolling>) {
    let runs: Vec<Run> = repeat::find_runs(graph)
        .into_iter()
        .filter(|run| {
            parts
                .iter()
                .all(|part| run.fits_within(part.start, part.end))
        })
        .collect();
    if runs.is_empty() {
        return (memory::plan_pinned(graph, pinned), None);
    }
    let rolled = memory::plan_rolled(graph, pinned, &runs);
    // Belt and braces: a plan the overlap checker rejects is never emitted; the graph is then
    // emitted unrolled. tests/memory_plan.rs checks that no example's plan is rejected.
    if memory::check_rolled(graph, &rolled, pinned).is_err() {
        return (memory::plan_pinned(graph, pinned), None);
    }
    let mut weights = HashMap::new();
    for (index, run) in rolled.runs.iter().enumerate() {
        for (iteration, iteration_weights) in run.weights.iter().enumerate() {
            for (role, &weight) in iteration_weights.iter().enumerate() {
                weights.entry(weight).or_insert((index, iteration, role));
            }
        }
    }
    (
        rolled.plan,
        Some(Rolling {
            runs: rolled.runs,
            copies: rolled.copies,
            weights,
        }),
    )
}

impl Rolling {
    /// The run, iteration and body offset of node `node`, if it is in a run.
    pub(super) fn position(&self, node: Node) -> Option<(usize, usize, usize)> {
        self.runs.iter().enumerate().find_map(|(index, run)| {
            run.position_of(node.index())
                .map(|(iteration, offset)| (index, iteration, offset))
        })
    }

    /// The run and body offset of `node` if it is in the body (the first segment) of a run.
    pub(super) fn body(&self, node: Node) -> Option<(usize, usize)> {
        self.position(node)
            .filter(|&(_, iteration, _)| iteration == 0)
            .map(|(run, _, offset)| (run, offset))
    }

    /// The run, iteration and role of a weight read by a run.
    pub(super) fn weight(&self, value: Value) -> Option<(usize, usize, usize)> {
        self.weights.get(&value).copied()
    }

    /// The name of a body node's field: its layer name with everything up to the layer index
    /// left out (`model.layers.0.self_attn.q_proj` becomes `self_attn.q_proj`), from the names of
    /// the first two iterations.
    pub(super) fn field_name(first: &str, second: &str) -> String {
        let (prefix, suffix) = common_affixes(first, second);
        let name = first[first.len() - suffix..].trim_start_matches(['.', '_']);
        if name.is_empty() || prefix == 0 {
            first.to_string()
        } else {
            name.to_string()
        }
    }

    /// `first` with the part that differs from `second` written `{index}`, for comments.
    pub(super) fn template(first: &str, second: &str) -> String {
        let (prefix, suffix) = common_affixes(first, second);
        let differs_by_a_number = [first, second].iter().all(|name| {
            prefix + suffix < name.len()
                && name[prefix..name.len() - suffix]
                    .bytes()
                    .all(|byte| byte.is_ascii_digit())
        });
        // Layers named unlike each other (`embeddings.LayerNorm`, then
        // `encoder.layer.0.output.LayerNorm`) are named after the first iteration.
        if !differs_by_a_number {
            return first.to_string();
        }
        format!(
            "{}{{index}}{}",
            &first[..prefix],
            &first[first.len() - suffix..]
        )
    }

    /// The name of the layer struct of run `run` of the network struct `network`.
    pub(super) fn struct_name(network: &syn::Ident, run: usize) -> syn::Ident {
        match run {
            0 => format_ident!("{}Layer", network),
            _ => format_ident!("{}Layer{}", network, run + 1),
        }
    }

    /// The field of the network struct holding run `run`'s layers.
    pub(super) fn layers_field(run: usize) -> syn::Ident {
        match run {
            0 => format_ident!("layers"),
            _ => format_ident!("layers_{}", run + 1),
        }
    }

    /// The associated constant with run `run`'s layer names, one string per iteration.
    pub(super) fn names_const(run: usize) -> syn::Ident {
        match run {
            0 => format_ident!("LAYER_NAMES"),
            _ => format_ident!("LAYER_NAMES_{}", run + 1),
        }
    }
}

/// The lengths of the longest common prefix and suffix of two names, not splitting a number.
fn common_affixes(first: &str, second: &str) -> (usize, usize) {
    let mut prefix = first
        .bytes()
        .zip(second.bytes())
        .take_while(|(a, b)| a == b)
        .count();
    while prefix > 0 && first.as_bytes()[prefix - 1].is_ascii_digit() {
        prefix -= 1;
    }
    let mut suffix = first
        .bytes()
        .rev()
        .zip(second.bytes().rev())
        .take_while(|(a, b)| a == b)
        .count()
        .min(first.len() - prefix);
    while suffix > 0 && first.as_bytes()[first.len() - suffix].is_ascii_digit() {
        suffix -= 1;
    }
    (prefix, suffix)
}

/// `first + stride * index`, without the terms that clippy calls no-ops.
fn affine_index(first: usize, stride: usize) -> TokenStream {
    let scaled = match stride {
        1 => quote!(index),
        _ => {
            let stride = lit(stride);
            quote!(#stride * index)
        }
    };
    match first {
        0 => scaled,
        _ => {
            let first = lit(first);
            quote!(#first + #scaled)
        }
    }
}

/// The index of the weight `value` of `graph` among its params.
fn weight_position(graph: &Graph, value: Value) -> usize {
    match graph.values[value].def {
        ValueDef::Param(param) => param.index(),
        _ => unreachable!("weight_position: {value:?} is not a weight"),
    }
}

/// The separator of the layer names of one iteration in a names table: a space, unless some
/// name has one.
fn names_separator(names: &[&str]) -> char {
    match names.iter().any(|name| name.contains(' ')) {
        false => ' ',
        true => '\u{1f}',
    }
}

/// The layer structs of a network, the statements of `from_weights` that build them, and the
/// associated constants they read.
pub(super) struct LayerItems {
    pub(super) structs: TokenStream,
    pub(super) loops: TokenStream,
    pub(super) constants: TokenStream,
}

/// The generator's side of rolling: where a field lives, how a layer is named, which cache
/// layer an attention uses, and the layer structs with the loops that build them.
impl Generator<'_> {
    /// The statements ending run `run`'s body: each carried copy.
    fn copy_statements(&self, rolling: &Rolling, run: usize) -> Vec<TokenStream> {
        rolling.copies[run]
            .iter()
            .map(|&(from, to)| {
                let (from_slot, to) = (
                    self.plan.slots[from].expect("carried values have slots"),
                    self.plan.slots[to].expect("carried values have slots"),
                );
                let arena = arena_field(from_slot.dtype);
                let range = self.value_range(from, None);
                let destination = lit(to.offset);
                let comment = "the next iteration reads the carried value where the first found it";
                quote! {
                    __nnc_comment!(#comment);
                    self.#arena.copy_within(#range, #destination);
                }
            })
            .collect()
    }

    /// Whether `node` is in a later iteration of a rolled run: its code is the first one's.
    pub(super) fn is_repeat(&self, node: Node) -> bool {
        self.rolling.as_ref().is_some_and(|rolling| {
            rolling
                .position(node)
                .is_some_and(|(_, iteration, _)| iteration > 0)
        })
    }

    /// Whether `value` is a weight of a rolled run's later iteration: the layer loop binds the
    /// first iteration's local to it.
    pub(super) fn is_repeated_weight(&self, value: Value) -> bool {
        self.rolling.as_ref().is_some_and(|rolling| {
            rolling
                .weight(value)
                .is_some_and(|(_, iteration, _)| iteration > 0)
        })
    }

    /// The run whose body `node` is in.
    pub(super) fn run_of_node(&self, node: Node) -> Option<usize> {
        self.rolling.as_ref()?.body(node).map(|(run, _)| run)
    }

    /// The run whose first iteration reads the weight `value`.
    pub(super) fn run_of_weight(&self, value: Value) -> Option<usize> {
        self.rolling
            .as_ref()?
            .weight(value)
            .filter(|&(_, iteration, _)| iteration == 0)
            .map(|(run, _, _)| run)
    }

    /// The number of rolled runs.
    pub(super) fn run_count(&self) -> usize {
        self.rolling
            .as_ref()
            .map_or(0, |rolling| rolling.runs.len())
    }

    /// The base of the field name of `node`: its layer name, without the layer index in a run.
    pub(super) fn field_name(&self, node: Node, name: &str) -> String {
        let Some(rolling) = &self.rolling else {
            return name.to_string();
        };
        match rolling.body(node) {
            Some((run, offset)) => {
                let second = self.body_node_name(&rolling.runs[run], 1, offset);
                Rolling::field_name(name, second)
            }
            None => name.to_string(),
        }
    }

    /// The base of the field name of the weight `value` named `name`.
    pub(super) fn weight_field_name(&self, value: Value, name: &str) -> String {
        let Some(rolling) = &self.rolling else {
            return name.to_string();
        };
        match rolling.weight(value) {
            Some((run, 0, role)) => {
                let second = rolling.runs[run].weights[1][role];
                let second = &self.graph.param_of(second).expect("a weight").name;
                Rolling::field_name(name, second)
            }
            _ => name.to_string(),
        }
    }

    /// The layer name of `node` for errors, in a run's body read from the loop's `names`.
    pub(super) fn rolled_layer_name(&self, node: Node) -> Option<TokenStream> {
        let (_, offset) = self.rolling.as_ref()?.body(node)?;
        let offset = lit(offset);
        Some(quote!(names[#offset]))
    }

    /// The layer name of `node` for comments, `{index}` standing for a run's iteration.
    pub(super) fn comment_name(&self, node: Node, data: &ir::NodeData) -> String {
        let body = self.rolling.as_ref().and_then(|rolling| {
            rolling
                .body(node)
                .map(|(run, offset)| (&rolling.runs[run], offset))
        });
        match body {
            Some((run, offset)) => {
                Rolling::template(&data.name, self.body_node_name(run, 1, offset))
            }
            None => data.name.clone(),
        }
    }

    /// The KV-cache layer of the cached attention `node`, whose first iteration uses `layer`;
    /// in a run's body, offset by the iteration times the cached attentions per body.
    pub(super) fn rolled_cache_layer(&self, node: Node, layer: usize) -> Option<TokenStream> {
        let rolling = self.rolling.as_ref()?;
        let (run, _) = rolling.body(node)?;
        let run = &rolling.runs[run];
        let decoding = self
            .decoding
            .as_ref()
            .expect("a cached attention is in a decoder");
        let per_body = (run.first_node..run.first_node + run.body_len)
            .filter(|&index| decoding.layers.contains_key(&Node::from_index(index)))
            .count();
        Some(affine_index(layer, per_body))
    }

    /// The code of every node, by node index, with each run rolled into a loop at its first
    /// node's place (the other nodes' places are empty, so that the code stays indexed by node).
    pub(super) fn body_code(&self) -> Vec<TokenStream> {
        let mut code: Vec<TokenStream> = self
            .graph
            .nodes
            .iter()
            .map(|(node, data)| match self.is_repeat(node) {
                true => TokenStream::new(),
                false => self.node_code(node, data),
            })
            .collect();
        let Some(rolling) = &self.rolling else {
            return code;
        };
        for (index, run) in rolling.runs.iter().enumerate() {
            let body: Vec<TokenStream> = (run.first_node..run.first_node + run.body_len)
                .map(|node| std::mem::take(&mut code[node]))
                .collect();
            let copies = self.copy_statements(rolling, index);
            let field = Rolling::layers_field(index);
            let names = self
                .run_uses_names(index)
                .then(|| quote!(let names = &layer.names;));
            // Only a cached attention's KV-cache layer reads the iteration's index.
            let uses_index = self.decoding.as_ref().is_some_and(|decoding| {
                (run.first_node..run.first_node + run.body_len)
                    .any(|node| decoding.layers.contains_key(&Node::from_index(node)))
            });
            let (pattern, iterator) = match uses_index {
                true => (
                    quote!((index, layer)),
                    quote!(self.#field.iter_mut().enumerate()),
                ),
                false => (quote!(layer), quote!(self.#field.iter_mut())),
            };
            code[run.first_node] = quote! {
                for #pattern in #iterator {
                    #names
                    #(#body)*
                    #(#copies)*
                }
            };
        }
        code
    }

    /// Whether the code of run `run`'s body names its layers in errors, so that its layer
    /// struct keeps their names.
    fn run_uses_names(&self, run: usize) -> bool {
        let run = &self.rolling.as_ref().expect("rolling").runs[run];
        (run.first_node..run.first_node + run.body_len).any(|index| {
            let node = Node::from_index(index);
            self.node_code(node, &self.graph.nodes[node])
                .to_string()
                .contains("names [")
        })
    }

    /// `let binding = weights[N].take_f32();` (or `.take()`) for every weight outside the runs.
    pub(super) fn bind_weights_outside_runs(&self) -> TokenStream {
        let bindings = self.graph.params.iter().filter_map(|(index, param)| {
            if let Some(rolling) = &self.rolling
                && rolling.weight(param.value).is_some()
            {
                return None;
            }
            let position = lit(index.index());
            Some(self.take_weight(index, quote!(#position)))
        });
        quote!(#(#bindings)*)
    }

    /// The network struct's fields holding each run's layers, and their initializers.
    pub(super) fn layers_fields(
        &self,
        network: &syn::Ident,
    ) -> (Vec<TokenStream>, Vec<TokenStream>) {
        (0..self.run_count())
            .map(|run| {
                let field = Rolling::layers_field(run);
                let layer = Rolling::struct_name(network, run);
                (quote!(#field: Vec<#layer>), quote!(#field))
            })
            .unzip()
    }

    /// The layer structs with `layer_fields`, the loops of `from_weights` that build their
    /// layers with `layer_inits`, and the tables of layer names.
    pub(super) fn layer_items(
        &self,
        network: &syn::Ident,
        layer_fields: Vec<Vec<TokenStream>>,
        layer_inits: Vec<Vec<TokenStream>>,
    ) -> LayerItems {
        let Some(rolling) = &self.rolling else {
            return LayerItems {
                structs: TokenStream::new(),
                loops: TokenStream::new(),
                constants: TokenStream::new(),
            };
        };
        let mut structs = Vec::new();
        let mut loops = Vec::new();
        let mut constants = Vec::new();
        for (index, (mut fields, mut inits)) in
            layer_fields.into_iter().zip(layer_inits).enumerate()
        {
            let run = &rolling.runs[index];
            let layer = Rolling::struct_name(network, index);
            let (body_len, count) = (lit(run.body_len), lit(run.count));
            let prepare: Vec<TokenStream> = (run.first_node..run.first_node + run.body_len)
                .filter_map(|node| self.prepare_statement(Node::from_index(node)))
                .collect();
            let keeps_names = self.run_uses_names(index);
            if keeps_names {
                fields.insert(0, quote!(names: [&'static str; #body_len]));
                inits.insert(0, quote!(names,));
            }
            let needs_names = keeps_names || quote!(#(#prepare)*).to_string().contains("names [");
            let names = needs_names.then(|| {
                let names_const = Rolling::names_const(index);
                let names: Vec<Vec<&str>> = (0..run.count)
                    .map(|iteration| {
                        (0..run.body_len)
                            .map(|offset| self.body_node_name(run, iteration, offset))
                            .collect()
                    })
                    .collect();
                let separator = names_separator(&names.concat());
                let rows = names
                    .iter()
                    .map(|row| row.join(&separator.to_string()));
                let doc = format!(
                    " The layer names of each of [`{layer}`]'s iterations, for errors, separated by {separator:?}."
                );
                constants.push(quote! {
                    #[doc = #doc]
                    const #names_const: [&'static str; #count] = [#(#rows),*];
                });
                quote! {
                    let mut names_of_layer = Self::#names_const[index].split(#separator);
                    let names: [&'static str; #body_len] = std::array::from_fn(|_| {
                        names_of_layer.next().expect("a name per node of the layer")
                    });
                }
            });
            let doc = format!(
                " One of the {} identical layers of [`{network}`], each run by one iteration of its loop.",
                run.count
            );
            structs.push(quote! {
                #[doc = #doc]
                pub struct #layer {
                    #(#fields,)*
                }
            });
            let take_weights = run.weights[0].iter().enumerate().map(|(role, &first)| {
                let param = ir::Param::from_index(weight_position(self.graph, first));
                self.take_weight(param, self.weight_index(run, role))
            });
            let field = Rolling::layers_field(index);
            loops.push(quote! {
                let mut #field = Vec::with_capacity(#count);
                for index in 0..#count {
                    #names
                    #(#take_weights)*
                    #(#prepare)*
                    #field.push(#layer {
                        #(#inits)*
                    });
                }
            });
        }
        LayerItems {
            structs: quote!(#(#structs)*),
            loops: quote!(#(#loops)*),
            constants: quote!(#(#constants)*),
        }
    }

    /// The expression of the index in `from_weights`'s `weights` of role `role` of `run` in
    /// iteration `index`: an arithmetic progression over the iterations, or a table.
    fn weight_index(&self, run: &Run, role: usize) -> TokenStream {
        let positions: Vec<usize> = run
            .weights
            .iter()
            .map(|weights| weight_position(self.graph, weights[role]))
            .collect();
        let stride = positions[1] as isize - positions[0] as isize;
        let progression = positions.iter().enumerate().all(|(iteration, &position)| {
            position as isize == positions[0] as isize + stride * iteration as isize
        });
        if progression && stride > 0 {
            affine_index(positions[0], stride as usize)
        } else {
            let positions = positions.iter().map(|&position| lit(position));
            quote!([#(#positions),*][index])
        }
    }

    /// The name of the node at `offset` in iteration `iteration` of `run`.
    fn body_node_name(&self, run: &Run, iteration: usize, offset: usize) -> &str {
        &self.graph.nodes[Node::from_index(run.first_node + iteration * run.body_len + offset)].name
    }
}
