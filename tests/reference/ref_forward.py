# SPDX-License-Identifier: Apache-2.0
"""Independent reference for model/cpu.c: the Llama / Qwen2 / Qwen3 forward pass written with
torch ops in float32 from the semantics of Hugging Face transformers' modeling files
(LlamaRMSNorm, LlamaRotaryEmbedding + ROPE_INIT_FUNCTIONS, apply_rotary_pos_emb, repeat_kv,
eager_attention_forward, LlamaMLP; Qwen2 q/k/v bias; Qwen3 q_norm/k_norm before RoPE).
It reads the model directory itself (config.json, safetensors header + numpy), using no offpath
code, and compares with the logits that tests/reference/dump_logits (our mdl_cpu_step, fed in
uneven chunks through shuffled pages, two sequences batched) writes.

Run with Debian's /usr/bin/python3 (python3-torch, python3-numpy). Exit 0 pass, 1 fail, 77 skip.

  ref_forward.py --dump DUMP_LOGITS --mkmodel OFFPATH_MKMODEL [--seed N]   (the test)
  ref_forward.py --dump DUMP_LOGITS --model DIR [...]                     (given directories)
"""
import argparse
import json
import math
import os
import struct
import subprocess
import sys
import tempfile
import time

try:
    import numpy as np
    import torch
except ImportError as e:  # not Debian's python, or packages missing
    print(f"SKIP: {e} (run with /usr/bin/python3; apt-get install python3-torch python3-numpy)")
    sys.exit(77)

N_POS = 64
TOL = 1e-4  # max|ours - torch| / max|torch| per position


# ---------------------------------------------------------------------------------------------
# safetensors, read by hand: u64 header length, JSON header, raw little-endian data
def read_safetensors(path):
    out = {}
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        hdr = json.loads(f.read(n))
        base = 8 + n
        f.seek(0)
        blob = f.read()
    for name, t in hdr.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        raw = blob[base + a : base + b]
        shape = t["shape"]
        dt = t["dtype"]
        if dt == "F32":
            arr = np.frombuffer(raw, dtype="<f4").copy()
        elif dt == "BF16":
            u = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            arr = u.view(np.float32)
        elif dt == "F16":
            arr = np.frombuffer(raw, dtype="<f2").astype(np.float32)
        else:
            raise ValueError(f"{path}: {name}: dtype {dt} not handled by the reference")
        out[name] = torch.from_numpy(arr.reshape(shape))
    return out


def load_model(d):
    cfg = json.load(open(os.path.join(d, "config.json")))
    idx = os.path.join(d, "model.safetensors.index.json")
    w = {}
    if os.path.exists(idx):
        for shard in sorted(set(json.load(open(idx))["weight_map"].values())):
            w.update(read_safetensors(os.path.join(d, shard)))
    else:
        w.update(read_safetensors(os.path.join(d, "model.safetensors")))
    return cfg, w


# ---------------------------------------------------------------------------------------------
# the forward pass, float32
def inv_freq_for(cfg, head_dim):
    base = float(cfg.get("rope_theta", 10000.0))
    inv = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    rs = cfg.get("rope_scaling") or {}
    typ = rs.get("rope_type", rs.get("type", "default"))
    if typ == "default":
        return inv
    if typ == "linear":
        return inv / float(rs["factor"])
    if typ == "llama3":  # transformers _compute_llama3_parameters
        factor = float(rs["factor"])
        lo = float(rs["low_freq_factor"])
        hi = float(rs["high_freq_factor"])
        old = float(rs["original_max_position_embeddings"])
        low_wl = old / lo
        high_wl = old / hi
        wavelen = 2 * math.pi / inv
        inv_l = torch.where(wavelen > low_wl, inv / factor, inv)
        smooth = (old / wavelen - lo) / (hi - lo)
        smoothed = (1 - smooth) * inv_l / factor + smooth * inv_l
        medium = ~(wavelen < high_wl) * ~(wavelen > low_wl)
        return torch.where(medium, smoothed, inv_l)
    raise ValueError(f"rope type {typ} not handled by the reference")


def rms_norm(x, w, eps):
    var = x.pow(2).mean(-1, keepdim=True)
    return w * (x * torch.rsqrt(var + eps))


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def forward(cfg, w, ids):
    arch = cfg["architectures"][0]
    H = cfg["hidden_size"]
    nh = cfg["num_attention_heads"]
    nkv = cfg.get("num_key_value_heads", nh)
    hd = cfg.get("head_dim") or H // nh
    eps = float(cfg.get("rms_norm_eps", 1e-6))
    L = cfg["num_hidden_layers"]
    qk_norm = arch.startswith("Qwen3")
    T = len(ids)

    pos = torch.arange(T, dtype=torch.int64)
    inv = inv_freq_for(cfg, hd)
    freqs = (inv[:, None].float() @ pos[None, :].float()).transpose(0, 1)  # (T, hd/2)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos(), emb.sin()  # (T, hd)

    x = w["model.embed_tokens.weight"][torch.tensor(ids, dtype=torch.int64)]
    mask = torch.full((T, T), float("-inf")).triu(1)
    for l in range(L):
        p = f"model.layers.{l}."
        h = rms_norm(x, w[p + "input_layernorm.weight"], eps)

        def proj(n):
            y = h @ w[p + f"self_attn.{n}_proj.weight"].T
            b = w.get(p + f"self_attn.{n}_proj.bias")
            return y + b if b is not None else y

        q = proj("q").view(T, nh, hd)
        k = proj("k").view(T, nkv, hd)
        v = proj("v").view(T, nkv, hd)
        if qk_norm:
            q = rms_norm(q, w[p + "self_attn.q_norm.weight"], eps)
            k = rms_norm(k, w[p + "self_attn.k_norm.weight"], eps)
        q = q.transpose(0, 1)  # (nh, T, hd)
        k = k.transpose(0, 1)
        v = v.transpose(0, 1)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = nh // nkv
        k = k.repeat_interleave(rep, dim=0)  # repeat_kv
        v = v.repeat_interleave(rep, dim=0)
        s = (q @ k.transpose(1, 2)) * (hd ** -0.5) + mask
        a = torch.softmax(s.float(), dim=-1) @ v  # (nh, T, hd)
        a = a.transpose(0, 1).reshape(T, nh * hd)
        o = a @ w[p + "self_attn.o_proj.weight"].T
        ob = w.get(p + "self_attn.o_proj.bias")
        x = x + (o + ob if ob is not None else o)

        h = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
        g = h @ w[p + "mlp.gate_proj.weight"].T
        u = h @ w[p + "mlp.up_proj.weight"].T
        x = x + (torch.nn.functional.silu(g) * u) @ w[p + "mlp.down_proj.weight"].T

    x = rms_norm(x, w["model.norm.weight"], eps)
    tied = cfg.get("tie_word_embeddings", False)
    head = w["model.embed_tokens.weight"] if tied or "lm_head.weight" not in w else w["lm_head.weight"]
    return x @ head.T  # (T, vocab)


# ---------------------------------------------------------------------------------------------
def check_dir(d, cfg, w, dump, ids, work, tag):
    V = cfg["vocab_size"]
    tok_path = os.path.join(work, "tokens.bin")
    out_path = os.path.join(work, "logits.bin")
    np.asarray(ids, dtype="<i4").tofile(tok_path)
    r = subprocess.run([dump, d, tok_path, out_path], capture_output=True, text=True)
    if r.returncode != 0:
        print(f"FAIL {tag}: dump_logits exited {r.returncode}: {r.stdout}{r.stderr}")
        return False
    ours = np.fromfile(out_path, dtype="<f4")
    n_seq = ours.size // (len(ids) * V)
    if n_seq < 1 or ours.size != n_seq * len(ids) * V:
        print(f"FAIL {tag}: dump_logits wrote {ours.size} floats, expected k x {len(ids)} x {V}")
        return False
    ours = torch.from_numpy(ours.reshape(n_seq, len(ids), V))
    with torch.no_grad():
        ref = forward(cfg, w, ids)
    worst = 0.0
    ok = True
    for s in range(n_seq):
        for t in range(len(ids)):
            den = ref[t].abs().max().item()
            err = (ours[s, t] - ref[t]).abs().max().item() / max(den, 1e-30)
            worst = max(worst, err)
            if not err <= TOL:
                if ok:
                    print(f"FAIL {tag}: seq {s} pos {t}: rel err {err:.3e} > {TOL}")
                ok = False
    print(f"{'ok  ' if ok else 'FAIL'} {tag}: {n_seq} seqs x {len(ids)} positions, "
          f"worst max|ours-torch|/max|torch| = {worst:.2e}")
    return ok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dump", required=True)
    ap.add_argument("--mkmodel")
    ap.add_argument("--model", action="append", default=[])
    ap.add_argument("--seed", type=int)
    a = ap.parse_args()
    torch.set_num_threads(2)

    seed = a.seed if a.seed is not None else int(time.time() * 1000) % (1 << 31)
    print(f"random token seed: {seed} (rerun with --seed {seed})")
    ok = True
    with tempfile.TemporaryDirectory(prefix="offpath-ref-") as work:
        dirs = []
        for d in a.model:
            dirs.append((d, os.path.basename(d.rstrip("/"))))
        if a.mkmodel:
            for arch in ("llama", "qwen2", "qwen3"):
                for dt in ("f32", "bf16"):
                    d = os.path.join(work, f"{arch}-{dt}")
                    r = subprocess.run([a.mkmodel, "--arch", arch, "--size", "tiny", "--dtype", dt,
                                        "--seed", "11", "--out", d],
                                       capture_output=True, text=True)
                    if r.returncode != 0:
                        print(f"FAIL mkmodel {arch} {dt}: {r.stdout}{r.stderr}")
                        ok = False
                        continue
                    dirs.append((d, f"{arch}-{dt}"))
        if not dirs:
            print("nothing to check: give --mkmodel or --model")
            return 1
        rng = np.random.default_rng(seed)
        for d, tag in dirs:
            cfg, w = load_model(d)
            V = cfg["vocab_size"]
            fixed = [(i * 7919 + 13) % V for i in range(N_POS)]
            rand = rng.integers(0, V, N_POS).tolist()
            ok &= check_dir(d, cfg, w, a.dump, fixed, work, f"{tag} fixed ids")
            ok &= check_dir(d, cfg, w, a.dump, rand, work, f"{tag} random ids")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
