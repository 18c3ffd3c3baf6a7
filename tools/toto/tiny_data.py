"""Real series for the bundled tiny Toto, read offline from data files that PyPI packages ship.

Packages (pinned; install into a venv outside the repository):
    pip install pmdarima==2.1.1 statsmodels==0.15.0

Licences: pmdarima is MIT, statsmodels is BSD-3-Clause; the data sets they bundle are classic
public series (most also in R's `datasets`/`forecast` packages; sources in each package's docs);
statsmodels' `fertility` is World Bank data (CC BY 4.0), `elec_equip` is Eurostat's euro-area
electrical equipment orders index (reuse permitted with attribution).

Whole series are held out for evaluation (HELD_OUT); every other series is used for training.
Each entry: name -> (values as float64 numpy array, seasonal period for seasonal naive).
"""

import numpy as np

HELD_OUT = ["airpassengers", "wineind", "ausbeer", "co2_weekly", "woolyrnq", "nile", "lynx"]


def _clean(values):
    values = np.asarray(values, dtype=np.float64).ravel()
    # Interior gaps: linear interpolation (co2 has 59 missing weeks); the model sees no NaN.
    bad = ~np.isfinite(values)
    if bad.any():
        idx = np.arange(len(values))
        values[bad] = np.interp(idx[bad], idx[~bad], values[~bad])
    return values


def load_all():
    import pmdarima.datasets as pm
    import statsmodels.datasets as sm

    series = {}
    series["airpassengers"] = (_clean(pm.load_airpassengers()), 12)
    series["wineind"] = (_clean(pm.load_wineind()), 12)
    series["ausbeer"] = (_clean(pm.load_ausbeer()), 4)
    series["woolyrnq"] = (_clean(pm.load_woolyrnq()), 4)
    series["lynx"] = (_clean(pm.load_lynx()), 10)
    co2 = sm.co2.load_pandas().data["co2"]
    series["co2_weekly"] = (_clean(co2.values), 52)
    series["nile"] = (_clean(sm.nile.load_pandas().data["volume"].values), 1)
    # Training series.
    series["taylor"] = (_clean(pm.load_taylor()), 336)
    series["msft_close"] = (_clean(pm.load_msft()["Close"].values), 5)
    series["sunspots_monthly"] = (_clean(pm.load_sunspots()), 132)
    series["heartrate"] = (_clean(pm.load_heartrate()), 1)
    series["austres"] = (_clean(pm.load_austres()), 4)
    series["sunspots_yearly"] = (_clean(sm.sunspots.load_pandas().data["SUNACTIVITY"].values), 11)
    elnino = sm.elnino.load_pandas().data.drop(columns=["YEAR"]).values
    series["elnino"] = (_clean(elnino), 12)
    macro = sm.macrodata.load_pandas().data
    for col in ["realgdp", "realcons", "realinv", "cpi", "unemp", "infl", "tbilrate", "m1"]:
        series[f"macro_{col}"] = (_clean(macro[col].values), 4)
    from statsmodels.datasets import elec_equip, fertility, interest_inflation

    series["elec_equip"] = (_clean(elec_equip.load_pandas().data.iloc[:, 0].values), 12)
    rates = interest_inflation.load_pandas().data
    series["interest_dp"] = (_clean(rates["Dp"].values), 4)
    series["interest_r"] = (_clean(rates["R"].values), 4)
    # World Bank fertility rates (CC BY 4.0), yearly from 1960: every 8th country, the years
    # it has (at least 40).
    fert = fertility.load_pandas().data
    years = [c for c in fert.columns if c.isdigit()]
    for _, row in fert.iloc[::8].iterrows():
        values = row[years].values.astype(np.float64)
        values = values[np.isfinite(values)]
        if len(values) >= 40:
            series[f"fertility_{row['Country Code']}"] = (values, 1)
    return series


def train_series():
    return {k: v for k, v in load_all().items() if k not in HELD_OUT}


def held_out_series():
    allv = load_all()
    return {k: allv[k] for k in HELD_OUT}
