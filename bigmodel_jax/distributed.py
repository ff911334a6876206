"""Joining a multi-process run through JAX's own runtime (`jax.distributed`), before any other
JAX call. Every process runs the same command; each drives its local devices, reads its share of
the data, and writes its shards of every checkpoint.

    # cloud TPU pod, SLURM, Open MPI, GKE: JAX finds the coordinator and this process's id
    python -m bigmodel_jax.train --multihost --config ... --workdir /shared/run
    # anywhere else: say it explicitly (process 0's host:port is the coordinator) ...
    python -m bigmodel_jax.train --coordinator 10.0.0.1:1234 --num_processes 2 --process_id 0 ...
    # ... or through the environment, for launchers that set variables rather than flags
    BIGMODEL_COORDINATOR=10.0.0.1:1234 BIGMODEL_NUM_PROCESSES=2 BIGMODEL_PROCESS_ID=0 python -m bigmodel_jax.train ...

A process that dies (or a host that drops off the network) stops sending heartbeats; after
`--heartbeat_timeout` seconds the coordination service fails the others with an error rather than
letting them wait forever in a collective. A peer that never arrives fails the start after
`--init_timeout` seconds.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Callable
from typing import NoReturn

import jax

log = logging.getLogger(__name__)


def add_flags(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("multi-process (see README: Scaling out)")
    g.add_argument("--multihost", action="store_true",
                   help="join a multi-process run found by JAX's cluster auto-detection (cloud TPU, SLURM, MPI, GKE)")
    env = os.environ.get
    g.add_argument("--coordinator", metavar="HOST:PORT", default=env("BIGMODEL_COORDINATOR"),
                   help="process 0's address; implies --multihost (default: $BIGMODEL_COORDINATOR)")
    g.add_argument("--num_processes", type=int, default=env("BIGMODEL_NUM_PROCESSES"),
                   help="how many processes in all, with --coordinator (default: $BIGMODEL_NUM_PROCESSES)")
    g.add_argument("--process_id", type=int, default=env("BIGMODEL_PROCESS_ID"),
                   help="this process's index, 0 .. num_processes-1 (default: $BIGMODEL_PROCESS_ID)")
    g.add_argument("--heartbeat_timeout", type=int, default=100,
                   help="seconds without a heartbeat before a peer counts as dead and the run stops (default 100)")
    g.add_argument("--init_timeout", type=int, default=300,
                   help="seconds to wait for every process to join (default 300)")


def check_flags(args: argparse.Namespace) -> str | None:
    """An error message for an incomplete set of flags, or None."""
    explicit = [args.coordinator, args.num_processes, args.process_id]
    if any(x is not None for x in explicit) and any(x is None for x in explicit):
        return "--coordinator, --num_processes and --process_id go together (or use --multihost alone)"
    if args.num_processes is not None and not 0 <= args.process_id < args.num_processes:
        return f"--process_id {args.process_id} is not in 0..{args.num_processes - 1}"
    if args.heartbeat_timeout <= 0 or args.init_timeout <= 0:
        return "--heartbeat_timeout and --init_timeout are positive numbers of seconds"
    return None


def initialize(args: argparse.Namespace) -> None:
    """jax.distributed.initialize from the flags; nothing when none of them asks for it."""
    if not (args.multihost or args.coordinator):
        return
    jax.distributed.initialize(coordinator_address=args.coordinator, num_processes=args.num_processes,
                               process_id=args.process_id, initialization_timeout=args.init_timeout,
                               heartbeat_timeout_seconds=args.heartbeat_timeout)
    if jax.process_index() != 0:  # one process speaks for the run; the others only warn
        logging.getLogger("bigmodel_jax").setLevel(logging.WARNING)
    log.info("process %d of %d: %d local devices of %d", jax.process_index(), jax.process_count(),
             jax.local_device_count(), jax.device_count())


def exit_with(main: Callable[[], int], failures: tuple[int, ...] = (2, 3)) -> NoReturn:
    """sys.exit(main()), except that a process of a multi-process run that fails (an exception or
    one of the failure codes) leaves at once with os._exit. A normal exit waits at jax.distributed's
    shutdown barrier for peers that may be waiting for this process at another barrier (a failed
    checkpoint commit left both processes of a run waiting so, for good); leaving lets the peers'
    heartbeat check stop them with an error within --heartbeat_timeout."""
    try:
        code = main()
    except BaseException:
        if not jax.distributed.is_initialized():
            raise
        traceback.print_exc()
        code = 1
    if code in (1, *failures) and jax.distributed.is_initialized():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def barrier(name: str) -> None:
    """Every process waits here until all have arrived (a no-op with one process): orders file
    system work that one process does and the others read."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"bigmodel_jax: {name}")
