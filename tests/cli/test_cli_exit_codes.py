"""The command's help and exit codes: 0 loaded, 1 some failed, 2 usage, 130 interrupted.

Exit 0 and 1 are exercised by every prefetch test (test_cli_local, test_cli_orthanc);
here: the help text, each way to exit 2, and Ctrl-C (SIGINT) while the imageIds are
listed and while images load, against a local server that never answers.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.metadata
import json
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

import imageloader.cli
from imageloader.cli import main
from tests.cli.test_cli_orthanc import run_cli
from tests.integrations.servers import SAMPLES

pytestmark = pytest.mark.timeout(120)

CT = SAMPLES / "CT_small.dcm"


# -- help ------------------------------------------------------------------------------
@pytest.mark.parametrize("command", [[], ["demo"], ["prefetch"], ["info"]])
def test_help_is_plain_text_and_lists_every_exit_code(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*command, "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    # argparse prints descriptions as written: no reStructuredText may reach them.
    assert "``" not in text and not re.search(r":(mod|class|func|meth):`", text)
    codes = re.findall(r"^  (\d+) {2,}\S", text, flags=re.M)
    assert codes == ["0", "1", "2", "130"], text
    if command == ["prefetch"]:
        assert "--report FILE" in text and "stderr" in text


def test_the_console_script_and_python_m_reach_the_package() -> None:
    (script,) = importlib.metadata.entry_points(group="console_scripts", name="imageloader")
    assert script.value == "imageloader.cli:main" and script.load() is main
    assert Path(imageloader.cli.__file__).name == "__init__.py"  # a package, like dicom/
    for old in ("imageloader._cli_info", "imageloader._cli_prefetch", "imageloader._cli_progress"):
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module(old)
    result = run_cli("--help")
    assert result.returncode == 0 and "exit status:" in result.stdout


# -- exit 2 ----------------------------------------------------------------------------
def test_usage_errors_and_nothing_to_do_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["prefetch", "--workers", "0"])  # neither --dicomweb nor --ids
    assert exited.value.code == 2
    with pytest.raises(SystemExit) as exited:
        main(["nosuchcommand"])
    assert exited.value.code == 2
    capsys.readouterr()

    assert main(["prefetch", "--dicomweb", "http://127.0.0.1:9/dicom-web"]) == 2
    assert "--dicomweb needs --study" in capsys.readouterr().err

    empty = tmp_path / "empty.txt"
    empty.write_text("# only a comment\n\n")
    report = tmp_path / "report.json"
    assert main(["prefetch", "--ids", str(empty), "--workers", "0", "--report", str(report)]) == 2
    assert "no imageIds to load" in capsys.readouterr().err
    document = json.loads(report.read_text())
    assert document["exit_code"] == 2 and document["error"] == "no imageIds to load"
    assert document["images"] == [] and document["totals"]["images"] == 0

    assert main(["prefetch", "--ids", str(tmp_path / "missing.txt"), "--workers", "0"]) == 2
    assert "cannot list imageIds" in capsys.readouterr().err

    nowhere = tmp_path / "no-such-dir" / "report.json"
    assert main(["prefetch", "--ids", str(empty), "--report", str(nowhere)]) == 2
    assert "--report" in capsys.readouterr().err and not nowhere.parent.exists()
    assert main(["prefetch", "--ids", str(empty), "--report", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err


# -- exit 130 --------------------------------------------------------------------------
@dataclass
class Stalling:
    """A loopback HTTP server that never answers (for 20 s at most): see ``requests``."""

    url: str
    requests: list[str] = field(default_factory=list)
    requested: asyncio.Event = field(default_factory=asyncio.Event)


@asynccontextmanager
async def stalling_server() -> AsyncIterator[Stalling]:
    state: list[Stalling] = []

    async def stall(request: web.Request) -> web.StreamResponse:
        state[0].requests.append(request.path_qs)
        state[0].requested.set()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # until the client goes, bounded
            transport = request.transport
            if transport is None or transport.is_closing():
                break
            await asyncio.sleep(0.02)
        return web.Response(status=504)

    app = web.Application()
    app.router.add_get("/{tail:.*}", stall)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    state.append(Stalling(str(server.make_url("/")).rstrip("/")))
    try:
        yield state[0]
    finally:
        await server.close()


async def _interrupted(
    args: list[str], ready: asyncio.Event, *, progress_done: int = 0
) -> tuple[int | None, str, str]:
    """Run the CLI until ``ready`` (and ``progress_done`` images), send SIGINT; the outcome."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGELOADER_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "imageloader",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    assert process.stdout is not None
    seen: list[bytes] = []
    try:
        deadline = time.monotonic() + 30
        done = 0
        while done < progress_done:  # progress lines: "progress: 1/3 ..."
            line = await asyncio.wait_for(process.stdout.readline(), deadline - time.monotonic())
            assert line, b"".join(seen).decode()
            seen.append(line)
            if line.startswith(b"progress: "):
                done = int(line.split()[1].split(b"/")[0])
        exited = asyncio.ensure_future(process.wait())
        waiting = asyncio.ensure_future(ready.wait())
        await asyncio.wait({exited, waiting}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        exited.cancel()
        waiting.cancel()
        assert ready.is_set(), "the server saw no request before the CLI ended"
        process.send_signal(signal.SIGINT)
        stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return process.returncode, b"".join(seen).decode() + stdout.decode(), stderr.decode()


async def test_ctrl_c_while_listing_exits_130(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    async with stalling_server() as server:
        code, stdout, stderr = await _interrupted(
            ["prefetch", "--dicomweb", server.url, "--study", "1.2.3", "--report", str(report)],
            server.requested,
        )
    assert code == 130, stdout + stderr
    assert "interrupted while listing the imageIds" in stderr
    assert "/studies/1.2.3" in server.requests[0]
    document = json.loads(report.read_text())
    assert document["exit_code"] == 130 and "interrupted" in document["error"]


async def test_ctrl_c_while_loading_exits_130_with_a_report(tmp_path: Path) -> None:
    out, report = tmp_path / "out", tmp_path / "report.json"
    async with stalling_server() as server:
        stalled = [f"wadouri:{server.url}/dicom/{n}.dcm" for n in range(2)]
        ids = tmp_path / "ids.txt"
        ids.write_text("\n".join([f"dicomfile:{CT}", *stalled]))
        code, stdout, stderr = await _interrupted(
            [
                "prefetch",
                "--ids",
                str(ids),
                "--output",
                str(out),
                "--report",
                str(report),
                "--workers=0",
                "--concurrency=4",
                "--progress-interval=0.05",
            ],
            server.requested,
            progress_done=1,  # the local file is in; the two others never will be
        )
    assert code == 130, stdout + stderr
    assert "interrupted: stopping" in stderr and "interrupted in" in stdout
    document = json.loads(report.read_text())
    assert document["exit_code"] == 130 and document["interrupted"] is True
    statuses = {entry["image_id"]: entry["status"] for entry in document["images"]}
    assert statuses == {f"dicomfile:{CT}": "ok"} | dict.fromkeys(stalled, "pending")
    assert document["totals"]["pending"] == 2
    # The loaded frame stays staged (its series may have more frames): a rerun resumes.
    assert len(list((out / ".staging").rglob("*.npy"))) == 1


async def test_ctrl_c_in_info_exits_130() -> None:
    async with stalling_server() as server:
        code, stdout, stderr = await _interrupted(
            ["info", f"wadouri:{server.url}/dicom/slow.dcm"], server.requested
        )
    assert code == 130, stdout + stderr
    assert "interrupted" in stderr and not stdout
