"""Named moments at which the fault-injection tests kill a training process (SIGKILL, which no
code can catch or clean up after), so that each moment is hit on purpose rather than by luck:

    BIGMODEL_KILL_AT=saving:10 python -m bigmodel_jax.train ...   # dies while checkpoint 10 is being written

Moments: "step" (step N dispatched, its result not yet back), "eval" (halfway through the
evaluation at step N), "saving" (checkpoint N's async write started, not committed), "saved"
(checkpoint N committed, nothing after it done). Unset, `point` costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
from typing import Callable

MOMENTS = ("step", "eval", "saving", "saved")
ENV = "BIGMODEL_KILL_AT"


def point(moment: str, step: int, before: Callable[[], None] | None = None) -> None:
    """SIGKILL this process if it was asked to die at this moment; `before` runs first (e.g. wait
    for the checkpoint to commit)."""
    target = os.environ.get(ENV)
    if target and target == f"{moment}:{step}":
        if before is not None:
            before()
        os.kill(os.getpid(), signal.SIGKILL)
