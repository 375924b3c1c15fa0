//! A decoder's code: its one-token `step` (and, with an encoder, `encode`), its prefill chunk
//! step, and its public API (`decode`, `prefill`, `generate`, the paged-cache variants).

use std::collections::HashMap;

use nnc_ops::AttentionShape;
use proc_macro2::TokenStream;
use quote::{ToTokens, format_ident, quote};

use super::chunk_rows::offset_plus_rows;
use super::decoding::{Decoding, encoder_results, prefill_chunk_len, step_graph_order};
use super::network::Generator;
use super::tokens::{dimension_type, element_type, lit, range_tokens};
use super::{CodegenOptions, rolled};
use crate::ir::{self, Graph, Op};

/// The tokens of the one-token decoder of a network, from its graph compiled with `seq = 1`;
/// `None` if the network is not a decoder with a KV cache.
///
/// `chunk_graph`, the same network compiled with the sequence dimension set to
/// [`prefill_chunk_len`], adds steps of that many tokens for `prefill`. It must be the step
/// graph's twin, node for node (the same source through the same passes); when it is not, prefill
/// steps one token at a time.
pub fn generate_decoder_tokens(
    step_graph: &Graph,
    chunk_graph: Option<&Graph>,
    options: &CodegenOptions,
) -> Option<TokenStream> {
    let decoding = Decoding::of(step_graph, 1)?;
    let mut graph = step_graph.clone();
    if decoding.interleaved {
        graph.reorder(&step_graph_order(step_graph, &decoding));
    }
    let decoding = Decoding::of(&graph, 1).expect("reordering keeps a decoder a decoder");
    // Runs of identical layers do not straddle the encoder and the step.
    let (plan, rolling) = rolled::plan(
        &graph,
        &encoder_results(&graph, &decoding),
        &[
            0..decoding.encoder_len,
            decoding.encoder_len..graph.nodes.len(),
        ],
    );
    let mut generator = Generator::with_plan(&graph, options, plan, rolling, &["cache", "encoded"]);
    // A step masks sparse patterns by absolute position; block layouts serve the encoder and
    // the full-sequence graph.
    for (node, (_, layout)) in generator.attention_fields.iter_mut() {
        if decoding.is_step(*node) {
            *layout = None;
        }
    }
    generator.decoding = Some(decoding);
    let chunk_tokens = prefill_chunk_len(&graph);
    if let (Some(chunk_graph), Some(tokens)) = (chunk_graph, chunk_tokens) {
        generator.chunk = ChunkStep::new(&generator, chunk_graph, tokens, options);
    }
    let items = generator.network();
    Some(super::network_module(
        &format!("{}_decoder", graph.name),
        &items,
        options,
    ))
}

/// A decoder's prefill step of several tokens: the code of the chunk graph, using the fields of
/// the one-token step's generator.
///
/// When it can ([`super::chunk_rows`]), a chunk runs with its real row count, however short,
/// and its head only on the last row. Otherwise a chunk shorter than `tokens` (the end of a
/// prompt) runs padded: token 0 fills the positions
/// after the real tokens, and the cache drops their keys and values when the step commits
/// (`DecodeCache::advance_dropping_padding`). That is exact for every decoder that has a chunk
/// step: its cached attention is causal, so no real token sees a padded one, every other node
/// works on each position alone (the one-token step relies on that too), and the logits are
/// read at the last real position. It needs room for the padded positions in the cache and in
/// every learned position table; when there is none, the end of the prompt runs token by token.
/// A network whose output is not one row of logits per position (one that picks the last
/// position, say) would read a padded row, so its chunks are never padded.
pub(super) struct ChunkStep {
    tokens: usize,
    body: Vec<TokenStream>,
    token_slot: usize,
    pub(super) f32_len: usize,
    pub(super) i64_len: usize,
    /// Where the logits of the chunk's first position start in the arena; the others follow,
    /// `vocab` apart. Without padding, where the last position's start.
    first_logits: usize,
    vocab: usize,
    /// Whether a shorter chunk may run padded: the output has a row of logits per position.
    pads: bool,
    /// The fewest rows of a learned position table (`usize::MAX` without one): padded
    /// positions must stay below it.
    position_limit: usize,
    /// The `AttentionShape` of each attention node (by index), to size its workspace.
    pub(super) attention_shapes: HashMap<ir::Node, AttentionShape>,
    /// When the chunk runs with its real row count (`rows` in its code): where the logits of
    /// its last row start, and whether that depends on `rows`.
    run_time_rows: Option<(TokenStream, bool)>,
}

impl ChunkStep {
    /// The chunk step of `chunk_graph` for the step generator `step`, if the two graphs are twins
    /// and give the same fields.
    pub(super) fn new(
        step: &Generator<'_>,
        chunk_graph: &Graph,
        tokens: usize,
        options: &CodegenOptions,
    ) -> Option<ChunkStep> {
        let twins =
            step.graph.nodes.len() == chunk_graph.nodes.len()
                && step.graph.values.len() == chunk_graph.values.len()
                && step.graph.params.len() == chunk_graph.params.len()
                && step
                    .graph
                    .nodes
                    .iter()
                    .zip(chunk_graph.nodes.iter())
                    .all(|((_, a), (_, b))| {
                        a.inputs == b.inputs
                            && a.outputs == b.outputs
                            && a.name == b.name
                            && a.op.name() == b.op.name()
                    })
                && step.graph.params.iter().zip(chunk_graph.params.iter()).all(
                    |((_, a), (_, b))| {
                        a.name == b.name && step.graph.ty(a.value) == chunk_graph.ty(b.value)
                    },
                );
        if !twins {
            return None;
        }
        let decoding = Decoding::of(chunk_graph, tokens)?;
        if decoding.encoder_len != 0 {
            return None;
        }
        // The chunk rolls the same runs as the step (they share the layer structs), or prefill
        // steps one token at a time.
        let (chunk_plan, rolling) = rolled::plan(chunk_graph, &[], &[]);
        let same_runs = rolling.as_ref().map(|rolling| &rolling.runs)
            == step.rolling.as_ref().map(|rolling| &rolling.runs);
        let mut generator = Generator::with_plan(
            chunk_graph,
            options,
            chunk_plan,
            rolling,
            &["cache", "encoded"],
        );
        let same_fields = same_runs
            && generator.node_fields == step.node_fields
            && generator.param_fields == step.param_fields
            && generator
                .attention_fields
                .iter()
                .all(|(node, (workspace, _))| {
                    step.attention_fields.get(node).map(|(field, _)| field) == Some(workspace)
                });
        if !same_fields {
            return None;
        }
        for (_, layout) in generator.attention_fields.values_mut() {
            *layout = None;
        }
        generator.decoding = Some(decoding);
        let token = chunk_graph.inputs[0].value;
        let output = chunk_graph.outputs[0].value;
        let vocab = chunk_graph.ty(output).last_dim().unwrap_or(1);
        let output_slot = generator.plan.slots[output].expect("outputs have slots");
        let output_shape = &chunk_graph.ty(output).shape;
        let pads = output_shape.len() >= 2
            && output_shape[1] == tokens
            && output_slot.len == tokens * vocab;
        // Rows at run time need a row of logits per position too, to return the last one.
        generator.chunk_rows = pads
            .then(|| generator.chunk_rows(step.graph, tokens))
            .flatten();
        let run_time_rows = generator
            .chunk_rows
            .as_ref()
            .map(|rows| rows.logits_start(output, output_slot));
        let body = generator.body_code();
        let position_limit = chunk_graph
            .nodes
            .iter()
            .filter(|(_, data)| matches!(data.op, Op::PositionEmbedding))
            .map(|(_, data)| chunk_graph.ty(data.inputs[1]).shape[0])
            .min()
            .unwrap_or(usize::MAX);
        let attention_shapes = chunk_graph
            .nodes
            .iter()
            .filter_map(|(node, data)| match &data.op {
                Op::Attention(attrs) => Some((node, generator.attention_shape(node, data, attrs))),
                _ => None,
            })
            .collect();
        Some(ChunkStep {
            tokens,
            body,
            token_slot: generator.plan.slots[token]
                .expect("inputs have slots")
                .offset,
            f32_len: generator.plan.f32_len,
            i64_len: generator.plan.i64_len,
            first_logits: output_slot.offset + output_slot.len
                - if pads { tokens * vocab } else { vocab },
            vocab,
            pads,
            position_limit,
            attention_shapes,
            run_time_rows,
        })
    }
}

impl Generator<'_> {
    /// A decoder's `step` (one token through the network, against any `DecodeCache`) and, with
    /// an encoder, `encode`.
    pub(super) fn step_code(&self, decoding: &Decoding, body: &[TokenStream]) -> TokenStream {
        let graph = self.graph;
        let (encoder_body, step_body) = body.split_at(decoding.encoder_len);
        let token = graph.inputs[decoding.token_input].value;
        let token_slot = lit(self.plan.slots[token].expect("inputs have slots").offset);
        let encode = decoding.has_encoder(graph).then(|| {
            let inputs: Vec<&ir::Input> = graph
                .inputs
                .iter()
                .filter(|input| input.value != token)
                .collect();
            let params = inputs.iter().map(|input| {
                let parameter = format_ident!("{}", input.name);
                let ty = graph.ty(input.value);
                let (element, dimension) = (element_type(ty.dtype), dimension_type(ty.rank()));
                quote!(#parameter: rt::ndarray::ArrayView<'_, #element, #dimension>)
            });
            let bindings: Vec<(ir::Value, TokenStream)> = inputs
                .iter()
                .map(|input| {
                    let parameter = format_ident!("{}", input.name);
                    (input.value, quote!(#parameter))
                })
                .collect();
            let copy_inputs = self.copy_inputs(&bindings);
            quote! {
                /// Runs the encoder on the source and starts a new target sequence: the encoder's
                /// results stay in the decoder for every following `decode`.
                pub fn encode(&mut self, #(#params),*) -> Result<(), rt::ModelError> {
                    self.encoded = false;
                    self.cache.reset();
                    #copy_inputs
                    #(#encoder_body)*
                    self.encoded = true;
                    Ok(())
                }
            }
        });
        let encoded_check = encode.is_some().then(|| {
            quote! {
                if !self.encoded {
                    return Err(rt::ModelError::NotEncoded);
                }
            }
        });
        let chunk_step = self.chunk.as_ref().map(|chunk| {
            let tokens = lit(chunk.tokens);
            let token_range = range_tokens(chunk.token_slot..chunk.token_slot + chunk.tokens);
            let body = &chunk.body;
            if let Some((logits_start, uses_rows)) = &chunk.run_time_rows {
                let room_check = room_check(quote!(rows));
                let token_start = lit(chunk.token_slot);
                let token_end = offset_plus_rows(chunk.token_slot, 1, false);
                let vocab = lit(chunk.vocab);
                let rows_param = match uses_rows {
                    true => quote!(rows),
                    false => quote!(_rows),
                };
                return quote! {
                    /// Runs up to `PREFILL_CHUNK` tokens through the network at once against
                    /// `cache`, which gains their keys and values: every layer over their rows
                    /// alone, the head over the last one.
                    fn step_chunk(&mut self, cache: &mut impl rt::kv_cache::DecodeCache, tokens: &[i64]) -> Result<(), rt::ModelError> {
                        let rows = tokens.len();
                        #room_check
                        self.arena_i64[#token_start..#token_end].copy_from_slice(tokens);
                        #(#body)*
                        cache.advance(rows)?;
                        Ok(())
                    }

                    /// The logits of the last row of the last `step_chunk`, of `rows` tokens.
                    fn chunk_logits(&self, #rows_param: usize) -> rt::ndarray::ArrayView1<'_, f32> {
                        let start = #logits_start;
                        rt::ndarray::ArrayView1::from(&self.arena[start..start + #vocab])
                    }
                };
            }
            let room_check = room_check(lit(chunk.tokens).into_token_stream());
            let (first_logits, vocab) = (lit(chunk.first_logits), lit(chunk.vocab));
            // No `0 +` or `* 1` in the offset, which clippy would flag in the generated code.
            let row = match chunk.vocab {
                1 => quote!(tokens - 1),
                _ => quote!((tokens - 1) * #vocab),
            };
            let (tokens_param, start) = match (chunk.pads, chunk.first_logits) {
                (true, 0) => (quote!(tokens), row),
                (true, _) => (quote!(tokens), quote!(#first_logits + #row)),
                (false, _) => (quote!(_tokens), quote!(#first_logits)),
            };
            quote! {
                /// Runs up to `PREFILL_CHUNK` tokens through the network at once against `cache`,
                /// which gains their keys and values. Fewer run padded with token 0 after them
                /// (causal attention keeps the real ones from seeing the padding) and the cache
                /// drops the padding's keys and values; the caller checks that it fits.
                fn step_chunk(&mut self, cache: &mut impl rt::kv_cache::DecodeCache, tokens: &[i64]) -> Result<(), rt::ModelError> {
                    #room_check
                    let (real, padding) = self.arena_i64[#token_range].split_at_mut(tokens.len());
                    real.copy_from_slice(tokens);
                    padding.fill(0);
                    #(#body)*
                    cache.advance_dropping_padding(tokens.len(), #tokens - tokens.len())?;
                    Ok(())
                }

                /// The logits of the last of the `tokens` real tokens of the last `step_chunk`.
                fn chunk_logits(&self, #tokens_param: usize) -> rt::ndarray::ArrayView1<'_, f32> {
                    let start = #start;
                    rt::ndarray::ArrayView1::from(&self.arena[start..start + #vocab])
                }
            }
        });
        let room_check = room_check(quote!(1));
        quote! {
            /// Runs one token through the network against `cache`, which gains its keys and
            /// values; the logits are left in the arena.
            fn step(&mut self, cache: &mut impl rt::kv_cache::DecodeCache, token: i64) -> Result<(), rt::ModelError> {
                #encoded_check
                #room_check
                self.arena_i64[#token_slot] = token;
                #(#step_body)*
                cache.advance(1)?;
                Ok(())
            }

            #encode
            #chunk_step
        }
    }

    /// `reset`, `decode`, `prefill` and `generate` of a decoder, and for decoder-only networks
    /// the same over sequences of a paged cache.
    pub(super) fn decoder_api(&self, name: &syn::Ident, decoding: &Decoding) -> TokenStream {
        let graph = self.graph;
        let max_context = lit(decoding.max_context);
        let (_, _, output_expr) = self.outputs(name);
        let vocab = lit(graph.ty(graph.outputs[0].value).last_dim().unwrap_or(1));
        let logits = quote!(rt::ndarray::ArrayView1<'_, f32>);
        let result = quote!(Result<#logits, rt::ModelError>);
        // With a chunk step, prefill runs the prompt in chunks, the last one padded (see
        // `ChunkStep`); without one, one token at a time.
        let (prefill_body, chunk_tokens_param, prefill_logits, chunk_const) = match &self.chunk {
            Some(chunk) => {
                let tokens = lit(chunk.tokens);
                // A padded chunk needs its positions in the learned position tables too.
                let table_check = (chunk.position_limit < decoding.max_context).then(|| {
                    let position_limit = lit(chunk.position_limit);
                    quote!(&& cache.position() + #tokens <= #position_limit)
                });
                // A whole chunk runs as one (and reports a full cache as its error); a shorter
                // one too, padded, when the padding fits; a lone token is cheaper as a one-token
                // step.
                let as_chunk = if chunk.run_time_rows.is_some() {
                    // Any chunk but a lone token runs as one, with its own row count.
                    quote!(chunk.len() > 1)
                } else if chunk.pads {
                    quote! {
                        chunk.len() == #tokens
                            || (chunk.len() > 1
                                && cache.position() + #tokens <= Self::MAX_CONTEXT
                                #table_check
                                && cache.has_room_for(#tokens))
                    }
                } else {
                    quote!(chunk.len() == #tokens)
                };
                (
                    quote! {
                        let mut chunk_tokens = 0;
                        for chunk in tokens.chunks(#tokens) {
                            if #as_chunk {
                                self.step_chunk(cache, chunk)?;
                                chunk_tokens = chunk.len();
                            } else {
                                for &token in chunk {
                                    self.step(cache, token)?;
                                }
                                chunk_tokens = 0;
                            }
                        }
                        Ok(chunk_tokens)
                    },
                    quote!(chunk_tokens),
                    quote!(match chunk_tokens {
                        0 => self.logits(),
                        tokens => self.chunk_logits(tokens),
                    }),
                    quote! {
                        /// Tokens per prefill step.
                        pub const PREFILL_CHUNK: usize = #tokens;
                    },
                )
            }
            None => (
                quote! {
                    for &token in tokens {
                        self.step(cache, token)?;
                    }
                    Ok(0)
                },
                quote!(_chunk_tokens),
                quote!(self.logits()),
                TokenStream::new(),
            ),
        };
        let prefill_steps = quote! {
            /// Runs `tokens` through the network against `cache`: in prefill chunks if the
            /// decoder has a chunk step, else one by one. Returns how many tokens the last step
            /// took if it was a chunk, else 0.
            fn prefill_steps(&mut self, cache: &mut impl rt::kv_cache::DecodeCache, tokens: &[i64]) -> Result<usize, rt::ModelError> {
                if tokens.is_empty() {
                    return Err(rt::ModelError::EmptyPrompt);
                }
                #prefill_body
            }

            /// The logits after a prefill whose last step was a chunk of `chunk_tokens` tokens
            /// (0: a one-token step).
            fn prefill_logits(&self, #chunk_tokens_param: usize) -> #logits {
                #prefill_logits
            }

            #chunk_const
        };
        let paged = (!decoding.has_encoder(graph)).then(|| {
            let (layers, kv_heads, head_dim) = (
                lit(decoding.layers.len()),
                lit(decoding.kv_heads),
                lit(decoding.head_dim),
            );
            quote! {
                /// A pool of `num_blocks` blocks of `block_size` positions for decoding several
                /// sequences with one decoder ([`Self::decode_paged`]); sequences take blocks as
                /// they grow and return them when freed. Panics if `block_size` is zero or the pool
                /// does not fit in memory; see [`Self::try_paged_cache`].
                pub fn paged_cache(num_blocks: usize, block_size: usize) -> rt::kv_cache::PagedKvCache {
                    Self::try_paged_cache(num_blocks, block_size).unwrap_or_else(|error| panic!("{error}"))
                }

                /// [`Self::paged_cache`], with an error for a zero `block_size` or a pool that does
                /// not fit in memory.
                pub fn try_paged_cache(
                    num_blocks: usize,
                    block_size: usize,
                ) -> Result<rt::kv_cache::PagedKvCache, rt::kv_cache::KvCacheError> {
                    rt::kv_cache::PagedKvCache::try_new(#layers, num_blocks, block_size, #kv_heads, #head_dim)
                }

                /// Appends one token to sequence `seq` of `cache` and returns the logits for its
                /// next one. Sequences are independent: steps of different sequences may
                /// interleave in any order.
                pub fn decode_paged(
                    &mut self,
                    cache: &mut rt::kv_cache::PagedKvCache,
                    seq: rt::kv_cache::SequenceId,
                    token: i64,
                ) -> #result {
                    self.step(&mut cache.sequence(seq)?, token)?;
                    Ok(self.logits())
                }

                /// Appends `tokens` to sequence `seq` of `cache` and returns the logits after the
                /// last one.
                pub fn prefill_paged(
                    &mut self,
                    cache: &mut rt::kv_cache::PagedKvCache,
                    seq: rt::kv_cache::SequenceId,
                    tokens: &[i64],
                ) -> #result {
                    let chunk_tokens = self.prefill_steps(&mut cache.sequence(seq)?, tokens)?;
                    Ok(self.prefill_logits(chunk_tokens))
                }
            }
        });
        quote! {
            impl #name {
                /// The most positions the KV cache holds.
                pub const MAX_CONTEXT: usize = #max_context;

                /// Forgets every position, to start a new sequence.
                pub fn reset(&mut self) {
                    self.cache.reset();
                }

                /// The number of positions decoded so far.
                pub fn position(&self) -> usize {
                    self.cache.len()
                }

                /// Appends one token and returns the logits for the next one.
                pub fn decode(&mut self, token: i64) -> #result {
                    // The step borrows the cache beside the rest of the decoder.
                    let mut cache = std::mem::take(&mut self.cache);
                    let stepped = self.step(&mut cache, token);
                    self.cache = cache;
                    stepped?;
                    Ok(self.logits())
                }

                /// Appends `tokens` and returns the logits after the last one.
                pub fn prefill(&mut self, tokens: &[i64]) -> #result {
                    let mut cache = std::mem::take(&mut self.cache);
                    let stepped = self.prefill_steps(&mut cache, tokens);
                    self.cache = cache;
                    Ok(self.prefill_logits(stepped?))
                }

                #prefill_steps

                /// Continues `prompt` by up to `max_new_tokens` tokens chosen by `sampler`, stopping
                /// early when the context is full. Returns the new tokens.
                pub fn generate(
                    &mut self,
                    prompt: &[i64],
                    max_new_tokens: usize,
                    sampler: &mut rt::sampling::Sampler,
                ) -> Result<Vec<i64>, rt::ModelError> {
                    let mut next = sampler.sample(self.prefill(prompt)?.as_slice().expect("contiguous logits"));
                    // Reserved up to a bound: `max_new_tokens` may be `usize::MAX` ("until the context is full").
                    let mut generated = Vec::with_capacity(max_new_tokens.min(Self::MAX_CONTEXT).min(4096));
                    while generated.len() < max_new_tokens {
                        generated.push(next);
                        if generated.len() == max_new_tokens || self.position() == Self::MAX_CONTEXT {
                            break;
                        }
                        next = sampler.sample(self.decode(next)?.as_slice().expect("contiguous logits"));
                    }
                    Ok(generated)
                }

                #paged

                /// The logits the last step left in the arena.
                fn logits(&self) -> #logits {
                    let logits = #output_expr;
                    logits.into_shape_with_order(#vocab).expect("one position of logits")
                }
            }
        }
    }
}

/// The start of a decoder step of `tokens` tokens: a full context is the cache's error, before
/// any layer sees the positions.
fn room_check(tokens: TokenStream) -> TokenStream {
    quote! {
        if cache.position() + #tokens > Self::MAX_CONTEXT {
            return Err(rt::kv_cache::KvCacheError::Full {
                max_context: Self::MAX_CONTEXT,
                requested: cache.position() + #tokens,
            }
            .into());
        }
    }
}
