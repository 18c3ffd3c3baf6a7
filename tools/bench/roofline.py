#!/usr/bin/env python3
"""Summarize `cargo bench --bench kernels` against this machine's roofline.

Reads criterion's JSON under target/criterion (standard library only) and prints markdown:
decode (gemv) as weight GB/s and fraction of the measured stream-read bandwidth; prefill (gemm)
as G multiply-adds/s and fraction of an int8 SIMD peak (default 234 G/s: AVX-512 VNNI zmm on
one Zen 4 core at 3.65 GHz, measured in docs/performance.md; override with --peak).

Usage: python3 tools/bench/roofline.py [--dir target/criterion] [--peak 234]
"""
import argparse
import json
import os


def load(root):
    out = {}
    for dirpath, _, files in os.walk(root):
        if "benchmark.json" in files and os.path.basename(dirpath) == "new":
            with open(os.path.join(dirpath, "benchmark.json")) as f:
                bench = json.load(f)
            with open(os.path.join(dirpath, "estimates.json")) as f:
                est = json.load(f)
            out[bench["full_id"]] = (bench.get("throughput") or {}, est["median"]["point_estimate"])
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default="target/criterion")
    ap.add_argument("--peak", type=float, default=234.0, help="int8 G MAC/s peak")
    a = ap.parse_args()
    res = load(a.dir)
    bw = None
    if "bandwidth/stream-read" in res:
        tp, ns = res["bandwidth/stream-read"]
        bw = tp["Bytes"] / ns  # bytes per ns = GB/s
        print(f"stream-read bandwidth: {bw:.1f} GB/s\n")
    print("| decode (gemv) | time | weight GB/s | of bandwidth |")
    print("|---|---:|---:|---:|")
    for k in sorted(x for x in res if x.startswith("gemv/")):
        tp, ns = res[k]
        gbs = tp["Bytes"] / ns
        ratio = f"{gbs / bw:.0%}" if bw else "?"
        print(f"| {k[5:]} | {ns / 1e3:.0f} µs | {gbs:.1f} | {ratio} |")
    print("\n| prefill (gemm, 64 tokens) | time | G MAC/s | of int8 peak |")
    print("|---|---:|---:|---:|")
    for k in sorted(x for x in res if x.startswith("gemm/")):
        tp, ns = res[k]
        g = tp["Elements"] / ns
        print(f"| {k[5:]} | {ns / 1e6:.2f} ms | {g:.1f} | {g / a.peak:.0%} |")


if __name__ == "__main__":
    main()
