"""What a reader does with a bad record of a user's data file (`data.on_bad_record`): "stop"
raises a DataError naming the file, the line or record and the problem; "skip" leaves it out,
and once the file is read logs how many were left out and the first few, so a broken line costs
one example, not the run, and is never silently lost."""

from __future__ import annotations

import logging
from pathlib import Path

from bigmodel_jax.errors import DataError

log = logging.getLogger(__name__)

POLICIES = ("stop", "skip")
MAX_RECORD_CHARS = 1_000_000  # a longer "line" is a broken file (a lost newline), not a record
SHOWN = 3


class BadRecords:
    def __init__(self, path: str | Path, policy: str = "stop"):
        if policy not in POLICIES:
            raise ValueError(f"on_bad_record={policy!r} is not one of {POLICIES}")
        self.path, self.policy = Path(path), policy
        self.skipped: list[str] = []

    def bad(self, where: int | str, problem: str) -> None:
        """where: a line number, or a record's name ('question 7'); stop raises, skip counts."""
        place = f"{self.path}:{where}" if isinstance(where, int) else f"{self.path}: {where}"
        if self.policy == "stop":
            raise DataError(f"{place}: {problem}. Fix or delete that record, or set data.on_bad_record='skip' "
                            "to leave bad records out")
        self.skipped.append(f"{'line ' if isinstance(where, int) else ''}{where}: {problem}")

    def decode(self, raw: bytes, lineno: int) -> str | None:
        """A line's text, or None (after bad()) for bytes that are not UTF-8 or a line too long."""
        if len(raw) > MAX_RECORD_CHARS:
            self.bad(lineno, f"{len(raw):,} bytes without a line break (at most {MAX_RECORD_CHARS:,})")
            return None
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            self.bad(lineno, f"not UTF-8 ({e.reason} at byte {e.start})")
            return None

    def report(self) -> int:
        if self.skipped:
            log.warning("%s: left out %d bad record(s) (data.on_bad_record='skip'): %s%s", self.path,
                        len(self.skipped), "; ".join(self.skipped[:SHOWN]), " ..." if len(self.skipped) > SHOWN else "")
        return len(self.skipped)


def read_raw_lines(path: str | Path, what: str = "") -> list[bytes]:
    """A file's lines as bytes (decoded one at a time by BadRecords.decode). A missing file is a
    FileNotFoundError and an unreadable one a DataError, each naming it (and `what` it should be)."""
    path = Path(path).expanduser()
    try:
        return path.read_bytes().split(b"\n")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file" + (f" ({what})" if what else "")) from None
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror})") from None
