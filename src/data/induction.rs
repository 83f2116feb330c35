//! Repeated random sequences: the first half is uniform random tokens, the
//! second half repeats it, so the second half is predictable only by
//! induction (copying what followed the previous occurrence). Loss is scored
//! on the repeated half. The standard toy for induction heads (Olsson et al.,
//! arXiv 2209.11895).

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::TokenBatch;

/// Sample `batch` sequences of `seq_len` tokens over `vocab_size` symbols.
pub fn sample(batch: usize, seq_len: usize, vocab_size: usize, rng: &mut ChaCha8Rng) -> TokenBatch {
    let half = seq_len.div_ceil(2);
    let mut inputs = Vec::with_capacity(batch * seq_len);
    let mut targets = Vec::with_capacity(batch * seq_len);
    let mut weights = Vec::with_capacity(batch * seq_len);
    let mut seq = vec![0u32; seq_len + 1];
    for _ in 0..batch {
        for tok in seq.iter_mut().take(half) {
            *tok = rng.random_range(0..vocab_size as u32);
        }
        for t in half..=seq_len {
            seq[t] = seq[t - half];
        }
        inputs.extend_from_slice(&seq[..seq_len]);
        targets.extend_from_slice(&seq[1..]);
        weights.extend((0..seq_len).map(|t| if t + 1 > half { 1.0 } else { 0.0 }));
    }
    TokenBatch { batch, seq_len, inputs, targets, weights }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn second_half_repeats_and_is_scored() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let b = sample(3, 8, 10, &mut rng);
        for r in 0..3 {
            let x = &b.inputs[r * 8..(r + 1) * 8];
            assert_eq!(&x[..4], &x[4..]);
            assert_eq!(&b.targets[r * 8..r * 8 + 7], &x[1..]);
            assert_eq!(&b.weights[r * 8..(r + 1) * 8], &[0., 0., 0., 0., 1., 1., 1., 1.]);
        }
        let mut rng2 = ChaCha8Rng::seed_from_u64(0);
        assert_eq!(sample(3, 8, 10, &mut rng2), b);
    }
}
