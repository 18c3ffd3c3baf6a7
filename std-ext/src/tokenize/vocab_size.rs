//! Vocabulary sizing from "Scaling Laws with Vocabulary" (Tao et al., arXiv 2407.13623,
//! NeurIPS 2024), with the fitted constants the authors publish (sail-sg/scaling-with-vocab,
//! `optimal_Nv_predict.py` and `utils.py`), and the paper's unigram-normalised loss.
//!
//! Notation: `N_nv` non-vocabulary parameters, `d` embedding width, `V` vocabulary size,
//! `N_v = V·d` vocabulary parameters, `F` training FLOPs.

/// Compute-optimal `N_nv = exp(K_nnv) · F^0.5` (approach 1's fit for non-vocabulary parameters).
pub const K_NNV: f64 = -2.484_651_016_162_519_3;
/// Approach 1: `N_v = exp(K_NV) · F^ALPHA_NV`.
pub const K_NV: f64 = -1.589_031_299_255_507;
/// Approach 1 exponent.
pub const ALPHA_NV: f64 = 0.416_362_263_413_523_4;
/// Approach 2: optimal vocabulary parameters of the 33M-parameter reference model.
pub const DERIVATIVE_BASE_NV: f64 = 3_145_728.0;
/// Approach 2: the reference model's non-vocabulary parameters.
pub const DERIVATIVE_BASE_NNV: f64 = 33_000_000.0;
/// Approach 2: `N_v ∝ N_nv^γ`.
pub const DERIVATIVE_GAMMA: f64 = 0.835_397_403_522_802_5;

/// Approach 3's fitted loss `L_u = -E + A1/N_nv^α1 + A2/(V·d)^α2 + B/D^β`, in the units of the
/// fit: `N_nv` in millions, `V` in thousands, `d` in thousands, `F` in 1e15 FLOPs.
pub mod isoloss {
    /// A1
    pub const A1: f64 = 1.831_385_155_955_412_6;
    /// A2
    pub const A2: f64 = 0.195_842_383_986_656_38;
    /// B
    pub const B: f64 = 2.124_112_312_006_495_5;
    /// E
    pub const E: f64 = 5.532_784_680_333_743_5;
    /// α1 (tied to β in the fit)
    pub const ALPHA1: f64 = 0.446_606_341_520_096_15;
    /// α2
    pub const ALPHA2: f64 = 0.670_737_467_989_679_5;
    /// β
    pub const BETA: f64 = 0.446_606_341_520_096_15;
}

/// The embedding width the paper assumes for a model with `n_nv` non-vocabulary parameters.
pub fn embedding_dim(n_nv: f64) -> f64 {
    const TABLE: [(f64, f64); 13] = [
        (50e6, 512.0),
        (200e6, 768.0),
        (500e6, 1024.0),
        (1e9, 1536.0),
        (2e9, 2048.0),
        (5e9, 3200.0),
        (10e9, 4096.0),
        (20e9, 5120.0),
        (50e9, 6048.0),
        (100e9, 8192.0),
        (200e9, 12288.0),
        (500e9, 16384.0),
        (1000e9, 20480.0),
    ];
    TABLE
        .iter()
        .find(|(limit, _)| n_nv <= *limit)
        .map_or(24576.0, |&(_, d)| d)
}

/// The compute-optimal FLOPs budget for `n_nv` non-vocabulary parameters.
pub fn compute_optimal_flops(n_nv: f64) -> f64 {
    (n_nv / K_NNV.exp()).powi(2)
}

/// Tokens per character for a vocabulary of `v` (the paper's fit `a·ln²V + b·lnV + c`, with `V`
/// capped at 200k); it turns characters of training text into tokens.
pub fn tokens_per_char(v: f64) -> f64 {
    let l = v.min(200_000.0).ln();
    0.006_392_22 * l * l - 0.158_110_69 * l + 1.204_701_22
}

/// The three predictions, as vocabulary sizes (`N_v / d`, rounded down like the paper's code).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VocabPrediction {
    /// Non-vocabulary parameters the prediction is for.
    pub non_vocab_params: f64,
    /// FLOPs budget used (the compute-optimal one unless given).
    pub flops: f64,
    /// Embedding width assumed (paper's table).
    pub embedding_dim: f64,
    /// Approach 1: IsoFLOPs power law `N_v = k·F^α`.
    pub isoflops: u64,
    /// Approach 2: derivative-based `N_v ∝ N_nv^γ` (assumes compute-optimal training; ignores `flops`).
    pub derivative: u64,
    /// Approach 3: minimum of the fitted loss over `V` at (`N_nv`, `F`).
    pub parametric: u64,
}

/// Approach 3: the `V` (in thousands) where d L_u / dV = 0, found by bisection on a log scale
/// (the derivative rises monotonically through zero). Units as in [`isoloss`].
fn isoloss_root(n_nv_m: f64, d_k: f64, f_e15: f64) -> f64 {
    use isoloss::*;
    let derivative = |v: f64| {
        let vocab_term = -ALPHA2 * A2 * d_k / (v * d_k).powf(ALPHA2 + 1.0);
        let total = n_nv_m + v * d_k;
        let u = f_e15 / (6.0 * total);
        let du_dv = f_e15 * d_k / (6.0 * total * total);
        vocab_term + BETA * B * du_dv / u.powf(BETA + 1.0)
    };
    let (mut lo, mut hi) = (1e-6f64.ln(), 1e9f64.ln());
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if derivative(mid.exp()) < 0.0 {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    (0.5 * (lo + hi)).exp()
}

/// The optimal vocabulary size by the paper's three methods for `non_vocab_params` and a
/// training budget of `flops` (default: compute-optimal for that size). Returns `None` for
/// non-finite or non-positive inputs.
pub fn optimal_vocab_size(non_vocab_params: f64, flops: Option<f64>) -> Option<VocabPrediction> {
    let n = non_vocab_params;
    let f = flops.unwrap_or_else(|| compute_optimal_flops(n));
    if !(n.is_finite() && n > 0.0 && f.is_finite() && f > 0.0) {
        return None;
    }
    let d = embedding_dim(n);
    let nv_isoflops = K_NV.exp() * f.powf(ALPHA_NV);
    let nv_derivative = DERIVATIVE_BASE_NV * (n / DERIVATIVE_BASE_NNV).powf(DERIVATIVE_GAMMA);
    let v_k = isoloss_root(n / 1e6, d / 1e3, f / 1e15);
    // The paper's code truncates N_v to an integer, then V = N_v / d to an integer.
    let to_v = |nv: f64| (nv.floor() / d).floor() as u64;
    Some(VocabPrediction {
        non_vocab_params: n,
        flops: f,
        embedding_dim: d,
        isoflops: to_v(nv_isoflops),
        derivative: to_v(nv_derivative),
        parametric: to_v(v_k * 1000.0 * d),
    })
}

/// Unigram token probabilities for the unigram-normalised loss: counts from the tokenizer's
/// training corpus, unseen ids counted once (as the paper's lookup table does).
#[derive(Clone, Debug)]
pub struct UnigramTable {
    log_probs: Vec<f64>,
}

impl UnigramTable {
    /// From a count per id (length = vocabulary size).
    pub fn from_counts(counts: &[u64]) -> UnigramTable {
        let floored: Vec<f64> = counts.iter().map(|&c| c.max(1) as f64).collect();
        let total: f64 = floored.iter().sum();
        UnigramTable {
            log_probs: floored.iter().map(|c| (c / total).ln()).collect(),
        }
    }

    /// Counts the ids of a token stream into `counts` (grown to fit).
    pub fn count(ids: &[u32], counts: &mut Vec<u64>) {
        for &id in ids {
            let i = id as usize;
            if i >= counts.len() {
                counts.resize(i + 1, 0);
            }
            counts[i] += 1;
        }
    }

    /// `ln p(id)`, or `None` for an id outside the table.
    pub fn log_prob(&self, id: u32) -> Option<f64> {
        self.log_probs.get(id as usize).copied()
    }
}

/// The unigram-normalised loss `L_u = (1/T) Σ_t [ -ln p(w_t | w_<t) + ln p(w_t) ]` from per-token
/// cross-entropy losses (nats) and the target ids. `None` if lengths differ, the input is empty,
/// or a target is outside the table.
pub fn unigram_normalized_loss(
    losses: &[f32],
    targets: &[u32],
    table: &UnigramTable,
) -> Option<f64> {
    if losses.len() != targets.len() || losses.is_empty() {
        return None;
    }
    let mut sum = 0.0;
    for (&loss, &id) in losses.iter().zip(targets) {
        sum += loss as f64 + table.log_prob(id)?;
    }
    Some(sum / losses.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reproduces_the_papers_3b_prediction() {
        // Paper: 3B non-vocabulary parameters at 2.3e21 FLOPs -> 43K (the parametric fit, which
        // is the method that takes the FLOPs budget; 42,816 rounds to 43K).
        let p = optimal_vocab_size(3e9, Some(2.3e21)).unwrap();
        assert_eq!((p.parametric + 500) / 1000, 43, "{p:?}");
    }

    #[test]
    fn llama2_70b_deserves_at_least_216k() {
        // Llama-2-70B: ~68.7B non-vocabulary parameters (70B minus 2·32000·8192 embedding
        // rows), trained on 2T tokens: F = 6·70e9·2e12 = 8.4e23.
        let p = optimal_vocab_size(68.7e9, Some(8.4e23)).unwrap();
        for v in [p.isoflops, p.derivative, p.parametric] {
            assert!(v >= 216_000, "{p:?}");
        }
        // At the compute-optimal budget the derivative method alone already says >= 216K.
        let p = optimal_vocab_size(68.7e9, None).unwrap();
        assert!(p.derivative >= 216_000, "{p:?}");
    }

    #[test]
    fn predictions_grow_with_size_and_reject_nonsense() {
        let small = optimal_vocab_size(33e6, None).unwrap();
        let big = optimal_vocab_size(7e9, None).unwrap();
        assert!(small.isoflops < big.isoflops);
        assert!(small.derivative < big.derivative);
        assert!(small.parametric < big.parametric);
        assert!(optimal_vocab_size(0.0, None).is_none());
        assert!(optimal_vocab_size(f64::NAN, None).is_none());
        assert!(optimal_vocab_size(1e9, Some(-1.0)).is_none());
    }

    #[test]
    fn unigram_normalised_loss_subtracts_unigram_information() {
        let table = UnigramTable::from_counts(&[3, 1, 0]);
        // p = [3/5, 1/5, 1/5] (the unseen id is floored to one).
        let l = unigram_normalized_loss(&[1.0, 2.0], &[0, 2], &table).unwrap();
        let expect = (1.0 + (0.6f64).ln() + 2.0 + (0.2f64).ln()) / 2.0;
        assert!((l - expect).abs() < 1e-12);
        assert!(unigram_normalized_loss(&[1.0], &[3], &table).is_none());
        assert!(unigram_normalized_loss(&[], &[], &table).is_none());
    }
}
