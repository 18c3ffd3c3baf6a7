#!/usr/bin/env python3
"""Turn an official RWKV-6 `.pth` checkpoint (a torch pickle) into a safetensors file with the
same tensor names, dtypes and shapes, ready for `goldcrest convert rwkv6`.

    /work/venv-torch/bin/python tools/rwkv6/pth_to_safetensors.py RWKV-x060-World-1B6.pth out.safetensors

Needs torch and safetensors (see tools/rwkv6/make_fixtures.py for the tested versions). The
pickle is loaded with `weights_only=True`, so a checkpoint cannot run code. Checkpoints that
`rwkv`'s `convert_model.py` already rewrote for a strategy (they contain `_strategy`) are
refused: their weights are transposed and possibly pre-scaled by 2^(layer // 6).
"""

import sys

import torch
from safetensors.torch import save_file


def main(src, dst):
    state = torch.load(src, map_location="cpu", weights_only=True)
    if "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if "_strategy" in state:
        sys.exit(f"{src}: converted by rwkv's convert_model.py (strategy {state['_strategy']}); use the original checkpoint")
    tensors = {}
    for name, value in state.items():
        if not isinstance(value, torch.Tensor):
            sys.exit(f"{src}: entry {name!r} is not a tensor")
        tensors[name] = value.detach().contiguous()
    save_file(tensors, dst, metadata={"source": src.rsplit("/", 1)[-1]})
    print(f"{dst}: {len(tensors)} tensors, {sum(t.numel() for t in tensors.values()):,} parameters")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: pth_to_safetensors.py IN.pth OUT.safetensors")
    main(sys.argv[1], sys.argv[2])
