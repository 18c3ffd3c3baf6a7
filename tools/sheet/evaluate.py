#!/usr/bin/env python3
"""Corpus evaluation for `goldcrest sheet`: compression per module and table detection.

Standard library only. Runs the CLI on every workbook under tests/fixtures/sheets/corpus
(the corpus was fixed before any tuning; files that fail to read are counted and listed),
then prints:
  * corpus-sum compression ratios per module combination (the paper's Table 1 form), and
    the per-workbook median of the full pipeline ratio;
  * table detection F1 at EoB-0 (and EoB-2) against tests/fixtures/sheets/labels.tsv.

Usage: tools/sheet/evaluate.py [path/to/goldcrest]   (default target/release/goldcrest)
"""
import json
import pathlib
import statistics
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures" / "sheets"
BIN = sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "target" / "release" / "goldcrest")
COMBOS = ["anchors", "index", "aggregate", "anchors+index", "anchors+aggregate", "index+aggregate", "all"]


def run(*args):
    p = subprocess.run([BIN, "sheet", *args], capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr.strip()


def a1(s):
    col, row = 0, ""
    for ch in s:
        if ch.isalpha():
            col = col * 26 + ord(ch.upper()) - 64
        else:
            row += ch
    return int(row) - 1, col - 1


def rng(s):
    a, _, b = s.partition(":")
    r0, c0 = a1(a)
    r1, c1 = a1(b or a)
    return (r0, c0, r1, c1)


def eob(p, g):
    return max(abs(x - y) for x, y in zip(p, g))


def match(pred, gold, tol):
    pairs = sorted((eob(p, g), i, j) for i, p in enumerate(pred) for j, g in enumerate(gold) if eob(p, g) <= tol)
    up, ug, hits = set(), set(), 0
    for _, i, j in pairs:
        if i not in up and j not in ug:
            up.add(i), ug.add(j)
            hits += 1
    return hits


def f1(h, np_, ng):
    if not np_ or not ng or not h:
        return 0.0
    p, r = h / np_, h / ng
    return 2 * p * r / (p + r)


def main():
    files = sorted(p for p in (FIX / "corpus").rglob("*") if p.is_file())
    totals = {k: 0 for k in ["vanilla", *COMBOS, "all_json", "floor"]}
    per_file, failed = [], []
    for f in files:
        code, out, err = run("report", str(f))
        if code != 0:
            failed.append((f.relative_to(FIX / "corpus"), err.splitlines()[-1] if err else "?"))
            continue
        rep = json.loads(out)
        sums = {k: sum(s[k] for s in rep["sheets"]) for k in totals}
        if sums["vanilla"] == 0:
            failed.append((f.relative_to(FIX / "corpus"), "no non-empty cells"))
            continue
        for k in totals:
            totals[k] += sums[k]
        per_file.append((str(f.relative_to(FIX / "corpus")), sums["vanilla"], sums["all"], sums["floor"]))
    print(f"workbooks read: {len(per_file)} of {len(files)}")
    for name, why in failed:
        print(f"  not counted: {name}: {why}")
    print(f"{'modules':20} {'tokens':>10} {'ratio':>8}")
    print(f"{'none (vanilla)':20} {totals['vanilla']:>10} {1.0:>8.2f}")
    for k in COMBOS:
        print(f"{k:20} {totals[k]:>10} {totals['vanilla'] / max(totals[k], 1):>8.2f}")
    print(f"{'all, JSON surface':20} {totals['all_json']:>10} {totals['vanilla'] / max(totals['all_json'], 1):>8.2f}")
    ratios = sorted(v / max(c, 1) for _, v, c, _ in per_file)
    print(f"per-workbook full-pipeline ratio: median {statistics.median(ratios):.2f}, "
          f"min {ratios[0]:.2f}, max {ratios[-1]:.2f} (n={len(ratios)})")
    # Secondary view, never instead of the line above: workbooks past the paper's Small bucket.
    big = sorted(v / max(c, 1) for _, v, c, _ in per_file if v >= 4096)
    if big:
        print(f"  same, only workbooks with >= 4096 vanilla tokens: median {statistics.median(big):.2f} (n={len(big)})")
    # The floor: tokens of the distinct values the full pipeline keeps, without any address or
    # punctuation. vanilla / floor bounds the ratio of every encoding keeping them verbatim.
    bounds = sorted(v / max(fl, 1) for _, v, _, fl in per_file)
    print(f"per-workbook bound vanilla/floor: median {statistics.median(bounds):.2f}; "
          f"workbooks whose bound is below 10: {sum(b < 10 for b in bounds)} of {len(bounds)}")
    print(f"  {'ratio':>8}  {'bound':>8}  {'vanilla':>7} -> {'all':>6} (floor)  workbook")
    for name, v, c, fl in sorted(per_file, key=lambda t: t[1] / max(t[2], 1)):
        print(f"  {v / max(c, 1):8.2f}  {v / max(fl, 1):8.2f}  {v:>7} -> {c:>6} ({fl:>5})  {name}")

    labels = {}
    for line in (FIX / "labels.tsv").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        file, sheet, ranges, subset = line.split("\t")
        labels.setdefault(file, {})[sheet] = (subset, [rng(r) for r in ranges.split(",") if r])
    counts = {(s, t): [0, 0, 0] for s in ("dev", "heldout") for t in (0, 2)}
    edges_kept = edges_all = 0
    for file, sheets in labels.items():
        code, out, err = run("tables", str(FIX / "corpus" / file))
        if code != 0:
            print(f"detection: cannot read {file}: {err}")
            continue
        found = json.loads(out)
        _, rep, _ = run("report", str(FIX / "corpus" / file))
        kept = {s["sheet"]: (set(s["kept_rows"]), set(s["kept_cols"])) for s in json.loads(rep)["sheets"]}
        for sheet, (subset, gold) in sheets.items():
            rows, cols = kept[sheet]
            for (r0, c0, r1, c1) in gold:
                edges_kept += (r0 in rows) + (r1 in rows) + (c0 in cols) + (c1 in cols)
                edges_all += 4
            pred = [rng(t["range"]) for t in found if t["sheet"] == sheet]
            for tol in (0, 2):
                h = match(pred, gold, tol)
                c = counts[(subset, tol)]
                c[0] += h
                c[1] += len(pred)
                c[2] += len(gold)
            print(f"  {file} / {sheet}: predicted {[t['range'] for t in found if t['sheet'] == sheet]}")
    print(f"label boundary rows/columns kept by anchor extraction (k=4): {edges_kept}/{edges_all}")
    for (subset, tol), (h, np_, ng) in counts.items():
        print(f"detection {subset} EoB-{tol}: matched {h}, predicted {np_}, gold {ng}, F1 {f1(h, np_, ng):.3f}")


if __name__ == "__main__":
    main()
