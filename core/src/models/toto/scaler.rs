//! Toto's causal patch scaler, in f64 as the reference computes it.
//!
//! Per variate, along time, with weight `w_t` (1 for an observed step, 0 for left padding and
//! missing values): the running mean `μ_t = Σ w x / max(Σ w, 1)`, the Welford sum
//! `M2_t = Σ w_s (x_s − μ_{s−1})(x_s − μ_s)` (with `μ_{−1} = 0`), the Bessel-corrected variance
//! `M2_t / max(Σ w − 1, 1)` and the scale `sqrt(var + 0.1)`. A patch is normalised by the
//! statistics at its own last step. The scale is clamped to `[max(0.1, s_g·10^−e), s_g·10^e]`,
//! where `s_g` is the population scale of the whole (padded) context; with the released `e = 10`
//! the clamp practically never acts, but it is part of the model.

/// Added to the variance before the square root; also the lower clamp of the scale.
pub const MINIMUM_SCALE: f64 = 0.1;

/// Running statistics of one variate (or one variate of one sample path).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RunningStats {
    /// Σ w.
    pub weight: f64,
    /// Σ w·x.
    pub sum: f64,
    /// Current running mean.
    pub mean: f64,
    /// Welford sum of squared deviations.
    pub m2: f64,
}

impl RunningStats {
    /// Adds one step with weight 0 (missing or padding) or 1 (observed).
    pub fn push(&mut self, x: f64, w: f64) {
        let previous = self.mean;
        self.weight += w;
        self.sum += w * x;
        self.mean = self.sum / self.weight.max(1.0);
        self.m2 += (x - previous) * (x - self.mean) * w;
    }

    /// The unclamped scale `sqrt(var + 0.1)` with Bessel's correction.
    pub fn scale(&self) -> f64 {
        let variance = self.m2 / (self.weight.max(1.0) - 1.0).max(1.0);
        libm::sqrt(variance + MINIMUM_SCALE)
    }

    /// Packs into four f64 (for state kept in caller memory).
    pub fn to_array(self) -> [f64; 4] {
        [self.weight, self.sum, self.mean, self.m2]
    }

    /// Inverse of [`RunningStats::to_array`].
    pub fn from_slice(s: &[f64]) -> RunningStats {
        let get = |i: usize| s.get(i).copied().unwrap_or(0.0);
        RunningStats {
            weight: get(0),
            sum: get(1),
            mean: get(2),
            m2: get(3),
        }
    }
}

/// The clamp range of the scale from the whole context's statistics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScaleClamp {
    /// Lower bound.
    pub low: f64,
    /// Upper bound.
    pub high: f64,
}

impl ScaleClamp {
    /// No clamp beyond the 0.1 floor (`stabilize_with_global = false`).
    pub const NONE: ScaleClamp = ScaleClamp {
        low: f64::NEG_INFINITY,
        high: f64::INFINITY,
    };

    /// The clamp from a padded context: `values(i)` gives step `i`'s value and weight.
    pub fn from_context(steps: usize, values: impl Fn(usize) -> (f64, f64), exponent: f64) -> Self {
        let (mut weight, mut sum) = (0.0, 0.0);
        for i in 0..steps {
            let (x, w) = values(i);
            weight += w;
            sum += w * x;
        }
        let denominator = if weight > 1.0 { weight } else { 1.0 };
        let mean = sum / denominator;
        let mut squares = 0.0;
        for i in 0..steps {
            let (x, w) = values(i);
            let d = (x - mean) * w;
            squares += d * d;
        }
        let global = libm::sqrt(squares / denominator + MINIMUM_SCALE);
        ScaleClamp {
            low: (global * libm::pow(10.0, -exponent)).max(MINIMUM_SCALE),
            high: global * libm::pow(10.0, exponent),
        }
    }

    /// Applies the clamp (min first, then max, as `torch.clamp`).
    pub fn apply(&self, scale: f64) -> f64 {
        let s = if scale < self.low { self.low } else { scale };
        if s > self.high { self.high } else { s }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-checked value from the research note: values 100..102.5 step 0.5 after two
    /// padded steps have Bessel variance 0.875, so the scale is sqrt(0.975).
    #[test]
    fn bessel_and_floor() {
        let mut s = RunningStats::default();
        s.push(0.0, 0.0);
        s.push(0.0, 0.0);
        for i in 0..6 {
            s.push(100.0 + 0.5 * i as f64, 1.0);
        }
        assert!((s.mean - 101.25).abs() < 1e-12);
        assert!((s.scale() - libm::sqrt(0.975)).abs() < 1e-12);
        let mut c = RunningStats::default();
        for _ in 0..10 {
            c.push(3.0, 1.0);
        }
        assert!((c.scale() - libm::sqrt(0.1)).abs() < 1e-15);
    }
}
