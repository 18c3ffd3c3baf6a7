"""Accuracy of the bundled tiny Toto on whole held-out series (tiny_data.HELD_OUT).

Environment: as train_tiny.py (toto-ts 0.2.0, torch 2.15.0, pmdarima 2.1.1, statsmodels 0.15.0).
Run:  nice python tools/toto/evaluate.py CHECKPOINT_DIR [F32_CHECKPOINT_DIR]

For every held-out series, two forecast windows (the last H steps, and the H before them),
context = at most the 256 steps before the window (the tiny model's training context).
Horizons: H = 12 monthly, 8 quarterly/yearly, 52 weekly.

Forecasters
  seasonal naive   last season repeated (period m per series; m = 1: last value); its CRPS is
                   its MAE (a point forecast is a degenerate distribution)
  ETS              statsmodels ETSModel: additive error, damped additive trend, additive season
                   when the context holds two seasons; 256 simulated paths
  AutoARIMA        pmdarima auto_arima (seasonal with period m when m <= 12 and two seasons fit)
                   with Gaussian predictive intervals turned into 256 samples
  toto ternary     the weights as `goldcrest convert toto --weights tq2` stores them (ternary
                   matrices, q8_0 unembedding), TotoForecaster with 256 samples, median as point
  toto latent f32  the same checkpoint's latent f32 weights, no ternarisation (QAT's latent
                   weights are not a model of their own: shown to make that point)
  toto f32-trained a model of the same architecture trained in plain f32 by
                   `train_tiny.py --full-precision` (optional second argument)

Metrics per window: MASE = MAE / in-sample seasonal-naive MAE of the whole history before the
window; CRPS from samples (E|X - y| - E|X - X'|/2), divided by the same scale (scaled CRPS).
Summary: the mean over all windows, and the geometric mean of the ratio to seasonal naive.
"""

import os
import sys
import warnings

import numpy as np
import torch

warnings.filterwarnings("ignore")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tiny_data  # noqa: E402
from train_tiny import as_stored, load_checkpoint  # noqa: E402

CONTEXT = 256
SAMPLES = 256


def horizon_for(m):
    return {12: 12, 52: 52}.get(m, 8)


def crps(samples, y):
    samples = np.sort(samples, axis=0)  # (S, H)
    s = samples.shape[0]
    term1 = np.abs(samples - y[None]).mean(axis=0)
    # E|X - X'| from sorted samples: 2/S² Σ_i (2i - S - 1) x_(i)
    i = np.arange(1, s + 1)[:, None]
    term2 = (2 * (2 * i - s - 1) * samples).sum(axis=0) / (s * s)
    return (term1 - 0.5 * term2).mean()


def mase_scale(history, m):
    m = m if len(history) > m else 1
    return np.mean(np.abs(history[m:] - history[:-m]))


def seasonal_naive(context, m, h):
    if m <= 1 or len(context) < m:
        return np.full(h, context[-1])
    season = context[-m:]
    return np.array([season[i % m] for i in range(h)])


def ets_samples(context, m, h, rng):
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel
    seasonal = "add" if m > 1 and len(context) >= 2 * m else None
    try:
        fit = ETSModel(context, error="add", trend="add", damped_trend=True, seasonal=seasonal,
                       seasonal_periods=m if seasonal else None).fit(disp=False)
        np.random.seed(int(rng.integers(1 << 31)))  # simulate() draws from numpy's global state
        return np.asarray(fit.simulate(h, repetitions=SAMPLES, anchor="end")).T
    except Exception as e:  # noqa: BLE001  a failed fit falls back to naive, reported
        print(f"  ETS failed ({e}); naive used")
        return np.tile(seasonal_naive(context, m, h), (SAMPLES, 1))


def arima_samples(context, m, h, rng):
    import pmdarima
    seasonal = 1 < m <= 12 and len(context) >= 2 * m
    fit = pmdarima.auto_arima(context, seasonal=seasonal, m=m if seasonal else 1,
                              suppress_warnings=True, error_action="ignore")
    mean, ci = fit.predict(h, return_conf_int=True, alpha=0.3173)  # ±1 σ
    sigma = np.maximum((ci[:, 1] - ci[:, 0]) / 2, 1e-9)
    return mean[None] + sigma[None] * rng.standard_normal((SAMPLES, h))


def toto_samples(toto, context, h, seed):
    from toto.data.util.dataset import MaskedTimeseries
    from toto.inference.forecaster import TotoForecaster
    series = torch.tensor(context, dtype=torch.float32)[None]
    t = series.shape[-1]
    inp = MaskedTimeseries(series=series, padding_mask=torch.ones_like(series, dtype=torch.bool),
                           id_mask=torch.zeros_like(series, dtype=torch.long),
                           timestamp_seconds=torch.zeros(1, t, dtype=torch.long),
                           time_interval_seconds=torch.full((1,), 60, dtype=torch.long))
    torch.manual_seed(seed)
    with torch.no_grad():
        fc = TotoForecaster(toto.model).forecast(inp, prediction_length=h, num_samples=SAMPLES,
                                                 samples_per_batch=SAMPLES, use_kv_cache=True)
    return fc.samples[0, 0].numpy().T.astype(np.float64)  # (S, H)


def main():
    ckpt = sys.argv[1]
    torch.set_num_threads(1)
    models = {
        "toto ternary": as_stored(load_checkpoint(ckpt, torch.float64)).float(),
        "toto latent f32": load_checkpoint(ckpt, torch.float32),
    }
    if len(sys.argv) > 2:
        models["toto f32-trained"] = load_checkpoint(sys.argv[2], torch.float32)
    rng = np.random.default_rng(0)
    names = ["seasonal naive", "ETS", "AutoARIMA"] + list(models)
    rows = {n: [] for n in names}
    for series_name, (values, m) in tiny_data.held_out_series().items():
        h = horizon_for(m)
        for w in range(2):
            end = len(values) - w * h
            history, target = values[:end - h], values[end - h:end]
            context = history[-CONTEXT:]
            scale = mase_scale(history, m)
            forecasts = {
                "seasonal naive": seasonal_naive(context, m, h)[None],
                "ETS": ets_samples(context, m, h, rng),
                "AutoARIMA": arima_samples(context, m, h, rng),
            }
            for n, toto in models.items():
                forecasts[n] = toto_samples(toto, context, h, seed=w)
            line = [f"{series_name:>14} w{w} H={h:<3}"]
            for n in names:
                s = forecasts[n]
                point = np.median(s, axis=0)
                mase = np.mean(np.abs(point - target)) / scale
                c = crps(s, target) / scale
                rows[n].append((mase, c))
                line.append(f"{n}: {mase:.3f}/{c:.3f}")
            print("  ".join(line), flush=True)
    base = np.array(rows["seasonal naive"])
    print("\n| forecaster | mean MASE | mean scaled CRPS | geo-mean MASE ratio to s. naive | geo-mean CRPS ratio |")
    print("|---|---|---|---|---|")
    for n in names:
        r = np.array(rows[n])
        ratio = np.exp(np.mean(np.log(r / base), axis=0))
        print(f"| {n} | {r[:, 0].mean():.3f} | {r[:, 1].mean():.3f} | {ratio[0]:.3f} | {ratio[1]:.3f} |")


if __name__ == "__main__":
    main()
