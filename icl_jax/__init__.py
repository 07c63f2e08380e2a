"""icl_jax: exact gradient-flow studies of how small transformers learn causal structure
and induction heads in context (Nichani, Damian & Lee 2024; Chen, Sheen, Wang & Yang 2024).

The public API is what this file lists."""

from icl_jax import engine as engine
from icl_jax import models as models
from icl_jax import theory as theory
from icl_jax.analysis.metrics import (
    head_parent_matching as head_parent_matching,
    parent_attention_metrics as parent_attention_metrics,
)
from icl_jax.losses import (
    cross_entropy_logits as cross_entropy_logits,
    cross_entropy_probs as cross_entropy_probs,
    entropy as entropy,
    official_double_softmax_ce as official_double_softmax_ce,
)
from icl_jax.tasks.baselines import (
    baseline_losses as baseline_losses,
    baseline_predictions as baseline_predictions,
    dag_match as dag_match,
    gih_predictive as gih_predictive,
    ngram_match as ngram_match,
    posterior_predictive as posterior_predictive,
    tree_match as tree_match,
)
from icl_jax.tasks.graphs import (
    CausalGraph as CausalGraph,
    chain_graph as chain_graph,
    fig9_graph as fig9_graph,
    fig9_graphs as fig9_graphs,
    graph_from_parent_lists as graph_from_parent_lists,
    icl_graph as icl_graph,
    manual_graph as manual_graph,
    ngram_offsets as ngram_offsets,
    nichani_fig5_graph as nichani_fig5_graph,
    random_tree_graph as random_tree_graph,
    tree_from_dag_array as tree_from_dag_array,
)
from icl_jax.tasks.context_tree import ContextTreeTask as ContextTreeTask, ctw_predict as ctw_predict
from icl_jax.tasks.lags import LagMixtureTask as LagMixtureTask
from icl_jax.tasks.priors import (
    ngram_window_stationary as ngram_window_stationary,
    sample_dirichlet as sample_dirichlet,
    sample_doubly_stochastic as sample_doubly_stochastic,
    sample_log_gamma as sample_log_gamma,
    stationary_distribution as stationary_distribution,
)
from icl_jax.tasks.sampling import (
    Batch as Batch,
    SamplingPlan as SamplingPlan,
    SequenceBatch as SequenceBatch,
    node_rows as node_rows,
    sample_tokens as sample_tokens,
)
from icl_jax.tasks.strategies import (
    lag_strategy as lag_strategy,
    ngram_strategy as ngram_strategy,
    uniform_strategy as uniform_strategy,
)
from icl_jax.tasks.switching import SwitchingChainTask as SwitchingChainTask, binary_entropy as binary_entropy
from icl_jax.tasks.tasks import (
    DAGTask as DAGTask,
    NGramTask as NGramTask,
    TreeTask as TreeTask,
    chen_bigram_task as chen_bigram_task,
    dag_task as dag_task,
    sample as sample,
    sample_sequences as sample_sequences,
    tree_task as tree_task,
)
from icl_jax.tasks.triggers import TriggerTask as TriggerTask

__version__ = "0.1.0"


def __getattr__(name):
    # ``icl_jax.load_run`` without importing the experiments (and matplotlib) at ``import icl_jax``
    if name in ("load_run", "LoadedRun"):
        from icl_jax.experiments import loading

        return getattr(loading, name)
    raise AttributeError(f"module 'icl_jax' has no attribute {name!r}")
