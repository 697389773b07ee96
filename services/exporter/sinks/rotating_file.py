"""An append-only file rotated by size and age, named as Tetragon's export
file (lumberjack) names it: the current file keeps its name, a rotated one
becomes ``<stem>-<UTC 2006-01-02T15-04-05.000><suffix>`` beside it, gzipped
to ``….gz`` in the background when asked, and only the newest
``max_backups`` are kept (0: all).

Blocking calls: run them off the event loop. Any OSError is the caller's
to classify; a failed write is truncated away, so a retried batch is not
written twice. A directory that disappears is not recreated (it may be an
unmounted volume; writing to the disk underneath would hide that).
"""

from __future__ import annotations

import contextlib
import gzip
import os
import re
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

from services.common.logging import get_logger

log = get_logger("ocellus.exporter.json_file")

_STAMP = "%Y-%m-%dT%H-%M-%S"
GZIP_LEVEL = 6  # Go's default, which lumberjack uses; Python's 9 costs ~3x the CPU


class RotatingFile:
    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int = 0,
        max_age: float = 0.0,
        max_backups: int = 0,
        compress: bool = False,
        mode: int = 0o600,
        fsync: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.max_age = max_age
        self.max_backups = max_backups
        self.compress = compress
        self.mode = mode
        self.fsync = fsync
        self._clock = clock
        self._fd: int | None = None
        self._identity: tuple[int, int] = (0, 0)
        self._size = 0
        self._opened_at = 0.0
        stem, suffix = self.path.stem, self.path.suffix
        self._backup = re.compile(
            rf"^{re.escape(stem)}-(\d{{4}}-\d\d-\d\dT\d\d-\d\d-\d\d\.\d{{3}}){re.escape(suffix)}(\.gz)?$"
        )
        self._gzip: ThreadPoolExecutor | None = None  # one thread: compress, then prune

    def open(self) -> None:
        """Open (creating the directory the first time), and gzip backups a
        previous run left uncompressed."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._open_current()
        for leftover in self.path.parent.glob(f"{self.path.stem}-*.gz.tmp"):
            leftover.unlink(missing_ok=True)
        if self.compress:
            for backup in self.backups():
                if backup.suffix != ".gz":
                    self._compress_later(backup)

    def write_lines(self, lines: Sequence[bytes]) -> None:
        """Append whole lines, rotating before a line that would not fit."""
        self._ensure_current()
        if self.max_age and self._size and self._clock() - self._opened_at >= self.max_age:
            self._rotate()
        pending: list[bytes] = []
        pending_size = 0
        for line in lines:
            total = self._size + pending_size
            if self.max_bytes and total and total + len(line) > self.max_bytes:
                self._append(pending)
                pending, pending_size = [], 0
                self._rotate()
            pending.append(line)
            pending_size += len(line)
        self._append(pending)
        if self.fsync and self._fd is not None:
            os.fdatasync(self._fd)

    def close(self) -> None:
        try:
            if self._fd is not None:
                if self.fsync:
                    os.fsync(self._fd)
                os.close(self._fd)
        finally:
            self._fd = None
            if self._gzip is not None:
                self._gzip.shutdown(wait=True)
                self._gzip = None

    def backups(self) -> list[Path]:
        """Rotated files, oldest first."""
        try:
            names = [p for p in self.path.parent.iterdir() if self._backup.match(p.name)]
        except FileNotFoundError:
            return []
        return sorted(names, key=lambda p: p.name)

    def _open_current(self) -> None:
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        fd = os.open(self.path, flags, self.mode)
        try:
            os.fchmod(fd, self.mode)  # whatever the umask or an older file said
            st = os.fstat(fd)
            self._size = _drop_partial_line(fd, st.st_size)
        except OSError:
            os.close(fd)
            raise
        self._fd = fd
        self._identity = (st.st_dev, st.st_ino)
        self._opened_at = self._clock()

    def _ensure_current(self) -> None:
        # Writes to a file that was removed or renamed would vanish: reopen by name.
        if self._fd is not None:
            try:
                st = self.path.stat()
                if (st.st_dev, st.st_ino) == self._identity:
                    return
            except FileNotFoundError:
                pass
            os.close(self._fd)
            self._fd = None
        self._open_current()

    def _append(self, lines: list[bytes]) -> None:
        if not lines or self._fd is None:
            return
        blob = b"".join(lines)
        data = memoryview(blob)
        before = self._size
        try:
            while data:
                data = data[os.write(self._fd, data) :]
        except OSError:
            # No half batch to duplicate on retry; if even this fails, the
            # retry reopens the file.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, before)
            raise
        self._size = before + len(blob)

    def _rotate(self) -> None:
        if self._fd is not None:
            if self.fsync:
                os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
        backup = self._backup_path()
        self.path.rename(backup)
        if self.fsync:
            _fsync_dir(self.path.parent)
        self._open_current()
        if self.compress:
            self._compress_later(backup)
        else:
            self._prune()

    def _backup_path(self) -> Path:
        moment = datetime.fromtimestamp(self._clock(), UTC)
        while True:
            stamp = f"{moment.strftime(_STAMP)}.{moment.microsecond // 1000:03d}"
            candidate = self.path.with_name(f"{self.path.stem}-{stamp}{self.path.suffix}")
            if not candidate.exists() and not Path(f"{candidate}.gz").exists():
                return candidate
            moment += timedelta(milliseconds=1)  # two rotations within a millisecond

    def _compress_later(self, backup: Path) -> None:
        if self._gzip is None:
            self._gzip = ThreadPoolExecutor(max_workers=1, thread_name_prefix="json-file-gzip")
        self._gzip.submit(self._compress_then_prune, backup)

    def _compress_then_prune(self, backup: Path) -> None:
        target = Path(f"{backup}.gz")
        tmp = Path(f"{backup}.gz.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, self.mode)
            os.fchmod(fd, self.mode)  # not what the umask left
            with open(backup, "rb") as src, open(fd, "wb") as raw:  # noqa: PTH123 (an fd)
                with gzip.GzipFile(backup.name, "wb", GZIP_LEVEL, raw) as gz:
                    shutil.copyfileobj(src, gz, 1 << 20)
                raw.flush()
                os.fsync(raw.fileno())
            tmp.rename(target)
            backup.unlink()
        except OSError as e:
            # The uncompressed backup stays: nothing is lost, it is only bigger.
            log.warning("cannot compress rotated file", path=str(backup), reason=str(e))
            tmp.unlink(missing_ok=True)
        self._prune()

    def _prune(self) -> None:
        if not self.max_backups:
            return
        by_stamp: dict[str, list[Path]] = {}
        for path in self.backups():
            m = self._backup.match(path.name)
            if m:
                by_stamp.setdefault(m.group(1), []).append(path)
        for stamp in sorted(by_stamp)[: -self.max_backups]:
            for path in by_stamp[stamp]:
                try:
                    path.unlink()
                except OSError as e:
                    log.warning("cannot remove old backup", path=str(path), reason=str(e))


def _drop_partial_line(fd: int, size: int) -> int:
    """Cut a line a killed writer left half-written (it was never acked, so it
    comes again); returns the size kept."""
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return size
    end = size
    while end > 0:
        start = max(0, end - (1 << 16))
        newline = os.pread(fd, end - start, start).rfind(b"\n")
        if newline >= 0:
            keep = start + newline + 1
            break
        end = start
    else:
        keep = 0
    os.ftruncate(fd, keep)
    return keep


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
