# SPDX-License-Identifier: Apache-2.0
"""Independent checker for model directories written by offpath-mkmodel.

Reads the files with nothing but the Python standard library (json, struct, hashlib), following the
safetensors format description and transformers' config conventions, so that it shares no code with
the writer. Run with Debian's /usr/bin/python3.

  check_model.py check DIR --arch A --dtype D [--shards N]   structure, names, shapes, values
  check_model.py same DIR1 DIR2      every tensor byte-identical (sharding may differ)
  check_model.py differ DIR1 DIR2    every tensor different (another seed)
Exit 0 pass, 1 fail.
"""
import hashlib
import json
import math
import os
import struct
import sys

ESZ = {"F32": 4, "F16": 2, "BF16": 2}
TORCH = {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}
ST_DTYPE = {"f32": "F32", "f16": "F16", "bf16": "BF16"}
ARCH_CLS = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}

failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL: " + msg)


def read_st(path):
    """Parse one safetensors file; returns {name: (dtype, shape, abs_begin, abs_end)}."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        raw8 = f.read(8)
        if len(raw8) != 8:
            fail(f"{path}: shorter than 8 bytes")
            return {}
        (hlen,) = struct.unpack("<Q", raw8)
        if hlen > size - 8:
            fail(f"{path}: header length {hlen} past the end")
            return {}
        hbytes = f.read(hlen)
    if (8 + hlen) % 8 != 0:
        fail(f"{path}: data starts at {8 + hlen}, not 8-byte aligned")
    text = hbytes.decode("utf-8")
    if text != text.rstrip(" ") and not text.rstrip(" ").endswith("}"):
        fail(f"{path}: header padding is not trailing spaces")
    if len(text) - len(text.rstrip(" ")) >= 8:
        fail(f"{path}: more than 7 padding spaces")
    pairs = json.loads(text, object_pairs_hook=lambda p: p)
    keys = [k for k, _ in pairs]
    if not keys or keys[0] != "__metadata__":
        fail(f"{path}: __metadata__ is not the first key")
    meta = dict(pairs).get("__metadata__")
    if dict(meta or []).get("format") != "pt":
        fail(f"{path}: __metadata__.format is not 'pt'")
    names = [k for k in keys if k != "__metadata__"]
    if len(set(names)) != len(names):
        fail(f"{path}: duplicate tensor names")
    out = {}
    expect_off = 0
    prev = None
    for k, v in pairs:
        if k == "__metadata__":
            continue
        v = dict(v)
        dt, shape, (b, e) = v["dtype"], v["shape"], v["data_offsets"]
        if dt not in ESZ:
            fail(f"{path}: {k}: dtype {dt}")
            continue
        n = 1
        for d in shape:
            n *= d
        if e - b != n * ESZ[dt]:
            fail(f"{path}: {k}: {e - b} bytes for shape {shape} {dt}")
        if b != expect_off:
            fail(f"{path}: {k}: starts at {b}, expected {expect_off} (not contiguous/in order)")
        # safetensors' writer orders by dtype (larger first), then by name
        rank = {"F32": 2, "BF16": 1, "F16": 0}[dt]
        if prev is not None and (-prev[0], prev[1]) > (-rank, k):
            fail(f"{path}: {k} out of order after {prev[1]}")
        prev = (rank, k)
        expect_off = e
        out[k] = (dt, list(shape), 8 + hlen + b, 8 + hlen + e)
    if 8 + hlen + expect_off != size:
        fail(f"{path}: data ends at {8 + hlen + expect_off}, file is {size} bytes")
    return out


def load_tensors(d):
    """{name: (dtype, shape, file, begin, end)} over model.safetensors or the index's shards."""
    idx = os.path.join(d, "model.safetensors.index.json")
    tensors = {}
    if os.path.exists(idx):
        with open(idx) as f:
            index = json.load(f)
        wm = index["weight_map"]
        files = sorted(set(wm.values()))
        total = 0
        for fn in files:
            if "/" in fn or fn.startswith("."):
                fail(f"{idx}: shard name {fn}")
                continue
            for k, (dt, shape, b, e) in read_st(os.path.join(d, fn)).items():
                if wm.get(k) != fn:
                    fail(f"{idx}: {k} is in {fn} but the index says {wm.get(k)}")
                tensors[k] = (dt, shape, os.path.join(d, fn), b, e)
                total += e - b
        if set(wm) != set(tensors):
            fail(f"{idx}: weight_map and shard contents differ: {set(wm) ^ set(tensors)}")
        if index.get("metadata", {}).get("total_size") != total:
            fail(f"{idx}: total_size {index.get('metadata', {}).get('total_size')} != {total}")
        if os.path.exists(os.path.join(d, "model.safetensors")):
            fail(f"{d}: both model.safetensors and an index")
    else:
        p = os.path.join(d, "model.safetensors")
        for k, (dt, shape, b, e) in read_st(p).items():
            tensors[k] = (dt, shape, p, b, e)
    return tensors


def decode(dt, raw):
    if dt == "F32":
        return list(struct.unpack("<%df" % (len(raw) // 4), raw))
    if dt == "F16":
        return list(struct.unpack("<%de" % (len(raw) // 2), raw))
    hs = struct.unpack("<%dH" % (len(raw) // 2), raw)
    return list(struct.unpack("<%df" % len(hs), struct.pack("<%dI" % len(hs), *[h << 16 for h in hs])))


def sample(t, nmax=4096):
    """Up to nmax elements spread over the tensor (a few contiguous runs)."""
    dt, shape, fn, b, e = t
    esz = ESZ[dt]
    n = (e - b) // esz
    vals = []
    runs = 8
    per = max(1, min(n, nmax) // runs)
    with open(fn, "rb") as f:
        for r in range(runs):
            start = (n - per) * r // max(1, runs - 1) if n > per else 0
            f.seek(b + start * esz)
            vals += decode(dt, f.read(per * esz))
            if n <= per:
                break
    return vals


def stats(v):
    m = sum(v) / len(v)
    s = math.sqrt(sum((x - m) ** 2 for x in v) / len(v))
    return m, s


def expected(cfg, arch):
    H, I = cfg["hidden_size"], cfg["intermediate_size"]
    nh, kvh = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim", H // nh)
    V = cfg["vocab_size"]
    e = {"model.embed_tokens.weight": [V, H], "model.norm.weight": [H]}
    if not cfg["tie_word_embeddings"]:
        e["lm_head.weight"] = [V, H]
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        e[p + "input_layernorm.weight"] = [H]
        e[p + "post_attention_layernorm.weight"] = [H]
        e[p + "self_attn.q_proj.weight"] = [nh * hd, H]
        e[p + "self_attn.k_proj.weight"] = [kvh * hd, H]
        e[p + "self_attn.v_proj.weight"] = [kvh * hd, H]
        e[p + "self_attn.o_proj.weight"] = [H, nh * hd]
        e[p + "mlp.gate_proj.weight"] = [I, H]
        e[p + "mlp.up_proj.weight"] = [I, H]
        e[p + "mlp.down_proj.weight"] = [H, I]
        if arch == "qwen2":
            e[p + "self_attn.q_proj.bias"] = [nh * hd]
            e[p + "self_attn.k_proj.bias"] = [kvh * hd]
            e[p + "self_attn.v_proj.bias"] = [kvh * hd]
        if arch == "qwen3":
            e[p + "self_attn.q_norm.weight"] = [hd]
            e[p + "self_attn.k_norm.weight"] = [hd]
    return e


def check_config(d, arch, dtype):
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    need = {"architectures": list, "model_type": str, "hidden_size": int, "intermediate_size": int,
            "num_attention_heads": int, "num_hidden_layers": int, "num_key_value_heads": int,
            "head_dim": int, "max_position_embeddings": int, "rms_norm_eps": float,
            "rope_theta": float, "tie_word_embeddings": bool, "torch_dtype": str,
            "vocab_size": int, "bos_token_id": int, "hidden_act": str,
            "initializer_range": float, "use_cache": bool, "transformers_version": str,
            "attention_dropout": float}
    if arch == "llama":
        need.update({"attention_bias": bool, "mlp_bias": bool})
    else:
        need.update({"use_sliding_window": bool, "max_window_layers": int})
    for k, ty in need.items():
        if k not in cfg:
            fail(f"config.json: missing {k}")
        elif not isinstance(cfg[k], ty) or (ty is int and isinstance(cfg[k], bool)):
            fail(f"config.json: {k} = {cfg[k]!r} is not {ty.__name__}")
    for k in ("rope_scaling", "eos_token_id"):
        if k not in cfg:
            fail(f"config.json: missing {k}")
    if arch != "llama" and "sliding_window" not in cfg:
        fail("config.json: missing sliding_window")
    if cfg.get("architectures") != [ARCH_CLS[arch]] or cfg.get("model_type") != arch:
        fail(f"config.json: architectures/model_type {cfg.get('architectures')} {cfg.get('model_type')}")
    if cfg.get("torch_dtype") != TORCH[dtype]:
        fail(f"config.json: torch_dtype {cfg.get('torch_dtype')} for --dtype {dtype}")
    if cfg.get("hidden_act") != "silu":
        fail("config.json: hidden_act is not silu")
    if cfg["num_attention_heads"] % cfg["num_key_value_heads"]:
        fail("config.json: heads not a multiple of kv heads")
    rs = cfg.get("rope_scaling")
    if arch == "llama":
        if not rs or rs.get("rope_type") != "llama3":
            fail(f"config.json: llama rope_scaling {rs}")
        else:
            for k in ("factor", "low_freq_factor", "high_freq_factor",
                      "original_max_position_embeddings"):
                if k not in rs:
                    fail(f"config.json: rope_scaling lacks {k}")
    elif rs is not None:
        fail(f"config.json: {arch} rope_scaling {rs}")
    return cfg


def check_tokenizer(d, cfg, arch):
    with open(os.path.join(d, "tokenizer.json"), encoding="utf-8") as f:
        tj = json.load(f)
    with open(os.path.join(d, "tokenizer_config.json"), encoding="utf-8") as f:
        tc = json.load(f)
    with open(os.path.join(d, "generation_config.json")) as f:
        gc = json.load(f)
    with open(os.path.join(d, "special_tokens_map.json")) as f:
        json.load(f)
    added = {a["content"]: a["id"] for a in tj["added_tokens"]}
    # Hugging Face tokenizers renumbers added tokens in list order from the vocabulary size up:
    # ids must be sorted and contiguous from len(model.vocab), or they move when HF loads them
    want = len(tj["model"]["vocab"])
    for a in tj["added_tokens"]:
        if a["id"] != want:
            fail(f"tokenizer.json: added token {a['content']} has id {a['id']}, HF would give {want}")
            break
        want += 1
    if tj.get("post_processor") is None and arch == "llama":
        fail("tokenizer.json: no post_processor (Llama 3 prepends <|begin_of_text|>)")
    ids = list(tj["model"]["vocab"].values()) + list(added.values())
    n_tok = max(ids) + 1
    if cfg["vocab_size"] < n_tok:
        fail(f"vocab_size {cfg['vocab_size']} < tokenizer's {n_tok} ids")
    for k in ("chat_template", "model_max_length", "eos_token"):
        if k not in tc:
            fail(f"tokenizer_config.json: missing {k}")
    if tc.get("model_max_length") != cfg["max_position_embeddings"]:
        fail("tokenizer_config.json: model_max_length != max_position_embeddings")
    byid = {v: k for k, v in added.items()}
    eos_cfg = cfg["eos_token_id"] if isinstance(cfg["eos_token_id"], list) else [cfg["eos_token_id"]]
    eos_gen = gc["eos_token_id"] if isinstance(gc["eos_token_id"], list) else [gc["eos_token_id"]]
    if arch == "llama":
        want_bos, want_eos = "<|begin_of_text|>", ["<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"]
        for s in ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"):
            if s not in tc["chat_template"] and s not in ("<|eot_id|>",):
                fail(f"chat_template lacks {s}")
        if tc.get("bos_token") != want_bos:
            fail(f"tokenizer_config.json: bos_token {tc.get('bos_token')}")
        # specials appended right after cl100k's ids, in Llama 3.1's order
        base = added.get("<|begin_of_text|>")
        if base is None or added.get("<|eot_id|>") != base + 9 or \
                added.get("<|reserved_special_token_247|>") != base + 255:
            fail("llama specials not laid out as Llama 3.1's (begin_of_text+9 = eot_id ...)")
        if eos_gen != [added.get(s) for s in want_eos]:
            fail(f"generation_config eos {eos_gen}")
    else:
        want_bos, want_eos = "<|endoftext|>", ["<|im_end|>"]
        if eos_gen != [added["<|im_end|>"], added["<|endoftext|>"]]:
            fail(f"generation_config eos {eos_gen}")
        if "<|im_start|>" not in tc["chat_template"]:
            fail("chat_template lacks <|im_start|>")
    if byid.get(cfg["bos_token_id"]) != want_bos:
        fail(f"bos_token_id {cfg['bos_token_id']} is {byid.get(cfg['bos_token_id'])}")
    if [byid.get(i) for i in eos_cfg] != want_eos:
        fail(f"config eos_token_id {eos_cfg} are {[byid.get(i) for i in eos_cfg]}")
    for i in eos_gen:
        if i not in byid:
            fail(f"generation eos {i} is not a special token")


def check(d, arch, dtype, shards):
    cfg = check_config(d, arch, dtype)
    check_tokenizer(d, cfg, arch)
    tensors = load_tensors(d)
    exp = expected(cfg, arch)
    if set(exp) != set(tensors):
        fail(f"tensor names: missing {sorted(set(exp) - set(tensors))[:5]}, "
             f"extra {sorted(set(tensors) - set(exp))[:5]}")
    nfiles = len(set(t[2] for t in tensors.values()))
    if shards and nfiles != shards:
        fail(f"{nfiles} weight files, expected {shards}")
    H = cfg["hidden_size"]
    for k, t in sorted(tensors.items()):
        if k not in exp:
            continue
        if t[0] != ST_DTYPE[dtype]:
            fail(f"{k}: dtype {t[0]}")
        if t[1] != exp[k]:
            fail(f"{k}: shape {t[1]}, expected {exp[k]}")
            continue
        v = sample(t)
        if any(not math.isfinite(x) for x in v):
            fail(f"{k}: non-finite values")
            continue
        m, s = stats(v)
        n = len(v)
        if k.endswith("norm.weight"):
            mu, sd, what = 1.0, 0.1, "norm ~ 1 + 0.1 z"
        elif k.endswith(".bias"):
            mu, sd, what = 0.0, 0.1, "bias ~ 0.1 z"
        else:
            sd = 1 / math.sqrt(t[1][1])
            if k == "lm_head.weight" or (k == "model.embed_tokens.weight" and
                                         cfg["tie_word_embeddings"]):
                sd = 3 / math.sqrt(H)
            mu, what = 0.0, f"matrix std {sd:.4f}"
        # 5 standard errors on the mean, 10% + 5 standard errors on the standard deviation
        ok = abs(m - mu) < 5 * sd / math.sqrt(n) and \
            abs(s / sd - 1) < 0.1 + 5 / math.sqrt(2 * n)
        if not ok:
            fail(f"{k}: mean {m:.4f} std {s:.4f}, expected {what}")
    return cfg


def digests(d):
    out = {}
    for k, (dt, shape, fn, b, e) in load_tensors(d).items():
        h = hashlib.sha256()
        with open(fn, "rb") as f:
            f.seek(b)
            left = e - b
            while left:
                c = f.read(min(left, 1 << 22))
                h.update(c)
                left -= len(c)
        out[k] = (dt, shape, h.hexdigest())
    return out


def main():
    a = sys.argv[1:]
    if not a:
        print(__doc__)
        return 1
    if a[0] == "check":
        d = a[1]
        opts = dict(zip(a[2::2], a[3::2]))
        check(d, opts["--arch"], opts["--dtype"], int(opts.get("--shards", 0)))
    elif a[0] in ("same", "differ"):
        x, y = digests(a[1]), digests(a[2])
        if set(x) != set(y):
            fail(f"tensor sets differ: {set(x) ^ set(y)}")
        for k in sorted(set(x) & set(y)):
            if x[k][:2] != y[k][:2]:
                fail(f"{k}: dtype/shape differ")
            elif a[0] == "same" and x[k][2] != y[k][2]:
                fail(f"{k}: bytes differ")
            elif a[0] == "differ" and x[k][2] == y[k][2]:
                fail(f"{k}: identical bytes under another seed")
    else:
        print(__doc__)
        return 1
    if failures:
        print(f"{len(failures)} failure(s)")
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
