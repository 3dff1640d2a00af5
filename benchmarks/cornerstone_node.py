"""Cornerstone3D for the side-by-side sections: Node, the npm install, and a script's process.

Cornerstone is used only here, never by the package. ``cornerstone/package.json``
pins ``@cornerstonejs/dicom-image-loader`` 5.14.0, the codec versions it depends on
(``npm view @cornerstonejs/dicom-image-loader@5.14 dependencies``), and the two npm
shims the loader needs in Node (``xhr2``, ``web-worker``); ``package-lock.json``
fixes the rest. :func:`prepare` copies them and the ``.mjs`` scripts into
``benchmarks/.cornerstone/`` (git-ignored) and runs ``npm ci`` there when the lock
file changed. :class:`NodeScript` runs one script: a JSON command a line on its
stdin, one answer a line on its stdout (prefixed ``@@``; any other output, such as
OpenJPEG's ``[INFO]`` lines, goes to ``.cornerstone/node.log``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["SOURCE", "WORKDIR", "NodeScript", "missing_node", "prepare", "versions"]

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "cornerstone"
WORKDIR = HERE / ".cornerstone"
MIN_NODE = 20  # native ESM, fetch, worker_threads as the web-worker shim uses them


def missing_node() -> str | None:
    """Why the Cornerstone sections cannot run here, or None."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            return f"`{tool}` not found (Node {MIN_NODE}+ and npm are needed)"
    version = subprocess.run(
        ["node", "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    major = int(version.lstrip("v").split(".")[0] or 0) if version else 0
    if major < MIN_NODE:
        return f"Node {version or '?'} found, {MIN_NODE}+ needed"
    return None


def prepare(log: Callable[[str], None] = print) -> Path:
    """``benchmarks/.cornerstone`` with the pinned packages installed and the scripts copied."""
    WORKDIR.mkdir(exist_ok=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copyfile(SOURCE / name, WORKDIR / name)
    for script in SOURCE.glob("*.mjs"):
        shutil.copyfile(script, WORKDIR / script.name)
    lock = (SOURCE / "package-lock.json").read_bytes() + (SOURCE / "package.json").read_bytes()
    digest = hashlib.sha256(lock).hexdigest()
    stamp = WORKDIR / "node_modules" / ".installed-from"
    if not stamp.exists() or stamp.read_text() != digest:
        log("  npm ci (Cornerstone3D 5.14 and its codecs) ...")
        done = subprocess.run(
            ["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=WORKDIR,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"npm ci failed: {done.stderr.strip()[-800:]}")
        stamp.write_text(digest)
    return WORKDIR


def versions(workdir: Path = WORKDIR) -> dict[str, str]:
    """Installed versions of the pinned packages, and Node's."""
    wanted = json.loads((SOURCE / "package.json").read_text())["dependencies"]
    found = {
        name: json.loads((workdir / "node_modules" / name / "package.json").read_text())["version"]
        for name in wanted
    }
    node = subprocess.run(["node", "--version"], capture_output=True, text=True, check=False)
    found["node"] = node.stdout.strip()
    return found


class NodeScript:
    """A ``node`` process running one of the ``benchmarks/cornerstone`` scripts: see :meth:`ask`."""

    def __init__(self, script: str, *args: str, workdir: Path = WORKDIR) -> None:
        self.command = ["node", str(workdir / script), *args]
        self.workdir = workdir
        self.process: asyncio.subprocess.Process | None = None
        self.pid: int | None = None
        self._log = (workdir / "node.log").open("a")
        self.ready: dict[str, Any] = {}

    async def __aenter__(self) -> NodeScript:
        self._log.write(f"\n==== {' '.join(self.command)}\n")
        self._log.flush()
        self.process = await asyncio.create_subprocess_exec(
            *self.command,
            cwd=self.workdir,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=self._log,
            limit=1 << 24,
        )
        self.pid = self.process.pid
        try:
            self.ready = await self._answer(patience=120)
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def ask(self, patience: float = 600, **command: Any) -> dict[str, Any]:
        """Send one command, wait for its answer; an ``error`` answer raises."""
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write((json.dumps(command) + "\n").encode())
        await self.process.stdin.drain()
        return await self._answer(patience)

    async def _answer(self, patience: float) -> dict[str, Any]:
        assert self.process is not None and self.process.stdout is not None
        while True:
            line = await asyncio.wait_for(self.process.stdout.readline(), patience)
            if not line:
                raise RuntimeError(f"node exited ({self._tail()})")
            text = line.decode(errors="replace")
            if text.startswith("@@"):
                answer: dict[str, Any] = json.loads(text[2:])
                if "error" in answer:
                    raise RuntimeError(f"node: {answer['error']}")
                return answer
            self._log.write(text)

    def _tail(self) -> str:
        self._log.flush()
        lines = (self.workdir / "node.log").read_text(errors="replace").splitlines()
        return " | ".join(lines[-8:])

    async def close(self) -> None:
        """Ask the script to quit; kill it (by its pid) if it does not within 10 s."""
        process, self.process = self.process, None
        if process is not None and process.returncode is None:
            try:
                assert process.stdin is not None
                process.stdin.write(b'{"cmd": "quit"}\n')
                await process.stdin.drain()
                process.stdin.close()
                await asyncio.wait_for(process.wait(), 10)
            except (OSError, TimeoutError, ConnectionError):
                process.kill()
                await process.wait()
        self._log.close()
