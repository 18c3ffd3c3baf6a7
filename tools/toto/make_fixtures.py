"""Golden fixtures for goldcrest's Toto port, from the reference implementation.

Reference: PyPI `toto-ts==0.2.0` (Apache-2.0), installed with --no-deps into a venv outside the
repository, plus only what the model imports:

    pip install --no-deps toto-ts==0.2.0 gluonts==0.16.2
    pip install einops==0.7.0 jaxtyping==0.2.29 rotary-embedding-torch==0.8.6 pandas==2.2.3 \
        beartype==0.18.5 lightning==2.4.0 scipy==1.17.1 pydantic==2.14.4 toolz==1.2.0 \
        safetensors==0.8.0
    # torch: any CPU-usable build (these fixtures were made with torch 2.15.0, numpy 2.4.6;
    # gluonts is installed --no-deps because it pins numpy<2.2, which it does not need here)

Run: python tools/toto/make_fixtures.py tests/fixtures/toto

Per configuration it writes
  <name>.model.safetensors   goldcrest file: f32 weights under the toto-ts module names without
                             the leading `model.`, hyperparameters as goldcrest.toto.* metadata
  <name>.golden.safetensors  f64 reference outputs (see CASES below)

The reference runs in float64 on weights that are exactly representable in f32, so the goldens
are the f32 model's exact answer up to float64 rounding; goldcrest's f32 network is compared with
them at 1e-4 and its f64 scaler at 1e-9. Rotary angles are f32 in the reference even in a
float64 model (rotary-embedding-torch keeps `freqs` in f32), as in goldcrest.
"""

import math
import os
import sys
import warnings

import torch
from safetensors.torch import save_file

warnings.filterwarnings("ignore")

from toto.data.util.dataset import MaskedTimeseries, pad_array, pad_id_mask  # noqa: E402
from toto.inference.forecaster import TotoForecaster  # noqa: E402
from toto.model.toto import Toto  # noqa: E402

CONFIGS = {
    # 2 time-wise + 2 space-wise layers (T,S,T,S), 3 variates in two id groups.
    "small": dict(patch_size=8, stride=8, embed_dim=32, num_layers=4, num_heads=2, mlp_hidden_dim=48,
                  spacewise_every_n_layers=2, spacewise_first=False, k_components=3),
    # Space-wise layer first (S,T,T), 4 heads, odd hidden width.
    "sfirst": dict(patch_size=4, stride=4, embed_dim=24, num_layers=3, num_heads=4, mlp_hidden_dim=20,
                   spacewise_every_n_layers=3, spacewise_first=True, k_components=2),
}


def toto_config(cfg):
    return dict(
        patch_size=cfg["patch_size"], stride=cfg["stride"], embed_dim=cfg["embed_dim"],
        num_layers=cfg["num_layers"], num_heads=cfg["num_heads"], mlp_hidden_dim=cfg["mlp_hidden_dim"],
        dropout=0.0, spacewise_every_n_layers=cfg["spacewise_every_n_layers"],
        spacewise_first=cfg["spacewise_first"],
        scaler_cls="<class 'model.scaler.CausalPatchStdMeanScaler'>",
        output_distribution_classes=["<class 'model.distribution.MixtureOfStudentTsOutput'>"],
        output_distribution_kwargs={"k_components": cfg["k_components"]},
        use_memory_efficient_attention=False, stabilize_with_global=True, scale_factor_exponent=10.0)


def build(cfg, seed):
    torch.manual_seed(seed)
    toto = Toto(**toto_config(cfg)).eval()
    with torch.no_grad():
        for p in toto.parameters():
            # Norm scales are ones at init; perturb them so a missing norm scale is caught.
            if p.ndim == 1 and torch.all(p == 1):
                p.add_(0.2 * torch.randn_like(p))
            # Exactly representable in f32: the f32 file then holds the reference's weights.
            p.copy_(p.float().double())
    return toto


def write_model(toto, cfg, path):
    tensors = {}
    for name, value in toto.state_dict().items():
        assert name.startswith("model."), name
        tensors[name[len("model."):]] = value.float().contiguous()
    meta = {"goldcrest.format_version": "1.0", "goldcrest.arch": "toto"}
    for key in ["patch_size", "embed_dim", "num_layers", "num_heads", "mlp_hidden_dim",
                "spacewise_every_n_layers", "k_components"]:
        meta[f"goldcrest.toto.{key}"] = str(cfg[key])
    meta["goldcrest.toto.spacewise_first"] = "true" if cfg["spacewise_first"] else "false"
    meta["goldcrest.toto.scale_factor_exponent"] = "10"
    save_file(tensors, path, metadata=meta)


# Reference sample paths per case, summarised by empirical quantiles for statistical tests.
SAMPLES = 4000


def write_checkpoints(toto, model_cfg, out_dir, name):
    """toto-ts checkpoint directories for `goldcrest convert toto`: the module's own names in
    float64, and the released file's names (`mlp.0.w12`, `mlp.0.w3`, `rotary_emb.freqs`) in bf16
    (bf16 rounding changes the weights, so that one is checked against its own float32 run)."""
    import json
    plain_dir = f"{out_dir}/checkpoint_{name}"
    os.makedirs(plain_dir, exist_ok=True)
    json.dump(model_cfg, open(f"{plain_dir}/config.json", "w"), indent=1)
    save_file({k: v.contiguous() for k, v in toto.state_dict().items()}, f"{plain_dir}/model.safetensors")
    released_dir = f"{out_dir}/checkpoint_{name}_released"
    os.makedirs(released_dir, exist_ok=True)
    json.dump(model_cfg, open(f"{released_dir}/config.json", "w"), indent=1)
    released = {}
    for k, v in toto.state_dict().items():
        k = k.replace(".mlp.0.", ".mlp.0.w12.").replace(".mlp.2.", ".mlp.0.w3.")
        released[k] = v.to(torch.bfloat16).contiguous()
    released["model.transformer.rotary_emb.freqs"] = toto.model.transformer.rotary_emb.freqs.float().contiguous()
    save_file(released, f"{released_dir}/model.safetensors")


def series_for(case, v_count, t_len):
    """Input series (f64) and validity mask for a named case."""
    t = torch.arange(t_len, dtype=torch.float64)
    rows = []
    for v in range(v_count):
        if v % 3 == 0:
            rows.append(10 + 3 * torch.sin(2 * math.pi * t / 8 + v))
        elif v % 3 == 1:
            rows.append(100 + 0.5 * t + 2 * torch.cos(t / 3))
        else:
            rows.append(-5 + 0.01 * t * t - torch.sin(t))
    series = torch.stack(rows)
    mask = torch.ones_like(series, dtype=torch.bool)
    if case == "missing":
        # Missing values as goldcrest treats NaN: masked in the scaler, the value carried forward
        # (leading missing values become 0, like the reference's left padding).
        mask[0, 0:3] = False
        mask[0, 11:14] = False
        mask[1, 20] = False
        series = series.clone()
        for v in range(v_count):
            last = 0.0
            for i in range(t_len):
                if mask[v, i]:
                    last = float(series[v, i])
                else:
                    series[v, i] = last
    return series, mask


def run_case(toto, cfg, case, v_count, t_len, horizon, id_groups):
    bb = toto.model
    series, mask = series_for(case, v_count, t_len)
    p = cfg["patch_size"]
    ids = torch.tensor(id_groups, dtype=torch.long)[:, None].expand(v_count, t_len).contiguous()
    inp = MaskedTimeseries(series=series, padding_mask=mask, id_mask=ids,
                           timestamp_seconds=torch.zeros(v_count, t_len, dtype=torch.long),
                           time_interval_seconds=torch.full((v_count,), 60, dtype=torch.long))
    x = pad_array(series, p)[None]
    pm = pad_array(mask, p)[None]
    idm = pad_id_mask(ids, p)[None]
    with torch.no_grad():
        scaled, loc, scale = bb.scaler(x, weights=torch.ones_like(x), padding_mask=pm, prefix_length=x.shape[-1])
        out = bb(x, pm, idm, None, scaling_prefix_length=x.shape[-1])
        comp = out.distribution.component_distribution
        weights = out.distribution.mixture_distribution.probs
        fc = TotoForecaster(bb)
        mean_kv = fc.forecast(inp, prediction_length=horizon, num_samples=None, use_kv_cache=True).mean
        mean_full = fc.forecast(inp, prediction_length=horizon, num_samples=None, use_kv_cache=False).mean
        torch.manual_seed(1234)
        sampled = fc.forecast(inp, prediction_length=horizon, num_samples=SAMPLES, samples_per_batch=500,
                              use_kv_cache=True)
    quantiles = {f"{case}.sample_q{int(q * 100)}": sampled.quantile(q)[0] for q in (0.1, 0.5, 0.9)}
    return quantiles | {
        f"{case}.input_series": series, f"{case}.input_mask": mask.to(torch.uint8),
        f"{case}.id_groups": torch.tensor(id_groups, dtype=torch.float64),
        f"{case}.padded_input": x[0], f"{case}.padding_mask": pm[0].to(torch.uint8),
        f"{case}.scaled_input": scaled[0], f"{case}.scaler_loc": loc[0], f"{case}.scaler_scale": scale[0],
        f"{case}.head_df": comp.df[0], f"{case}.head_loc": comp.loc[0], f"{case}.head_scale": comp.scale[0],
        f"{case}.head_weights": weights[0], f"{case}.base_mean": out.distribution.mean[0],
        f"{case}.forecast_mean_kvcache": mean_kv[0], f"{case}.forecast_mean_full_recompute": mean_full[0],
    }


def main(out_dir):
    torch.set_default_dtype(torch.float64)
    os.makedirs(out_dir, exist_ok=True)
    for seed, (name, cfg) in enumerate(CONFIGS.items()):
        toto = build(cfg, seed)
        write_model(toto, cfg, f"{out_dir}/{name}.model.safetensors")
        gold = {}
        if name == "small":
            gold.update(run_case(toto, cfg, "plain", 3, 30, 20, [0, 0, 1]))
            gold.update(run_case(toto, cfg, "missing", 3, 30, 20, [0, 1, 1]))
            gold.update(run_case(toto, cfg, "single", 1, 17, 9, [0]))
        else:
            gold.update(run_case(toto, cfg, "plain", 2, 13, 7, [0, 0]))
            write_checkpoints(toto, toto_config(cfg), out_dir, name)
            # The bf16 checkpoint's own answer (weights rounded to bf16, run in float64).
            rounded = build(cfg, seed)
            with torch.no_grad():
                for p in rounded.parameters():
                    p.copy_(p.to(torch.bfloat16).double())
            bf = run_case(rounded, cfg, "plain", 2, 13, 7, [0, 0])
            gold["bf16.forecast_mean_kvcache"] = bf["plain.forecast_mean_kvcache"]
        save_file({k: v.contiguous() for k, v in gold.items()}, f"{out_dir}/{name}.golden.safetensors")
        print(name, "params", sum(p.numel() for p in toto.parameters()),
              "kv vs full max diff", float((gold["plain.forecast_mean_kvcache"]
                                            - gold["plain.forecast_mean_full_recompute"]).abs().max()))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/toto")
