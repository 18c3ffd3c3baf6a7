"""Golden fixtures for goldcrest's Toto 2.0 port (tests/fixtures/toto2/).

Reference: PyPI `toto-2==2.0.0` (Datadog, Apache-2.0) with `dd-unit-scaling==0.1.0`,
`unit-scaling==0.3.5`, `docstring-parser==0.17.0`, `tabulate==0.9.0`, on torch 2.15.0 (CPU),
gluonts 0.16.2, einops 0.7.0, jaxtyping 0.2.29, safetensors 0.8.0.

toto-2 declares Requires-Python >=3.12 but its code runs on 3.11; the setup used here (a venv
that sees /work/venv-torch's packages through a .pth file, nothing installed into venv-torch):

    python3 -m venv /work/venv-toto2
    echo /work/venv-torch/lib/python3.11/site-packages \
        > /work/venv-toto2/lib/python3.11/site-packages/venv-torch.pth
    /work/venv-toto2/bin/pip install --no-deps --ignore-requires-python toto-2==2.0.0 \
        dd-unit-scaling==0.1.0 unit-scaling==0.3.5 docstring-parser==0.17.0 tabulate==0.9.0
    OMP_NUM_THREADS=1 /work/venv-toto2/bin/python tools/toto/make_fixtures_v2.py

Each configuration directory holds what a released checkpoint holds (config.json as
`Toto2Model.save_pretrained` writes it, model.safetensors with the module's state-dict names)
plus golden.safetensors: inputs and the reference's forecasts (`Toto2Model.forecast`, whole
horizon in one pass) for several cases. Weights are random (the released checkpoints cannot be
downloaded here), with biases, norm weights and per-dimension scales randomised too so every
tensor matters. Everything is float32, the model's dtype.
"""

import dataclasses
import json
import math
import os
import sys
import warnings

import numpy as np
import torch
from safetensors.torch import save_file

warnings.filterwarnings("ignore")
import toto2  # noqa: E402
from toto2 import Toto2Model, Toto2ModelConfig  # noqa: E402
from toto2.model import backfill_short_patches  # noqa: E402

torch.set_num_threads(1)
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "fixtures", "toto2")

PINNED = {"torch": "2.15.0", "numpy": None}
assert torch.__version__.startswith("2.15.0"), torch.__version__

CONFIGS = {
    # Grouped-query attention (4 query heads over 2 key/value groups), QK-norm with weights,
    # biases everywhere, one variate layer closing each group of two.
    "gqa": dict(
        patch_size=4, d_model=32, num_heads=4, num_groups=2, num_layers=4, layer_group_size=2,
        num_variate_layers_per_group=1, variate_layer_first=False, qk_norm=True,
        norm_include_weight=True, attn_bias=True, mlp_bias=True,
        residual_attn_ratio=Toto2ModelConfig.compute_residual_attn_ratio(64, 4),
    ),
    # The released 4m model's switches as a third-party port lists them: no QK-norm,
    # per-dimension query scale, xPos, attention bias only, residual_mult 0.75; variate layer
    # first here to cover that order.
    "xpos": dict(
        patch_size=4, d_model=32, num_heads=2, num_layers=4, layer_group_size=2,
        num_variate_layers_per_group=1, variate_layer_first=True, qk_norm=False,
        per_dim_scale=True, use_xpos=True, attn_bias=True, mlp_bias=False, norm_eps=1e-4,
        d_ff=48, residual_mult=0.75,
        residual_attn_ratio=Toto2ModelConfig.compute_residual_attn_ratio(128, 4),
    ),
}

CONTEXT, HORIZON = 22, 10
# A long context (about 100 patches) where xPos's distance decay is visible.
LONG_CONTEXT, LONG_HORIZON = 397, 30


def series_values() -> np.ndarray:
    """Three variates with missing values (NaN): a fully missing patch, a missing last step,
    a missing start."""
    t = np.arange(CONTEXT, dtype=np.float64)
    rng = np.random.default_rng(7)
    s0 = 10 + 3 * np.sin(2 * math.pi * t / 8) + 0.3 * rng.standard_normal(CONTEXT)
    s1 = 100 + 0.5 * t + 0.2 * rng.standard_normal(CONTEXT)
    s1[6:10] = np.nan  # after 2 steps of left padding: patch 2 entirely missing
    s1[21] = np.nan  # missing in the last patch (which the reference marks observed)
    s2 = -5 + np.cos(2 * math.pi * t / 5) + 0.1 * t
    s2[:5] = np.nan
    return np.stack([s0, s1, s2]).astype(np.float32)


def long_values() -> np.ndarray:
    t = np.arange(LONG_CONTEXT, dtype=np.float64)
    rng = np.random.default_rng(11)
    a = 50 + 8 * np.sin(2 * math.pi * t / 24) + 0.02 * t + rng.standard_normal(LONG_CONTEXT)
    b = 3 * np.cos(2 * math.pi * t / 7) + 0.5 * rng.standard_normal(LONG_CONTEXT)
    a[100:130] = np.nan
    b[::17] = np.nan
    return np.stack([a, b]).astype(np.float32)


def prepare(values: np.ndarray, patch: int):
    """What the GluonTS predictor feeds Toto2Model.forecast: forward-filled values (0 before
    the first observation), observed mask, left padding to whole patches (value 0, mask False)."""
    mask = ~np.isnan(values)
    filled = toto2.model.ffill_imputation(values.copy())
    pad = (-values.shape[-1]) % patch
    filled = np.concatenate([np.zeros((values.shape[0], pad), np.float32), filled], axis=-1)
    mask = np.concatenate([np.zeros((values.shape[0], pad), bool), mask], axis=-1)
    return torch.from_numpy(filled)[None], torch.from_numpy(mask)[None]


def randomise(model: Toto2Model, gen: torch.Generator):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
            elif "norm" in name:
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=gen))
            elif name.endswith("per_dim_scale"):
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(torch.randn(p.shape, generator=gen))


def main():
    values = series_values()
    cases = {
        # (variates, series ids, scaler_fallback_min_obs, quantile_real_cap_k)
        "multi": ([0, 1, 2], [0, 0, 0], 8, 1e4),  # the GluonTS predictor's defaults
        "multi_raw": ([0, 1, 2], [0, 0, 0], 0, 0.0),  # Toto2Model.forecast's defaults
        "groups": ([0, 1, 2], [0, 0, 1], 8, 1e4),
        "uni": ([0], [0], 8, 1e4),
        "long": ([0, 1], [0, 0], 8, 1e4),
    }
    for cname, overrides in CONFIGS.items():
        gen = torch.Generator().manual_seed(1234)
        cfg = Toto2ModelConfig(**overrides)
        model = Toto2Model(cfg).eval()
        randomise(model, gen)
        d = os.path.join(OUT, cname)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(dataclasses.asdict(cfg), f, indent=2)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()},
                  os.path.join(d, "model.safetensors"))
        gold = {"values": torch.from_numpy(values), "long_values": torch.from_numpy(long_values())}
        p = cfg.patch_size
        for case, (vars_, ids, min_obs, cap) in cases.items():
            source, horizon = (long_values(), LONG_HORIZON) if case == "long" else (values, HORIZON)
            target, mask = prepare(source[vars_], p)
            sid = torch.tensor([ids], dtype=torch.long)
            inputs = {"target": target, "target_mask": mask, "series_ids": sid}
            with torch.no_grad():
                q = model.forecast(dict(inputs), horizon, scaler_fallback_min_obs=min_obs,
                                   quantile_real_cap_k=cap)
                # The scaler statistics and scaled, asinh-compressed context the forecast uses.
                num_patches = math.ceil(horizon / p)
                full_target, full_mask, _, _ = model._prepare_forecast_inputs(dict(inputs), num_patches)
                _, loc, scale = model.scaler(full_target, full_mask)
                if min_obs > 0:
                    loc, scale = backfill_short_patches(full_target, loc, scale, full_mask, p, min_obs)
                n = target.shape[-1]
                raw = (full_target[..., :n] - loc[..., :n]) / scale[..., :n]
                scaled = torch.where(full_mask[..., :n], raw, torch.zeros_like(raw)).asinh()
            gold[f"{case}.variates"] = torch.tensor(vars_, dtype=torch.int64)
            gold[f"{case}.series_ids"] = torch.tensor(ids, dtype=torch.int64)
            gold[f"{case}.settings"] = torch.tensor([min_obs, cap], dtype=torch.float64)
            gold[f"{case}.quantiles"] = q[:, 0].contiguous()  # (9, variates, horizon)
            gold[f"{case}.loc"] = loc[0].contiguous()  # (variates, padded context + patches)
            gold[f"{case}.scale"] = scale[0].contiguous()
            gold[f"{case}.scaled"] = scaled[0].contiguous()  # (variates, padded context)
        save_file(gold, os.path.join(d, "golden.safetensors"))
        n_params = sum(v.numel() for v in model.parameters())
        print(cname, n_params, "parameters;", "multi median[0,:4] =",
              gold["multi.quantiles"][4, 0, :4].tolist(), file=sys.stderr)


if __name__ == "__main__":
    main()
