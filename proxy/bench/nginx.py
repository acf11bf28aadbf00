"""Run nginx with :func:`proxy.bench.nginxconf.nginx_config` for the length of a benchmark."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from proxy.bench import BenchError
from proxy.bench.nginxconf import nginx_config

_CANDIDATES = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")


def find_nginx() -> str | None:
    """The nginx binary on PATH or in the usual sbin directories, or None."""
    found = shutil.which("nginx")
    if found:
        return found
    return next((c for c in _CANDIDATES if os.access(c, os.X_OK)), None)


def nginx_version(binary: str) -> str:
    result = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10, check=False)
    return (result.stderr or result.stdout).strip().removeprefix("nginx version: ")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Nginx:
    """nginx in the foreground (its own process group), everything under ``workdir``."""

    def __init__(self, binary: str, upstream: str, workdir: Path, *, ttl: float, cpu: int | None) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        user = pwd.getpwuid(os.geteuid()).pw_name if os.geteuid() == 0 else None
        for sub in ("tmp", "cache"):
            (workdir / sub).mkdir(parents=True, exist_ok=True)
        self.config = workdir / "nginx.conf"
        try:
            text = nginx_config(upstream=upstream, port=self.port, workdir=str(workdir), ttl=ttl, cpu=cpu, user=user)
        except ValueError as exc:
            raise BenchError(str(exc)) from None
        self.config.write_text(text)
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> None:
        self._process = subprocess.Popen(
            [self.binary, "-p", str(self.workdir), "-c", str(self.config), "-e", str(self.workdir / "error.log")],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                err = self._process.stderr.read().decode(errors="replace") if self._process.stderr else ""
                raise BenchError(f"nginx exited at start (code {self._process.returncode}): {err.strip()[:300]}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        self.stop()
        raise BenchError(f"nginx did not listen on port {self.port} within {timeout:.0f} s")

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
        if process.stderr is not None:
            process.stderr.close()
        shutil.rmtree(self.workdir / "cache", ignore_errors=True)
        shutil.rmtree(self.workdir / "tmp", ignore_errors=True)
