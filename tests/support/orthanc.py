"""A real Orthanc DICOMweb server for tests, on loopback, with its own temp storage.

::

    with OrthancServer(tmp_path) as server:        # starts; stops and cleans up on exit
        info = server.upload(path_or_bytes)
        url = f"{server.dicomweb_url}/studies/{info.study_uid}"

Facts checked on Orthanc 1.10.1 with the DICOMweb plugin 1.7 (Debian packages),
which shape this class:

- It starts in about 0.1 s; readiness is ``GET /system`` answering, not the process
  being alive. SIGTERM takes 2.5–4 s (its HTTP server winds down slowly), so
  :func:`stop_all` signals several servers before waiting on any.
- It always binds 0.0.0.0: ``RemoteAccessAllowed: false`` is what keeps other hosts
  out. The DICOM (C-STORE) listener is off. The GDCM plugin is never loaded: it
  crashes Orthanc at random.
- Uploads go to ``POST /instances``. An instance with the UIDs of one already
  stored is not stored again (``Status: AlreadyStored``): variants need fresh UIDs.
- HTTP keep-alive is 1 s; every request here opens its own connection.

Requests use urllib with proxies disabled: a proxy from the environment must never
see loopback test traffic.
"""

from __future__ import annotations

import base64
import json
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = [
    "DICOMWEB_PLUGIN",
    "ORTHANC_BINARY",
    "OrthancError",
    "OrthancServer",
    "Response",
    "UploadedInstance",
    "missing_orthanc",
    "process_alive",
    "stop_all",
]

ORTHANC_BINARY = Path("/usr/sbin/Orthanc")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_POLL_SECONDS = 0.05


class OrthancError(RuntimeError):
    """Orthanc did not start, stop, or accept an upload; the message says why."""


@dataclass(frozen=True, slots=True)
class UploadedInstance:
    """What ``POST /instances`` stored: the DICOM UIDs and Orthanc's own IDs."""

    study_uid: str
    series_uid: str
    sop_uid: str
    orthanc_id: str
    orthanc_series_id: str
    orthanc_study_id: str
    #: "Success", or "AlreadyStored" when an instance with these UIDs was there.
    status: str


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def missing_orthanc(binary: Path = ORTHANC_BINARY, plugin: Path = DICOMWEB_PLUGIN) -> str | None:
    """Why Orthanc with DICOMweb cannot run here, or None if it can."""
    for path, package in ((binary, "orthanc"), (plugin, "orthanc-dicomweb")):
        if not path.exists():
            return f"{path} not found (Debian package {package})"
    return None


class OrthancServer:
    """One Orthanc process: start, upload, kill, restart, stop.

    ``workdir`` holds the configuration, the storage and index directories and the
    log; it survives :meth:`kill` and :meth:`restart`. Without one a temp directory
    is made, and removed by :meth:`close`. ``users`` turns on HTTP basic auth.
    ``config`` entries override the generated configuration.
    """

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        port: int | None = None,
        users: Mapping[str, str] | None = None,
        config: Mapping[str, object] | None = None,
        binary: Path = ORTHANC_BINARY,
        plugins: Iterable[Path] = (DICOMWEB_PLUGIN,),
        start_timeout: float = 10.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self._owns_workdir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="orthanc-")) if workdir is None else workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / "orthanc.log"
        self.config_path = self.workdir / "orthanc.json"
        self.users = dict(users or {})
        self.binary = binary
        self.plugins = [Path(p) for p in plugins]
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._port = port
        #: Orthanc's "Name" (in ``GET /system``): unique, to recognise this server.
        self.name = f"imageloader-test-{secrets.token_hex(6)}"
        self._extra_config = dict(config or {})
        self._process: subprocess.Popen[bytes] | None = None
        self._terminating = False
        self._finalizer: weakref.finalize[Any, Any] | None = None
        #: The pid of the latest Orthanc process (kept after it ends, for leak checks).
        self.last_pid: int | None = None

    # -- addresses ----------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise OrthancError("the server has not been started yet: it has no port")
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The server process's id while it runs (for CPU accounting)."""
        return self._process.pid if self.running else None

    @property
    def dicomweb_url(self) -> str:
        """The DICOMweb root: QIDO-RS, WADO-RS and STOW-RS live under it."""
        return f"{self.base_url}/dicom-web"

    @property
    def wadouri_url(self) -> str:
        """The WADO-URI endpoint (``?requestType=WADO&studyUID=...``)."""
        return f"{self.base_url}/wado"

    @property
    def auth(self) -> tuple[str, str] | None:
        """The first (user, password) pair, or None when auth is off."""
        return next(iter(self.users.items()), None)

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> OrthancServer:
        """Start Orthanc and wait until ``GET /system`` answers. Returns self."""
        if self.running:
            raise OrthancError(f"Orthanc is already running (pid {self.last_pid})")
        # A free port can be taken by someone else before Orthanc binds it: pick
        # another and retry, unless the port is fixed (given, or kept for a restart).
        attempts = 1 if self._port is not None else 3
        for attempt in range(attempts):
            if attempts > 1:
                self._port = _free_port()
            self._spawn()
            try:
                self._wait_ready()
                return self
            except BaseException as exc:
                self._reap(signal.SIGKILL)  # never leave a half-started server behind
                port_taken = isinstance(exc, OrthancError) and "already in use" in self.log_tail(10)
                if attempt + 1 == attempts or not port_taken:
                    raise
        raise AssertionError("unreachable")

    def stop(self) -> None:
        """Stop Orthanc (SIGTERM, then SIGKILL after ``stop_timeout``) and reap it."""
        self._reap(signal.SIGTERM)

    def kill(self) -> None:
        """Kill Orthanc at once (SIGKILL), as a crash would, and reap it."""
        self._reap(signal.SIGKILL)

    def restart(self) -> OrthancServer:
        """Stop Orthanc if it runs, then start it on the same port and storage."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop Orthanc and delete its storage (and the work directory, if it made it).

        The log and the configuration stay in a given ``workdir`` for post-mortems.
        """
        self.stop()
        target = self.workdir if self._owns_workdir else self.workdir / "storage"
        shutil.rmtree(target, ignore_errors=True)

    def __enter__(self) -> OrthancServer:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def running(self) -> bool:
        """True while the Orthanc process has not exited."""
        return self._process is not None and self._process.poll() is None

    def is_answering(self) -> bool:
        """True if this server (not another one on the port) answers ``GET /system``."""
        try:
            response = self.request("GET", "/system", timeout=2)
        except OSError:
            return False
        # Orthanc starts even if its port is taken, then exits: the server that
        # answers may be another one. The name tells them apart.
        return response.status == 200 and response.json().get("Name") == self.name

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of Orthanc's log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    # -- HTTP ---------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        auth: bool = True,
        timeout: float = 30,
    ) -> Response:
        """One HTTP request to this server (credentials added when ``auth``).

        Any status is returned, not raised; connection errors raise ``OSError``.
        """
        all_headers = dict(headers or {})
        if auth and self.auth is not None:
            token = base64.b64encode(":".join(self.auth).encode()).decode()
            all_headers["Authorization"] = f"Basic {token}"
        request = urllib.request.Request(
            self.base_url + path, data=body, headers=all_headers, method=method
        )
        try:
            with _NO_PROXY.open(request, timeout=timeout) as response:
                return Response(response.status, dict(response.headers), response.read())
        except urllib.error.HTTPError as error:
            with error:
                return Response(error.code, dict(error.headers), error.read())

    def upload(self, dicom: Path | bytes) -> UploadedInstance:
        """Store one DICOM Part 10 file (a path or its bytes) with ``POST /instances``."""
        data = dicom if isinstance(dicom, bytes) else Path(dicom).read_bytes()
        stored = self.request(
            "POST", "/instances", body=data, headers={"Content-Type": "application/dicom"}
        )
        if stored.status != 200:
            raise OrthancError(f"Orthanc refused the upload (HTTP {stored.status}): {_why(stored)}")
        result = stored.json()
        tags = self.request("GET", f"/instances/{result['ID']}/simplified-tags").json()
        return UploadedInstance(
            study_uid=tags["StudyInstanceUID"],
            series_uid=tags["SeriesInstanceUID"],
            sop_uid=tags["SOPInstanceUID"],
            orthanc_id=result["ID"],
            orthanc_series_id=result["ParentSeries"],
            orthanc_study_id=result["ParentStudy"],
            status=result["Status"],
        )

    # -- internals ----------------------------------------------------------------------

    def _configuration(self) -> dict[str, object]:
        storage = self.workdir / "storage"
        storage.mkdir(exist_ok=True)
        config: dict[str, object] = {
            "Name": self.name,
            "HttpPort": self.port,
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "RemoteAccessAllowed": False,
            "DicomServerEnabled": False,
            "AuthenticationEnabled": bool(self.users),
            "RegisteredUsers": self.users,
            "Plugins": [str(p) for p in self.plugins],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True},
        }
        config.update(self._extra_config)
        return config

    def _spawn(self) -> None:
        self.config_path.write_text(json.dumps(self._configuration(), indent=2))
        with self.log_path.open("ab") as log:
            log.write(f"\n==== starting Orthanc on port {self.port} ====\n".encode())
            log.flush()
            process = subprocess.Popen(
                [str(self.binary), str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
            )
        self._process = process
        self.last_pid = process.pid
        # If the test run ends without stop(), the interpreter still kills it.
        self._finalizer = weakref.finalize(self, _kill_and_reap, process)

    def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            code = self._process.poll()
            if code is not None:
                raise OrthancError(
                    f"Orthanc exited with code {code} while starting; its log ends:\n"
                    + self.log_tail()
                )
            if self.is_answering():
                return
            time.sleep(_POLL_SECONDS)
        raise OrthancError(
            f"Orthanc did not answer GET /system within {self.start_timeout:.0f} s; "
            "its log ends:\n" + self.log_tail()
        )

    def _terminate(self) -> None:
        """Send SIGTERM once: a second SIGTERM makes Orthanc die without cleaning up."""
        if self._process is not None and self._process.poll() is None and not self._terminating:
            self._process.terminate()
            self._terminating = True

    def _reap(self, first_signal: signal.Signals) -> None:
        if first_signal == signal.SIGTERM:
            self._terminate()
        elif self._process is not None and self._process.poll() is None:
            self._process.send_signal(first_signal)
        process, self._process, self._terminating = self._process, None, False
        if process is None:
            return
        try:
            process.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(self.stop_timeout)
        if self._finalizer is not None:
            self._finalizer.detach()


def stop_all(servers: Iterable[OrthancServer]) -> None:
    """Stop several servers at once: SIGTERM to all, then wait for each.

    Orthanc needs seconds to stop; stopping servers one after another adds those up.
    """
    servers = list(servers)
    for server in servers:
        server._terminate()
    for server in servers:
        server.close()


def _kill_and_reap(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _why(response: Response) -> str:
    try:
        details = response.json()
        return str(details.get("Details") or details.get("Message") or details)
    except (ValueError, AttributeError):
        return response.body[:200].decode(errors="replace")


def process_alive(pid: int) -> bool:
    """True if ``pid`` is a live (not zombie) process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
