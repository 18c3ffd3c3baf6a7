"""Trains goldcrest's bundled tiny Toto: toto-ts's own modules, ternary (TriLM-style) QAT.

Pinned environment (venv outside the repository; CPU is enough):
    pip install --no-deps toto-ts==0.2.0 gluonts==0.16.2
    pip install torch==2.15.0 numpy==2.4.6 einops==0.7.0 jaxtyping==0.2.29 \
        rotary-embedding-torch==0.8.6 pandas==2.2.3 beartype==0.18.5 lightning==2.4.0 \
        scipy==1.17.1 safetensors==0.8.0 pmdarima==2.1.1 statsmodels==0.15.0

Run:  nice python tools/toto/train_tiny.py OUT_DIR --minutes 15
      goldcrest convert toto OUT_DIR/final models/toto-tiny.safetensors --weights tq2

Model: `toto.model.toto.Toto` (patch 16, width 64, 3 time-wise layers, 4 heads, SwiGLU hidden
128, 8 Student-T components). The 12 transformer matrices (wQKV, wO, mlp.0, mlp.2 per layer)
are trained quantisation-aware: the forward pass uses `γ·clamp(round(W/γ), -1, 1)` with the
per-tensor absmean γ = mean|W| rounded to f16, exactly what `goldcrest convert toto --weights
tq2` stores; gradients pass straight through to the latent f32 W. The patch embedding, the
unembedding (q8_0 in the converted file), the head, norms and biases train in f32.

Data: real training series of tiny_data.py (pmdarima, statsmodels; whole series held out for
evaluate.py) plus synthetic trend + seasonality + noise + random-walk series, windows of up to
256 + 16 steps, left-padded with the padding mask when a series is shorter. Loss: toto-ts's
own CombinedLoss (its pretraining loss) on the next patch at every position.

Golden fixture for goldcrest's test of the bundled model (mean mode on the example series):
      python tools/toto/train_tiny.py fixture OUT_DIR/final examples/data/co2_mauna_loa_weekly.csv \
          tests/fixtures/toto/tiny_default.golden.safetensors
It runs toto-ts's TotoForecaster (KV cache, mean mode, float64) on the weights exactly as the
converted file holds them: ternary matrices as trits × f16(γ) (γ summed in f64, as goldcrest's
converter does), and the unembedding rounded through q8_0 (per 32 weights: d = amax/127, f16(d),
round(w/d)) as goldcrest stores it.

Checkpoints (toto-ts directory layout: config.json + model.safetensors, latent f32 weights)
are written to OUT_DIR/step_<n> as training goes, and OUT_DIR/final at the end.
"""

import argparse
import json
import math
import os
import sys
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from scipy.signal import lfilter

warnings.filterwarnings("ignore")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from toto.model.losses import CombinedLoss  # noqa: E402
from toto.model.toto import Toto  # noqa: E402

import tiny_data  # noqa: E402

PATCH = 16
CONTEXT = 256
CONFIG = dict(
    patch_size=PATCH, stride=PATCH, embed_dim=64, num_layers=3, num_heads=4, mlp_hidden_dim=128,
    dropout=0.0, spacewise_every_n_layers=-1, spacewise_first=False,
    scaler_cls="<class 'model.scaler.CausalPatchStdMeanScaler'>",
    output_distribution_classes=["<class 'model.distribution.MixtureOfStudentTsOutput'>"],
    output_distribution_kwargs={"k_components": 8},
    use_memory_efficient_attention=False, stabilize_with_global=True, scale_factor_exponent=10.0)
TERNARY_SUFFIXES = (".attention.wQKV", ".attention.wO", ".mlp.0", ".mlp.2")


def ternary_weight(w):
    """The weight goldcrest's tq2_0 converter stores: absmean γ (f16-rounded), trits."""
    gamma_f32 = w.detach().abs().mean().clamp_min(1e-5)
    trits = torch.clamp(torch.round(w / gamma_f32), -1, 1)
    gamma = gamma_f32.half().to(w.dtype)
    return trits * gamma


class TernaryLinear(torch.nn.Linear):
    """nn.Linear whose forward uses the ternary weight, gradient straight through."""

    def forward(self, x):
        w = self.weight
        w_q = w + (ternary_weight(w) - w).detach()
        return F.linear(x, w_q, self.bias)


def make_ternary(toto):
    for name, module in toto.named_modules():
        if isinstance(module, torch.nn.Linear) and name.endswith(TERNARY_SUFFIXES):
            module.__class__ = TernaryLinear
    return toto


def build(seed=0, ternary=True):
    torch.manual_seed(seed)
    toto = Toto(**CONFIG)
    return make_ternary(toto) if ternary else toto


PERIODS = [4, 4, 7, 12, 12, 12, 24, 52, 52, 10, 11, 48, 96, 168, 5, 6, 13, 26]


def seasonal_profile(rng, period, length, phase):
    """One season's shape from a few random harmonics (smooth, peaked or sawtooth-like)."""
    t = np.arange(length, dtype=np.float64) + phase
    wave = np.zeros(length)
    for k in range(1, rng.integers(1, 5) + 1):
        if 2 * k > period:
            break
        amp = rng.normal() / k ** rng.uniform(0.5, 1.5)
        wave += amp * np.sin(2 * np.pi * k * t / period + rng.uniform(0, 2 * np.pi))
    if rng.random() < 0.15:  # sawtooth / spike profiles
        wave = ((t % period) / period * 2 - 1) * rng.choice([-1, 1])
    return wave / (np.abs(wave).max() + 1e-9)


def synthetic(rng, length):
    """Trend × (1 + season) or trend + season, AR(1) noise, random walks, occasional shifts."""
    t = np.arange(length, dtype=np.float64)
    u = t / max(length - 1, 1)
    kind = rng.random()
    trend = rng.normal(0, 1) * u if kind < 0.7 else np.zeros(length)
    if rng.random() < 0.3:
        trend += rng.normal(0, 1) * u ** 2
    if rng.random() < 0.2:
        trend += rng.normal(0, 0.5) * np.maximum(u - rng.uniform(0.3, 0.9), 0)
    season = np.zeros(length)
    n_seasons = rng.choice([0, 1, 1, 1, 2])
    for _ in range(n_seasons):
        period = int(rng.choice(PERIODS))
        season += rng.lognormal(-0.5, 0.7) * seasonal_profile(rng, period, length,
                                                              rng.integers(period))
    phi = rng.uniform(0, 0.95)
    eps = rng.normal(size=length) * rng.lognormal(-2.5, 1.0)
    noise = lfilter([1.0], [1.0, -phi], eps)
    if rng.random() < 0.3:
        noise += np.cumsum(rng.normal(0, rng.lognormal(-3, 1), size=length))
    if rng.random() < 0.1:
        noise += rng.normal(0, 0.5) * (t >= rng.integers(length))
    if rng.random() < 0.35:  # multiplicative: the season grows with the level
        base = 3 + trend * rng.uniform(1, 3)
        y = base * (1 + 0.3 * season) + noise
    else:
        y = trend + season + noise
    y = rng.normal(0, 5) + y * rng.lognormal(0, 1.5)
    if rng.random() < 0.1:
        y = np.maximum(y, np.quantile(y, rng.uniform(0, 0.3)))  # floor at zero-like level
    return y


def real_piece(rng, series, families):
    """A window of a real series: family picked uniformly, sometimes aggregated or mixed."""
    family = families[rng.integers(len(families))]
    values = series[family[rng.integers(len(family))]]
    if len(values) >= 4 * (CONTEXT + PATCH) and rng.random() < 0.4:
        k = int(rng.choice([2, 3, 4, 6, 12]))
        n = len(values) // k
        values = values[:n * k].reshape(n, k).mean(axis=1)  # coarser sampling of the same series
    length = min(CONTEXT + PATCH, len(values))
    if length > 3 * PATCH and rng.random() < 0.3:
        length = int(rng.integers(3 * PATCH, length + 1))
    start = rng.integers(0, len(values) - length + 1)
    piece = values[start:start + length].copy()
    if rng.random() < 0.3:  # convex mix with a synthetic series of the same length (TSMixup)
        other = synthetic(rng, length)
        z = lambda v: (v - v.mean()) / (v.std() + 1e-9)  # noqa: E731
        lam = rng.uniform(0.5, 0.9)
        piece = piece.mean() + piece.std() * (lam * z(piece) + (1 - lam) * z(other))
    return piece * rng.lognormal(0, 1) + rng.normal(0, 1) * piece.std()


def window(rng, series, families):
    """One training window of CONTEXT + PATCH steps, left-padded when shorter."""
    total = CONTEXT + PATCH
    if rng.random() < 0.45:
        piece = real_piece(rng, series, families)
    else:
        length = total if rng.random() < 0.5 else int(rng.integers(3 * PATCH, total + 1))
        piece = synthetic(rng, length)
    x = np.zeros(total)
    mask = np.zeros(total, dtype=bool)
    x[total - len(piece):] = piece
    mask[total - len(piece):] = True
    return x, mask


def group_families(names):
    """Series of one collection (macro_*, fertility_*, interest_*) share one draw."""
    groups = {}
    for n in names:
        prefix = n.split("_")[0]
        key = prefix if prefix in ("macro", "fertility", "interest") else n
        groups.setdefault(key, []).append(n)
    return [groups[k] for k in sorted(groups)]


def batch(rng, series, families, size):
    xs, ms = zip(*(window(rng, series, families) for _ in range(size)))
    return torch.tensor(np.stack(xs))[:, None, :].float(), torch.tensor(np.stack(ms))[:, None, :]


def step_loss(toto, loss_fn, x, mask):
    inputs, targets = x[..., :-PATCH], x[..., PATCH:]
    in_mask, tgt_mask = mask[..., :-PATCH], mask[..., PATCH:]
    id_mask = torch.zeros_like(inputs)
    out = toto.model(inputs, in_mask, id_mask)
    eps = torch.finfo(x.dtype).eps
    scaled = (targets - out.loc) / (out.scale + eps)
    # Targets of a patch whose input patch is padding carry no information.
    valid = tgt_mask & in_mask
    loss = loss_fn(out.distribution, scaled) * valid
    return loss.sum() / valid.sum().clamp_min(1)


def save(toto, path):
    os.makedirs(path, exist_ok=True)
    json.dump(CONFIG, open(f"{path}/config.json", "w"), indent=1)
    save_file({k: v.detach().float().contiguous() for k, v in toto.state_dict().items()},
              f"{path}/model.safetensors")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--minutes", type=float, default=15.0)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=None,
                    help="train exactly this many steps, the schedule over steps instead of "
                         "--minutes of wall clock (for equal-budget comparisons on a shared machine)")
    ap.add_argument("--full-precision", action="store_true",
                    help="train plain f32 linear layers (the baseline evaluate.py compares with)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    series = {k: v for k, (v, _) in tiny_data.train_series().items()}
    names = sorted(series)
    families = group_families(names)
    toto = build(args.seed, ternary=not args.full_precision)
    n_params = sum(p.numel() for p in toto.parameters())
    print(f"parameters: {n_params}; training series: {names}", flush=True)
    loss_fn = CombinedLoss()
    opt = torch.optim.AdamW(toto.parameters(), lr=args.lr, weight_decay=0.01)
    budget = args.minutes * 60
    start = time.time()
    step, running = 0, None
    while (step < args.steps) if args.steps else (time.time() - start < budget):
        frac = step / args.steps if args.steps else (time.time() - start) / budget
        lr = args.lr * min(1.0, (step + 1) / 100) * 0.5 * (1 + math.cos(math.pi * frac))
        for g in opt.param_groups:
            g["lr"] = lr
        x, mask = batch(rng, series, families, args.batch)
        loss = step_loss(toto, loss_fn, x, mask)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(toto.parameters(), 1.0)
        opt.step()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        step += 1
        if step % 50 == 0:
            print(f"step {step} {time.time() - start:.0f}s lr {lr:.2e} loss {running:.4f}", flush=True)
        if step % 500 == 0:
            save(toto, f"{args.out}/step_{step}")
    save(toto, f"{args.out}/final")
    print(f"done: {step} steps, loss {running:.4f}", flush=True)


FIXTURE_CONTEXT = 256  # goldcrest_std::bundled::TOTO_TINY_CONTEXT, the training context
FIXTURE_HORIZON = 52


def as_stored(toto):
    """Replaces weights by what `goldcrest convert toto --weights tq2` stores (float64)."""
    with torch.no_grad():
        for name, module in toto.named_modules():
            if isinstance(module, torch.nn.Linear) and name.endswith(TERNARY_SUFFIXES):
                w = module.weight.detach().float()
                gamma = np.float32(max(np.abs(w.double().numpy()).sum() / w.numel(), 1e-5))
                # libm::roundf as goldcrest's converter rounds: ties away from zero (torch.round
                # goes to even), computed in f64 so the + 0.5 is exact.
                ratio = (w / torch.tensor(gamma)).double()
                trits = torch.clamp(torch.sign(ratio) * torch.floor(ratio.abs() + 0.5), -1, 1)
                module.weight.copy_(trits.double() * float(np.float16(gamma)))
                module.__class__ = torch.nn.Linear
        u = toto.model.unembed.weight.detach().float().numpy()
        blocks = u.reshape(u.shape[0], -1, 32)
        d = (np.abs(blocks).max(axis=2, keepdims=True) / np.float32(127)).astype(np.float32)
        inv = np.where(d != 0, np.float32(1) / np.where(d != 0, d, 1), 0).astype(np.float32)
        q = np.round(blocks * inv)
        toto.model.unembed.weight.copy_(torch.tensor((q * d.astype(np.float16).astype(np.float64))
                                                     .reshape(u.shape)))
    return toto


def load_checkpoint(path, dtype=torch.float64):
    from safetensors.torch import load_file
    toto = Toto(**json.load(open(f"{path}/config.json")))
    toto.load_state_dict(load_file(f"{path}/model.safetensors"))
    return toto.to(dtype).eval()


def fixture(ckpt, csv_path, out):
    from toto.data.util.dataset import MaskedTimeseries
    from toto.inference.forecaster import TotoForecaster
    values = [float(line.split(",")[1]) for line in open(csv_path).read().splitlines()[1:]]
    series = torch.tensor(values[-FIXTURE_CONTEXT:], dtype=torch.float64)[None]
    toto = as_stored(load_checkpoint(ckpt))
    t = series.shape[-1]
    inp = MaskedTimeseries(series=series, padding_mask=torch.ones_like(series, dtype=torch.bool),
                           id_mask=torch.zeros_like(series, dtype=torch.long),
                           timestamp_seconds=torch.zeros(1, t, dtype=torch.long),
                           time_interval_seconds=torch.full((1,), 604800, dtype=torch.long))
    with torch.no_grad():
        mean = TotoForecaster(toto.model).forecast(inp, prediction_length=FIXTURE_HORIZON,
                                                   num_samples=None, use_kv_cache=True).mean
    save_file({"context": series[0].contiguous(), "mean": mean.reshape(-1).double().contiguous()}, out,
              metadata={"horizon": str(FIXTURE_HORIZON), "source": csv_path})
    print("mean forecast:", mean.reshape(-1)[:8].tolist(), "...")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "fixture":
        fixture(*sys.argv[2:5])
    else:
        main()
