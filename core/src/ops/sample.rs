//! Token samplers: greedy, temperature, top-k, top-p (nucleus) and repetition penalty, with a
//! small seeded RNG so a run is reproducible on any target. No allocation: the caller passes a
//! scratch slice of `vocab` `u32`s for the candidate order.
//!
//! The order of operations is the common one (llama.cpp, HF): repetition penalty on the raw
//! logits, then temperature, softmax, top-k, top-p, and a draw from what is left, renormalised.

use crate::error::{Error, Result};
use crate::ops::softmax;

/// A small, fast, seedable generator (xoshiro128++), identical on every platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rng {
    s: [u32; 4],
}

impl Rng {
    /// A generator seeded from `seed` through SplitMix64, so nearby seeds give unrelated streams.
    pub fn new(seed: u64) -> Self {
        let mut z = seed;
        let mut next = || {
            z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            x ^ (x >> 31)
        };
        let (a, b) = (next(), next());
        let s = [a as u32, (a >> 32) as u32, b as u32, (b >> 32) as u32];
        // xoshiro must not start from the all-zero state.
        Rng {
            s: if s == [0; 4] { [1, 0, 0, 0] } else { s },
        }
    }

    /// Next 32 random bits.
    pub fn next_u32(&mut self) -> u32 {
        let s = &mut self.s;
        let result = s[0].wrapping_add(s[3]).rotate_left(7).wrapping_add(s[0]);
        let t = s[1] << 9;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(11);
        result
    }

    /// Uniform in `[0, 1)` with 24 bits of precision.
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u32() >> 8) as f32 * (1.0 / (1u32 << 24) as f32)
    }
}

/// Sampler settings. `Default` is plain sampling at temperature 1 with every filter off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplerConfig {
    /// Divides the logits; 0 means greedy.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens; 0 disables.
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p`; 1 disables.
    pub top_p: f32,
    /// Divides positive (multiplies negative) logits of recently seen tokens; 1 disables.
    pub repetition_penalty: f32,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
        }
    }
}

impl SamplerConfig {
    /// Greedy decoding (argmax).
    pub const GREEDY: SamplerConfig = SamplerConfig {
        temperature: 0.0,
        top_k: 0,
        top_p: 1.0,
        repetition_penalty: 1.0,
    };

    fn validate(&self) -> Result<()> {
        let ok = self.temperature.is_finite()
            && self.temperature >= 0.0
            && self.top_p.is_finite()
            && self.top_p > 0.0
            && self.top_p <= 1.0
            && self.repetition_penalty.is_finite()
            && self.repetition_penalty > 0.0;
        if ok { Ok(()) } else { Err(Error::OutOfRange) }
    }
}

/// Index of the largest logit (the first one on ties). Errors on an empty slice or NaN.
pub fn greedy(logits: &[f32]) -> Result<u32> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in logits.iter().enumerate() {
        if v.is_nan() {
            return Err(Error::NonFinite);
        }
        if best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    best.map(|(i, _)| i as u32).ok_or(Error::OutOfRange)
}

/// Penalises tokens in `recent` (CTRL-style, as llama.cpp does): a positive logit is divided
/// by `penalty`, a negative one multiplied. Each distinct token is penalised once; ids outside
/// the vocabulary are an error.
pub fn apply_repetition_penalty(logits: &mut [f32], recent: &[u32], penalty: f32) -> Result<()> {
    if !(penalty.is_finite() && penalty > 0.0) {
        return Err(Error::OutOfRange);
    }
    for (n, &tok) in recent.iter().enumerate() {
        let t = tok as usize;
        if t >= logits.len() {
            return Err(Error::OutOfRange);
        }
        if recent[..n].contains(&tok) {
            continue;
        }
        let v = &mut logits[t];
        *v = if *v > 0.0 { *v / penalty } else { *v * penalty };
    }
    Ok(())
}

/// Picks the next token from `logits` (modified in place: they end up as the filtered
/// probabilities). `recent` feeds the repetition penalty; `order` is caller scratch of at
/// least `logits.len()` entries.
pub fn sample(
    logits: &mut [f32],
    config: &SamplerConfig,
    recent: &[u32],
    rng: &mut Rng,
    order: &mut [u32],
) -> Result<u32> {
    config.validate()?;
    let vocab = logits.len();
    if vocab == 0 || vocab > u32::MAX as usize {
        return Err(Error::OutOfRange);
    }
    if config.repetition_penalty != 1.0 {
        apply_repetition_penalty(logits, recent, config.repetition_penalty)?;
    }
    if config.temperature == 0.0 {
        return greedy(logits);
    }
    let provided = order.len();
    let order = order.get_mut(..vocab).ok_or(Error::BufferTooSmall {
        needed: vocab as u64,
        provided: provided as u64,
    })?;
    let inv_t = 1.0 / config.temperature;
    for v in logits.iter_mut() {
        *v *= inv_t;
    }
    softmax(logits)?;
    for (i, o) in order.iter_mut().enumerate() {
        *o = i as u32;
    }
    let by_prob_desc = |a: &u32, b: &u32| {
        logits[*b as usize]
            .total_cmp(&logits[*a as usize])
            .then(a.cmp(b))
    };
    let mut keep = vocab;
    if config.top_k > 0 && config.top_k < vocab {
        order.select_nth_unstable_by(config.top_k - 1, by_prob_desc);
        keep = config.top_k;
    }
    let kept = &mut order[..keep];
    if config.top_p < 1.0 {
        kept.sort_unstable_by(by_prob_desc);
        let mut mass = 0.0f32;
        let mut n = 0;
        for &i in kept.iter() {
            mass += logits[i as usize];
            n += 1;
            if mass >= config.top_p {
                break;
            }
        }
        keep = n;
    }
    let kept = &order[..keep];
    let total: f32 = kept.iter().map(|&i| logits[i as usize]).sum();
    let mut target = rng.next_f32() * total;
    for &i in kept {
        target -= logits[i as usize];
        if target < 0.0 {
            return Ok(i);
        }
    }
    // Rounding can leave a sliver of mass; the last kept candidate owns it.
    kept.last().copied().ok_or(Error::OutOfRange)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{prop_assert, proptest};

    #[test]
    fn rng_is_deterministic_and_uniform_enough() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        let xs: [u32; 8] = core::array::from_fn(|_| a.next_u32());
        let ys: [u32; 8] = core::array::from_fn(|_| b.next_u32());
        assert_eq!(xs, ys);
        assert_ne!(Rng::new(8).next_u32(), Rng::new(7).next_u32());
        let mut r = Rng::new(1);
        let mean = (0..10_000).map(|_| r.next_f32()).sum::<f32>() / 10_000.0;
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
    }

    #[test]
    fn greedy_picks_first_max() {
        assert_eq!(greedy(&[0.0, 3.0, 3.0, -1.0]), Ok(1));
        assert!(greedy(&[]).is_err());
        assert_eq!(greedy(&[0.0, f32::NAN]), Err(Error::NonFinite));
    }

    #[test]
    fn top_k_one_is_greedy() {
        let mut order = [0u32; 5];
        let mut rng = Rng::new(3);
        for _ in 0..20 {
            let mut l = [0.1f32, 2.0, 1.9, -3.0, 0.0];
            let cfg = SamplerConfig {
                top_k: 1,
                ..SamplerConfig::default()
            };
            assert_eq!(sample(&mut l, &cfg, &[], &mut rng, &mut order), Ok(1));
        }
    }

    #[test]
    fn top_p_keeps_the_nucleus_only() {
        // Probabilities ~ [0.64, 0.24, 0.09, 0.03]: top_p 0.8 keeps tokens 0 and 1.
        let base = [3.0f32, 2.0, 1.0, 0.0];
        let mut order = [0u32; 4];
        let mut rng = Rng::new(11);
        let cfg = SamplerConfig {
            top_p: 0.8,
            ..SamplerConfig::default()
        };
        let mut seen = [0usize; 4];
        for _ in 0..2000 {
            let mut l = base;
            seen[sample(&mut l, &cfg, &[], &mut rng, &mut order).unwrap() as usize] += 1;
        }
        assert_eq!((seen[2], seen[3]), (0, 0));
        // Renormalised: token 0 has 0.64/0.88 ~ 0.73 of the draws.
        assert!((seen[0] as f32 / 2000.0 - 0.727).abs() < 0.04, "{seen:?}");
    }

    #[test]
    fn repetition_penalty_pushes_seen_tokens_down() {
        let mut l = [2.0f32, -2.0, 1.0];
        apply_repetition_penalty(&mut l, &[0, 1, 0], 2.0).unwrap();
        assert_eq!(l, [1.0, -4.0, 1.0]);
        assert!(apply_repetition_penalty(&mut l, &[3], 2.0).is_err());
    }

    #[test]
    fn bad_settings_are_errors() {
        let mut order = [0u32; 2];
        let mut rng = Rng::new(0);
        for cfg in [
            SamplerConfig {
                temperature: -1.0,
                ..Default::default()
            },
            SamplerConfig {
                top_p: 0.0,
                ..Default::default()
            },
            SamplerConfig {
                repetition_penalty: f32::NAN,
                ..Default::default()
            },
        ] {
            assert!(sample(&mut [0.0, 1.0], &cfg, &[], &mut rng, &mut order).is_err());
        }
        let mut short = [0u32; 1];
        assert!(
            sample(
                &mut [0.0, 1.0],
                &SamplerConfig::default(),
                &[],
                &mut rng,
                &mut short
            )
            .is_err()
        );
    }

    proptest! {
        #[test]
        fn sample_returns_an_id_in_range(
            logits in proptest::collection::vec(-50.0f32..50.0, 1..64),
            seed: u64, top_k in 0usize..70, top_p in 0.01f32..=1.0, temperature in 0.0f32..3.0,
        ) {
            let mut l = logits.clone();
            let mut order = std::vec![0u32; l.len()];
            let cfg = SamplerConfig { temperature, top_k, top_p, repetition_penalty: 1.3 };
            let id = sample(&mut l, &cfg, &[0], &mut Rng::new(seed), &mut order).unwrap();
            prop_assert!((id as usize) < logits.len());
        }
    }
}
