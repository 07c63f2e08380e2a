"""Small problems for the engine tests: a two-group attention-like loss on a tree task."""

import dataclasses

import jax
import jax.numpy as jnp
import pytest

import icl_jax
import icl_jax.engine as E

S = 4


@dataclasses.dataclass(frozen=True)
class Toy:
    task: icl_jax.TreeTask
    batch: icl_jax.Batch  # a fixed batch (modes b/c and gradient flows)

    @property
    def T(self):
        return self.task.seq_len

    def init(self, key, hp):
        k1, k2 = jax.random.split(key)
        scale = hp.get("scale", 0.5)
        return {"A1": scale * jax.random.normal(k1, (self.T, self.T)), "A2": scale * jax.random.normal(k2, (S, S))}

    @staticmethod
    def loss(params, batch):
        """Reduced-model-like loss: positional attention A1, token bilinear A2, ε-floored log loss."""
        x_BxTxS = jax.nn.one_hot(batch.tokens_BxT, S)
        h_BxTxS = jnp.einsum("ij,bjs->bis", jax.nn.softmax(params["A1"], -1), x_BxTxS)
        score_BxT = jnp.einsum("bs,st,bjt->bj", x_BxTxS[:, -1], params["A2"], h_BxTxS)
        probs_BxS = jnp.einsum("bj,bjs->bs", jax.nn.softmax(score_BxT, -1), x_BxTxS)
        return jnp.mean(icl_jax.cross_entropy_probs(probs_BxS, batch.label_probs_BxS, eps=1e-3))

    @staticmethod
    def metrics(params, step):
        return {"a1_norm": jnp.linalg.norm(params["A1"]), "step": step}


@pytest.fixture(scope="session")
def toy():
    task = icl_jax.tree_task(icl_jax.chain_graph(6), vocab_size=S, alpha=0.5)
    return Toy(task=task, batch=task.sample(jax.random.key(7), 32))


@pytest.fixture(scope="session")
def fresh(toy):
    # One object for the whole session, so programs are reused across tests.
    return E.FreshSamples(lambda key, hp: toy.task.sample(key, 32))


@pytest.fixture(scope="session")
def fixed(toy):
    return E.FixedDataset(toy.batch)
