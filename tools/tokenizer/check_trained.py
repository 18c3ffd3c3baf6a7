#!/usr/bin/env python3
"""Checks that `goldcrest train-bpe` writes a tokenizer.json HF `tokenizers` loads and encodes
exactly as goldcrest does.

    pip install tokenizers==0.23.3           # venv outside the repo
    cargo build --release -p goldcrest-std
    python tools/tokenizer/check_trained.py [--mb 20] [--vocab-size 8000]

Corpus: this interpreter's standard library sources plus the golden tokenizer corpus.
"""
import argparse, glob, json, os, subprocess, sys, sysconfig, tempfile, time
import tokenizers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXE = os.path.join(ROOT, "target/release/goldcrest")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=20)
    ap.add_argument("--vocab-size", type=int, default=8000)
    args = ap.parse_args()
    golden = [r["text"] for r in json.load(open(os.path.join(ROOT, "tests/fixtures/tokenizer/golden.json")))["rows"]]
    parts, n = ["\n".join(golden)], 0
    for p in sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "**/*.py"), recursive=True)):
        try:
            t = open(p, encoding="utf-8").read()
        except (UnicodeDecodeError, OSError):
            continue
        parts.append(t)
        n += len(t.encode())
        if n > args.mb * 1e6:
            break
    with tempfile.TemporaryDirectory() as d:
        corpus, out = os.path.join(d, "corpus.txt"), os.path.join(d, "tokenizer.json")
        with open(corpus, "w", encoding="utf-8") as f:
            f.write("".join(parts))
        t0 = time.time()
        r = subprocess.run([EXE, "train-bpe", "--vocab-size", str(args.vocab_size), "--input", corpus, "--output", out],
                           capture_output=True, text=True)
        if r.returncode:
            sys.exit(r.stderr)
        print(f"train-bpe: {time.time() - t0:.1f} s wall; {r.stderr.strip()}")
        hf = tokenizers.Tokenizer.from_file(out)
        assert hf.get_vocab_size() == args.vocab_size, hf.get_vocab_size()
        texts = golden + parts[1:50]
        jsonl = "".join(json.dumps({"text": t}) + "\n" for t in texts)
        r = subprocess.run([EXE, "tokenize", "--tokenizer", out, "--jsonl", "--special"], input=jsonl,
                           capture_output=True, text=True, check=True)
        ours = [json.loads(l)["ids"] for l in r.stdout.splitlines()]
        bad = [t for t, ids in zip(texts, ours) if hf.encode(t, add_special_tokens=False).ids != ids]
        print(f"{len(texts)} texts, {len(bad)} differ between goldcrest and HF tokenizers {tokenizers.__version__}")
        if bad:
            sys.exit(f"first difference: {bad[0][:200]!r}")


if __name__ == "__main__":
    main()
