"""Orbax checkpoints in the workdir: the last K (async) under checkpoints/, the best by the
validation metric `train.eval_metric` under best/. Each holds params, optimizer state and a JSON
`meta` the trainer fills (step, the grain data iterator's state, the best metric and its step,
the early-stopping counter, the config); there is no RNG state to save, since dropout keys are
derived from (seed, step). Restoring takes the *target* shardings, so a checkpoint restores onto
any mesh or device count. A checkpoint that fails to restore is reported with its path and the
next older one is tried; it is set aside as `unreadable-<step>` when asked, never deleted.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


def _manager(directory: Path, keep: int, async_save: bool) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save,
                                           create=True)
    return ocp.CheckpointManager(directory.absolute(), options=options)


class Checkpointer:
    def __init__(self, workdir: str | Path, keep: int = 3, async_save: bool = True):
        self.workdir = Path(workdir)
        self.latest = _manager(self.workdir / "checkpoints", keep, async_save)
        self.best = _manager(self.workdir / "best", 1, async_save)

    def save(self, step: int, params: Any, opt_state: Any, meta: dict, best: bool = False) -> None:
        args = ocp.args.Composite(params=ocp.args.StandardSave(params),
                                  opt_state=ocp.args.StandardSave(opt_state),
                                  meta=ocp.args.JsonSave(meta))
        mngr = self.best if best else self.latest
        if step in mngr.all_steps():  # a resumed run redoing steps after an unreadable checkpoint
            mngr.wait_until_finished()
            mngr.delete(step)
        mngr.save(step, args=args, force=True)

    def wait(self) -> None:
        self.latest.wait_until_finished()
        self.best.wait_until_finished()

    def close(self) -> None:
        self.latest.close()
        self.best.close()


def _newest_readable(directory: Path, items: dict, set_aside_unreadable: bool) -> tuple[int, dict] | None:
    """(step, restored items) of the newest step under `directory` that restores; an unreadable
    one is named in the log (and optionally renamed to `unreadable-<step>`) and the next older
    one is tried. None when the folder has no checkpoint; an error when none of them reads."""
    if not directory.is_dir():
        return None
    mngr = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(create=False))
    try:
        steps = sorted(mngr.all_steps(), reverse=True)
        for step in steps:
            try:
                return step, mngr.restore(step, args=ocp.args.Composite(**items))
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
    found = _newest_readable(Path(directory).absolute(), items, set_aside_unreadable)
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
