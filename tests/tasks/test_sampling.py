"""The batched scan sampler: agreement with slow per-sequence references, statistics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from icl_jax import NGramTask, chen_bigram_task, dag_task, sample_dirichlet, stationary_distribution, tree_task
from icl_jax.tasks.graphs import random_tree_graph
from icl_jax.tasks.sampling import token_uniforms
from icl_jax.tasks.tasks import TreeTask

P_REJECT = 1e-6  # see test_priors: fixed seeds, null rejection probability 1e-6


# ------------------------------------------------------------ slow references (numpy)
class _Draw:
    """Inverse-CDF draws from given uniforms, flagging draws within 1e-5 of a boundary
    (where float32 and float64 cumulative sums may legitimately disagree)."""

    def __init__(self, uniforms):
        self.u = uniforms
        self.ambiguous = False

    def __call__(self, i, p):
        cdf = np.cumsum(np.asarray(p, np.float64))[:-1]
        u = float(self.u[i])
        if np.any(np.abs(cdf - u) < 1e-5):
            self.ambiguous = True
        return int(np.searchsorted(cdf, u, side="right"))


def _reference_tree(task, kernels, u):
    """The tree task (docs/tasks.md#tree-task) step by step for one sequence."""
    dag, s, pi = task.graph.dag_array, task.vocab_size, kernels["pi"]
    mu = np.asarray(stationary_distribution(jnp.asarray(pi)), np.float64)
    draw, x = _Draw(u), []
    for i, p in enumerate(dag):
        x.append(draw(i, mu if p < 0 else pi[x[p]]))
    x.append(draw(len(dag), np.full(s, 1 / s)))  # uniform query
    x.append(draw(len(dag) + 1, pi[x[-1]]))  # target
    return x, pi[x[-2]], draw.ambiguous


def _reference_dag(task, kernels, u):
    s, draw, x = task.vocab_size, _Draw(u), []
    for i, ps in enumerate(task.graph.parents):
        if not ps:
            p = kernels["root"] if task.roots == "official" else np.full(s, 1 / s)
        else:
            row = sum(x[q] * s ** (len(ps) - 1 - j) for j, q in enumerate(ps))
            p = kernels[f"pi_{len(ps)}"][row]
        x.append(draw(i, p))
    return x, p, draw.ambiguous


def _window_law_numpy(pi, d, offs):
    """Joint law of (x_0, ..., x_{K-1}) under stationarity, by an eigen-solve of the
    window chain built with explicit loops (independent of the library's GTH code)."""
    k = max(offs)
    states = list(np.ndindex(*(d,) * k))  # (x_{i-K}, ..., x_{i-1}), oldest first
    index = {st: j for j, st in enumerate(states)}
    trans = np.zeros((len(states), len(states)))
    for st in states:
        ctx = [st[k - o] for o in offs]  # x_{i-o}
        row = sum(c * d ** (len(offs) - 1 - j) for j, c in enumerate(ctx))
        for e in range(d):
            trans[index[st], index[st[1:] + (e,)]] += pi[row][e]
    vals, vecs = np.linalg.eig(trans.T)
    mu = np.real(vecs[:, np.argmin(np.abs(vals - 1))])
    return (mu / mu.sum()).reshape((d,) * k)  # axes x_0, ..., x_{K-1}


def _reference_ngram(task, kernels, u):
    d, offs, draw, x, pi = task.vocab_size, task.parent_offsets, _Draw(u), [], np.asarray(kernels["pi"], np.float64)
    window = _window_law_numpy(pi, d, offs) if task.init == "stationary" else None
    for i in range(task.seq_len + 1):
        if task.query == "uniform" and i == task.seq_len - 1:
            p = np.full(d, 1 / d)
        elif i < max(offs) and window is None:
            p = np.full(d, 1 / d)
        elif i < max(offs):
            joint = window.sum(axis=tuple(range(i + 1, max(offs))))[tuple(x)]
            p = joint / joint.sum()
        else:
            row = sum(x[i - o] * d ** (len(offs) - 1 - j) for j, o in enumerate(offs))
            p = pi[row]
        x.append(draw(i, p))
    return x, p, draw.ambiguous


def _compare(task, reference, batch_size=64):
    key_k, key_s = jax.random.split(jax.random.key(11))
    kernels = task.sample_kernels(key_k, batch_size)
    batch = task.sample_with_kernels(key_s, kernels)
    n = task.plan.num_nodes
    u = np.asarray(token_uniforms(key_s, n, batch_size))  # the sampler's uniforms
    kernels_np = {k: np.asarray(v) for k, v in kernels.items()}
    checked = 0
    for b in range(batch_size):
        kb = {k: v[b] for k, v in kernels_np.items()}
        x, label_probs, ambiguous = reference(task, kb, u[:, b])
        if ambiguous:
            continue
        checked += 1
        np.testing.assert_array_equal(np.asarray(batch.tokens_BxT[b]), x[:-1])
        assert int(batch.label_B[b]) == x[-1]
        np.testing.assert_allclose(np.asarray(batch.label_probs_BxS[b]), label_probs, rtol=1e-6)
    assert checked >= 0.9 * batch_size


def test_tree_sampler_matches_reference():
    _compare(tree_task("random", vocab_size=6, seq_len=12, alpha=0.3, graph_seed=3), _reference_tree)


@pytest.mark.parametrize("roots", ["uniform", "official"])
def test_dag_sampler_matches_reference(roots):
    _compare(dag_task(vocab_size=3, seq_len=10, alpha=0.5, roots=roots), _reference_dag)


@pytest.mark.parametrize(
    "offsets,query,init",
    [((1, 2), "natural", "uniform"), ((1, 3), "natural", "uniform"), ((1,), "uniform", "uniform"),
     ((1, 3), "natural", "stationary"), ((2, 3), "uniform", "stationary")],
)
def test_ngram_sampler_matches_reference(offsets, query, init):
    _compare(NGramTask(3, 12, offsets, init=init, query=query, alpha=0.5), _reference_ngram)


@pytest.mark.parametrize(
    "task",
    [tree_task("chain", vocab_size=3, seq_len=6, alpha=0.5), dag_task(vocab_size=5, seq_len=6, alpha=1.0, roots="official"),
     chen_bigram_task(vocab_size=3, seq_len=6, alpha=2.0)],
    ids=["tree-boost", "dag-official-exponential", "bigram-boost"],
)
def test_tokens_independent_of_kernel_randomness(task):
    """Through task.sample: by exchangeability P(x_0 = 0) = 1/S. Reusing kernel random
    bits for tokens (a key used both directly and as a parent) shifts it by many sigma."""
    n = 20000
    keys = jax.random.split(jax.random.key(12), n)
    first = np.asarray(jax.vmap(lambda k: task.sample(k, 1).tokens_BxT[0, 0])(keys))
    p = 1 / task.vocab_size
    z = ((first == 0).mean() - p) / np.sqrt(p * (1 - p) / n)
    assert abs(z) < stats.norm.isf(P_REJECT / 2), z


# ------------------------------------------------------------------------- statistics
def _chi2_pvalue(counts, probs):
    live = probs > 1e-9
    assert counts[~live].sum() == 0
    n = counts.sum()
    stat = np.sum((counts[live] - n * probs[live]) ** 2 / (n * probs[live]))
    return stats.chi2.sf(stat, df=live.sum() - 1)


def _fixed_pi_batch(task, pi, n, seed=0):
    return task.sample_with_kernels(jax.random.key(seed), {"pi": jnp.broadcast_to(pi, (n,) + pi.shape)})


def test_chain_marginals_and_transitions_match_pi():
    """Fixed π, n sequences: every context position ~ μ_π (each position's n tokens are
    i.i.d., so the Pearson statistic is χ²(S−1)); transitions out of each state ~ π(a, ·);
    the query is uniform. The same checks reject π transposed."""
    s, n = 5, 20000
    task = tree_task("chain", vocab_size=s, seq_len=8, alpha=1.0)
    pi = sample_dirichlet(jax.random.key(1), 1.0, (s,), s)
    mu = np.asarray(stationary_distribution(pi), np.float64)
    tokens = np.asarray(_fixed_pi_batch(task, pi, n).tokens_BxT)
    for i in range(task.seq_len - 1):
        assert _chi2_pvalue(np.bincount(tokens[:, i], minlength=s), mu) > P_REJECT
    assert _chi2_pvalue(np.bincount(tokens[:, -1], minlength=s), np.full(s, 1 / s)) > P_REJECT
    prev, nxt = tokens[:, 2], tokens[:, 3]  # one transition per sequence: independent draws
    pi64 = np.asarray(pi, np.float64)
    for a in range(s):
        counts = np.bincount(nxt[prev == a], minlength=s)
        assert _chi2_pvalue(counts, pi64[a]) > P_REJECT
    wrong = [_chi2_pvalue(np.bincount(nxt[prev == a], minlength=s), pi64.T[a] / pi64.T[a].sum()) for a in range(s)]
    assert min(wrong) < P_REJECT


def test_dag_roots_official_vs_uniform():
    """P(x0 = x1) = 1/S with uniform roots and (α+1)/(Sα+1) under the official bug."""
    s, alpha, n = 5, 0.1, 10000
    for roots, expected in (("uniform", 1 / s), ("official", (alpha + 1) / (s * alpha + 1))):
        tokens = np.asarray(dag_task(vocab_size=s, seq_len=8, alpha=alpha, roots=roots).sample(jax.random.key(2), n).tokens_BxT)
        same = tokens[:, 0] == tokens[:, 1]
        z = (same.mean() - expected) / np.sqrt(expected * (1 - expected) / n)
        assert abs(z) < stats.norm.isf(P_REJECT / 2), (roots, same.mean(), expected)


def test_ngram_stationary_init_and_long_run_window():
    """init="stationary": the first window (x0, x1) ~ μ_window; with uniform init the
    window at the end of a long sequence is (close to) stationary too."""
    from icl_jax import ngram_window_stationary

    d, n = 3, 20000
    pi = sample_dirichlet(jax.random.key(3), 1.0, (d * d,), d)
    mu = np.asarray(ngram_window_stationary(pi[None], d, (1, 2))[0], np.float64)  # [x_{i-1}, x_{i-2}]
    pair_probs = mu.T.reshape(-1)  # index x0 * d + x1 with x0 earlier
    for init, pos in (("stationary", 0), ("uniform", 58)):
        task = NGramTask(d, 60, (1, 2), init=init, alpha=1.0)
        tok = np.asarray(_fixed_pi_batch(task, pi, n, seed=4).tokens_BxT)
        counts = np.bincount(tok[:, pos] * d + tok[:, pos + 1], minlength=d * d)
        assert _chi2_pvalue(counts, pair_probs) > P_REJECT


def test_bigram_official_query_is_uniform_and_label_is_its_row():
    task = chen_bigram_task(vocab_size=3, seq_len=20, alpha=0.1)
    pi = sample_dirichlet(jax.random.key(5), 0.1, (3,), 3)
    batch = _fixed_pi_batch(task, pi, 20000, seed=6)
    last = np.asarray(batch.tokens_BxT[:, -1])
    assert _chi2_pvalue(np.bincount(last, minlength=3), np.full(3, 1 / 3)) > P_REJECT
    np.testing.assert_allclose(np.asarray(batch.label_probs_BxS), np.asarray(pi)[last])


def test_labels_are_drawn_from_label_probs():
    task = tree_task("chain", vocab_size=4, seq_len=6, alpha=1.0)
    pi = sample_dirichlet(jax.random.key(7), 1.0, (4,), 4)
    batch = _fixed_pi_batch(task, pi, 20000, seed=8)
    q = np.asarray(batch.tokens_BxT[:, -1])
    for a in range(4):
        counts = np.bincount(np.asarray(batch.label_B)[q == a], minlength=4)
        assert _chi2_pvalue(counts, np.asarray(pi, np.float64)[a]) > P_REJECT


def test_vmapped_alpha_and_keys_reproduce_single_calls():
    task = tree_task("random", vocab_size=5, seq_len=10, graph_seed=1)
    alphas = jnp.array([0.1, 1.0, 3.0])
    keys = jax.random.split(jax.random.key(9), 3)
    swept = jax.vmap(lambda a, k: task.replace(alpha=a).sample(k, 16))(alphas, keys)
    for i in range(3):
        single = task.replace(alpha=float(alphas[i])).sample(keys[i], 16)
        np.testing.assert_array_equal(swept.tokens_BxT[i], single.tokens_BxT)
        np.testing.assert_array_equal(swept.label_B[i], single.label_B)


def test_sampler_compiles_once_per_configuration(monkeypatch):
    """Repeated calls, new keys and a new α value reuse the compiled sampler (α is a
    traced leaf); counted through the number of times the scan sampler is traced."""
    import icl_jax.tasks.tasks as tasks_module

    traces = []
    original = tasks_module.sample_tokens
    monkeypatch.setattr(tasks_module, "sample_tokens", lambda *a: traces.append(1) or original(*a))
    task = TreeTask(random_tree_graph(0, 9), 4, 0.5)
    task.sample(jax.random.key(0), 8)
    task.sample(jax.random.key(1), 8)
    task.replace(alpha=0.7).sample(jax.random.key(2), 8)
    assert len(traces) == 1
    task.sample(jax.random.key(3), 16)  # a new batch size is a new static shape
    assert len(traces) == 2
