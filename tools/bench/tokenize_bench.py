#!/usr/bin/env python3
"""Qwen2 encoding throughput: goldcrest vs tiktoken vs HF tokenizers, in one run.

    pip install tokenizers==0.23.3 tiktoken==0.14.0      # in a venv outside the repo
    cargo build --release --example tokenize_throughput
    python tools/bench/tokenize_bench.py [--mb 6] [--rounds 3]

Text: English (Rust book HTML, tags stripped), Chinese and Japanese (Rust by Example zh/ja),
and Python source (the interpreter's standard library), from this machine, mixed to about --mb
MB. Every engine encodes the whole text as one string, ordinary encoding (tiktoken:
encode_ordinary on NFC text; HF: Tokenizer.encode with the Qwen2 tokenizer.json, which parses
no special tokens in this text; goldcrest: ordinary encode incl. NFC). Engines are interleaved
per round and pinned to one core (taskset -c 0 when available); the best round counts.
The ids of all three are compared; the script fails if they differ.
"""
import argparse, base64, glob, html, json, os, re, subprocess, sys, sysconfig, time, unicodedata
import tiktoken, tokenizers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
QWEN_PAT = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
DOC = os.path.expanduser("~/.rustup/toolchains/stable-x86_64-unknown-linux-gnu/share/doc/rust/html")


def strip_html(s):
    s = re.sub(r"(?s)<(script|style).*?</\1>", " ", s)
    s = re.sub(r"<[^>]+>", " ", s)
    return html.unescape(re.sub(r"[ \t]+", " ", s))


def gather(limit, paths):
    out, n = [], 0
    for p in sorted(paths):
        try:
            with open(p, encoding="utf-8") as f:
                t = f.read()
        except (UnicodeDecodeError, OSError):
            continue
        if p.endswith(".html"):
            t = strip_html(t)
        out.append(t)
        n += len(t.encode())
        if n >= limit:
            break
    return "".join(out)


def build_text(mb):
    quarter = int(mb * 1e6 / 4)
    english = gather(quarter, glob.glob(f"{DOC}/book/**/*.html", recursive=True))
    chinese = gather(quarter // 2, glob.glob(f"{DOC}/rust-by-example/zh/**/*.html", recursive=True))
    japanese = gather(quarter // 2, glob.glob(f"{DOC}/rust-by-example/ja/**/*.html", recursive=True))
    code = gather(quarter, glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "*.py")))
    return english + chinese + japanese + code


def pinned(cmd):
    return (["taskset", "-c", "0"] + cmd) if subprocess.run(["which", "taskset"], capture_output=True).returncode == 0 else cmd


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=6)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", action="store_true", help="also time goldcrest's multi-core batch encoding (per line)")
    args = ap.parse_args()
    if "_PINNED" not in os.environ and subprocess.run(["which", "taskset"], capture_output=True).returncode == 0:
        os.environ["_PINNED"] = "1"
        os.environ["RAYON_NUM_THREADS"] = "1"
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
        os.execvp("taskset", ["taskset", "-c", "0", sys.executable] + sys.argv)

    text = build_text(args.mb)
    path = "/tmp/goldcrest_bench_text.txt"
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    size_mb = len(text.encode()) / 1e6
    ranks = {}
    with open(os.path.join(ROOT, "vocab/qwen2/qwen.tiktoken"), "rb") as f:
        for line in f:
            if line.strip():
                t, r = line.split()
                ranks[base64.b64decode(t)] = int(r)
    enc = tiktoken.Encoding("qwen2", pat_str=QWEN_PAT, mergeable_ranks=ranks, special_tokens={})
    hf = tokenizers.Tokenizer.from_file(os.path.join(ROOT, "vocab/qwen2/tokenizer.json"))
    exe = os.path.join(ROOT, "target/release/examples/tokenize_throughput")
    if not os.path.exists(exe):
        sys.exit("build it first: cargo build --release --example tokenize_throughput")

    best = {"tiktoken": 0.0, "hf-tokenizers": 0.0, "goldcrest": 0.0}
    ids = {}
    for r in range(args.rounds):
        t0 = time.perf_counter()
        ids["tiktoken"] = enc.encode_ordinary(unicodedata.normalize("NFC", text))
        best["tiktoken"] = max(best["tiktoken"], size_mb / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        ids["hf-tokenizers"] = hf.encode(text, add_special_tokens=False).ids
        best["hf-tokenizers"] = max(best["hf-tokenizers"], size_mb / (time.perf_counter() - t0))
        out = subprocess.run([exe, os.path.join(ROOT, "vocab/qwen2/tokenizer.json"), path, "1", "/tmp/goldcrest_bench_ids.bin"],
                             capture_output=True, text=True, check=True)
        best["goldcrest"] = max(best["goldcrest"], json.loads(out.stdout)["mb_per_s"])
        with open("/tmp/goldcrest_bench_ids.bin", "rb") as f:
            raw = f.read()
        ids["goldcrest"] = [int.from_bytes(raw[i:i + 4], "little") for i in range(0, len(raw), 4)]
    same = ids["goldcrest"] == ids["tiktoken"] == ids["hf-tokenizers"]
    report = {"text_mb": round(size_mb, 3), "tokens": len(ids["tiktoken"]), "identical_ids": same,
              "mb_per_s": {k: round(v, 2) for k, v in best.items()},
              "goldcrest_vs_tiktoken": round(best["goldcrest"] / best["tiktoken"], 2),
              "goldcrest_vs_hf": round(best["goldcrest"] / best["hf-tokenizers"], 2),
              "load_average": os.getloadavg(), "cpu": open("/proc/cpuinfo").read().split("model name")[1].split("\n")[0].strip(": ")}
    if args.batch:
        env = dict(os.environ); env.pop("RAYON_NUM_THREADS", None)
        out = subprocess.run(["taskset", "-c", f"0-{os.cpu_count() - 1}", exe, os.path.join(ROOT, "vocab/qwen2/tokenizer.json"), path,
                              str(args.rounds), "/tmp/goldcrest_bench_ids_batch.bin", "--threads"],
                             capture_output=True, text=True, check=True, env=env)
        report["goldcrest_batch_all_cores_per_line_mb_per_s"] = json.loads(out.stdout)["mb_per_s"]
    print(json.dumps(report, indent=1))
    if not same:
        sys.exit("ids differ")


if __name__ == "__main__":
    main()
