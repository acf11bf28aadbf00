"""The Airflow 2.11 UI requests that ``dagcache bench`` simulates against an Airflow 2 webserver."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

from proxy.bench import mix2

# The lines of templates/airflow/grid.html (apache-airflow 2.11.2) that the bench reads, as rendered by default.
GRID_PAGE = """
  <script>
    const autoRefreshInterval = 3;
    const defaultDagRunDisplayNumber = 25;
  </script>
"""


def test_grid_data_is_the_query_the_grid_sends_without_filters():
    # api/useGridData.ts with dag/useFilters.tsx defaults: root, filters and base_date undefined, run_type and
    # run_state empty, num_runs = defaultDagRunDisplayNumber; axios drops undefined values and empty arrays.
    assert mix2.grid_data("big_dag") == "/object/grid_data?dag_id=big_dag&num_runs=25"
    assert mix2.grid_data("big_dag", 10) == "/object/grid_data?dag_id=big_dag&num_runs=10"
    assert mix2.graph_data("big_dag") == "/object/graph_data?dag_id=big_dag"


def test_every_interval_a_user_polls_the_grid_the_graph_and_both_dag_lists():
    paths = mix2.poll("big_dag", 25)
    assert paths == (
        "/object/grid_data?dag_id=big_dag&num_runs=25",
        "/object/graph_data?dag_id=big_dag",
        "/api/v1/dags?paused=false",
        "/api/v1/dags",
    )
    assert mix2.open_page("big_dag") == paths[:2]
    assert mix2.page("big_dag") == "/dags/big_dag/grid?tab=graph"


def test_dag_ids_are_quoted():
    for path in (mix2.grid_data("a b/c"), mix2.graph_data("a b/c")):
        assert dict(parse_qsl(urlsplit(path).query))["dag_id"] == "a b/c"
    assert mix2.tasks("a b/c") == "/api/v1/dags/a%20b%2Fc/tasks"
    assert mix2.page("a/b") == "/dags/a%2Fb/grid?tab=graph"


def test_page_settings_come_from_the_dag_page_script():
    assert mix2.page_settings(GRID_PAGE) == mix2.PageSettings(refresh=3.0, num_runs=25)
    assert mix2.page_settings(GRID_PAGE.replace("= 3;", "= 0;")).refresh is None
    assert mix2.page_settings("<html>no script</html>") == mix2.PageSettings(None, None)


def test_login_form_token_and_versions():
    form = '<input id="csrf_token" name="csrf_token" type="hidden" value="Ijk5ZjQ.aZ-x">'
    assert mix2.csrf_token(form) == "Ijk5ZjQ.aZ-x"
    assert mix2.csrf_token("<form></form>") is None
    assert mix2.major_of({"git_version": "", "version": "2.11.2"}) == 2
    assert mix2.major_of({"version": "3.3.2"}) == 3
    for junk in (None, {}, {"version": 2}, {"version": "dev"}, "2.11"):
        assert mix2.major_of(junk) is None
    assert mix2.version_of({"version": "2.11.2"}) == "2.11.2"
    assert mix2.version_of([]) is None
    assert mix2.json_of(b'{"a": 1}') == {"a": 1}
    assert mix2.json_of(b"<html>") is None
