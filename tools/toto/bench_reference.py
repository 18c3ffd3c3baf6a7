"""goldcrest vs toto-ts 0.2.0 on the same weights, the same thread count each, in one run.

Environment: as train_tiny.py (toto-ts 0.2.0, torch 2.15.0 on CPU).
Run:  python tools/toto/bench_reference.py OUT_DIR --goldcrest target/release/goldcrest \
          [--tiny CHECKPOINT_DIR] [--released] [--repeat 3] [--threads 1]

Configurations
  tiny      the bundled model's training checkpoint with its weights as the goldcrest file
            stores them (train_tiny.as_stored: ternary matrices, q8_0 unembedding); goldcrest
            runs models/toto-tiny.safetensors; context 256, horizon 48
  released  a random Toto of Toto-Open-Base-1.0's size (d 768, 12 layers, 12 heads, SwiGLU
            3072, patch 64, 24 components; 151.3M parameters), f32 for both (goldcrest also
            with --fuse-head); context 1024, horizon 128

Timings: toto-ts `TotoForecaster.forecast` in process, warm (one untimed call first), KV
cache on, `samples_per_batch` = 256 (the whole batch at once); goldcrest `forecast --timing`
(the model call only, as measured inside the process; its file is mmapped and parsed before),
warm the same way: `--timing` runs the forecast once untimed, then times a second run.
Each figure is the median of --repeat runs (256 samples at the released size: one run).
Threads: torch.set_num_threads(--threads) (also OMP_NUM_THREADS, set before torch loads) and
goldcrest `--threads`; goldcrest prefaults its mapped weights before timing (torch's are in
memory), and runs the context in one pass (`--prefill-chunk` 64, the CLI default).
"""

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
import warnings

THREADS = sys.argv[sys.argv.index("--threads") + 1] if "--threads" in sys.argv else "1"
os.environ["OMP_NUM_THREADS"] = THREADS
os.environ["MKL_NUM_THREADS"] = THREADS

import torch  # noqa: E402
from safetensors.torch import save_file

warnings.filterwarnings("ignore")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from toto.data.util.dataset import MaskedTimeseries  # noqa: E402
from toto.inference.forecaster import TotoForecaster  # noqa: E402
from toto.model.toto import Toto  # noqa: E402

RELEASED = dict(patch_size=64, stride=64, embed_dim=768, num_layers=12, num_heads=12,
                mlp_hidden_dim=3072, dropout=0.0, spacewise_every_n_layers=12,
                spacewise_first=False,
                scaler_cls="<class 'model.scaler.CausalPatchStdMeanScaler'>",
                output_distribution_classes=["<class 'model.distribution.MixtureOfStudentTsOutput'>"],
                output_distribution_kwargs={"k_components": 24},
                use_memory_efficient_attention=False, stabilize_with_global=True,
                scale_factor_exponent=10.0)
REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def series_csv(path, context):
    t = torch.arange(context, dtype=torch.float32)
    series = (100 + 10 * torch.sin(2 * math.pi * t / 96) + 3 * torch.sin(2 * math.pi * t / 7)
              + 0.01 * t)
    with open(path, "w") as f:
        f.write("value\n" + "\n".join(f"{v:.6f}" for v in series.tolist()) + "\n")
    return series[None]


def torch_times(model, series, horizon, repeat, sample_repeat):
    t = series.shape[-1]
    inp = MaskedTimeseries(series=series, padding_mask=torch.ones_like(series, dtype=torch.bool),
                           id_mask=torch.zeros_like(series), timestamp_seconds=torch.zeros(1, t, dtype=torch.long),
                           time_interval_seconds=torch.full((1,), 60, dtype=torch.long))
    fc = TotoForecaster(model)
    out = {}
    with torch.no_grad():
        fc.forecast(inp, prediction_length=horizon, num_samples=None)
        runs, cpu = [], []
        for _ in range(repeat):
            t0, c0 = time.perf_counter(), time.process_time()
            mean = fc.forecast(inp, prediction_length=horizon, num_samples=None).mean
            runs.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        out["mean"], out["mean_cpu"] = statistics.median(runs), statistics.median(cpu)
        out["first_mean"] = mean.reshape(-1)[:3].tolist()
        runs, cpu = [], []
        for _ in range(sample_repeat):
            t0, c0 = time.perf_counter(), time.process_time()
            fc.forecast(inp, prediction_length=horizon, num_samples=256, samples_per_batch=256)
            runs.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        out["samples"], out["samples_cpu"] = statistics.median(runs), statistics.median(cpu)
    return out


def goldcrest_times(binary, model_file, csv, horizon, context, repeat, threads):
    out = {}
    for mode, extra in (("mean", ["--mean"]), ("samples", ["--samples", "256", "--batch", "256"])):
        runs, cpu = [], []
        for _ in range(repeat):
            r = subprocess.run([binary, "forecast", "--input", csv, "--model", model_file,
                                "--horizon", str(horizon), "--context", str(context),
                                "--timing", "--threads", str(threads), *extra], capture_output=True, text=True, check=True)
            line = [x for x in r.stderr.splitlines() if x.startswith("forecast time:")][0]
            runs.append(float(line.split()[2]))
            line = [x for x in r.stderr.splitlines() if x.startswith("forecast cpu time:")][0]
            cpu.append(float(line.split()[3]))
            if mode == "mean":
                out["first_mean"] = [float(v) for v in r.stdout.splitlines()[1].split(",")[1:2]]
        out[mode], out[mode + "_cpu"] = statistics.median(runs), statistics.median(cpu)
    return out


def report(name, params, torch_t, rows):
    """Wall seconds (forecasts per second) and, in brackets, CPU seconds of all threads, which
    other processes on a shared machine inflate far less than wall time."""
    print(f"\n{name}: {params} parameters; toto-ts mean forecast starts {torch_t['first_mean'][:1]}")
    print("| engine | mean mode: wall s (forecasts/s) [cpu s] | 256 samples: wall s (forecasts/s) [cpu s] "
          "| speed-up mean: wall [cpu] | speed-up 256: wall [cpu] |")
    print("|---|---|---|---|---|")

    def cell(t, mode):
        return f"{t[mode]:.4f} ({1 / t[mode]:.2f}) [{t[mode + '_cpu']:.4f}]"

    def ratio(t, mode):
        return f"{torch_t[mode] / t[mode]:.1f}x [{torch_t[mode + '_cpu'] / t[mode + '_cpu']:.1f}x]"

    print(f"| toto-ts 0.2.0 | {cell(torch_t, 'mean')} | {cell(torch_t, 'samples')} | 1 | 1 |")
    for label, g in rows:
        print(f"| {label} | {cell(g, 'mean')} | {cell(g, 'samples')} | {ratio(g, 'mean')} | "
              f"{ratio(g, 'samples')} |   (mean starts {g['first_mean']})")
    sys.stdout.flush()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--goldcrest", required=True)
    ap.add_argument("--tiny")
    ap.add_argument("--released", action="store_true")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"threads: torch {torch.get_num_threads()}, goldcrest {args.threads}")
    os.makedirs(args.out, exist_ok=True)
    print("load before:", os.getloadavg())
    if args.tiny:
        from train_tiny import as_stored, load_checkpoint
        model = as_stored(load_checkpoint(args.tiny, torch.float64)).float().eval()
        csv = f"{args.out}/tiny.csv"
        series = series_csv(csv, 256)
        t = torch_times(model.model, series, 48, args.repeat, args.repeat)
        g = goldcrest_times(args.goldcrest, f"{REPO}/models/toto-tiny.safetensors", csv,
                            48, 256, args.repeat, args.threads)
        report("tiny (context 256, horizon 48)", sum(p.numel() for p in model.parameters()), t,
               [("goldcrest (tq2_0 + q8_0 file)", g)])
    if args.released:
        torch.manual_seed(0)
        model = Toto(**RELEASED).eval()
        ckpt = f"{args.out}/released"
        os.makedirs(ckpt, exist_ok=True)
        json.dump(RELEASED, open(f"{ckpt}/config.json", "w"))
        save_file({n: v.contiguous() for n, v in model.state_dict().items()}, f"{ckpt}/model.safetensors")
        files = {"f32": f"{args.out}/released_f32.gc", "f32 fused head": f"{args.out}/released_fused.gc"}
        subprocess.run([args.goldcrest, "convert", "toto", ckpt, files["f32"], "--weights", "f32"], check=True)
        subprocess.run([args.goldcrest, "convert", "toto", ckpt, files["f32 fused head"], "--weights", "f32",
                        "--fuse-head"], check=True)
        csv = f"{args.out}/released.csv"
        series = series_csv(csv, 1024)
        t = torch_times(model.model, series, 128, args.repeat, 1)
        rows = [(f"goldcrest ({k})", goldcrest_times(args.goldcrest, f, csv, 128, 1024, args.repeat,
                                                        args.threads))
                for k, f in files.items()]
        report("released size (context 1024, horizon 128)", sum(p.numel() for p in model.parameters()),
               t, rows)
    print("load after:", os.getloadavg())


if __name__ == "__main__":
    main()
