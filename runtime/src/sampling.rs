//! Choosing the next token from logits: greedy, temperature and top-k sampling, seeded.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// How a generated decoder picks the next token.
#[derive(Clone, Debug)]
pub enum Sampler {
    /// The most likely token.
    Greedy,
    /// A draw from `softmax(logits / temperature)`, keeping only the `top_k` most likely tokens
    /// when set.
    Random {
        temperature: f32,
        top_k: Option<usize>,
        rng: Box<ChaCha8Rng>,
    },
}

impl Sampler {
    /// The most likely token, every time.
    pub fn greedy() -> Self {
        Sampler::Greedy
    }

    /// Sampling at `temperature` (> 0), deterministic for a `seed`.
    pub fn temperature(temperature: f32, seed: u64) -> Self {
        Sampler::Random {
            temperature: temperature.max(1e-6),
            top_k: None,
            rng: Box::new(ChaCha8Rng::seed_from_u64(seed)),
        }
    }

    /// Sampling at `temperature` among the `k` most likely tokens, deterministic for a `seed`.
    pub fn top_k(k: usize, temperature: f32, seed: u64) -> Self {
        Sampler::Random {
            temperature: temperature.max(1e-6),
            top_k: Some(k.max(1)),
            rng: Box::new(ChaCha8Rng::seed_from_u64(seed)),
        }
    }

    /// Picks a token id from `logits`.
    pub fn sample(&mut self, logits: &[f32]) -> i64 {
        let argmax = || {
            logits.iter().enumerate().fold(
                0,
                |best, (index, &logit)| if logit > logits[best] { index } else { best },
            ) as i64
        };
        match self {
            Sampler::Greedy => argmax(),
            Sampler::Random {
                temperature,
                top_k,
                rng,
            } => {
                let mut candidates: Vec<(usize, f32)> =
                    logits.iter().copied().enumerate().collect();
                if let Some(k) = top_k {
                    candidates.sort_by(|a, b| b.1.total_cmp(&a.1));
                    candidates.truncate(*k);
                }
                let max = candidates
                    .iter()
                    .map(|&(_, logit)| logit)
                    .fold(f32::NEG_INFINITY, f32::max);
                let weights: Vec<f64> = candidates
                    .iter()
                    .map(|&(_, logit)| f64::from((logit - max) / *temperature).exp())
                    .collect();
                let total: f64 = weights.iter().sum();
                if !(total.is_finite() && total > 0.0) {
                    return argmax();
                }
                let mut draw = rng.random_range(0.0..total);
                for (&(index, _), weight) in candidates.iter().zip(&weights) {
                    if draw < *weight {
                        return index as i64;
                    }
                    draw -= weight;
                }
                candidates.last().map_or(0, |&(index, _)| index as i64)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Sampler;

    #[test]
    fn greedy_takes_the_largest_and_sampling_is_seeded() {
        let logits = [0.1, 3.0, -1.0, 2.9];
        assert_eq!(Sampler::greedy().sample(&logits), 1);
        let draws = |seed| {
            let mut sampler = Sampler::temperature(1.0, seed);
            (0..20).map(|_| sampler.sample(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(draws(3), draws(3));
        let mut top_one = Sampler::top_k(1, 5.0, 9);
        assert!((0..50).all(|_| top_one.sample(&logits) == 1));
        let mut top_two = Sampler::top_k(2, 1.0, 9);
        assert!((0..200).all(|_| matches!(top_two.sample(&logits), 1 | 3)));
    }
}
