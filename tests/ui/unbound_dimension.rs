nnc::network! {
    network net(tokens: i64[batch, seq]) -> (y) where batch = 1 {
        y = embedding(tokens, 100, 16) as embed
    }
}

fn main() {}
