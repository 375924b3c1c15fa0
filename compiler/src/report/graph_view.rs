//! The network as a picture: Graphviz DOT text, and an SVG laid out without Graphviz.
//!
//! Vertices are the network inputs, the nodes and the network outputs; weights are not drawn
//! (each node's label says how many parameters it holds). Fused groups with more than one node
//! are boxed: a DOT cluster, or a dashed rectangle in the SVG.
//!
//! The built-in layout is layered, the way Graphviz's `dot` starts: a vertex's rank is one more
//! than the highest rank of its producers, each vertex sits below the mean position of its
//! producers, and vertices of one rank are pushed apart so they do not overlap. Edges between
//! neighbouring ranks are curves; longer ones (residual connections) run down a lane to the
//! right of the ranks they skip, so they never cross a node.

use std::fmt::Write as _;

use super::FusionGroups;
use super::svg::{Svg, category_colour, text_width};
use crate::cost;
use crate::ir::{Graph, OpCategory, ValueDef, types::format_shape};

const FONT_SIZE: f64 = 11.0;
const NODE_HEIGHT: f64 = 36.0;
const RANK_GAP: f64 = 30.0;
const NODE_GAP: f64 = 24.0;
const MARGIN: f64 = 20.0;

/// What a vertex stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum VertexKind {
    Input,
    /// A node, with its op's category for its colour.
    Node(OpCategory),
    Output,
}

struct Vertex {
    kind: VertexKind,
    /// The first line (bold) and the second line of the label.
    title: String,
    detail: String,
    /// The fused group of a node.
    group: Option<usize>,
    rank: usize,
    width: f64,
    /// Centre x, top y.
    x: f64,
    y: f64,
}

/// The vertices and edges of the picture, shared by both outputs.
struct Picture {
    vertices: Vec<Vertex>,
    /// (producer vertex, consumer vertex), each pair once.
    edges: Vec<(usize, usize)>,
}

/// The graph in Graphviz's DOT language, fused groups as clusters.
pub fn to_dot(graph: &Graph, groups: &FusionGroups) -> String {
    let picture = Picture::new(graph, groups);
    let mut out = String::new();
    let _ = writeln!(out, "digraph \"{}\" {{", dot_escape(&graph.name));
    out.push_str(
        "  graph [rankdir=TB, nodesep=0.25, ranksep=0.3, fontname=\"DejaVu Sans Mono\"];\n",
    );
    out.push_str(
        "  node [shape=box, style=\"rounded,filled\", fontname=\"DejaVu Sans Mono\", fontsize=10];\n",
    );
    out.push_str("  edge [color=\"#555555\", arrowsize=0.6];\n");
    let vertex_line = |index: usize, vertex: &Vertex| {
        let label = format!(
            "{}\\n{}",
            dot_escape(&vertex.title),
            dot_escape(&vertex.detail)
        );
        match vertex.kind {
            VertexKind::Input | VertexKind::Output => format!(
                "v{index} [shape=ellipse, style=filled, fillcolor=\"#f4f4f4\", label=\"{label}\"];"
            ),
            VertexKind::Node(category) => {
                let colour = category_colour(category);
                format!(
                    "v{index} [label=\"{label}\", color=\"{colour}\", fillcolor=\"{colour}40\"];"
                )
            }
        }
    };
    let fused = groups.fused(graph);
    let mut in_cluster = vec![false; picture.vertices.len()];
    for (group, members) in &fused {
        let _ = writeln!(out, "  subgraph cluster_group_{group} {{");
        let _ = writeln!(
            out,
            "    label=\"group {group}\"; style=\"dashed,rounded\"; color=\"#777777\"; fontsize=9;"
        );
        for member in members {
            let index = picture.node_vertex(graph, member.index());
            in_cluster[index] = true;
            let _ = writeln!(out, "    {}", vertex_line(index, &picture.vertices[index]));
        }
        out.push_str("  }\n");
    }
    for (index, vertex) in picture.vertices.iter().enumerate() {
        if !in_cluster[index] {
            let _ = writeln!(out, "  {}", vertex_line(index, vertex));
        }
    }
    for &(from, to) in &picture.edges {
        let _ = writeln!(out, "  v{from} -> v{to};");
    }
    out.push_str("}\n");
    out
}

/// The graph as SVG, laid out here (no Graphviz needed).
pub fn to_svg(graph: &Graph, groups: &FusionGroups) -> String {
    let mut picture = Picture::new(graph, groups);
    picture.layout();
    picture.render(graph, groups)
}

impl Picture {
    fn new(graph: &Graph, groups: &FusionGroups) -> Self {
        let costs = cost::analyze(graph);
        let mut vertices = Vec::new();
        let mut edges = Vec::new();
        let input_vertex = |index: usize| index;
        for input in &graph.inputs {
            vertices.push(Vertex::new(
                VertexKind::Input,
                input.name.clone(),
                graph.ty(input.value).to_string(),
                None,
            ));
        }
        let node_base = graph.inputs.len();
        for (node, data) in graph.nodes.iter() {
            let output = graph.ty(data.outputs[0]);
            let parameters = costs.nodes[node].parameters;
            let mut detail = format!("{} {}", data.op.name(), format_shape(&output.shape));
            if parameters > 0 {
                detail.push_str(&format!(" · {} params", super::human_count(parameters)));
            }
            vertices.push(Vertex::new(
                VertexKind::Node(data.op.category()),
                data.name.clone(),
                detail,
                Some(groups.group_of[node]),
            ));
            let mut producers = Vec::new();
            for &value in &data.inputs {
                let producer = match graph.values[value].def {
                    ValueDef::Input { index } => input_vertex(index),
                    ValueDef::Node { node, .. } => node_base + node.index(),
                    ValueDef::Param(_) => continue,
                };
                if !producers.contains(&producer) {
                    producers.push(producer);
                    edges.push((producer, node_base + node.index()));
                }
            }
        }
        for output in &graph.outputs {
            let consumer = vertices.len();
            vertices.push(Vertex::new(
                VertexKind::Output,
                output.name.clone(),
                graph.ty(output.value).to_string(),
                None,
            ));
            let producer = match graph.values[output.value].def {
                ValueDef::Input { index } => input_vertex(index),
                ValueDef::Node { node, .. } => node_base + node.index(),
                ValueDef::Param(_) => continue,
            };
            edges.push((producer, consumer));
        }
        Picture { vertices, edges }
    }

    fn node_vertex(&self, graph: &Graph, node_index: usize) -> usize {
        graph.inputs.len() + node_index
    }

    /// Assigns ranks and positions.
    fn layout(&mut self) {
        // Vertices are in topological order: inputs, nodes in execution order, outputs.
        let mut parents: Vec<Vec<usize>> = vec![Vec::new(); self.vertices.len()];
        for &(from, to) in &self.edges {
            parents[to].push(from);
        }
        for (vertex, vertex_parents) in parents.iter().enumerate() {
            let rank = vertex_parents
                .iter()
                .map(|&parent| self.vertices[parent].rank + 1)
                .max()
                .unwrap_or(0);
            self.vertices[vertex].rank = rank;
        }
        let ranks = self
            .vertices
            .iter()
            .map(|vertex| vertex.rank)
            .max()
            .unwrap_or(0)
            + 1;
        let mut by_rank: Vec<Vec<usize>> = vec![Vec::new(); ranks];
        for (index, vertex) in self.vertices.iter().enumerate() {
            by_rank[vertex.rank].push(index);
        }
        for (rank, members) in by_rank.iter().enumerate() {
            // Each vertex wants to sit under the mean of its producers.
            let mut wanted: Vec<(f64, usize)> = members
                .iter()
                .map(|&vertex| {
                    let xs: Vec<f64> = parents[vertex]
                        .iter()
                        .map(|&parent| self.vertices[parent].x)
                        .collect();
                    let x = if xs.is_empty() {
                        0.0
                    } else {
                        xs.iter().sum::<f64>() / xs.len() as f64
                    };
                    (x, vertex)
                })
                .collect();
            wanted.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            // Push apart left to right, then shift the rank back so that it is centred on
            // where its vertices wanted to be.
            let mut placed: Vec<(usize, f64, f64)> = Vec::new();
            let mut right_edge = f64::NEG_INFINITY;
            for &(x, vertex) in &wanted {
                let half = self.vertices[vertex].width / 2.0;
                let centre = x.max(right_edge + NODE_GAP + half);
                right_edge = centre + half;
                placed.push((vertex, centre, x));
            }
            let shift = placed.iter().map(|(_, centre, x)| centre - x).sum::<f64>()
                / placed.len().max(1) as f64;
            for (vertex, centre, _) in placed {
                self.vertices[vertex].x = centre - shift;
                self.vertices[vertex].y = MARGIN + 30.0 + rank as f64 * (NODE_HEIGHT + RANK_GAP);
            }
        }
        let left = self
            .vertices
            .iter()
            .map(|vertex| vertex.x - vertex.width / 2.0)
            .fold(f64::INFINITY, f64::min);
        for vertex in &mut self.vertices {
            vertex.x += MARGIN - left;
        }
    }

    fn render(&self, graph: &Graph, groups: &FusionGroups) -> String {
        let mut svg = Svg::new();
        svg.raw(concat!(
            r#"<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" "#,
            r##"markerWidth="7" markerHeight="7" orient="auto-start-reverse">"##,
            r##"<path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker></defs>"##
        ));
        svg.text(
            MARGIN,
            MARGIN + 12.0,
            14.0,
            "start",
            r#"font-weight="bold""#,
            &format!("{} ({} layers)", graph.name, graph.nodes.len()),
        );

        // Fused groups, behind everything.
        let mut right = self
            .vertices
            .iter()
            .map(|vertex| vertex.x + vertex.width / 2.0)
            .fold(0.0, f64::max);
        for (group, members) in groups.fused(graph) {
            let boxes: Vec<&Vertex> = members
                .iter()
                .map(|member| &self.vertices[self.node_vertex(graph, member.index())])
                .collect();
            let x0 = boxes
                .iter()
                .map(|v| v.x - v.width / 2.0)
                .fold(f64::INFINITY, f64::min)
                - 8.0;
            let x1 = boxes
                .iter()
                .map(|v| v.x + v.width / 2.0)
                .fold(0.0, f64::max)
                + 8.0;
            let y0 = boxes.iter().map(|v| v.y).fold(f64::INFINITY, f64::min) - 17.0;
            let y1 = boxes.iter().map(|v| v.y + NODE_HEIGHT).fold(0.0, f64::max) + 6.0;
            svg.rect(
                x0,
                y0,
                x1 - x0,
                y1 - y0,
                r##"rx="8" fill="#fafafa" stroke="#777" stroke-width="1" stroke-dasharray="5 3""##,
                &format!("fused group {group}: {} nodes", members.len()),
            );
            svg.text(
                x1 - 6.0,
                y0 + 11.0,
                9.0,
                "end",
                r##"fill="#777""##,
                &format!("group {group}"),
            );
        }

        // Edges: curves between neighbouring ranks, lanes for longer ones.
        let mut lanes: Vec<(usize, usize, f64)> = Vec::new();
        for &(from, to) in &self.edges {
            let (source, target) = (&self.vertices[from], &self.vertices[to]);
            let (sx, sy) = (source.x, source.y + NODE_HEIGHT);
            let (tx, ty) = (target.x, target.y);
            let d = if target.rank == source.rank + 1 {
                let middle = (sy + ty) / 2.0;
                format!("M{sx:.1},{sy:.1} C{sx:.1},{middle:.1} {tx:.1},{middle:.1} {tx:.1},{ty:.1}")
            } else {
                // The lane runs right of every vertex of the ranks in between, and of lanes
                // already running beside them.
                let (low, high) = (source.rank + 1, target.rank - 1);
                let mut x = self
                    .vertices
                    .iter()
                    .filter(|vertex| (low..=high).contains(&vertex.rank))
                    .map(|vertex| vertex.x + vertex.width / 2.0)
                    .fold(sx.max(tx), f64::max)
                    + 18.0;
                for &(lane_low, lane_high, lane_x) in &lanes {
                    if lane_low <= high + 1 && low <= lane_high + 1 && lane_x >= x - 0.5 {
                        x = x.max(lane_x + 10.0);
                    }
                }
                lanes.push((low, high, x));
                right = right.max(x);
                let turn_out = sy + RANK_GAP / 2.0;
                let turn_in = ty - RANK_GAP / 2.0;
                format!(
                    "M{sx:.1},{sy:.1} C{sx:.1},{turn_out:.1} {x:.1},{sy:.1} {x:.1},{turn_out:.1} \
                     L{x:.1},{turn_in:.1} C{x:.1},{ty:.1} {tx:.1},{turn_in:.1} {tx:.1},{ty:.1}"
                )
            };
            svg.path(
                &d,
                r##"fill="none" stroke="#555" stroke-width="1.2" marker-end="url(#arrow)""##,
            );
        }

        // Vertices on top.
        for vertex in &self.vertices {
            let x0 = vertex.x - vertex.width / 2.0;
            let (fill, stroke, shape) = match vertex.kind {
                VertexKind::Node(category) => (
                    category_colour(category),
                    category_colour(category),
                    r#"rx="6""#,
                ),
                VertexKind::Input | VertexKind::Output => ("#dddddd", "#888888", r#"rx="18""#),
            };
            let tooltip = match vertex.group {
                Some(group) => format!("{} — {} (group {group})", vertex.title, vertex.detail),
                None => format!("{} — {}", vertex.title, vertex.detail),
            };
            svg.rect(
                x0,
                vertex.y,
                vertex.width,
                NODE_HEIGHT,
                "fill=\"white\"",
                "",
            );
            svg.rect(
                x0,
                vertex.y,
                vertex.width,
                NODE_HEIGHT,
                &format!(
                    r#"{shape} fill="{fill}" fill-opacity="0.22" stroke="{stroke}" stroke-width="1.2""#
                ),
                &tooltip,
            );
            svg.text(
                vertex.x,
                vertex.y + 15.0,
                FONT_SIZE,
                "middle",
                r#"font-weight="bold""#,
                &vertex.title,
            );
            svg.text(
                vertex.x,
                vertex.y + 29.0,
                FONT_SIZE - 1.0,
                "middle",
                r##"fill="#333""##,
                &vertex.detail,
            );
        }
        let bottom = self
            .vertices
            .iter()
            .map(|vertex| vertex.y + NODE_HEIGHT)
            .fold(0.0, f64::max);
        let title_width = text_width(&graph.name, 14.0) + 160.0;
        svg.finish((right + MARGIN).max(title_width), bottom + MARGIN)
    }
}

impl Vertex {
    fn new(kind: VertexKind, title: String, detail: String, group: Option<usize>) -> Self {
        let width = text_width(&title, FONT_SIZE)
            .max(text_width(&detail, FONT_SIZE - 1.0))
            .max(60.0)
            + 16.0;
        Vertex {
            kind,
            title,
            detail,
            group,
            rank: 0,
            width,
            x: 0.0,
            y: 0.0,
        }
    }
}

/// Escapes a DOT string.
fn dot_escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"")
}
