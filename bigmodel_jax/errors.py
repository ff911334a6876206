"""The project's error types. This module imports nothing of ours, so every module can raise them
without an import cycle (data builders, tasks, the config checks, the weight loaders)."""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """A bad config value: names the key, the value and what would be valid."""

    def __init__(self, key: str, value: Any, valid: str):
        self.key, self.value, self.valid = key, value, valid
        super().__init__(f"config key '{key}' = {value!r} is invalid: {valid}")


class WeightsError(ValueError):
    """A weights file that does not fit the model: names the file, the tensor and, for a shape
    clash, the shape the model expects and the one the file holds (both in the file's layout)."""

    def __init__(self, source: str, problem: str, tensor: str | None = None,
                 expected: tuple | None = None, found: tuple | None = None):
        self.source, self.tensor, self.expected, self.found = source, tensor, expected, found
        where = f"{source}: tensor {tensor!r}: " if tensor else f"{source}: "
        shapes = f"expected shape {expected}, found {found}" if expected is not None else ""
        super().__init__(where + (f"{problem}; " if problem and shapes else problem) + shapes)


class RunError(RuntimeError):
    """A run that cannot go on (a non-finite loss, a checkpoint that cannot be written): the
    message says what happened, at which step, what was kept and how to go on. The CLIs print it
    without a traceback."""


class DataError(ValueError):
    """A bad data file or record: names the file (and line or record) and what to fix. The CLIs
    print it without a traceback."""
