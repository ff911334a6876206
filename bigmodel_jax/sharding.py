"""Mesh(data, fsdp, tensor) and the logical-axis rules that place parameters and batches on it.

Models name their parameter axes logically ("embed", "mlp", "heads", "vocab", ...); the rules
below map each name to a mesh axis. A dimension the mesh axis does not divide stays replicated
(e.g. an 81-character vocabulary over tensor=4), so every model runs on every mesh.
"""

from __future__ import annotations

import logging
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

log = logging.getLogger(__name__)

AXES = ("data", "fsdp", "tensor")
# logical name -> mesh axis (or tuple of axes). Parameters: FSDP shards the embed dim of every
# matrix, tensor parallelism shards heads / MLP hidden units / vocab (Megatron layout).
RULES: dict[str, Any] = {
    "batch": ("data", "fsdp"),
    "embed": "fsdp",
    "vocab": "tensor",
    "heads": "tensor",
    "kv_heads": "tensor",
    "mlp": "tensor",
}


def make_mesh(sizes: dict[str, int], devices: list | None = None) -> Mesh:
    """sizes: {'data': d, 'fsdp': f, 'tensor': t} already resolved (config.mesh_shape)."""
    shape, auto = tuple(sizes[a] for a in AXES), (jax.sharding.AxisType.Auto,) * 3
    if devices is None:  # make_mesh orders devices by the physical topology (TPU/GPU)
        return jax.make_mesh(shape, AXES, axis_types=auto)
    return Mesh(np.asarray(devices).reshape(shape), AXES, axis_types=auto)


def logical_to_mesh(logical: P | tuple | None, shape: tuple[int, ...], mesh: Mesh) -> P:
    """Maps one logical spec to a mesh spec, replicating dims the mesh axes do not divide."""
    if logical is None:
        return P()
    out = []
    used: set[str] = set()
    for name, dim in zip(tuple(logical), shape):
        axes = RULES.get(name) if name else None
        if axes is None:
            out.append(None)
            continue
        axes_t = (axes,) if isinstance(axes, str) else tuple(axes)
        axes_t = tuple(a for a in axes_t if a not in used and mesh.shape[a] > 1)
        size = int(np.prod([mesh.shape[a] for a in axes_t])) if axes_t else 1
        if not axes_t or dim % size:
            out.append(None)
            continue
        used.update(axes_t)
        out.append(axes_t[0] if len(axes_t) == 1 else axes_t)
    return P(*out)


def param_specs(model: nnx.Module) -> dict:
    """Pure dict of logical PartitionSpecs, one per parameter."""
    return nnx.to_pure_dict(nnx.get_partition_spec(nnx.state(model, nnx.Param)))


def shardings_for(abstract_tree: Any, logical_tree: Any, mesh: Mesh) -> Any:
    """NamedShardings for a tree of arrays (or ShapeDtypeStructs) given matching logical specs."""
    return jax.tree.map(lambda a, spec: NamedSharding(mesh, logical_to_mesh(spec, a.shape, mesh)),
                        abstract_tree, logical_tree, is_leaf=lambda x: isinstance(x, P))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dim over data x fsdp, the rest replicated."""
    return NamedSharding(mesh, P(RULES["batch"]))


def put_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """This process's rows of the global batch -> one global array per field."""
    sharding = batch_sharding(mesh)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch)
