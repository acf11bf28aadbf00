"""The pure parts of ``dagcache demo``: pip's output summarized, the status line, names, settings, banner, and what
``--airflow 2`` changes (flavors, directories, the FAB user command, bad input)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from proxy.caching import CacheCounters
from proxy.cli import EXIT_CONFIG, main
from proxy.config import Settings
from proxy.demo.airflow import USER, create_user_command, password_answers
from proxy.demo.backends import display_url, with_database
from proxy.demo.flavor import FLAVORS, clean_command, clean_targets, directory_conflict, held_major, parse_major
from proxy.demo.progress import OneLine, PipSummary, status_line
from proxy.demo.serve import Endpoints, banner, demo_settings
from proxy.demo.workdir import DEFAULT_DIR, DEFAULT_DIR_AIRFLOW2, instance_name, resolve_dir
from proxy.versions.service import VersionStats

PIP_OUTPUT = """\
Looking in indexes: https://pypi.org/simple
WARNING: Location 'file:///opt/pypi/simple/apache-airflow/' is ignored: it is neither a file nor a directory.
Collecting apache-airflow==3.3.2
  Downloading apache_airflow-3.3.2-py3-none-any.whl (13 kB)
Processing /opt/pypi/files/psycopg2_binary-2.9.13-cp311-cp311-manylinux2014_x86_64.whl
Collecting asyncpg
Collecting pendulum<4.0,>=3.1.0 (from apache-airflow-core==3.3.2->apache-airflow==3.3.2)
  Downloading pendulum-3.3.0-cp311-cp311-manylinux_2_17_x86_64.whl (350 kB)
Installing collected packages: text-unidecode, lockfile, zipp, pendulum, asyncpg
Successfully installed apache-airflow-3.3.2 asyncpg-0.32.0
"""


class TestPipSummary:
    def test_follows_the_phases_of_an_install(self) -> None:
        summary = PipSummary()
        shown = []
        for line in PIP_OUTPUT.splitlines():
            if summary.feed(line):
                shown.append(summary.render(12.0))
            if line.startswith("Collecting pendulum"):
                assert summary.render(3.0) == "resolving: 4 packages, 1 downloaded (last: pendulum) 3 s"
        assert shown[0] == "resolving: 1 packages, 0 downloaded (last: apache-airflow) 12 s"
        assert "installing 5 packages 12 s" in shown
        assert shown[-1] == "installed 12 s"

    def test_names_the_package_of_a_download_or_a_local_file(self) -> None:
        summary = PipSummary()
        summary.feed("  Downloading apache_airflow-3.3.2-py3-none-any.whl (13 kB)")
        assert summary.last == "apache_airflow"
        summary.feed("  Downloading https://files.example/packages/ab/cd/pendulum-3.3.0-cp311.whl (350 kB)")
        assert summary.last == "pendulum"
        summary.feed("Processing /opt/pypi/files/psycopg2_binary-2.9.13-cp311-cp311-manylinux2014_x86_64.whl")
        assert summary.last == "psycopg2_binary"
        summary.feed("Collecting typing-extensions>=4.12 (from pydantic)")
        assert summary.last == "typing-extensions"

    def test_ignores_warnings_and_blank_lines(self) -> None:
        summary = PipSummary()
        assert not summary.feed("WARNING: Location 'file:///x' is ignored")
        assert not summary.feed("")
        assert summary.render(0) == "starting pip 0 s"


class TestStatusLine:
    def test_counts_hits_misses_and_polls(self) -> None:
        counters = CacheCounters(hits=6, misses=2, bypass=40, not_modified=2)
        stats = VersionStats(polls=123, last_poll_seconds=0.0021)
        assert status_line(counters, stats) == (
            "cache 8 hits / 2 misses (80% hits), 40 passed through | DB 123 version polls (last 2.1 ms)"
        )

    def test_before_any_request_and_without_a_cache(self) -> None:
        assert (
            status_line(CacheCounters(), VersionStats())
            == "cache 0 hits / 0 misses, 0 passed through | DB 0 version polls"
        )
        assert status_line(None, None) == "cache off"

    def test_failed_polls_show(self) -> None:
        assert "3 failed" in status_line(None, VersionStats(polls=5, poll_errors=3, last_poll_seconds=0.5))


class TestOneLine:
    def test_a_pipe_gets_plain_lines_at_most_every_interval_and_the_last_one(self) -> None:
        stream = io.StringIO()
        line = OneLine(stream, prefix="  ", interval=3600)
        line.show("first")
        line.show("second")  # within the interval: not printed
        line.done("final")
        assert stream.getvalue() == "  first\n  final\n"

    def test_done_does_not_repeat_what_was_printed(self) -> None:
        stream = io.StringIO()
        line = OneLine(stream, interval=0)
        line.show("same")
        line.done("same")
        assert stream.getvalue() == "same\n"


def test_instance_names_keep_two_demo_directories_apart(tmp_path: Path) -> None:
    assert instance_name(resolve_dir(DEFAULT_DIR)) == "dagcache_demo"
    assert instance_name(resolve_dir(DEFAULT_DIR_AIRFLOW2)) == "dagcache_demo_airflow2"
    one, two = instance_name(tmp_path / "a"), instance_name(tmp_path / "b")
    assert one != two
    assert one.startswith("dagcache_demo_") and one == instance_name(tmp_path / "a")


def test_database_urls() -> None:
    admin = "postgresql://postgres:pw@127.0.0.1:5432/postgres?sslmode=disable"
    assert (
        with_database(admin, "dagcache_demo") == "postgresql://postgres:pw@127.0.0.1:5432/dagcache_demo?sslmode=disable"
    )
    assert with_database(admin, "d", driver="psycopg2").startswith("postgresql+psycopg2://postgres:pw@")
    assert display_url(admin) == "postgresql://postgres:***@127.0.0.1:5432/postgres?sslmode=disable"
    assert display_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def _endpoints(tmp_path: Path, **changes: object) -> Endpoints:
    values: dict[str, object] = {
        "host": "127.0.0.1",
        "port": 8080,
        "admin_port": 9090,
        "airflow_url": "http://127.0.0.1:41234",
        "airflow_pid": 4242,
        "database_url": "postgresql://postgres@127.0.0.1:5432/dagcache_demo",
        "redis_url": "",
        "key_prefix": "dagcache_demo",
        "summary": "Airflow 3.3.2, SQLite, embedded in-process store",
        "user": "admin",
        "password": "s3cret",
        "big_dag_tasks": 1003,
        "directory": tmp_path,
    }
    values.update(changes)
    return Endpoints(**values)  # type: ignore[arg-type]


def test_demo_settings_put_the_proxy_in_front_of_the_api_server_with_caching_on(tmp_path: Path) -> None:
    base = Settings(cache={"mode": "off"}, server={"workers": 4, "port": 1234})
    settings = demo_settings(base, _endpoints(tmp_path))
    assert settings.upstream.url == "http://127.0.0.1:41234"
    assert (settings.server.host, settings.server.port, settings.server.workers) == ("127.0.0.1", 8080, 1)
    assert (settings.admin.enabled, settings.admin.port) == (True, 9090)
    assert settings.database.url == "postgresql://postgres@127.0.0.1:5432/dagcache_demo"
    assert (settings.redis.url, settings.redis.key_prefix) == ("", "dagcache_demo")
    assert settings.cache.mode == "on"


def test_banner_names_the_url_the_login_and_the_api_server(tmp_path: Path) -> None:
    text = banner(_endpoints(tmp_path, host="0.0.0.0"))
    assert "Airflow UI through dagcache  http://127.0.0.1:8080/\n" in text
    assert "login                        admin / s3cret\n" in text
    assert "http://127.0.0.1:8080/dags/big_dag" in text
    assert "(api-server pid 4242)" in text
    assert str(tmp_path / "airflow" / "api-server.log") in text
    assert "dagcache demo --clean" in text


def test_airflow2_banner_names_the_webserver_its_log_and_the_grid_page(tmp_path: Path) -> None:
    flavor = FLAVORS[2]
    text = banner(
        _endpoints(
            tmp_path,
            server=flavor.server,
            big_dag_path=flavor.big_dag_path,
            clean_command="dagcache demo --airflow 2 --clean",
        )
    )
    assert "the 1003-task DAG            http://127.0.0.1:8080/dags/big_dag/grid\n" in text
    assert "(webserver pid 4242)" in text and "api-server" not in text
    assert str(tmp_path / "airflow" / "webserver.log") in text
    assert "`dagcache demo --airflow 2 --clean` removes it" in text


def test_demo_settings_force_the_airflow2_profile_and_keep_auto_for_airflow3(tmp_path: Path) -> None:
    assert demo_settings(Settings(), _endpoints(tmp_path)).upstream.profile == "auto"
    two = demo_settings(Settings(), _endpoints(tmp_path, profile=FLAVORS[2].profile))
    assert two.upstream.profile == "airflow2"


class TestFlavor:
    def test_the_two_majors(self) -> None:
        three, two = FLAVORS[3], FLAVORS[2]
        assert (three.version, three.server, three.workers, three.log_name) == (
            "3.3.2",
            "api-server",
            1,
            "api-server.log",
        )
        assert (two.version, two.server, two.workers, two.log_name) == ("2.11.2", "webserver", 4, "webserver.log")
        assert (three.big_dag_path, two.big_dag_path) == ("/dags/big_dag", "/dags/big_dag/grid")
        assert (three.default_dir, two.default_dir) == (DEFAULT_DIR, DEFAULT_DIR_AIRFLOW2)

    @pytest.mark.parametrize(("text", "major"), [(None, 3), ("3", 3), ("2", 2), (" 2 ", 2)])
    def test_parse_major(self, text: str | None, major: int) -> None:
        assert parse_major(text).major == major

    @pytest.mark.parametrize("text", ["4", "1", "two", "", "2.11", "-2", "3.3.2"])
    def test_an_unsupported_major_names_the_choices(self, text: str) -> None:
        with pytest.raises(ValueError) as raised:
            parse_major(text)
        assert str(raised.value) == f"--airflow {text}: not supported; choose 2 (Airflow 2.11.2) or 3 (Airflow 3.3.2)"

    def test_held_major(self) -> None:
        assert held_major({}) is None
        assert held_major({"airflow": "2.11.2"}) == 2
        assert held_major({"airflow": "3.3.2"}) == 3
        assert held_major({"airflow": "weird"}) is None
        assert held_major({"airflow": 3}) is None


class TestDirectoryConflict:
    def test_a_new_directory_or_one_of_the_same_release_is_fine(self, tmp_path: Path) -> None:
        assert directory_conflict(tmp_path, {}, FLAVORS[2]) is None
        assert directory_conflict(tmp_path, {"airflow": "2.11.2"}, FLAVORS[2]) is None
        assert directory_conflict(tmp_path, {"airflow": "3.3.2"}, FLAVORS[3]) is None

    def test_the_other_major_says_what_to_do(self, tmp_path: Path) -> None:
        message = directory_conflict(tmp_path, {"airflow": "2.11.2"}, FLAVORS[3])
        assert message == (
            f"{tmp_path} holds an Airflow 2.11.2 demo, not Airflow 3.3.2: run it with --airflow 2, "
            f"choose another --dir, or remove it with `dagcache demo --dir {tmp_path} --clean`"
        )
        other = directory_conflict(tmp_path, {"airflow": "3.3.2"}, FLAVORS[2])
        assert other is not None and "run it with --airflow 3" in other

    def test_another_release_of_the_same_major_must_be_cleaned(self, tmp_path: Path) -> None:
        message = directory_conflict(tmp_path, {"airflow": "3.2.0"}, FLAVORS[3])
        assert (
            message
            == f"{tmp_path} holds an Airflow 3.2.0 demo; remove it with `dagcache demo --dir {tmp_path} --clean` first"
        )


class TestClean:
    def test_targets(self) -> None:
        assert clean_targets("/x/demo", None) == [Path("/x/demo")]
        assert clean_targets("/x/demo", "2") == [Path("/x/demo")]
        assert clean_targets(None, "2") == [DEFAULT_DIR_AIRFLOW2]
        assert clean_targets(None, "3") == [DEFAULT_DIR]
        assert clean_targets(None, None) == [DEFAULT_DIR, DEFAULT_DIR_AIRFLOW2]  # everything the demo made
        with pytest.raises(ValueError):
            clean_targets(None, "4")

    def test_command_shown_for_each_directory(self, tmp_path: Path) -> None:
        assert clean_command(FLAVORS[3], resolve_dir(DEFAULT_DIR)) == "dagcache demo --clean"
        assert clean_command(FLAVORS[2], resolve_dir(DEFAULT_DIR_AIRFLOW2)) == "dagcache demo --airflow 2 --clean"
        assert clean_command(FLAVORS[2], tmp_path) == f"dagcache demo --dir {tmp_path} --clean"
        assert clean_command(FLAVORS[3], resolve_dir(DEFAULT_DIR_AIRFLOW2)) == (
            f"dagcache demo --dir {resolve_dir(DEFAULT_DIR_AIRFLOW2)} --clean"
        )


def test_the_airflow2_admin_is_created_without_its_password_in_the_command_line(tmp_path: Path) -> None:
    command = create_user_command(tmp_path / "venv")
    assert command[0] == str(tmp_path / "venv" / "bin" / "airflow")
    assert command[1:3] == ["users", "create"]
    assert command[command.index("--username") + 1] == USER
    assert command[command.index("--role") + 1] == "Admin"
    assert "--password" not in command and "--use-random-password" not in command
    assert password_answers("s3cret") == "s3cret\ns3cret\n"  # the prompt and its confirmation


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--airflow", "4"], "dagcache: --airflow 4: not supported; choose 2 (Airflow 2.11.2) or 3 (Airflow 3.3.2)\n"),
        (
            ["--airflow", "4", "--clean"],
            "dagcache: --airflow 4: not supported; choose 2 (Airflow 2.11.2) or 3 (Airflow 3.3.2)\n",
        ),
        (
            ["--airflow", "2", "--stand-in"],
            "dagcache: --airflow brings up a real Airflow: it does not go with --stand-in or --upstream\n",
        ),
    ],
)
def test_bad_demo_input_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert main(["demo", *args]) == EXIT_CONFIG
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", message)
