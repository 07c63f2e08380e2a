"""Chen induction-head model: one full-batch gradient step, the icl_jax library vs the official design.

Configuration (the official simplified model; docs/chen-theory.md#official-recipes): d=3, L=100, H=3
heads, D=2 (11 subsets in the official enumeration, 7 live), window "official" (head h sees offsets
h..h+H−1), w_+=3, w_−=0.1, c=a=0.01, 9000 training sequences (the first 9000 of a
10,000-sequence dataset; the official ``random_split`` is 9000/1000), full-batch plain SGD over
all groups (C, W, a) with learning rate 1 (the official joint "CWa" run). Both losses:
``official`` (``CrossEntropyLoss`` on the output probabilities: a second softmax) and
``prob_ce`` (the theory's cross-entropy of the output distribution, ε-floored as the library
does, ε=1e−3).

ours (jitted step)
  ``jax.jit(lambda p, b: p − lr·jax.grad(model.loss)(p, b, loss=...))`` with
  ``InductionModel(3, num_heads=3, max_degree=2, window="official", include_raw=True)`` on
  the Batch: the library's position-wise forward (banded copier over the K shifted copies of
  X̃ with a [L+1, K, H] softmax table, exact subset products, classifier at the query only).
  ``include_raw=True`` keeps the official 11 subsets (the 4 dead raw-token subsets only add
  c² to the normaliser Σc²), so ours and naive compute the same function; the 7-subset
  library default (``include_raw=False``) is timed too (official loss).

ours (engine)
  ``icl_jax.engine.train(loss, init, [Stage(steps, groups=("C","W","a"), lr)],
  FixedDataset(batch))``: the compiled ``lax.scan`` of optax SGD steps users run. Timed as
  whole ``train`` calls of ``--engine-steps`` steps after a warm-up call of the same program
  (compile excluded; the engine caches the program because the same objects are reused);
  ms/step = call wall time / steps (host overhead of the call included).

ours (window statistics; timed when ``icl_jax.models.induction_stats`` is importable)
  The simplified model's features depend only on each position's window of K = 2H−1 tokens,
  so ``model.loss`` also accepts the ``WindowStats`` of a batch (a similarity table over
  window codes, gathered per position). ``ours_stats_jit``: the jitted step on
  ``compress_window_stats(window_stats(batch))`` precomputed once (its cost reported
  separately; equal (window, token) pairs merged with counts). ``ours_stats_inline_jit``: the
  jitted step on the Batch with ``window_stats`` inside the step (no precompute).
  ``ours_stats_engine``: ``engine.train`` on ``FixedDataset(stats)``.

scanned steps (official loss only)
  ``naive_scan`` and ``ours_scan``: the same jitted SGD step iterated ``--engine-steps`` times
  in one jitted ``lax.scan`` (the engine's structure without optax or recording). Both
  implementations run faster per step inside a scan than as single jitted calls (XLA can
  hoist the parameter-independent work on the fixed batch out of the loop, and there is one
  host round-trip per call), so ``naive_scan`` is the like-for-like baseline of the engine.

naive (the official design, written here in JAX and jitted; nothing from icl_jax.models)
  Parameters as allocated by the official code: W [L, H] (only 2H−1 rows used), C [11] over
  the official subsets (0/1 vectors of length H+1, component 0 = raw token, ≤ D ones), a.
  Layer 1: per head a dense (L+1)×(L+1) logit matrix filled from W by indexing (the offset
  pattern is precomputed once, as the official constructor's Python loops do; the per-step
  fill, masking and softmax are dense), −inf outside the head's window, row softmax with
  the all-masked rows' NaN turned into 0 (as the official ``nan_to_num``), then the
  attention [H, L+1, L+1] multiplies X̃ for every sequence (B·H·(L+1)²·d multiply-adds), and
  each head's output is rescaled to unit norm: features for all L+1 positions. Selector +
  classifier as the official ``PolyKernelMultiHeadAttention``: per-component inner products
  of the query row with all L keys over the H+1 components (raw token + H heads), ReLU, the
  subset products as exp(Σ_c deg_c·log(ip_c + 1e−24)) (a [B·L, H+1] × [H+1, 11] matmul in log
  space), Σ_S c_S²·product / Σ_S c_S², softmax over keys of a·sim, output Σ_l σ_l x_l, then the
  loss on the probabilities (``CrossEntropyLoss`` = logsumexp(ŷ) − ŷ_y, or the ε-floored
  log-loss). Step: the same jitted plain-SGD lambda as ours.

Correctness: before timing, the loss and the gradients of C, W (the 2H−1 live rows; the other
rows' gradient must be exactly 0) and a of naive and ours (include_raw=True) are compared on
the training batch at the official init and at random parameters, for both losses (max
|difference| / max |reference| per parameter below ``--rtol``, default 1e−5). The naive is
also evaluated in float64 (``jax.enable_x64``): the float32 gradient of C of the naive
carries up to a ~1e−3 relative rounding error on the full batch (a mean over B·L terms
that nearly cancel, through exp/log products and a matmul), so a path passes a quantity
when it matches the float32 or the float64 naive to ``--rtol`` (``--rtol-grad-c``, default
1e−4, for the gradient of C: float32 summation orders of our paths differ by up to a few
1e−5 there).

Dataset generation: ours = ``jax.jit(lambda k: NGramTask(3, 100, (1, 2)).sample(k, 10000))``,
first call (trace + compile + run, timed first in the process) and steady state (median of
fresh-key calls) separately. Naive = the official ``NGramDataset`` design in numpy: a Python
loop over sequences, a Dirichlet draw per kernel row, and a Python loop over tokens with a
Python context-index loop and one ``Generator.choice(d, p=row)`` per token (the official
code draws a ``torch.distributions.Categorical`` per token; numpy's ``choice`` stands in for
it, torch is not installed), one-hot per sequence; timed on ``--naive-gen`` sequences and
**extrapolated linearly** to 10,000 (its cost is linear in the number of sequences).

Timing: one warm-up per path, then ``--rounds`` rounds timing every path in turn (3 calls
per round for the single-step paths, 10 for the window-statistics steps, one call of
``--engine-steps`` steps for the engine and the scans), so the drifts of a
shared machine hit every path alike; the median is reported (the best alongside). The CPU is
shared with other jobs: the load from other processes during each path's calls is recorded
(``contention``). FLOPs per step from XLA's cost analysis of the compiled steps. The profile
splits both forwards and gradients into layer 1 and selector/classifier. ``code`` records
the git HEAD, uncommitted files and hashes of the timed model files.

Full model (key ``full_model``; alone with ``--only full_model``): the official Appendix-B recipe
(``icl_jax.experiments.chen.recipes.FULL``: d=3, L=100, H=3, D=2, paper window M=3, Q/K/OV and
LayerNorm, self offset, 9000 training sequences, plain SGD at lr 1e−3 on every parameter, the
recipe's loss and labels: prob_ce, hard). One jitted full-batch SGD step
(``p − lr·jax.grad(model.loss)``) on the Batch (the position-wise forward, the reference) and on
its window statistics, timed in the same rounds: ``stats`` = ``model.window_stats(batch)``
uncompressed, as ``train_chen`` builds the training set once per seed inside the engine's
``CommonSamples``; ``stats_compressed`` = the same merged on the host (what the test set uses).
The statistics' one-off cost is reported apart. Check first: float32 loss and gradients of the
statistics paths vs the position-wise path at the official init and at random parameters
(relative error max|x − ref| / max|ref| per parameter <= ``--rtol``, ``--rtol-grad-c`` for C).
Timing as above: warm-up, then ``--rounds`` rounds (1 call per round for the position-wise step,
10 for the statistics steps), medians.

One JSON object goes to stdout (and to ``--out`` if given); progress to stderr.

Usage:
    python benchmarks/chen.py [--rounds 5] [--engine-steps 20] [--out benchmarks/results/chen_cpu_2core.json]
    python benchmarks/chen.py --quick      # toy size (256 training sequences), smoke test
    python benchmarks/chen.py --only full_model [--rounds 3]   # the full-model comparison alone (~1 min)
"""

import argparse
import itertools
import json
import os
import platform
import statistics
import sys
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)  # benchmarks/_measure.py
try:
    import icl_jax
except ImportError:  # run from a checkout without an install
    sys.path.insert(0, os.path.dirname(_HERE))
    import icl_jax

import jax
import jax.numpy as jnp
import numpy as np
from _measure import cost_flops, timed

from icl_jax.engine import FixedDataset, Stage, train
from icl_jax.losses import DEFAULT_EPS
from icl_jax.models.induction import InductionModel
from icl_jax.models.induction_layers import copier_features, selector_similarity

try:  # the sufficient-statistics fast path of the simplified model (optional: timed when present)
    from icl_jax.models.induction_stats import compress_window_stats, window_stats
except ImportError:
    compress_window_stats = window_stats = None

# Chen et al.'s common official settings (docs/chen-theory.md#official-recipes)
D_VOCAB, L, H, DEGREE, ALPHA, PARENTS = 3, 100, 3, 2, 0.1, (1, 2)
W_PLUS, W_MINUS, C_INIT, A_INIT = 3.0, 0.1, 0.01, 0.01
N_TOTAL, N_TRAIN, LR = 10_000, 9000, 1.0
LOSS_NAMES = ("official", "prob_ce")
GROUPS = ("C", "W", "a")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="toy size for a smoke test: 256 training sequences, official loss only, 1 round, no profile, "
                        "no scans / 7-subset / inline-statistics / statistics-engine paths")
    p.add_argument("--n-train", type=int, default=None, help=f"training sequences (default {N_TRAIN}; quick 256)")
    p.add_argument("--n-dataset", type=int, default=None,
                   help=f"sequences generated by the timed samplers (default {N_TOTAL}; quick 512)")
    p.add_argument("--rounds", type=int, default=None, help="timed rounds, every path once per round (default 5; quick 1)")
    p.add_argument("--engine-steps", type=int, default=None, help="steps per timed engine.train call (default 20; quick 3)")
    p.add_argument("--naive-gen", type=int, default=None,
                   help="sequences the naive Python generator is timed on (default 200; quick 20)")
    p.add_argument("--gen-reps", type=int, default=10, help="steady-state calls of our sampler")
    p.add_argument("--losses", default=None, help="comma-separated losses (default official,prob_ce; quick official)")
    p.add_argument("--rtol", type=float, default=1e-5, help="tolerance of the naive-vs-ours check")
    p.add_argument("--rtol-grad-c", type=float, default=1e-4,
                   help="tolerance of the check for the gradient of C (float32 cancellation)")
    p.add_argument("--no-profile", action="store_true", help="skip the layer-1 / selector profile")
    p.add_argument("--no-stats", action="store_true",
                   help="skip the window-statistics paths (icl_jax.models.induction_stats) even if available")
    p.add_argument("--only", choices=("full_model",), default=None,
                   help="run only this part: full_model = the Appendix-B full-model step, position-wise vs "
                        "window statistics (default rounds 3)")
    p.add_argument("--out", default=None, help="also write the JSON to this file")
    args = p.parse_args(argv)
    if args.only == "full_model" and args.rounds is None and not args.quick:
        args.rounds = 3
    defaults = (dict(n_train=256, n_dataset=512, rounds=1, engine_steps=3, naive_gen=20, losses="official")
                if args.quick else
                dict(n_train=N_TRAIN, n_dataset=N_TOTAL, rounds=5, engine_steps=20, naive_gen=200,
                     losses=",".join(LOSS_NAMES)))
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.quick:
        args.no_profile = True
    for name in ("n_train", "n_dataset", "rounds", "engine_steps", "naive_gen", "gen_reps"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.n_train > args.n_dataset:
        p.error("--n-train must be <= --n-dataset (the training set is the first n-train generated sequences)")
    args.losses = tuple(s.strip() for s in args.losses.split(",") if s.strip())
    if not args.losses or any(s not in LOSS_NAMES for s in args.losses):
        p.error(f"--losses: a comma-separated subset of {LOSS_NAMES}")
    return args


def log(msg):
    print(f"[chen-bench] {msg}", file=sys.stderr, flush=True)


TASK = icl_jax.NGramTask(D_VOCAB, L, PARENTS, alpha=ALPHA)
MODEL = InductionModel(D_VOCAB, num_heads=H, max_degree=DEGREE, window="official", include_raw=True)
MODEL_LIVE = InductionModel(D_VOCAB, num_heads=H, max_degree=DEGREE, window="official")  # 7 live subsets


# ---- naive: the official design -----------------------------------------------------------------------

N_POS = L + 1
# Official subset enumeration: 0/1 degree vectors over H+1 components (0 = raw token), lexicographic,
# at most D ones (PolyKernelMultiHeadAttention with max_individual_degree=1, low_degree=D).
NAIVE_DEGREES = np.array([b for b in itertools.product((0, 1), repeat=H + 1) if sum(b) <= DEGREE], np.float32)


def _naive_offset_pattern():
    """Constructor-time pattern (the official Python loops filling diagonals): for head h and
    entry (i, j) of the (L+1)×(L+1) matrix, the W row of offset i−j if it is in head h's
    window {h, ..., h+H−1} (1-indexed), else −1."""
    rows = np.full((H, N_POS, N_POS), -1, np.int64)
    for h in range(H):
        for j in range(H):
            off = h + j + 1
            i = np.arange(off, N_POS)
            rows[h, i, i - off] = off - 1
    return rows


NAIVE_ROWS = _naive_offset_pattern()
NAIVE_VALID = NAIVE_ROWS >= 0
NAIVE_HEAD = np.broadcast_to(np.arange(H)[:, None, None], NAIVE_ROWS.shape)


def naive_init():
    """Official allocation and init: W [L, H] = w_− with w_+ on the diagonal, C [11] = c, a = a."""
    w = np.full((L, H), W_MINUS, np.float32)
    w[np.arange(H), np.arange(H)] = W_PLUS
    return {"C": jnp.full((len(NAIVE_DEGREES),), C_INIT, jnp.float32), "W": jnp.asarray(w),
            "a": jnp.asarray(A_INIT, jnp.float32)}


def naive_layer1(w, x_tilde):
    """Dense RPE copier: [B, H, L+1, d] unit-norm head outputs for all L+1 positions."""
    # jnp.asarray: numpy index constants hit a jax cache that mixes int32/int64 across enable_x64 modes
    rows, head = jnp.asarray(np.maximum(NAIVE_ROWS, 0)), jnp.asarray(NAIVE_HEAD)
    logits = jnp.where(NAIVE_VALID, w[rows, head], -jnp.inf)  # [H, L+1, L+1], filled from W by indexing
    attn = jnp.nan_to_num(jax.nn.softmax(logits, axis=-1), nan=0.0)  # all-masked rows: NaN -> 0
    u = jnp.einsum("hij,bjd->bhid", attn, x_tilde)  # dense: B·H·(L+1)²·d
    return u / (jnp.linalg.norm(u, axis=-1, keepdims=True) + 1e-7)


def naive_probs(params, tokens_BxT):
    x_tilde = jnp.pad(jax.nn.one_hot(tokens_BxT, D_VOCAB, dtype=jnp.float32), ((0, 0), (0, 1), (0, 0)))
    v = naive_layer1(params["W"], x_tilde)
    comps = jnp.concatenate([x_tilde[:, None], v], axis=1)  # [B, H+1, L+1, d]: raw token, heads 1..H
    ip = jax.nn.relu(jnp.einsum("bcd,bcld->blc", comps[:, :, -1], comps[:, :, :-1]))  # query vs all L keys
    kernel = jnp.exp(jnp.log(ip + 1e-24) @ NAIVE_DEGREES.T)  # [B, L, 11]: Π_{c∈S} ip_c in log space
    c2 = jnp.square(params["C"])
    sim = kernel @ c2 / jnp.sum(c2)
    sigma = jax.nn.softmax(params["a"] * sim, axis=-1)
    return jnp.einsum("bl,bld->bd", sigma, x_tilde[:, :-1])


def naive_loss(params, batch, loss):
    probs = naive_probs(params, batch.tokens_BxT)
    y = batch.label_B[:, None]
    if loss == "official":  # torch CrossEntropyLoss applied to probabilities
        per = jax.nn.logsumexp(probs, axis=-1) - jnp.take_along_axis(probs, y, axis=1)[:, 0]
    else:
        eps = DEFAULT_EPS
        per = -jnp.log((jnp.take_along_axis(probs, y, axis=1)[:, 0] + eps) / (1.0 + D_VOCAB * eps))
    return jnp.mean(per)


def naive_python_dataset(n, seed=2024):
    """The official NGramDataset loop in numpy: one Categorical draw per token."""
    rng = np.random.default_rng(seed)
    n_ctx = len(PARENTS)
    xs, ys = [], []
    for _ in range(n):
        pi = np.zeros((D_VOCAB ** n_ctx, D_VOCAB))
        for r in range(pi.shape[0]):  # the official sample_transition loop over rows
            pi[r] = rng.dirichlet(np.full(D_VOCAB, ALPHA))
        seq = np.empty(L + 1, np.int64)
        seq[:n_ctx] = rng.choice(D_VOCAB, size=n_ctx)  # uniform initial tokens
        for i in range(n_ctx, L + 1):
            idx = 0
            for k, s in enumerate(seq[i - n_ctx:i][::-1]):  # official context_to_index
                idx += int(s) * D_VOCAB ** k
            seq[i] = rng.choice(D_VOCAB, p=pi[idx])
        xs.append(np.eye(D_VOCAB, dtype=np.float32)[seq[:L]])
        ys.append(seq[L])
    return xs, ys


# ---- ours -----------------------------------------------------------------------------------------------


def sgd_step(loss_fn):
    return jax.jit(lambda p, b: jax.tree.map(lambda x, g: x - LR * g, p, jax.grad(loss_fn)(p, b)))


def scanned_sgd(loss_fn, n_steps):
    """`n_steps` plain-SGD steps on a fixed batch in one jitted lax.scan."""
    def body(p, b):
        return jax.tree.map(lambda x, g: x - LR * g, p, jax.grad(loss_fn)(p, b))

    return jax.jit(lambda p, b: jax.lax.scan(lambda q, _: (body(q, b), None), p, None, length=n_steps)[0])


def ours_loss_fn(model, loss):
    return lambda p, b: model.loss(p, b, loss=loss)


def stats_inline_loss_fn(model, loss):
    """Window statistics computed inside the step from the Batch (no host precompute)."""
    return lambda p, b: model.loss(p, window_stats(b, model), loss=loss)


def ours_init(key, hparams):
    return MODEL.init(key, w_plus=W_PLUS, w_minus=W_MINUS, c_init=C_INIT, a_init=A_INIT)


# ---- helpers --------------------------------------------------------------------------------------------


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


NAIVE_F32_SANITY = 1e-2  # the float32 naive against its float64 self (sanity bound, not the check)


def check_against_naive(batch, losses, rtol, rtol_c, variants):
    """Naive vs ours: loss and gradients at the official init and at random parameters.

    ``variants`` maps a name to ``(loss_fn(model, loss) -> fn(params, data), data)``; "ours" is
    the position-wise model on the Batch. References: the naive model in float32 and in
    float64 (the exact function: the float32 rounding of either implementation shows up
    against it; the float32 naive's gradient of C, a sum over B·L nearly cancelling terms
    through exp/log products and a matmul, is off by up to ~1e−3 relative on the full
    batch). A path passes a quantity when it matches the float32 or the float64 naive to
    ``rtol`` (``rtol_c`` for the gradient of C); the float32 naive must match its float64
    self to ``NAIVE_F32_SANITY``."""
    k = jax.random.split(jax.random.key(7), 3)
    p_init = ours_init(None, {})
    p_rand = {"C": 0.5 * jax.random.normal(k[0], (MODEL.num_subsets,)),
              "W": p_init["W"] + jax.random.normal(k[1], p_init["W"].shape),
              "a": jnp.asarray(3.0, jnp.float32)}
    n_live = MODEL.max_offset
    fields = ("loss", "grad_C", "grad_W", "grad_a")

    def flat(value, grads):  # naive layout -> comparable numpy arrays (W: live rows only)
        return {"loss": np.asarray(value, np.float64), "grad_C": np.asarray(grads["C"], np.float64),
                "grad_W": np.asarray(grads["W"], np.float64)[:n_live], "grad_a": np.asarray(grads["a"], np.float64)}

    out = {}
    for loss in losses:
        naive_fn = jax.value_and_grad(lambda p, b, loss=loss: naive_loss(p, b, loss))
        vg_naive = jax.jit(naive_fn)
        with jax.enable_x64(True):
            vg_naive64 = jax.jit(naive_fn)
        vg_ours = {name: jax.jit(jax.value_and_grad(make(MODEL, loss))) for name, (make, _) in variants.items()}
        for pname, p in (("official_init", p_init), ("random", p_rand)):
            w_full = naive_init()["W"] if pname == "official_init" else jnp.zeros((L, H)).at[:n_live].set(p["W"])
            pn = {"C": p["C"], "W": w_full, "a": p["a"]}
            ln, gn = vg_naive(pn, batch)
            if not all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(gn)):
                raise AssertionError(f"naive gradient not finite ({loss}, {pname})")
            dead = float(jnp.max(jnp.abs(gn["W"][n_live:])))
            if dead != 0.0:
                raise AssertionError(f"naive gradient of the unused W rows is {dead}, expected exactly 0")
            with jax.enable_x64(True):
                p64 = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), pn)
                ref64 = flat(*vg_naive64(p64, batch))
            ref32 = flat(ln, gn)
            worst = max(rel_err(ref32[f], ref64[f]) for f in fields)
            if worst > NAIVE_F32_SANITY:
                raise AssertionError(f"naive float32 vs float64: relative error {worst} ({loss}, {pname})")
            row = {"loss_naive_f32": float(ln), "loss_naive_f64": float(ref64["loss"]),
                   "naive_f32_vs_f64": {f: rel_err(ref32[f], ref64[f]) for f in fields}}
            for name, (_, data) in variants.items():
                lo, go = vg_ours[name](p, data)
                if not all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(go)):
                    raise AssertionError(f"{name} gradient not finite ({loss}, {pname})")
                got = {"loss": np.asarray(lo, np.float64), "grad_C": np.asarray(go["C"], np.float64),
                       "grad_W": np.asarray(go["W"], np.float64), "grad_a": np.asarray(go["a"], np.float64)}
                vs32 = {f: rel_err(ref32[f], got[f]) for f in fields}
                vs64 = {f: rel_err(got[f], ref64[f]) for f in fields}
                ok = all(min(vs32[f], vs64[f]) <= (rtol_c if f == "grad_C" else rtol) for f in fields)
                row[name] = {"vs_naive_f32": vs32, "vs_naive_f64": vs64, "ok": bool(ok)}
                if not ok:
                    raise AssertionError(f"naive and {name} disagree ({loss}, {pname}): {row[name]}")
            out[f"{loss}/{pname}"] = row
    out["rtol"] = rtol
    out["rtol_grad_C"] = rtol_c
    out["what"] = ("relative error max|x − ref| / max|ref| per quantity (loss, gradients of C, W, a) on the training "
                   "batch; ours with include_raw=True (the official 11 subsets and normaliser); W compared on the "
                   "2H−1 live rows, the naive gradient of the other L−2H+1 rows is exactly 0 (asserted). Every ours "
                   "path must match the float32 or the float64 naive to rtol on every quantity (rtol_grad_C for the "
                   "gradient of C: a mean over B·L nearly cancelling terms, float32 rounding up to ~1e-3 relative in "
                   "the naive, a few 1e-5 in some of ours)")
    return out


def code_state():
    """git HEAD, uncommitted changes under icl_jax/, and hashes of the timed model files (the library
    may change between runs of this benchmark)."""
    import hashlib
    import subprocess

    root = os.path.dirname(_HERE)

    def git(*a):
        try:
            return subprocess.run(["git", *a], cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    status = git("status", "--porcelain", "--", "icl_jax", "benchmarks/chen.py")
    files = {}
    for rel in ("icl_jax/models/induction.py", "icl_jax/models/induction_layers.py", "icl_jax/models/induction_stats.py",
                "benchmarks/chen.py"):
        try:
            with open(os.path.join(root, rel), "rb") as f:
                files[rel] = hashlib.sha256(f.read()).hexdigest()[:16]
        except OSError:
            files[rel] = None
    return {"git_head": git("rev-parse", "HEAD"), "uncommitted": status.splitlines() if status else [],
            "sha256_16": files}


def median_of(f, reps=5):
    jax.block_until_ready(f())
    return statistics.median(timed(f).wall for _ in range(reps))


def profile(batch, p_ours, p_naive):
    """Forward and gradient of layer 1 and of the whole model, both implementations (ms, median of 5)."""
    tok = batch.tokens_BxT
    x_tilde = jnp.pad(jax.nn.one_hot(tok, D_VOCAB, dtype=jnp.float32), ((0, 0), (0, 1), (0, 0)))
    r = jax.random.normal(jax.random.key(5), (tok.shape[0], N_POS, H, D_VOCAB))
    rn = jnp.swapaxes(r, 1, 2)
    v = copier_features(p_ours, tok, MODEL)
    fns = {
        "ours_layer1_fwd": (jax.jit(lambda p: copier_features(p, tok, MODEL)), p_ours),
        "ours_layer1_grad_W": (jax.jit(jax.grad(lambda p: jnp.sum(r * copier_features(p, tok, MODEL)))), p_ours),
        "ours_selector_fwd": (jax.jit(lambda p, v: selector_similarity(p, v, tok, MODEL)), p_ours, v),
        "ours_selector_grad_C_v": (jax.jit(jax.grad(lambda p, v: jnp.sum(selector_similarity(p, v, tok, MODEL)),
                                                    argnums=(0, 1))), p_ours, v),
        "ours_model_fwd": (jax.jit(lambda p: MODEL.apply(p, tok)), p_ours),
        "naive_layer1_fwd": (jax.jit(lambda p: naive_layer1(p["W"], x_tilde)), p_naive),
        "naive_layer1_grad_W": (jax.jit(jax.grad(lambda p: jnp.sum(rn * naive_layer1(p["W"], x_tilde)))), p_naive),
        "naive_model_fwd": (jax.jit(lambda p: naive_probs(p, tok)), p_naive),
    }
    out = {}
    for name, (f, *a) in fns.items():
        log(f"profile: {name} ...")
        out[name + "_ms"] = median_of(lambda f=f, a=a: f(*a)) * 1e3
    out["what"] = ("ms per jitted call, median of 5; layer-1 gradients of Σ r·v with fixed random r; the selector "
                   "gradient is taken w.r.t. C and the head features v")
    return out


# ---- the Appendix-B full model: position-wise vs window statistics --------------------------------------


def full_model_recipe():
    """The official full-model recipe (``chen-full-model``): config, model, task and the
    training loss of ``train_chen`` (the recipe's loss, labels and ε)."""
    from icl_jax.experiments.chen.common import _loss_kw, chen_model, chen_task
    from icl_jax.experiments.chen.recipes import FULL

    return FULL, chen_model(FULL), chen_task(FULL), _loss_kw(FULL)


def full_random_params(model, key):
    """float32 parameters away from the official init: random W, C, a, non-identity and
    non-symmetric Q/K/OV, γ ≈ 1, β ≈ 0 (moderate scales: the classifier softmax stays unsaturated)."""
    p0 = model.init()
    keys = dict(zip(sorted(p0), jax.random.split(key, len(p0))))
    noise = {k: jax.random.normal(keys[k], p0[k].shape) for k in p0}
    return {"W": p0["W"] + 0.5 * noise["W"], "C": 0.5 * noise["C"], "a": jnp.asarray(2.0) + 0.5 * noise["a"],
            "Q": 0.5 * noise["Q"], "K": 0.5 * noise["K"], "OV": 0.5 * noise["OV"],
            "ln_scale": 1.0 + 0.3 * noise["ln_scale"], "ln_bias": 0.3 * noise["ln_bias"]}


def check_full_model(model, loss_kw, batch, inputs, rtol, rtol_c):
    """float32 loss and gradients of every parameter: each statistics input of ``inputs`` vs the
    position-wise path on ``batch``, at the official init and at random parameters. References:
    the position-wise path in float32 and in float64 (the exact function; float32 rounding of
    either path shows against it). A path passes a quantity when it matches either reference to
    ``rtol`` (``rtol_c`` for the gradient of C), as :func:`check_against_naive`."""
    loss_fn = jax.value_and_grad(lambda p, b: model.loss(p, b, **loss_kw))
    vg = jax.jit(loss_fn)
    with jax.enable_x64(True):
        vg64 = jax.jit(loss_fn)
    out = {}
    for pname, p in (("official_init", model.init()), ("random", full_random_params(model, jax.random.key(11)))):
        l32, g32 = vg(p, batch)
        with jax.enable_x64(True):
            l64, g64 = vg64(jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), p), batch)
            l64, g64 = np.asarray(l64), jax.tree.map(np.asarray, g64)

        def errs(lo, go, ref_l, ref_g):
            return {"loss": rel_err(lo, ref_l), **{f"grad_{k}": rel_err(go[k], ref_g[k]) for k in sorted(ref_g)}}

        row = {"loss_position_wise_f32": float(l32), "loss_position_wise_f64": float(l64),
               "position_wise_f32_vs_f64": errs(l32, g32, l64, g64)}
        for name, data in inputs.items():
            lo, go = vg(p, data)
            if not all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(go)):
                raise AssertionError(f"full model, {name}: gradient not finite ({pname})")
            vs32, vs64 = errs(lo, go, l32, g32), errs(lo, go, l64, g64)
            ok = all(min(vs32[k], vs64[k]) <= (rtol_c if k == "grad_C" else rtol) for k in vs32)
            row[name] = {"vs_position_wise_f32": vs32, "vs_position_wise_f64": vs64, "ok": bool(ok)}
            if not ok:
                raise AssertionError(f"full model: position-wise and {name} disagree ({pname}): {row[name]}")
        out[pname] = row
    out["rtol"], out["rtol_grad_C"] = rtol, rtol_c
    out["what"] = ("relative error max|x − ref| / max|ref| of the loss and of the gradient of every parameter on the "
                   "training batch, float32 statistics paths vs the position-wise path in float32 and in float64; a "
                   "path must match either reference to rtol on every quantity (rtol_grad_C for the gradient of C)")
    return out


def full_model_benchmark(args):
    """One full-batch SGD step of the official full-model recipe: position-wise forward vs window
    statistics (uncompressed as train_chen's training set, and compressed), timed in the same rounds."""
    from icl_jax.experiments.chen.common import uses_window_stats

    config, model, task, loss_kw = full_model_recipe()
    lr = config.stage_lrs[0]
    if config.stage_groups != ("all",) or len(config.stage_lrs) != 1:
        raise AssertionError(f"the FULL recipe changed: stages {config.stage_groups}, lrs {config.stage_lrs}")
    n = args.n_train
    log(f"full model: {n} training sequences of the FULL recipe's task ...")
    batch = jax.block_until_ready(jax.jit(lambda k: task.sample(k, n))(jax.random.key(config.seed)))
    t_raw = timed(lambda: model.window_stats(batch))
    t_cmp = timed(lambda: model.window_stats(batch, compress=True))
    inputs = {"stats": t_raw.result, "stats_compressed": t_cmp.result}
    log("full model: check (float32 loss and gradients, statistics vs position-wise) ...")
    check = check_full_model(model, loss_kw, batch, inputs, args.rtol, args.rtol_grad_c)

    step = jax.jit(lambda p, b: jax.tree.map(lambda x, g: x - lr * g, p,
                                             jax.grad(lambda q: model.loss(q, b, **loss_kw))(p)))
    p0 = model.init()
    paths = {"position_wise": (batch, 1), "stats": (inputs["stats"], 10),
             "stats_compressed": (inputs["stats_compressed"], 10)}  # (data, calls per round)
    compiled, compile_s, flops = {}, {}, {}
    for name, (data, _) in paths.items():
        log(f"full model: compile {name} ...")
        t0 = time.perf_counter()
        compiled[name] = step.lower(p0, data).compile()
        compile_s[name] = time.perf_counter() - t0
        flops[name] = cost_flops(compiled[name])
    calls = {name: (lambda c=compiled[name], d=data: c(p0, d)) for name, (data, _) in paths.items()}
    first = {name: timed(call).wall for name, call in calls.items()}  # warm-up
    walls = {name: [] for name in paths}
    other = {name: [] for name in paths}
    for r in range(args.rounds):
        log(f"full model: round {r + 1}/{args.rounds} ...")
        for name, (_, n_calls) in paths.items():
            for _ in range(n_calls):
                t = timed(calls[name])
                walls[name].append(t.wall)
                if t.other is not None:
                    other[name].append(t.other)
    ms = 1e3
    rows = {name: {"ms_per_step_median": statistics.median(w) * ms, "ms_per_step_best": min(w) * ms,
                   "timed_calls": len(w), "warmup_call_s": first[name], "compile_s": compile_s[name],
                   "flops": flops[name],
                   "other_processes_cores_busy_median": statistics.median(other[name]) if other[name] else None}
            for name, w in walls.items()}
    ref = rows["position_wise"]["ms_per_step_median"]
    speedup = {f"position_wise_over_{name}": ref / rows[name]["ms_per_step_median"]
               for name in ("stats", "stats_compressed")}
    return {
        "what": "one jitted full-batch plain-SGD step (all parameters) of the official Appendix-B full-model recipe: "
                "the position-wise forward (reference) vs window statistics, timed in the same rounds",
        "config": {"recipe": "icl_jax.experiments.chen.recipes.FULL (chen-full-model)", "model": repr(model),
                   "n_train": n, "seq_len": task.seq_len, "lr": lr, "loss": loss_kw, "dtype": "float32",
                   "uses_window_stats": bool(uses_window_stats(model)),
                   "step": "jax.jit(lambda p, b: tree_map(x - lr*g, p, jax.grad(model.loss)(p, b, **loss_kw)))",
                   "stats": "model.window_stats(batch): uncompressed, P = L entries per sequence, as train_chen's "
                            "training set (built once per seed in the engine's CommonSamples)",
                   "stats_compressed": "model.window_stats(batch, compress=True): equal (code, token) entries merged "
                                       "on the host (as train_chen's test set)",
                   "rounds": args.rounds, "calls_per_round": {name: c for name, (_, c) in paths.items()}},
        "window_stats": {"window_stats_s": t_raw.wall, "window_stats_compressed_s": t_cmp.wall,
                         "entries_per_sequence_raw": int(inputs["stats"].code_BxP.shape[1]),
                         "entries_per_sequence_compressed": int(inputs["stats_compressed"].code_BxP.shape[1]),
                         "what": "once per fixed dataset: window_stats (eager), and window_stats + compression (host) for the "
                                 "compressed form; not in the per-step times"},
        "check": check,
        "steps": rows,
        "speedup": speedup,
        "target": {"what": "position-wise ms/step / stats ms/step (the training set as train_chen builds it), medians",
                   "min": 30.0, "value": speedup["position_wise_over_stats"],
                   "met": bool(speedup["position_wise_over_stats"] >= 30.0)},
    }


def machine_info(loadavg_start):
    dev = jax.devices()[0]
    return {
        "backend": jax.default_backend(), "device": str(dev), "devices": [str(d) for d in jax.devices()],
        "cpu_count": os.cpu_count(), "xla_flags": os.environ.get("XLA_FLAGS", ""), "jax": jax.__version__,
        "python": platform.python_version(), "processor": platform.processor() or platform.machine(),
        "loadavg_start": list(loadavg_start), "loadavg_end": list(os.getloadavg()),
    }


def emit(out, path):
    text = json.dumps(out, indent=2)
    print(text)
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            f.write(text + "\n")


def log_full_model(fm):
    s = fm["steps"]
    log(f"full model: position-wise {s['position_wise']['ms_per_step_median']:.1f} ms/step, stats "
        f"{s['stats']['ms_per_step_median']:.2f} ms/step ({fm['speedup']['position_wise_over_stats']:.1f}x), "
        f"compressed {s['stats_compressed']['ms_per_step_median']:.2f} ms/step "
        f"({fm['speedup']['position_wise_over_stats_compressed']:.1f}x); target >= 30x: "
        f"{'met' if fm['target']['met'] else 'NOT met'}")


# ---- main -----------------------------------------------------------------------------------------------


def main(args):
    t_start = time.perf_counter()
    loadavg_start = os.getloadavg()
    code_start = code_state()
    if args.only == "full_model":
        fm = full_model_benchmark(args)
        out = {"benchmark": "Chen Appendix-B full model, full-batch gradient step: position-wise vs window statistics",
               "argv": sys.argv[1:], "full_model": fm,
               "code": {**code_start, "changed_during_run": code_state() != code_start},
               "machine": machine_info(loadavg_start), "total_benchmark_s": time.perf_counter() - t_start}
        emit(out, args.out)
        log_full_model(fm)
        return
    dev = jax.devices()[0]
    log(f"backend {jax.default_backend()}, device {dev}, n_train {args.n_train}, losses {args.losses}")
    ms = 1e3

    # -- dataset generation (first in the process, so the first call includes tracing + compile) -------------
    n_gen = args.n_dataset
    gen = jax.jit(lambda key: TASK.sample(key, n_gen))
    log(f"our sampler, {n_gen} sequences: first call (compile + run) ...")
    first_gen = timed(lambda: gen(jax.random.key(2024)))
    data = first_gen.result
    steady = [timed(lambda i=i: gen(jax.random.key(3000 + i))).wall for i in range(args.gen_reps)]
    log(f"naive Python generator on {args.naive_gen} sequences ...")
    naive_gen_walls = []
    for rep in range(3):
        t0 = time.perf_counter()
        naive_python_dataset(args.naive_gen, seed=2024 + rep)
        naive_gen_walls.append(time.perf_counter() - t0)
    naive_gen_s = statistics.median(naive_gen_walls)
    naive_gen_extrap = naive_gen_s / args.naive_gen * n_gen
    dataset = {
        "n_sequences": n_gen,
        "ours": {"first_call_s": first_gen.wall, "steady_ms_median": statistics.median(steady) * ms,
                 "steady_ms_best": min(steady) * ms, "steady_calls": len(steady),
                 "what": f"jax.jit(lambda k: NGramTask(3, 100, (1, 2)).sample(k, {n_gen})), block_until_ready"},
        "naive_python": {"timed_sequences": args.naive_gen, "timed_s_median_of_3": naive_gen_s,
                         "us_per_sequence": naive_gen_s / args.naive_gen * 1e6,
                         f"extrapolated_s_for_{n_gen}": naive_gen_extrap, "extrapolated": True,
                         "what": "official NGramDataset loop in numpy: per-row Dirichlet, per-token Python "
                                 "context index + Generator.choice(d, p=row), one-hot per sequence; time on "
                                 f"{args.naive_gen} sequences scaled linearly to {n_gen}"},
    }
    dataset["naive_over_ours_steady"] = naive_gen_extrap / (statistics.median(steady))
    dataset["naive_over_ours_first_call"] = naive_gen_extrap / first_gen.wall

    batch = jax.tree.map(lambda v: v[:args.n_train], data)
    batch = jax.block_until_ready(jax.device_put(batch))

    # -- sufficient-statistics inputs of the simplified model (if the library has them) -------------------------
    stats_info, stats = None, None
    if window_stats is not None and not args.no_stats:
        log("window statistics of the training set (window_stats + compress_window_stats) ...")
        t_raw = timed(lambda: window_stats(batch, MODEL))
        t_cmp = timed(lambda: compress_window_stats(t_raw.result))
        stats = t_cmp.result
        stats_info = {"window_stats_s": t_raw.wall, "compress_window_stats_s": t_cmp.wall,
                      "entries_per_sequence_compressed": int(stats.code_BxP.shape[1]),
                      "entries_per_sequence_raw": int(t_raw.result.code_BxP.shape[1]),
                      "what": "once per fixed dataset: window_stats (eager, device) then compress_window_stats "
                              "(host numpy); not included in the per-step times"}
    elif window_stats is None:
        stats_info = {"skipped": "icl_jax.models.induction_stats not importable"}

    # -- correctness -------------------------------------------------------------------------------------------
    variants = {"ours": (ours_loss_fn, batch)}
    if stats is not None:
        variants["ours_stats"] = (ours_loss_fn, stats)
        if not args.quick:
            variants["ours_stats_inline"] = (stats_inline_loss_fn, batch)
    log(f"check: naive (float32 and float64) vs {', '.join(variants)}: loss and gradients ...")
    check = check_against_naive(batch, args.losses, args.rtol, args.rtol_grad_c, variants)

    # -- compile every step path, FLOPs ------------------------------------------------------------------------
    p_ours, p_live, p_naive = ours_init(None, {}), MODEL_LIVE.init(
        w_plus=W_PLUS, w_minus=W_MINUS, c_init=C_INIT, a_init=A_INIT), naive_init()
    compiled_paths, flops = {}, {}  # name -> (compiled, params, data, steps per call, calls per round, compile s)

    def compile_path(name, step_fn, p, data, n_steps, n_calls):
        log(f"compile {name} ...")
        t0 = time.perf_counter()
        compiled = step_fn.lower(p, data).compile()
        compiled_paths[name] = (compiled, p, data, n_steps, n_calls, time.perf_counter() - t0)
        if n_steps == 1:
            flops[name] = cost_flops(compiled)

    fast_calls = 10  # calls per round for the ~10 ms paths
    for loss in args.losses:
        compile_path(f"ours_jit/{loss}", sgd_step(ours_loss_fn(MODEL, loss)), p_ours, batch, 1, 3)
        compile_path(f"naive/{loss}", sgd_step(lambda q, b, loss=loss: naive_loss(q, b, loss)), p_naive, batch, 1, 3)
        if stats is not None:
            compile_path(f"ours_stats_jit/{loss}", sgd_step(ours_loss_fn(MODEL, loss)), p_ours, stats, 1, fast_calls)
            if not args.quick:
                compile_path(f"ours_stats_inline_jit/{loss}", sgd_step(stats_inline_loss_fn(MODEL, loss)), p_ours,
                             batch, 1, fast_calls)
    if "official" in args.losses and not args.quick:
        compile_path("ours_jit_live7/official", sgd_step(ours_loss_fn(MODEL_LIVE, "official")), p_live, batch, 1, 3)
        n = args.engine_steps
        compile_path("ours_scan/official", scanned_sgd(ours_loss_fn(MODEL, "official"), n), p_ours, batch, n, 1)
        compile_path("naive_scan/official", scanned_sgd(lambda q, b: naive_loss(q, b, "official"), n), p_naive,
                     batch, n, 1)

    # -- paths --------------------------------------------------------------------------------------------------
    engine_stages = (Stage(steps=args.engine_steps, groups=GROUPS, learning_rate=LR),)
    engine_data = {"ours_engine": FixedDataset(batch)}
    if stats is not None and not args.quick:
        engine_data["ours_stats_engine"] = FixedDataset(stats)
    engine_losses = {loss: ours_loss_fn(MODEL, loss) for loss in args.losses}  # one object per loss: cached program

    def engine_call(kind, loss):
        return lambda: train(engine_losses[loss], ours_init, engine_stages, engine_data[kind], seed=0, progress=False)

    plan = {}  # name -> (call, steps per call, calls per round)
    for name, (compiled, p, data_, n_steps, n_calls, _) in compiled_paths.items():
        plan[name] = (lambda c=compiled, p=p, d=data_: c(p, d), n_steps, n_calls)
    for kind in engine_data:
        for loss in args.losses:
            plan[f"{kind}/{loss}"] = (engine_call(kind, loss), args.engine_steps, 1)

    first = {}
    for name, (call, _, _) in plan.items():
        log(f"{name}: warm-up ...")
        first[name] = timed(call).wall
    walls = {name: [] for name in plan}
    other = {name: [] for name in plan}
    results = {}
    for r in range(args.rounds):
        log(f"round {r + 1}/{args.rounds} ...")
        for name, (call, n_steps, n_calls) in plan.items():
            for _ in range(n_calls):
                t = timed(call)
                walls[name].append(t.wall / n_steps)
                if t.other is not None:
                    other[name].append(t.other)
                results[name] = t.result

    def summary(name):
        w = walls[name]
        _, n_steps, _ = plan[name]
        row = {"ms_per_step_median": statistics.median(w) * ms, "ms_per_step_best": min(w) * ms,
               "timed_calls": len(w), "steps_per_call": n_steps, "warmup_call_s": first[name]}
        if name in compiled_paths:
            row["compile_s"] = compiled_paths[name][5]
        if "engine" in name:
            row["final_loss"] = float(results[name].final_loss)
        return row

    ours, naive = {}, {}
    for name in plan:
        group, loss = name.split("/")
        (naive if group.startswith("naive") else ours).setdefault(group, {})[loss] = summary(name)
    speedup = {}
    for loss in args.losses:
        nv = naive["naive"][loss]["ms_per_step_median"]
        for group, rows in ours.items():
            if loss in rows and group != "ours_scan":
                speedup[f"naive_over_{group}/{loss}"] = nv / rows[loss]["ms_per_step_median"]
    if "naive_scan" in naive:
        ns = naive["naive_scan"]["official"]["ms_per_step_median"]
        for group in ("ours_scan", "ours_engine", "ours_stats_engine"):
            if group in ours:
                speedup[f"naive_scan_over_{group}/official"] = ns / ours[group]["official"]["ms_per_step_median"]
    target_loss = "official" if "official" in args.losses else args.losses[0]
    target_value = speedup[f"naive_over_ours_jit/{target_loss}"]
    target = {"what": f"naive ms/step / ours (jitted step on the Batch, include_raw=True) ms/step, loss={target_loss}, "
                      "medians (the issue's definition of ours)",
              "min": 50.0, "value": target_value, "met": bool(target_value >= 50.0)}
    for group in ("ours_stats_jit", "ours_stats_inline_jit"):
        key = f"naive_over_{group}/{target_loss}"
        if key in speedup:
            target[group] = {"value": speedup[key], "met": bool(speedup[key] >= 50.0)}
    target["best_ratio_any_comparison"] = max(speedup.values())
    target["met_by_any_ours_path_vs_naive_jit"] = bool(
        max(v for k, v in speedup.items() if k.startswith("naive_over_") and k.endswith(target_loss)) >= 50.0)

    prof = None if args.no_profile else profile(batch, p_ours, p_naive)
    fl = {k: v for k, v in flops.items()}
    for group in ("ours_jit", "ours_stats_jit", "ours_stats_inline_jit"):
        if fl.get(f"{group}/official") and fl.get("naive/official"):
            fl[f"naive_over_{group}/official"] = fl["naive/official"] / fl[f"{group}/official"]
    fl["covers"] = "one compiled SGD step (forward + backward + update) on the full training batch, XLA cost analysis"

    contention = {name: {"other_processes_cores_busy_median": statistics.median(o) if o else None,
                         "other_processes_cores_busy_max": max(o) if o else None}
                  for name, o in other.items()}
    out = {
        "benchmark": "Chen induction-head model, full-batch gradient step: icl_jax vs the official design",
        "config": {
            "vocab_size": D_VOCAB, "seq_len": L, "parents": list(PARENTS), "alpha": ALPHA, "num_heads": H,
            "max_degree": DEGREE, "window": "official", "subsets_official": len(NAIVE_DEGREES),
            "subsets_live": MODEL_LIVE.num_subsets, "w_plus": W_PLUS, "w_minus": W_MINUS, "c_init": C_INIT,
            "a_init": A_INIT, "n_train": args.n_train, "n_dataset": n_gen, "lr": LR, "groups": list(GROUPS),
            "losses": list(args.losses), "labels": "hard (sampled x_{L+1}), as the official code",
            "prob_ce_eps": DEFAULT_EPS,
            "ours_timed_model": "InductionModel(3, num_heads=3, max_degree=2, window='official', include_raw=True)",
            "ours_jit": "jax.jit(lambda p, b: tree_map(x - lr*g, p, jax.grad(model.loss)(p, b, loss=loss)))",
            "ours_engine": f"engine.train(loss, init, [Stage({args.engine_steps}, groups=('C','W','a'), lr=1)], "
                           "FixedDataset(batch)); ms/step = call wall / steps",
            "ours_stats_jit": "the same jitted step with model.loss(p, stats): stats = "
                              "compress_window_stats(window_stats(batch, model)) precomputed once (host)",
            "ours_stats_inline_jit": "the same jitted step with model.loss(p, window_stats(b, model)) on "
                                     "the Batch: statistics computed inside every step, no precompute",
            "ours_stats_engine": "engine.train as ours_engine with FixedDataset(stats)",
            "scans": "ours_scan / naive_scan: the jitted SGD step iterated engine_steps times in one jitted lax.scan",
            "naive": "official design in JAX, jitted: dense (L+1)^2 RPE softmax per head from W [L,H] by indexing, "
                     "attention x X~ for every sequence, unit norm, all L+1 positions; 11 official subsets incl. "
                     "raw component 0, products as exp(deg . log(ip + 1e-24)), / sum c^2, softmax(a sim), "
                     "sum sigma_l x_l, loss on probabilities",
            "argv": sys.argv[1:], "quick": args.quick, "rounds": args.rounds, "engine_steps": args.engine_steps,
            "timing": "warm-up per path, then rounds timing every path in turn (3 calls per round for single steps, 10 "
                      "for the window-statistics steps, "
                      "1 call of engine_steps steps for the engine and the scans); median reported, best alongside; "
                      "shared CPU",
        },
        "check": check,
        "ours": ours,
        "naive": naive,
        "speedup": speedup,
        "target": target,
        "dataset": dataset,
        "window_stats": stats_info,
        "flops": fl,
        "profile": prof,
        "contention": contention,
    }
    log("full model (Appendix B): position-wise vs window statistics ...")
    out["full_model"] = full_model_benchmark(args)
    out["code"] = {**code_start, "changed_during_run": code_state() != code_start}
    out["machine"] = machine_info(loadavg_start)
    out["total_benchmark_s"] = time.perf_counter() - t_start
    emit(out, args.out)
    log_full_model(out["full_model"])
    for loss in args.losses:
        rows = {**{g: r[loss] for g, r in ours.items() if loss in r}, **{g: r[loss] for g, r in naive.items() if loss in r}}
        log(f"{loss}: " + ", ".join(f"{g} {r['ms_per_step_median']:.1f}" for g, r in rows.items()) + " ms/step")
        log(f"{loss}: " + ", ".join(f"{k.split('/')[0]} {v:.2f}x" for k, v in speedup.items() if k.endswith(loss)))
    log(f"dataset {n_gen}: ours first {first_gen.wall:.2f} s, steady {dataset['ours']['steady_ms_median']:.1f} ms; "
        f"naive Python {naive_gen_extrap:.1f} s (extrapolated); target >= 50x: "
        f"{'met' if target['met'] else 'NOT met'} ({target_value:.2f}x); {out['total_benchmark_s']:.0f} s")


if __name__ == "__main__":
    main(parse_args())
