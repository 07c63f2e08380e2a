"""Training engine: staged optax training in compiled chunks, vmapped/sharded sweeps,
gradient flow by ODE, checkpoints. It trains any pure `loss(params, batch)`; it never
imports a model.

Modules: `data` (data sources and the `DataSource` protocol), `runs` (a run's keys and
data), `stages`, `program` (the compiled step), `execute` (the host loop over chunks),
`results`, `single` (`train`), `grid` (`sweep`, `product_grid`, `run_mesh`), `flow`
(diffrax, imported on first use), `checkpoint`. No module is named like a function it
exports, so `icl_jax.engine.train` and `icl_jax.engine.sweep` are always the functions."""

from icl_jax.engine.checkpoint import load_checkpoint as load_checkpoint
from icl_jax.engine.data import CommonSamples as CommonSamples
from icl_jax.engine.data import DataSource as DataSource
from icl_jax.engine.data import FixedDataset as FixedDataset
from icl_jax.engine.data import FreshSamples as FreshSamples
from icl_jax.engine.data import MinibatchSamples as MinibatchSamples
from icl_jax.engine.flow import FlowResult as FlowResult
from icl_jax.engine.flow import gradient_flow as gradient_flow
from icl_jax.engine.flow import gradient_flow_fn as gradient_flow_fn
from icl_jax.engine.program import make_program as make_program
from icl_jax.engine.results import NonFiniteLossError as NonFiniteLossError
from icl_jax.engine.results import TrainResult as TrainResult
from icl_jax.engine.results import TrainState as TrainState
from icl_jax.engine.runs import run_batch as run_batch
from icl_jax.engine.runs import run_data as run_data
from icl_jax.engine.runs import run_keys as run_keys
from icl_jax.engine.single import train as train
from icl_jax.engine.stages import Stage as Stage
from icl_jax.engine.stages import flow_duration as flow_duration
from icl_jax.engine.stages import group_names as group_names
from icl_jax.engine.stages import refine_stages as refine_stages
from icl_jax.engine.stages import top_level_labels as top_level_labels
from icl_jax.engine.grid import product_grid as product_grid
from icl_jax.engine.grid import run_mesh as run_mesh
from icl_jax.engine.grid import sweep as sweep
