# SPDX-License-Identifier: Apache-2.0
"""Teacher-forced logits from Hugging Face transformers for a model directory.

usage: python3 hf_ref.py MODEL_DIR OUT_FILE [N=256] [SEED=1] [--fp32]
Writes int32 n, int32 vocab, int32 tokens[n], float32 logits[n][vocab] (little endian): the
reference that tests/gpu/test_pk_step.cu --ref compares the GPU step against. The model runs in
the dtype its config.json names (fp32 with TF32 off, or bf16), eager attention, no cache; with
--fp32 a bf16 model's weights are upcast and it runs in fp32 (the exact function of the bf16
weights, free of transformers' own bf16 rounding).
"""
import json
import struct
import sys

import torch
from transformers import AutoModelForCausalLM


def main():
    args = [a for a in sys.argv[1:] if a != "--fp32"]
    upcast = "--fp32" in sys.argv
    d, out = args[0], args[1]
    n = int(args[2]) if len(args) > 2 else 256
    seed = int(args[3]) if len(args) > 3 else 1
    cfg = json.load(open(d + "/config.json"))
    name = cfg.get("torch_dtype") or cfg.get("dtype") or "float32"
    dt = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]
    if upcast:
        dt, name = torch.float32, name + "->float32"
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(d, dtype=dt, attn_implementation="eager")
    model.to(dev).eval()
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(seed)
    tok = torch.randint(0, vocab, (1, n), generator=g, dtype=torch.int64)
    with torch.no_grad():
        logits = model(tok.to(dev), use_cache=False).logits[0].float().cpu()
    with open(out, "wb") as f:
        f.write(struct.pack("<ii", n, vocab))
        f.write(tok[0].to(torch.int32).numpy().tobytes())
        f.write(logits.contiguous().numpy().astype("<f4").tobytes())
    print(f"hf_ref: {d}: {cfg.get('architectures')} {name}, {n} positions, vocab {vocab} -> {out}")


if __name__ == "__main__":
    main()
