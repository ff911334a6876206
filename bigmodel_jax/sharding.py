"""Mesh(data, fsdp, tensor) and the logical-axis rules that place parameters, activations and
batches on it.

Models name their axes logically: parameters ("embed", "mlp", "heads", "vocab", ...) and
activations ("batch", "act_heads", "act_mlp", ...); the rules below map each name to a mesh axis.
A dimension the mesh axis does not divide stays replicated (e.g. an 81-character vocabulary over
tensor=4), so every model runs on every mesh.

How the three axes split the work (Megatron-LM + ZeRO-3 / FSDP, as MaxText and levanter do):
- data:   the batch is split; parameters and optimizer state are replicated.
- fsdp:   the batch is split *and* every matrix's embed dimension is sharded, so parameters and
          optimizer state take 1/fsdp of the memory; XLA gathers a layer's weights when it runs.
- tensor: attention heads and MLP hidden units are split (column-parallel in, row-parallel out),
          so activations inside attention and the MLP are split too; one all-reduce per sub-block.
"""

from __future__ import annotations

import logging
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from bigmodel_jax.errors import ConfigError

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
    # activations: the embed dim of the residual stream is never split (fsdp splits its batch)
    "act_heads": "tensor",
    "act_mlp": "tensor",
    "act_vocab": "tensor",
}


def mesh_shape(cfg, num_devices: int) -> dict[str, int]:
    """Resolves parallel.{data,fsdp,tensor} (one may be -1 = the rest) against the device count."""
    sizes = {k: cfg.parallel[k] for k in ("data", "fsdp", "tensor")}
    free = [k for k, v in sizes.items() if v == -1]
    if len(free) > 1 or any(v == 0 or v < -1 for v in sizes.values()):
        raise ConfigError("parallel", sizes, "positive sizes, at most one of them -1 (= the remaining devices)")
    fixed = 1
    for k, v in sizes.items():
        if v != -1:
            fixed *= v
    if free:
        if num_devices % fixed:
            raise ConfigError(f"parallel.{free[0]}", -1, f"the other axes ({fixed}) must divide {num_devices} devices")
        sizes[free[0]] = num_devices // fixed
    if sizes["data"] * sizes["fsdp"] * sizes["tensor"] != num_devices:
        raise ConfigError("parallel", sizes, f"data x fsdp x tensor must equal the {num_devices} devices")
    return sizes


def make_mesh(sizes: dict[str, int], devices: list | None = None) -> Mesh:
    """sizes: {'data': d, 'fsdp': f, 'tensor': t} already resolved (mesh_shape)."""
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


def constrain(x: jax.Array, logical: tuple[str | None, ...]) -> jax.Array:
    """Pins an activation's layout by logical names, e.g. ("batch", None, "act_mlp") for the MLP's
    hidden layer, so that XLA's propagation keeps tensor-parallel activations split instead of
    gathering them. A no-op outside a (data, fsdp, tensor) mesh context: single-device calls,
    inference, and the pmap mode (whose per-device body sees a manual axis)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or tuple(mesh.axis_names) != AXES or any(
            t != jax.sharding.AxisType.Auto for t in mesh.axis_types):
        return x
    return jax.lax.with_sharding_constraint(x, logical_to_mesh(P(*logical), x.shape, mesh))


def under_mesh(fn, mesh: Mesh):
    """fn called (and so traced) inside `jax.set_mesh(mesh)`, the context `constrain` reads. Only
    around compiled steps: NNX reads the same context at module creation and would take the
    logical names for mesh axes."""
    def call(*args):
        with jax.set_mesh(mesh):
            return fn(*args)

    def lower(*args):  # for memory and cost analysis (benchmarks)
        with jax.set_mesh(mesh):
            return fn.lower(*args)

    call.lower = lower
    return call


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


def put_batch(batch: dict[str, np.ndarray], mesh: Mesh, per_device: bool = False) -> dict[str, jax.Array]:
    """This process's rows of the global batch -> one global array per field, split over
    data x fsdp. per_device=True (the pmap mode) adds a leading device axis: [devices, rows/device, ...]."""
    sharding = batch_sharding(mesh)
    local = len(mesh.local_devices)

    def put(x):
        x = np.asarray(x)
        if per_device:
            x = x.reshape(local, x.shape[0] // local, *x.shape[1:])
        return jax.make_array_from_process_local_data(sharding, x)

    return jax.tree.map(put, batch)


def as_global(x: jax.Array, replicated_sharding: NamedSharding) -> jax.Array:
    """A replicated array held by this process's devices (a pmap output) as the global replicated
    array over the whole mesh, reusing the same device buffers."""
    return jax.make_array_from_single_device_arrays(x.shape, replicated_sharding,
                                                    [s.data for s in x.addressable_shards])


def bytes_per_device(tree: Any) -> int:
    """The largest per-device footprint of a tree of global arrays: what FSDP and tensor
    parallelism shrink (shard bytes, not the global size)."""
    per_device: dict[Any, int] = {}
    for x in jax.tree.leaves(tree):
        for shard in x.addressable_shards:
            per_device[shard.device] = per_device.get(shard.device, 0) + shard.data.nbytes
    return max(per_device.values())
