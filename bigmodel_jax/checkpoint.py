"""Orbax checkpoints in the workdir: the last K (async) under checkpoints/, the best by the
validation metric `train.eval_metric` under best/. Each holds params, optimizer state and a JSON
`meta` the trainer fills (step, the grain data iterator's state, the best metric and its step,
the early-stopping counter, the config); there is no RNG state to save, since dropout keys are
derived from (seed, step). Restoring takes the *target* shardings, so a checkpoint restores onto
any mesh or device count. A checkpoint that fails to restore, or restores to other numbers than
its saved checksums say, is reported with its path and the next older one is tried; it is set
aside as `unreadable-<step>` when asked, never deleted. One whose arrays have other shapes or
names than the config makes is refused by name and left in place (docs/faults.md).
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from bigmodel_jax.errors import RunError

log = logging.getLogger(__name__)


def _manager(directory: Path, keep: int, async_save: bool) -> ocp.CheckpointManager:
    # Each manager names its own barriers: checkpoints/ and best/ save the same step at once, and on
    # several processes two background threads waiting at one barrier key ('async_write_complete.10')
    # fail it at once (seen as a save that timed out on the first process and a hung run).
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, enable_async_checkpointing=async_save, create=True,
        multiprocessing_options=ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=directory.name))
    return ocp.CheckpointManager(directory.absolute(), options=options)


class Checkpointer:
    """A save that fails (a full disk, a folder that went away) raises RunError naming the step,
    the folder and the checkpoints that are still there: Orbax writes each into a temporary folder
    and renames it only once complete, and prunes old ones only after a new one is committed, so a
    failed save leaves the older checkpoints as they were."""

    def __init__(self, workdir: str | Path, keep: int = 3, async_save: bool = True):
        self.workdir = Path(workdir)
        self.latest = _manager(self.workdir / "checkpoints", keep, async_save)
        self.best = _manager(self.workdir / "best", 1, async_save)
        self._pending: tuple[str, int] | None = None  # (folder, step) of the last save started
        self._fingerprints: tuple[int, dict] | None = None  # (step, checksums): best/ and checkpoints/ share a step

    def save(self, step: int, params: Any, opt_state: Any, meta: dict, best: bool = False) -> None:
        mngr = self.best if best else self.latest
        if self._fingerprints is None or self._fingerprints[0] != step:  # one pass per step, not per folder
            self._fingerprints = (step, {"params": fingerprint(params), "opt_state": fingerprint(opt_state)})
        meta = dict(meta, fingerprints=self._fingerprints[1])
        args = ocp.args.Composite(params=ocp.args.StandardSave(params),
                                  opt_state=ocp.args.StandardSave(opt_state),
                                  meta=ocp.args.JsonSave(meta))
        with self._failure(("best" if best else "checkpoints", step)):
            if step in mngr.all_steps():  # a resumed run redoing steps after an unreadable checkpoint
                mngr.wait_until_finished()
                mngr.delete(step)
            mngr.save(step, args=args, force=True)
        self._pending = ("best" if best else "checkpoints", step)

    def newest_step(self) -> int | None:
        return self.latest.latest_step()

    def wait(self) -> None:
        with self._failure(self._pending):
            self.latest.wait_until_finished()
            self.best.wait_until_finished()

    def close(self) -> None:
        with self._failure(self._pending):
            self.latest.close()
            self.best.close()

    @contextlib.contextmanager
    def _failure(self, saving: tuple[str, int] | None):
        try:
            yield
        except Exception as e:  # Orbax re-raises the writer thread's OSError, sometimes wrapped
            folder, step = saving or ("checkpoints", -1)
            kept = sorted(self.latest.all_steps())
            raise RunError(
                f"could not write checkpoint {step} under {self.workdir / folder} "
                f"({type(e).__name__}: {str(e)[:300]}); "
                f"the checkpoints already there are kept (steps {kept} under {self.workdir / 'checkpoints'}). "
                "Free disk space or fix the folder's permissions, then rerun the same command to resume from "
                "the newest of them.") from e


@jax.jit
def _fingerprint(tree: Any) -> list[jax.Array]:
    def one(x):
        if x.dtype == jnp.bool_:
            x = x.astype(jnp.uint8)
        if x.dtype.itemsize == 8:
            x = x.astype(jnp.float32 if jnp.issubdtype(x.dtype, jnp.floating) else jnp.int32)
        bits = jax.lax.bitcast_convert_type(x, {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}[x.dtype.itemsize])
        bits = bits.reshape(-1).astype(jnp.uint32)
        weights = jnp.arange(1, bits.size + 1, dtype=jnp.uint32) * jnp.uint32(2654435761)
        return jnp.stack([bits.sum(dtype=jnp.uint32), (bits * weights).sum(dtype=jnp.uint32)])

    return [one(x) for x in jax.tree.leaves(tree)]


def fingerprint(tree: Any) -> list[list[int]]:
    """Two checksums per array of its raw bits (a plain and a position-weighted sum, mod 2^32):
    computed on the device where the arrays live, exact whatever the sharding (integer sums do
    not depend on order). Saved in the meta and checked on restore, because a damaged data file
    can restore without any error into different numbers (Orbax verifies no checksum)."""
    return [[int(v) for v in pair] for pair in jax.device_get(_fingerprint(tree))]


def _check_fingerprints(restored: dict) -> None:
    saved = dict(restored["meta"]).get("fingerprints")
    if not saved:  # a checkpoint written before fingerprints existed
        return
    for item in ("params", "opt_state"):
        if item in restored and restored[item] is not None and fingerprint(restored[item]) != saved[item]:
            bad = [i for i, (a, b) in enumerate(zip(fingerprint(restored[item]), saved[item])) if a != b]
            raise ValueError(f"{item}: {len(bad)} arrays restored with other contents than were saved "
                             f"(checksums differ; array numbers {bad[:5]}): the files are damaged")


def shape_mismatches(item_dir: Path, abstract: Any) -> list[str]:
    """'name: checkpoint (a, b), config (c, d)' for each array of a saved tree (params/, opt_state/)
    whose shape differs from the one the config makes, or that only one side has; [] when they
    agree or when the saved metadata cannot be read (the restore then names it unreadable)."""
    absl_log = logging.getLogger("absl")
    level = absl_log.level
    absl_log.setLevel(logging.ERROR)  # Orbax warns that a sub-folder has no step metadata of its own
    try:
        saved = ocp.StandardCheckpointer().metadata(item_dir).item_metadata
        saved_shapes = {_name(k): tuple(v.shape) for k, v in jax.tree_util.tree_flatten_with_path(saved)[0]}
    except Exception:
        return []
    finally:
        absl_log.setLevel(level)
    if not saved_shapes:  # metadata Orbax could not parse: a damaged checkpoint, not another model
        return []
    now = {_name(k): tuple(v.shape) for k, v in jax.tree_util.tree_flatten_with_path(abstract)[0]}
    return [f"{name}: checkpoint {saved_shapes.get(name, 'has none')}, config {now.get(name, 'has none')}"
            for name in sorted(set(saved_shapes) | set(now)) if saved_shapes.get(name) != now.get(name)]


def _name(path: tuple) -> str:
    """A dotted name for a tree path, the same for a live tree and Orbax's metadata of it (which
    saves a NamedTuple's fields as dictionary keys)."""
    return ".".join(str(next(getattr(p, a) for a in ("key", "idx", "name") if hasattr(p, a))) for p in path)


def _newest_readable(directory: Path, items: dict, set_aside_unreadable: bool,
                     abstract: dict[str, Any] | None = None) -> tuple[int, dict] | None:
    """(step, restored items) of the newest step under `directory` that restores; an unreadable
    one is named in the log (and optionally renamed to `unreadable-<step>`) and the next older
    one is tried. None when the folder has no checkpoint; an error when none of them reads. A
    readable checkpoint whose arrays differ from `abstract`'s ({"params": tree, ...}) in shape or
    structure is refused, not set aside: it is good, just not this config's (or this code's)."""
    if not directory.is_dir():
        return None
    mngr = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(create=False))
    try:
        steps = sorted(mngr.all_steps(), reverse=True)
        for step in steps:
            for item, tree in (abstract or {}).items():
                if wrong := shape_mismatches(directory / str(step) / item, tree):
                    raise RunError(f"{directory / str(step) / item} holds arrays of other shapes than this config "
                                   f"makes ({len(wrong)}): " + "; ".join(wrong[:8])
                                   + ("; ..." if len(wrong) > 8 else "")
                                   + ". Use a new --workdir, or the config (and code version) it was trained with.")
            try:
                restored = mngr.restore(step, args=ocp.args.Composite(**items))
                _check_fingerprints(restored)
                return step, restored
            except Exception as e:  # corrupt, truncated or mismatched: say which, try the older one
                log.error("checkpoint %s is unreadable (%s: %s); trying an older one",
                          directory / str(step), type(e).__name__, str(e)[:300])
                if set_aside_unreadable and jax.process_index() == 0:
                    aside = directory / f"unreadable-{step}"
                    (directory / str(step)).rename(aside)
                    log.error("moved it to %s", aside)
        if steps:
            raise RuntimeError(f"no readable checkpoint under {directory} (steps {sorted(steps)}); "
                               "the files are left in place")
        return None
    finally:
        mngr.close()


def restore(directory: str | Path, abstract_params: Any, abstract_opt_state: Any | None = None,
            set_aside_unreadable: bool = False) -> tuple[int, Any, Any, dict] | None:
    """Newest readable checkpoint under `directory` (a checkpoints/ or best/ folder) as
    (step, params, opt_state, meta), or None when there is none. Abstract trees carry the target
    shardings; abstract_opt_state=None restores params and meta only (inference).
    set_aside_unreadable: rename an unreadable step folder to `unreadable-<step>` (kept, not
    deleted) so that training can write that step again."""
    items = dict(params=ocp.args.StandardRestore(abstract_params), meta=ocp.args.JsonRestore())
    if abstract_opt_state is not None:
        items["opt_state"] = ocp.args.StandardRestore(abstract_opt_state)
    abstract = {"params": abstract_params}
    if abstract_opt_state is not None:
        abstract["opt_state"] = abstract_opt_state
    found = _newest_readable(Path(directory).absolute(), items, set_aside_unreadable, abstract)
    if found is None:
        return None
    step, out = found
    return step, out["params"], out.get("opt_state"), dict(out["meta"])


def read_meta(directory: str | Path) -> dict | None:
    """The JSON metadata (config, data state) of the newest checkpoint, without touching arrays."""
    found = _newest_readable(Path(directory).absolute(), dict(meta=ocp.args.JsonRestore()), False)
    return None if found is None else dict(found[1]["meta"])


def abstract_like(tree: Any, shardings: Any) -> Any:
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)
