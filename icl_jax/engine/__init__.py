"""Training engine: staged optax training in compiled chunks, vmapped/sharded sweeps,
gradient flow by ODE, checkpoints. It trains any pure `loss(params, batch)`; it never
imports a model."""

from icl_jax.engine.checkpoint import load_checkpoint as load_checkpoint
from icl_jax.engine.data import CommonSamples as CommonSamples
from icl_jax.engine.data import FixedDataset as FixedDataset
from icl_jax.engine.data import FreshSamples as FreshSamples
from icl_jax.engine.flow import FlowResult as FlowResult
from icl_jax.engine.flow import gradient_flow as gradient_flow
from icl_jax.engine.flow import gradient_flow_fn as gradient_flow_fn
from icl_jax.engine.stages import Stage as Stage
from icl_jax.engine.stages import flow_duration as flow_duration
from icl_jax.engine.stages import group_names as group_names
from icl_jax.engine.stages import refine_stages as refine_stages
from icl_jax.engine.stages import top_level_labels as top_level_labels
from icl_jax.engine.sweep import product_grid as product_grid
from icl_jax.engine.sweep import run_mesh as run_mesh
from icl_jax.engine.sweep import sweep as sweep
from icl_jax.engine.train import NonFiniteLossError as NonFiniteLossError
from icl_jax.engine.train import TrainResult as TrainResult
from icl_jax.engine.train import TrainState as TrainState
from icl_jax.engine.train import make_program as make_program
from icl_jax.engine.train import train as train
