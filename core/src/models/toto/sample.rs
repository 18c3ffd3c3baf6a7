//! Seeded sampling from Toto's Student-T mixture, and empirical quantiles (no_std, no alloc).
//!
//! Each sample path owns a generator seeded from `(seed, path index)`, so a forecast does not
//! depend on how paths are batched. The bit streams differ from PyTorch's, so samples match the
//! reference in distribution only (tested statistically).

/// xoshiro256++ (Blackman and Vigna): small, fast, and good enough for Monte Carlo paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rng {
    s: [u64; 4],
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    /// A generator for stream `stream` of `seed` (streams of one seed are independent).
    pub fn new(seed: u64, stream: u64) -> Rng {
        let mut stream_state = stream.wrapping_mul(0xD605_0B8B_3F1A_6E5B) ^ 0x5851_F42D_4C95_7F2D;
        let mut st = seed ^ splitmix64(&mut stream_state);
        let mut s = [0u64; 4];
        for v in &mut s {
            *v = splitmix64(&mut st);
        }
        if s == [0; 4] {
            s[0] = 1;
        }
        Rng { s }
    }

    /// Packs the state into four u64 (for caller memory).
    pub fn to_array(self) -> [u64; 4] {
        self.s
    }

    /// Inverse of [`Rng::to_array`].
    pub fn from_array(s: [u64; 4]) -> Rng {
        Rng { s }
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `(0, 1]`, safe for `ln`.
    fn uniform_open0(&mut self) -> f64 {
        1.0 - self.uniform()
    }

    /// Standard normal (Marsaglia's polar method).
    pub fn normal(&mut self) -> f64 {
        self.normal_pair().0
    }

    /// Two independent standard normals: both coordinates of one polar-method point.
    pub fn normal_pair(&mut self) -> (f64, f64) {
        loop {
            let u = 2.0 * self.uniform() - 1.0;
            let v = 2.0 * self.uniform() - 1.0;
            let s = u * u + v * v;
            if s > 0.0 && s < 1.0 {
                let f = libm::sqrt(-2.0 * libm::log(s) / s);
                return (u * f, v * f);
            }
        }
    }

    /// Gamma(shape, 1) by Marsaglia and Tsang (2000), with the `shape < 1` boost.
    pub fn gamma(&mut self, shape: f64) -> f64 {
        self.gamma_with(shape, None)
    }

    /// [`Rng::gamma`] whose first candidate uses the standard normal `first` when given.
    fn gamma_with(&mut self, shape: f64, mut first: Option<f64>) -> f64 {
        if shape.is_nan() || shape <= 0.0 || !shape.is_finite() {
            return f64::NAN;
        }
        if shape < 1.0 {
            let g = self.gamma_with(shape + 1.0, first);
            return g * libm::pow(self.uniform_open0(), 1.0 / shape);
        }
        let d = shape - 1.0 / 3.0;
        let c = 1.0 / libm::sqrt(9.0 * d);
        loop {
            let (x, v) = loop {
                let x = match first.take() {
                    Some(x) => x,
                    None => self.normal(),
                };
                let v = 1.0 + c * x;
                if v > 0.0 {
                    break (x, v * v * v);
                }
            };
            let u = self.uniform_open0();
            if u < 1.0 - 0.0331 * x * x * x * x
                || libm::log(u) < 0.5 * x * x + d * (1.0 - v + libm::log(v))
            {
                return d * v;
            }
        }
    }

    /// Student-T with `df` degrees of freedom: `N(0,1) · sqrt(df / χ²_df)`, `χ²_df = 2·Γ(df/2)`.
    /// One polar-method point gives both the numerator and the gamma draw's first candidate
    /// (independent normals), which saves a logarithm and a square root per draw.
    pub fn student_t(&mut self, df: f64) -> f64 {
        let (z, first) = self.normal_pair();
        let chi2 = 2.0 * self.gamma_with(0.5 * df, Some(first));
        z * libm::sqrt(df / chi2)
    }
}

/// One draw from a mixture of `k` Student-Ts given as `[df; k], [loc; k], [scale; k],
/// [weight; k]` (weights summing to 1).
pub fn sample_mixture(rng: &mut Rng, params: &[f32], k: usize) -> f64 {
    let (df, rest) = params.split_at(k);
    let (loc, rest) = rest.split_at(k);
    let (scale, weight) = rest.split_at(k);
    let pick = pick_component(rng, weight);
    student_t_draw(rng, df[pick], loc[pick], scale[pick])
}

/// The first step of [`sample_mixture`]: a component index drawn by `weight` (one uniform).
pub(crate) fn pick_component(rng: &mut Rng, weight: &[f32]) -> usize {
    let u = rng.uniform();
    let mut acc = 0.0;
    for (i, w) in weight.iter().enumerate() {
        acc += *w as f64;
        if u < acc {
            return i;
        }
    }
    weight.len().saturating_sub(1)
}

/// The second step of [`sample_mixture`]: `loc + scale · t_df`.
pub(crate) fn student_t_draw(rng: &mut Rng, df: f32, loc: f32, scale: f32) -> f64 {
    loc as f64 + scale as f64 * rng.student_t(df as f64)
}

/// The mixture mean `Σ w_k loc_k` (every component has df > 2, so its mean is its loc).
pub fn mixture_mean(params: &[f32], k: usize) -> f64 {
    weighted_mean(&params[k..2 * k], &params[3 * k..4 * k])
}

/// `Σ w_k loc_k` in f64.
pub(crate) fn weighted_mean(loc: &[f32], weight: &[f32]) -> f64 {
    loc.iter()
        .zip(weight)
        .map(|(l, w)| *l as f64 * *w as f64)
        .sum()
}

/// Sorts `values` (NaN last) so [`quantile_sorted`] can read several quantiles.
pub fn sort_samples(values: &mut [f32]) {
    values.sort_unstable_by(|a, b| a.total_cmp(b));
}

/// The empirical `q`-quantile of sorted samples with linear interpolation (as
/// `torch.quantile`): position `q·(n−1)`. `None` for an empty slice or `q` outside `[0, 1]`.
pub fn quantile_sorted(sorted: &[f32], q: f64) -> Option<f32> {
    if sorted.is_empty() || !(0.0..=1.0).contains(&q) {
        return None;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let lo = libm::floor(pos) as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    let frac = pos - lo as f64;
    let a = sorted[lo] as f64;
    let b = sorted[hi] as f64;
    Some((a + (b - a) * frac) as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moments(n: usize, mut draw: impl FnMut() -> f64) -> (f64, f64) {
        let (mut s, mut s2) = (0.0, 0.0);
        for _ in 0..n {
            let x = draw();
            s += x;
            s2 += x * x;
        }
        let m = s / n as f64;
        (m, s2 / n as f64 - m * m)
    }

    #[test]
    fn normal_and_gamma_moments() {
        let mut rng = Rng::new(7, 0);
        let (m, v) = moments(200_000, || rng.normal());
        // Standard errors: mean 1/sqrt(n) = 0.0022, variance sqrt(2/n) = 0.0032.
        assert!(m.abs() < 0.011, "{m}");
        assert!((v - 1.0).abs() < 0.016, "{v}");
        for shape in [0.5, 1.0, 1.7, 12.0] {
            let (m, v) = moments(200_000, || rng.gamma(shape));
            let se = libm::sqrt(shape / 200_000.0);
            assert!((m - shape).abs() < 5.0 * se, "shape {shape}: mean {m}");
            assert!((v - shape).abs() < 0.05 * shape, "shape {shape}: var {v}");
        }
    }

    #[test]
    fn student_t_variance_and_quantile() {
        let mut rng = Rng::new(3, 1);
        // Var(t_df) = df/(df-2); df = 6 gives 1.5 (kurtosis is finite only for df > 4).
        let (m, v) = moments(400_000, || rng.student_t(6.0));
        assert!(m.abs() < 0.01, "{m}");
        assert!((v - 1.5).abs() < 0.05, "{v}");
        // The 0.9 quantile of t_3 is 1.637744.
        let mut xs = [0f32; 20_001];
        for x in xs.iter_mut() {
            *x = rng.student_t(3.0) as f32;
        }
        sort_samples(&mut xs);
        let q = quantile_sorted(&xs, 0.9).unwrap_or(f32::NAN);
        assert!((q - 1.637744).abs() < 0.05, "{q}");
    }

    #[test]
    fn normal_pairs_are_uncorrelated_normals() {
        let mut rng = Rng::new(5, 4);
        let n = 200_000;
        let (mut sa, mut sb, mut sab, mut sa2, mut sb2) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for _ in 0..n {
            let (a, b) = rng.normal_pair();
            (sa, sb, sab, sa2, sb2) = (sa + a, sb + b, sab + a * b, sa2 + a * a, sb2 + b * b);
        }
        let nf = n as f64;
        // Standard errors: means and correlation 1/sqrt(n) = 0.0022, variances 0.0032.
        for (m, m2) in [(sa / nf, sa2 / nf), (sb / nf, sb2 / nf)] {
            assert!(m.abs() < 0.011, "{m}");
            assert!((m2 - m * m - 1.0).abs() < 0.016, "{m2}");
        }
        let corr = sab / nf - (sa / nf) * (sb / nf);
        assert!(corr.abs() < 0.011, "{corr}");
    }

    #[test]
    fn mixture_picks_components_by_weight() {
        // Two far-apart narrow components with weights 0.25 / 0.75.
        let params = [50.0, 50.0, -10.0, 10.0, 0.1, 0.1, 0.25, 0.75];
        let mut rng = Rng::new(11, 2);
        let n = 100_000;
        let low = (0..n)
            .filter(|_| sample_mixture(&mut rng, &params, 2) < 0.0)
            .count();
        let frac = low as f64 / n as f64;
        assert!((frac - 0.25).abs() < 0.007, "{frac}");
        assert!((mixture_mean(&params, 2) - 5.0).abs() < 1e-9);
    }

    #[test]
    fn quantiles_interpolate_like_torch() {
        let xs = [1.0f32, 2.0, 4.0, 8.0];
        assert_eq!(quantile_sorted(&xs, 0.0), Some(1.0));
        assert_eq!(quantile_sorted(&xs, 1.0), Some(8.0));
        assert_eq!(quantile_sorted(&xs, 0.5), Some(3.0));
        assert_eq!(quantile_sorted(&xs, 0.25), Some(1.75));
        assert_eq!(quantile_sorted(&[], 0.5), None);
        assert_eq!(quantile_sorted(&xs, 1.5), None);
    }
}
