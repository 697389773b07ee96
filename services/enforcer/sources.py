"""Where policies come from: a watched directory (this node) and the NATS
KV bucket ocellus_policies (every node). Each hands whole texts to the
engine; the engine decides."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from services.common.logging import get_logger
from services.enforcer.compiled import MODES
from services.enforcer.engine import PolicyEngine
from services.enforcer.revision import revision_of

log = get_logger("ocellus.enforcer")
KV_SOURCE = "kv"
_SUFFIXES = (".yaml", ".yml")


@dataclass
class _File:
    stamp: tuple[int, int]  # mtime_ns, size
    revision: str
    names: set[str] = field(default_factory=set)


class DirectorySource:
    """Policies in ``directory`` (*.yaml, *.yml; one policy per file), polled:
    a change is seen within ``interval`` (an editor's write-and-rename
    included), without inotify's lost-event corner cases."""

    def __init__(self, engine: PolicyEngine, directory: Path, interval: float) -> None:
        self._engine = engine
        self._dir = directory
        self._interval = interval
        self._files: dict[Path, _File] = {}

    @staticmethod
    def source_of(path: Path) -> str:
        return f"file:{path}"

    async def scan(self) -> None:
        try:
            present = await asyncio.to_thread(self._changed_files)
        except OSError as e:
            log.warning("policy directory unreadable", path=str(self._dir), reason=str(e))
            return
        for path in sorted(set(self._files) - set(present)):
            await self._removed(path)
        for path, (stamp, text) in sorted(present.items()):
            if text is not None:
                await self._changed(path, stamp, text)

    def _changed_files(self) -> dict[Path, tuple[tuple[int, int], bytes | None]]:
        """Every policy file with its stamp, and its text when the stamp changed."""
        out: dict[Path, tuple[tuple[int, int], bytes | None]] = {}
        for path in self._dir.iterdir():
            if path.suffix not in _SUFFIXES:
                continue
            try:
                st = path.stat()
                stamp = (st.st_mtime_ns, st.st_size)
                known = self._files.get(path)
                same = known is not None and known.stamp == stamp
                out[path] = (stamp, None if same else path.read_bytes())
            except (FileNotFoundError, IsADirectoryError):
                continue  # gone between listing and reading: the next scan sees it
        return out

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.scan()

    async def _changed(self, path: Path, stamp: tuple[int, int], text: bytes) -> None:
        known = self._files.get(path)
        revision = revision_of(text)
        if known is not None and known.revision == revision:
            known.stamp = stamp
            return
        source = self.source_of(path)
        status = await self._engine.apply(source, text)
        names = {status.name} if status.name != source else set()
        entry = self._files[path] = _File(stamp, revision, names)
        if known is not None and status.state == "applied":
            for old in known.names - entry.names:  # the file now defines another name
                await self._engine.remove(old, source)
        elif known is not None:
            entry.names |= known.names

    async def _removed(self, path: Path) -> None:
        source = self.source_of(path)
        for name in self._files.pop(path).names:
            await self._engine.remove(name, source)
        self._engine.forget_error(source)


class _KvFollower:
    """A KV bucket applied as it is now (start), then followed (run)."""

    def __init__(self, engine: PolicyEngine, kv: KeyValue) -> None:
        self._engine = engine
        self._kv = kv
        self._watcher: KeyValue.KeyWatcher | None = None

    async def start(self) -> None:
        """Apply what the bucket holds now; then run() follows changes."""
        self._watcher = await self._kv.watchall()
        while (entry := await self._watcher.updates(timeout=30)) is not None:
            await self._entry(entry)

    async def run(self) -> None:
        assert self._watcher is not None, "start() first"
        async for entry in self._watcher:
            if entry is not None:
                await self._entry(entry)

    async def stop(self) -> None:
        if self._watcher is not None:
            await self._watcher.stop()

    async def _entry(self, entry: KeyValue.Entry) -> None:
        raise NotImplementedError


def _deleted(entry: KeyValue.Entry) -> bool:
    return entry.operation in (KV_DEL, KV_PURGE) or not entry.value


class KvSource(_KvFollower):
    """Cluster-wide policies: key = policy name, value = its YAML."""

    async def _entry(self, entry: KeyValue.Entry) -> None:
        if _deleted(entry):
            await self._engine.remove(entry.key, KV_SOURCE)
            self._engine.forget_error(entry.key)
            return
        assert entry.value is not None
        await self._engine.apply(KV_SOURCE, entry.value, expected_name=entry.key)


class ModeSource(_KvFollower):
    """Runtime modes (`ocellus policy mode`): key = policy name, value =
    enforce | monitor; a deleted key gives the policy its own mode back."""

    async def _entry(self, entry: KeyValue.Entry) -> None:
        if _deleted(entry):
            await self._engine.set_mode(entry.key, None)
            return
        assert entry.value is not None
        mode = entry.value.decode(errors="replace")
        if mode not in MODES:
            log.warning("ignoring an unknown policy mode", policy=entry.key, mode=mode)
            return
        await self._engine.set_mode(entry.key, mode)  # type: ignore[arg-type]
