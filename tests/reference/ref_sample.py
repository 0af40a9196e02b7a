# SPDX-License-Identifier: Apache-2.0
"""Tests model/sample.c (through tests/reference/sample_draw) against distributions computed
with torch (softmax, topk, sort, cumsum): greedy == argmax with ties to the lowest id; for
temperature / top-k / top-p, no token outside the torch-kept set and a chi-square test of the
empirical frequencies over many counters; logprob == log_softmax of the raw logits;
determinism is checked inside sample_draw.

Run with Debian's /usr/bin/python3. Exit 0 pass, 1 fail, 77 skip.
  ref_sample.py --draw SAMPLE_DRAW [--seed N]
"""
import argparse
import math
import os
import subprocess
import sys
import tempfile
import time

try:
    import numpy as np
    import torch
except ImportError as e:
    print(f"SKIP: {e} (run with /usr/bin/python3; apt-get install python3-torch python3-numpy)")
    sys.exit(77)

V = 1000
N = 30000
Z_FAIL = 5.0  # Wilson-Hilferty z of the chi-square statistic; P(z > 5) ~ 3e-7 under H0


def reference_probs(logits, temperature, top_k, top_p):
    """The kept set and its renormalised probabilities, the way sample.h orders the steps."""
    z = logits / temperature
    probs = torch.softmax(z.double(), dim=-1)
    keep = torch.ones_like(probs, dtype=torch.bool)
    if 0 < top_k < len(z):
        idx = torch.sort(z, descending=True, stable=True).indices[:top_k]  # ties: lower id
        assert torch.equal(torch.sort(z[idx]).values, torch.sort(torch.topk(z, top_k).values).values)
        keep = torch.zeros_like(keep)
        keep[idx] = True
        probs = torch.where(keep, probs, torch.zeros_like(probs))
        probs = probs / probs.sum()
    boundary = 1.0
    if 0 < top_p < 1:
        sp, si = torch.sort(probs, descending=True, stable=True)
        cum = torch.cumsum(sp, dim=0)
        n_keep = int((cum < top_p).sum().item()) + 1  # smallest prefix with cum >= top_p
        boundary = abs(cum[n_keep - 1].item() - top_p)
        keep = torch.zeros_like(keep)
        keep[si[:n_keep]] = True
        probs = torch.where(keep, probs, torch.zeros_like(probs))
        probs = probs / probs.sum()
    return keep, probs, boundary


def chi_square_z(counts, probs, n):
    exp = probs * n
    big = exp >= 5
    stat = (((counts[big] - exp[big]) ** 2) / exp[big]).sum().item()
    df = int(big.sum().item()) - 1
    rest_e = exp[~big].sum().item()
    if rest_e > 0:
        rest_c = counts[~big].sum().item()
        stat += (rest_c - rest_e) ** 2 / max(rest_e, 1e-9)
        df += 1
    if df < 1:
        return 0.0, stat, df
    k = 2.0 / (9.0 * df)
    z = ((stat / df) ** (1.0 / 3.0) - (1.0 - k)) / math.sqrt(k)
    return z, stat, df


def draw(tool, work, logits, temperature, top_k, top_p, seed, n):
    lf = os.path.join(work, "logits.bin")
    tf = os.path.join(work, "tok.bin")
    pf = os.path.join(work, "lp.bin")
    logits.numpy().astype("<f4").tofile(lf)
    r = subprocess.run([tool, lf, repr(temperature), str(top_k), repr(top_p), str(seed), str(n),
                        tf, pf], capture_output=True, text=True)
    if r.returncode != 0:
        return None, None, f"sample_draw exited {r.returncode}: {r.stderr.strip()}"
    return (torch.from_numpy(np.fromfile(tf, dtype="<i4").astype(np.int64)),
            torch.from_numpy(np.fromfile(pf, dtype="<f4")), None)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--draw", required=True)
    ap.add_argument("--seed", type=int)
    a = ap.parse_args()
    seed = a.seed if a.seed is not None else int(time.time() * 1000) % (1 << 31)
    print(f"seed: {seed} (rerun with --seed {seed})")
    gen = torch.Generator().manual_seed(seed)
    ok = True

    with tempfile.TemporaryDirectory(prefix="offpath-sample-") as work:
        # greedy: argmax, ties to the lowest id (torch.argmax does not promise which tie wins,
        # so the tie case is built: the maximum placed at two ids)
        logits = torch.randn(V, generator=gen) * 3
        hi = int(torch.randint(V // 2, V, (1,), generator=gen).item())
        lo = int(torch.randint(0, V // 2, (1,), generator=gen).item())
        logits[hi] = logits[lo] = logits.max() + 1
        tok, lp, err = draw(a.draw, work, logits, 0.0, 0, 1.0, seed, 16)
        want_lp = torch.log_softmax(logits.double(), -1)[lo].item()
        if err or not bool((tok == lo).all()) or abs(lp[0].item() - want_lp) > 1e-5:
            print(f"FAIL greedy: {err or ''} got {tok[:4].tolist()}, want {lo} (tie with {hi})")
            ok = False
        else:
            print(f"ok   greedy: argmax {lo}, tie with {hi} resolved to the lower id")

        cases = [  # temperature, top_k, top_p, logit scale
            (1.0, 0, 1.0, 2.0),
            (0.7, 50, 1.0, 2.0),
            (1.3, 0, 0.9, 3.0),
            (1.0, 40, 0.8, 2.0),
            (2.0, 0, 0.95, 1.0),  # flat: the kept prefix is far beyond the first selection
            (0.5, 1, 1.0, 2.0),
        ]
        for temperature, top_k, top_p, scale in cases:
            tag = f"T={temperature} top_k={top_k} top_p={top_p}"
            logits = torch.randn(V, generator=gen) * scale
            logits[:10] = logits[10]  # some exact ties
            keep, probs, boundary = reference_probs(logits, temperature, top_k, top_p)
            s = int(torch.randint(0, 1 << 62, (1,), generator=gen).item())
            tok, lp, err = draw(a.draw, work, logits, temperature, top_k, top_p, s, N)
            if err:
                print(f"FAIL {tag}: {err}")
                ok = False
                continue
            counts = torch.bincount(tok, minlength=V).double()
            outside = int(counts[~keep].sum().item())
            if outside and boundary > 1e-6:
                print(f"FAIL {tag}: {outside} draws outside the kept set of {int(keep.sum())}")
                ok = False
                continue
            want_lp = torch.log_softmax(logits.double(), -1)[tok]
            lp_err = (lp.double() - want_lp).abs().max().item()
            z, stat, df = chi_square_z(counts, probs, N)
            good = z < Z_FAIL and lp_err < 1e-4
            print(f"{'ok  ' if good else 'FAIL'} {tag}: kept {int(keep.sum())}, chi2 {stat:.1f} "
                  f"df {df} (z {z:.2f}), max logprob err {lp_err:.1e}")
            ok &= good
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
