"""Times toto-ts 0.2.0 (CPU, one thread) on a random Toto and writes the checkpoint and series
for the same measurement with goldcrest (see docs in the script's output).

Run: python tools/toto/bench_reference.py OUT_DIR [d layers heads hidden k context horizon]
"""
import json, math, os, sys, time, warnings

import torch
from safetensors.torch import save_file

warnings.filterwarnings("ignore")
from toto.data.util.dataset import MaskedTimeseries  # noqa: E402
from toto.inference.forecaster import TotoForecaster  # noqa: E402
from toto.model.toto import Toto  # noqa: E402

out = sys.argv[1]
d, layers, heads, hidden, k, context, horizon = (int(x) for x in (sys.argv[2:9] or [256, 8, 4, 1024, 24, 1024, 128]))
torch.set_num_threads(1)
torch.manual_seed(0)
cfg = dict(patch_size=64, stride=64, embed_dim=d, num_layers=layers, num_heads=heads, mlp_hidden_dim=hidden,
           dropout=0.0, spacewise_every_n_layers=layers, spacewise_first=False,
           scaler_cls="<class 'model.scaler.CausalPatchStdMeanScaler'>",
           output_distribution_classes=["<class 'model.distribution.MixtureOfStudentTsOutput'>"],
           output_distribution_kwargs={"k_components": k}, use_memory_efficient_attention=False,
           stabilize_with_global=True, scale_factor_exponent=10.0)
toto = Toto(**cfg).eval()
os.makedirs(out, exist_ok=True)
json.dump(cfg, open(f"{out}/config.json", "w"))
save_file({n: v.contiguous() for n, v in toto.state_dict().items()}, f"{out}/model.safetensors")
t = torch.arange(context, dtype=torch.float32)
series = (100 + 10 * torch.sin(2 * math.pi * t / 96) + 0.01 * t)[None]
with open(f"{out}/series.csv", "w") as f:
    f.write("value\n" + "\n".join(f"{v:.6f}" for v in series[0].tolist()) + "\n")
inp = MaskedTimeseries(series=series, padding_mask=torch.ones_like(series, dtype=torch.bool),
                       id_mask=torch.zeros_like(series), timestamp_seconds=torch.zeros(1, context, dtype=torch.long),
                       time_interval_seconds=torch.full((1,), 60, dtype=torch.long))
fc = TotoForecaster(toto.model)
params = sum(p.numel() for p in toto.parameters())
with torch.no_grad():
    fc.forecast(inp, prediction_length=horizon, num_samples=None)
    t0 = time.perf_counter()
    fc.forecast(inp, prediction_length=horizon, num_samples=None)
    mean_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    fc.forecast(inp, prediction_length=horizon, num_samples=256, samples_per_batch=256)
    samples_s = time.perf_counter() - t0
print(json.dumps(dict(params=params, context=context, horizon=horizon, mean_s=mean_s, samples256_s=samples_s)))
