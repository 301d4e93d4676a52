"""One rule for commands that process a folder case by case (``predict``, ``quality score``):
process every good case, collect every bad one with its reason, report them all at the end and
exit 1 if any was bad. One unreadable file must neither abort the batch nor vanish silently."""
from __future__ import annotations

import csv
import errno
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TextIO

from .data.io import DataError

__all__ = ["CaseFailures", "Failure"]


@dataclass
class Failure:
    name: str  # the file (or case) concerned
    reason: str
    skipped: bool = False  # left out on request (--skip-bad): listed, but not an error


@dataclass
class CaseFailures:
    """Collects the bad cases of a batch. Use ``with failures.case(path): ...`` around the work of
    one case: a :class:`DataError` or :class:`OSError` inside is recorded (named by the file it
    concerns) and the batch goes on. A full disk is re-raised: every later write would fail too."""

    items: list[Failure] = field(default_factory=list)

    def add(self, name: str | Path, reason: str, skipped: bool = False) -> None:
        self.items.append(Failure(str(name), reason, skipped))

    def case(self, name: str | Path) -> _CaseGuard:
        return _CaseGuard(self, str(name))

    @property
    def failed(self) -> list[Failure]:
        return [f for f in self.items if not f.skipped]

    @property
    def skipped(self) -> list[Failure]:
        return [f for f in self.items if f.skipped]

    def write_csv(self, path: str | Path) -> Path:
        """``file,status,reason`` per bad case (header only when there is none), so a previous
        batch's list is never left looking current."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["file", "status", "reason"])
            for f in self.items:
                w.writerow([f.name, "skipped" if f.skipped else "failed", f.reason])
        return path

    def report(self, what: str = "case(s)", stream: TextIO | None = None) -> int:
        """Print every skipped and failed case on one line each, then the counts; return the exit
        code: 1 if any failed, else 0."""
        stream = stream or sys.stderr
        for f in self.skipped:
            print(f"skipped: {f.name}: {f.reason}", file=stream)
        for f in self.failed:
            print(f"failed: {f.name}: {f.reason}", file=stream)
        if self.skipped:
            print(f"{len(self.skipped)} {what} skipped (--skip-bad)", file=stream)
        if self.failed:
            print(f"error: {len(self.failed)} {what} failed (listed above); the others were processed",
                  file=stream)
        return 1 if self.failed else 0


class _CaseGuard:
    """Context manager of :meth:`CaseFailures.case`."""

    def __init__(self, failures: CaseFailures, name: str) -> None:
        self.failures, self.name = failures, name

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        if isinstance(exc, DataError):
            self.failures.add(exc.path or self.name, exc.problem)
            return True
        if isinstance(exc, OSError) and exc.errno != errno.ENOSPC:
            self.failures.add(exc.filename or self.name, exc.strerror or str(exc))
            return True
        return False
