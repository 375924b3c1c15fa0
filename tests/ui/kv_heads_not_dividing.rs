nnc::network! {
    network net(x: f32[1, 16, 576]) -> (y) {
        q = linear(x, 576, bias = false) as q_proj
        k = linear(x, 256, bias = false) as k_proj
        v = linear(x, 256, bias = false) as v_proj
        y = attention(q, k, v, heads = 9, kv_heads = 4, causal = true)
    }
}

fn main() {}
