"""Shared losses: label conventions, the ε floor, chunked means that cover every example,
and the oracle baseline scored against sampled labels."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from icl_jax import Batch, NGramTask, tree_task
from icl_jax.losses import DEFAULT_EPS, chunked_mean_fn, entropy, floored_probs, targets
from icl_jax.tasks.baselines import baseline_losses


@pytest.mark.parametrize("n,chunk", [(10, 4), (10, 10), (10, 64), (8193, 8192), (7, 1)])
def test_chunked_mean_covers_every_example(n, chunk):
    """Regression: the Nichani experiments' test loss averaged only the first
    n − (n mod chunk) sequences. Each example's value is distinct, so dropping any changes
    the mean."""
    values = jnp.arange(n, dtype=jnp.float32) ** 2
    batch = {"x": values, "w": jnp.ones((n, 3))}
    mean = chunked_mean_fn(lambda scale, b: scale * b["x"] * b["w"].sum(-1) / 3.0, batch, chunk)
    np.testing.assert_allclose(float(jax.jit(mean)(2.0)), 2.0 * float(values.mean()), rtol=1e-6)


def test_chunked_mean_is_not_poisoned_by_padding():
    """Padding rows are masked with where, not multiplied by 0: an inf loss on example 0
    (repeated as padding) counts once, and a finite batch stays finite."""
    batch = jnp.array([0.0, 1.0, 2.0])
    mean = chunked_mean_fn(lambda p, b: jnp.log(b) * p, batch, 2)
    assert float(mean(-1.0)) == np.inf
    assert np.isfinite(float(chunked_mean_fn(lambda p, b: b * p, batch, 2)(1.0)))


def test_nichani_experiment_test_loss_covers_every_sequence():
    """The experiments' test loss averages the model's loss over the whole test set for any
    test_size (11 sequences in chunks of 4 here)."""
    from icl_jax.experiments.nichani import _test_loss_fn
    from icl_jax.models import ReducedModel

    rng = np.random.default_rng(0)  # a batch drawn with numpy: nothing to compile but the model
    label_probs = rng.dirichlet(np.ones(4), size=11).astype(np.float32)
    test = Batch(jnp.asarray(rng.integers(0, 4, (11, 6)), jnp.int32), jnp.asarray(label_probs), jnp.zeros(11, jnp.int32))
    model = ReducedModel(4, 6)
    params = {"A1": jax.random.normal(jax.random.key(1), (6, 6)), "A2": 3.0 * jnp.eye(4)}
    got = float(_test_loss_fn(model, test, chunk=4)(params))
    want = float(jnp.mean(model.per_example_loss(params, test)))
    assert np.std(np.asarray(model.per_example_loss(params, test))) > 0.05  # dropping any sequence would move the mean
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_targets_and_floor():
    task = tree_task("chain", vocab_size=4, seq_len=6, alpha=0.5)
    batch = task.sample(jax.random.key(1), 5)
    np.testing.assert_array_equal(np.asarray(targets(batch, "soft", 4)), np.asarray(batch.label_probs_BxS))
    np.testing.assert_array_equal(np.asarray(targets(batch, "hard", 4)).argmax(-1), np.asarray(batch.label_B))
    with pytest.raises(ValueError, match="labels"):
        targets(batch, "sampled", 4)
    p = floored_probs(jnp.array([[1.0, 0.0, 0.0, 0.0]]))
    np.testing.assert_allclose(np.asarray(p.sum(-1)), 1.0, rtol=1e-6)
    np.testing.assert_allclose(float(p[0, 1]), DEFAULT_EPS / (1 + 4 * DEFAULT_EPS), rtol=1e-6)


def test_oracle_hard_label_loss_is_the_conditional_entropy():
    """Regression: the Chen experiments scored the oracle against a one-hot batch (its own
    label), giving true CE 0. Against sampled labels the oracle's loss estimates
    E[H(π(·|parents))], ≈ 0.19 nats here (d=3, L=100, parents {1,2}, α=0.1), in the library
    (``baseline_losses(labels="hard")``) and in the experiments' baseline table."""
    from icl_jax.experiments.chen import _baselines

    task = NGramTask(3, 100, (1, 2), "uniform", "natural", 0.1)
    test = task.sample(jax.random.key(3), 4096)
    cond_entropy = np.asarray(entropy(test.label_probs_BxS), np.float64)
    soft = np.asarray(baseline_losses(task, test, labels="soft")["oracle"], np.float64)
    np.testing.assert_allclose(soft, cond_entropy, rtol=1e-5, atol=1e-6)  # soft labels: exactly H(π row)
    base = _baselines(task, test)  # hard labels, both conventions
    assert base["oracle"]["se"] > 0
    assert abs(base["oracle"]["loss"] - cond_entropy.mean()) < 4 * base["oracle"]["se"]
    assert 0.1 < base["oracle"]["loss"] < 0.3
    # the oracle is the best predictor: below Bayes on the same sampled labels
    assert base["oracle"]["loss"] < base["bayes"]["loss"]
