"""Make Airflow 2 store a DAG file the audit just wrote, as its DAG processor would (``--audit`` on Airflow 2).

Two ways, one per CLI option:

* :class:`PythonSyncer` (``--airflow-python PYTHON``): a helper process on Airflow's own interpreter, started
  once (importing Airflow takes seconds), parses each file it is sent with ``DagBag(file).sync_to_db()`` and
  answers on stdout. It runs with the bench's environment, which must reach Airflow's metadata DB the way the
  webserver does (``AIRFLOW_HOME``, ``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN``, ...). It writes even when the DAG
  was stored less than ``[core] min_serialized_dag_update_interval`` ago (30 s by default), which the DAG
  processor would not. ``airflow dags reserialize`` is no substitute: on Airflow 2 it first deletes every
  serialized DAG.
* :class:`ShellSyncer` (``--audit-sync CMD``): any shell command, run once per change with ``{file}`` replaced
  by the file's path and ``{name}`` by its name (both quoted), e.g. through ``docker exec`` or ``kubectl exec``
  where the DAGs folder has another path; exit status 0 means stored. It pays Airflow's import on every change
  (seconds), which delays B after A: past ~9 s the primed workers have reloaded and nothing flaps.

The helper's and the commands' own output goes to ``DIR/audit-sync.log``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
from pathlib import Path
from typing import IO, Protocol

from proxy.bench import BenchError

SYNC_TIMEOUT = 120.0
"""Seconds one store may take (a loaded machine parses slowly) before the change counts as failed."""

_TAG = "DAGCACHE-SYNC "

# Runs on Airflow's interpreter. Airflow logs to stdout too: answers are the lines that start with the tag.
_HELPER = f"""\
import json, sys, traceback

def answer(**fields):
    sys.stdout.write({_TAG!r} + json.dumps(fields) + "\\n")
    sys.stdout.flush()

try:
    from airflow import settings
    from airflow.models.dagbag import DagBag
except Exception as exc:
    answer(error="cannot import Airflow: %s: %s" % (type(exc).__name__, exc))
    raise SystemExit(1)
settings.MIN_SERIALIZED_DAG_UPDATE_INTERVAL = 0  # store every change, however recent the last one
answer(ready=__import__("airflow").__version__)
for line in sys.stdin:
    path = line.strip()
    if not path:
        continue
    try:
        bag = DagBag(dag_folder=path, include_examples=False, safe_mode=False)
        if bag.import_errors:
            raise RuntimeError("import errors: %r" % bag.import_errors)
        if not bag.dags:
            raise RuntimeError("no DAG in %s" % path)
        bag.sync_to_db()
        answer(stored=sorted(bag.dags))
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        answer(error="%s: %s" % (type(exc).__name__, exc))
"""


class Syncer(Protocol):
    async def start(self) -> None: ...

    async def sync(self, path: Path) -> None:
        """Store ``path`` in the metadata DB; :class:`BenchError` when that failed."""
        ...

    async def aclose(self) -> None: ...


class PythonSyncer:
    def __init__(self, python: str, log: Path) -> None:
        self._python = python
        self._log_path = log
        self._log: IO[bytes] | None = None
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self._log = self._log_path.open("ab")
        try:
            self._proc = await asyncio.create_subprocess_exec(
                self._python,
                "-c",
                _HELPER,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=self._log,
                start_new_session=True,
            )
        except OSError as exc:
            raise BenchError(f"--airflow-python {self._python}: {exc.strerror or exc}") from None
        try:
            answer = await self._answer()
        except TimeoutError:
            answer = {"error": f"Airflow did not load within {SYNC_TIMEOUT:.0f} s"}
        if "ready" not in answer:
            await self.aclose()
            raise BenchError(f"--airflow-python {self._python}: {answer.get('error', answer)} (see {self._log_path})")

    async def _answer(self) -> dict[str, object]:
        assert self._proc is not None and self._proc.stdout is not None
        async with asyncio.timeout(SYNC_TIMEOUT):
            while True:
                line = (await self._proc.stdout.readline()).decode(errors="replace")
                if not line:
                    return {"error": f"the helper exited (status {await self._proc.wait()})"}
                if line.startswith(_TAG):
                    parsed = json.loads(line[len(_TAG) :])
                    return parsed if isinstance(parsed, dict) else {"error": repr(parsed)}
                if self._log is not None:  # Airflow's own log lines
                    self._log.write(line.encode())

    async def sync(self, path: Path) -> None:
        if self._proc is None or self._proc.returncode is not None:  # gave up on (or lost) the last one
            await self.aclose()
            await self.start()
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write(f"{path}\n".encode())
        try:
            await self._proc.stdin.drain()
            answer = await self._answer()
        except (OSError, TimeoutError) as exc:
            await self.aclose()  # its answer may still come: never mistake it for the next one's
            raise BenchError(f"storing {path.name} failed: {type(exc).__name__} {exc}".rstrip()) from None
        if "stored" not in answer:
            raise BenchError(f"storing {path.name} failed: {answer.get('error', answer)}")

    async def aclose(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            if proc.stdin is not None:
                proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None


class ShellSyncer:
    def __init__(self, command: str, log: Path) -> None:
        self._command = command
        self._log_path = log

    async def start(self) -> None:
        return None

    async def sync(self, path: Path) -> None:
        command = self._command.replace("{file}", shlex.quote(str(path))).replace("{name}", shlex.quote(path.name))
        with self._log_path.open("ab") as log:
            log.write(f"$ {command}\n".encode())
            log.flush()
            proc = await asyncio.create_subprocess_shell(
                command, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
            try:
                status = await asyncio.wait_for(proc.wait(), SYNC_TIMEOUT)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
                raise BenchError(f"--audit-sync took over {SYNC_TIMEOUT:.0f} s (see {self._log_path})") from None
        if status != 0:
            raise BenchError(f"--audit-sync exited with {status} (see {self._log_path})")

    async def aclose(self) -> None:
        return None
