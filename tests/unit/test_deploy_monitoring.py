"""deploy/'s dashboard, alerts and autoscaler queries refer only to what the server exports.

Every PromQL expression (Grafana panels and variables, PrometheusRule alerts, KEDA's
Prometheus trigger, the prometheus-adapter rule) may name only series the server's metrics
registry exposes and only their labels (or the ones scraping adds): a renamed or new metric
fails here until the dashboard, the alerts and the metric agree. The KEDA PostgreSQL queries
run against the migrated schema. Only the tests of rendered objects need kubectl.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
import yaml

from server.queue.client import enqueue_job
from server.queue.jobs import NewJob
from server.queue.sql import QUEUE_BACKLOG
from tests.support.kustomize import DEPLOY, render
from tests.support.promql import SCRAPE_LABELS, exported_metrics, references

MONITORING = DEPLOY / "components" / "monitoring"
DASHBOARD = MONITORING / "dashboard.json"
ALERTS = MONITORING / "alerts.yaml"
ADAPTER_VALUES = DEPLOY / "components" / "hpa" / "prometheus-adapter-values.yaml"
KEDA_PROMETHEUS = DEPLOY / "components" / "keda-prometheus" / "scaledobject.yaml"
KEDA_POSTGRESQL = DEPLOY / "components" / "keda-postgresql" / "scaledobject.yaml"
NAMESPACE = "switchyard"
GRID_COLUMNS = 24


def _panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in items:
        yield panel
        yield from _panels(panel.get("panels", []))


def dashboard() -> dict[str, Any]:
    content: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return content


def dashboard_expressions() -> dict[str, str]:
    """Every PromQL expression of the dashboard, by where it is."""
    content = dashboard()
    expressions = {
        f"panel {panel['title']!r} {target['refId']}": target["expr"]
        for panel in _panels(content["panels"])
        for target in panel.get("targets", [])
    }
    for variable in content["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]["query"]
        # label_values(<selector>, <label>): the selector is PromQL, the label a label name.
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
        assert match is not None, query
        expressions[f"variable {variable['name']}"] = f"count by ({match[2]}) ({match[1]})"
    return expressions


def alert_rules() -> list[dict[str, Any]]:
    content = yaml.safe_load(ALERTS.read_text())
    return [rule for group in content["spec"]["groups"] for rule in group["rules"]]


def autoscaler_expressions() -> dict[str, str]:
    """KEDA's Prometheus trigger queries and the prometheus-adapter rule, as Prometheus runs
    them (the adapter's template filled in the way the adapter does)."""
    expressions = {}
    scaled_object = yaml.safe_load(KEDA_PROMETHEUS.read_text())
    for trigger in scaled_object["spec"]["triggers"]:
        if trigger["type"] == "prometheus":
            expressions[f"keda {trigger['name']}"] = trigger["metadata"]["query"]
    for rule in yaml.safe_load(ADAPTER_VALUES.read_text())["rules"]["external"]:
        series = rule["seriesQuery"].split("{")[0]
        query = rule["metricsQuery"].replace("<<.Series>>", series)
        query = query.replace("<<.LabelMatchers>>", f'namespace="{NAMESPACE}"')
        assert "<<" not in query, query
        expressions[f"adapter {rule['name']['as']}"] = query
        expressions[f"adapter series {rule['name']['as']}"] = rule["seriesQuery"]
    return expressions


def unknown_references(expressions: dict[str, str]) -> list[str]:
    """Metric names the server does not export, and labels no referenced metric carries."""
    exported = exported_metrics()
    problems = []
    for where, expression in expressions.items():
        found = references(expression)
        assert found.metrics, f"{where}: no metric in {expression!r}"
        problems += [f"{where}: {name}" for name in sorted(found.metrics - set(exported))]
        labels = set(SCRAPE_LABELS).union(
            *(exported.get(name, frozenset()) for name in found.metrics)
        )
        problems += [f"{where}: label {name}" for name in sorted(found.labels - labels)]
    return problems


# -- what the server exports, and reading names out of PromQL --------------------------------


def test_the_exported_metrics_are_read_from_the_servers_registry() -> None:
    exported = exported_metrics()
    assert exported["switchyard_queue_jobs"] == {"kind", "state"}
    assert exported["switchyard_jobs_dead_total"] == {"kind"}
    assert exported["switchyard_event_loop_lag_seconds_bucket"] == {"le"}
    assert exported["switchyard_trigger_events_total"] == {"trigger_key", "outcome"}
    assert "switchyard_jobs_dead" not in exported  # a counter's series end in _total


def test_names_are_read_out_of_promql_as_prometheus_reads_them() -> None:
    found = references(
        'histogram_quantile(0.99, sum by (pod, le) (rate(x_bucket{namespace="$namespace", '
        'kind=~"a|b"}[$__rate_interval]))) > 0.25 unless on (namespace) '
        "count by (namespace) (y) / ignoring(kind) z offset 5m or vector(0) and 1e3"
    )
    assert found.metrics == {"x_bucket", "y", "z"}
    assert found.labels == {"pod", "le", "namespace", "kind"}
    assert references('sum(a{b="by (c)"})').metrics == {"a"}


def test_a_metric_the_server_does_not_export_is_reported() -> None:
    assert unknown_references(
        {
            "made up": "sum(rate(switchyard_jobs_exploded_total[5m]))",
            "unknown label": "sum by (workflow) (rate(switchyard_executions_finished_total[5m]))",
            "exported": 'max(switchyard_queue_jobs{state="dead", namespace="x"})',
        }
    ) == ["made up: switchyard_jobs_exploded_total", "unknown label: label workflow"]


# -- the dashboard -----------------------------------------------------------------------------


def test_the_dashboard_refers_only_to_exported_metrics_and_labels() -> None:
    expressions = dashboard_expressions()
    assert len(expressions) >= 20
    assert unknown_references(expressions) == []


def test_the_dashboard_covers_what_operators_watch() -> None:
    used = set().union(*(references(e).metrics for e in dashboard_expressions().values()))
    assert {
        "switchyard_queue_oldest_due_seconds",  # queue age
        "switchyard_executions_finished_total",  # failure rate
        "switchyard_jobs_dead_total",  # dead jobs
        "switchyard_trigger_events_total",  # trigger refusals
        "switchyard_schedule_misfires_total",  # scheduler misfires
        "switchyard_event_loop_lag_seconds_bucket",  # event loop lag
    } <= used


def test_the_dashboard_is_well_formed_for_grafana() -> None:
    content = dashboard()
    assert content["uid"] == "switchyard"
    panels = list(_panels(content["panels"]))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= GRID_COLUMNS, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert [t["refId"] for t in panel["targets"]] == sorted(
            {t["refId"] for t in panel["targets"]}
        )
        for target in panel["targets"]:
            assert 'namespace="$namespace"' in target["expr"], panel["title"]
    variables = {variable["name"] for variable in content["templating"]["list"]}
    assert variables == {"datasource", "namespace"}


def test_the_dashboard_ships_as_a_configmap_for_grafanas_sidecar() -> None:
    objects = render("overlays/scaled", ("monitoring",))
    (config_map,) = [item for item in objects if item["metadata"]["name"] == "switchyard-dashboard"]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"]["switchyard.json"]) == dashboard()


# -- the alerts --------------------------------------------------------------------------------


def test_the_alerts_refer_only_to_exported_metrics_and_labels() -> None:
    expressions = {rule["alert"]: rule["expr"] for rule in alert_rules()}
    assert unknown_references(expressions) == []


def test_the_alerts_cover_what_operators_page_on_and_say_what_to_do() -> None:
    rules = alert_rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    used = set().union(*(references(rule["expr"]).metrics for rule in rules))
    assert {
        "switchyard_queue_oldest_due_seconds",
        "switchyard_executions_finished_total",
        "switchyard_jobs_dead_total",
        "switchyard_trigger_events_total",
        "switchyard_schedule_misfires_total",
        "switchyard_event_loop_lag_seconds_bucket",
    } <= used
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        # Label templates name labels the expression keeps.
        kept = references(rule["expr"]).labels
        for label in re.findall(r"\$labels\.(\w+)", json.dumps(rule["annotations"])):
            assert label in kept, f"{rule['alert']}: $labels.{label}"


def test_the_scrape_config_matches_the_server_pods_and_its_metrics_token() -> None:
    objects = render("overlays/scaled", ("monitoring",))
    (monitor,) = [item for item in objects if item["kind"] == "PodMonitor"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    servers = [
        item
        for item in objects
        if item["kind"] == "Deployment"
        and all(
            item["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in selector.items()
        )
    ]
    assert {item["metadata"]["name"] for item in servers} == {
        "switchyard-api",
        "switchyard-worker",
        "switchyard-scheduler",
    }
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["path"] == "/metrics"
    credentials = endpoint["authorization"]["credentials"]
    for server in servers:
        container = server["spec"]["template"]["spec"]["containers"][0]
        assert endpoint["port"] in {port["name"] for port in container["ports"]}
        token = next(e for e in container["env"] if e["name"] == "METRICS_TOKEN")
        reference = token["valueFrom"]["secretKeyRef"]
        assert (reference["name"], reference["key"]) == (credentials["name"], credentials["key"])
    assert set(monitor["spec"]["podTargetLabels"]) <= SCRAPE_LABELS


# -- the autoscalers ----------------------------------------------------------------------------


def test_the_autoscaler_queries_refer_only_to_exported_metrics() -> None:
    expressions = autoscaler_expressions()
    assert len(expressions) == 4
    assert unknown_references(expressions) == []
    for where, expression in expressions.items():
        if "series" not in where:  # a missing series would read as an error, not as 0
            assert expression.endswith("or vector(0)"), where


@pytest.fixture
def keda_queries() -> dict[str, str]:
    scaled_object = yaml.safe_load(KEDA_POSTGRESQL.read_text())
    return {t["name"]: t["metadata"]["query"] for t in scaled_object["spec"]["triggers"]}


async def test_the_keda_postgresql_queries_count_due_jobs_through_the_claim_index(
    connection: asyncpg.Connection, keda_queries: dict[str, str]
) -> None:
    assert set(keda_queries) == {"queue-due-jobs", "queue-oldest-due"}
    assert await connection.fetchval(keda_queries["queue-due-jobs"]) == 0
    assert await connection.fetchval(keda_queries["queue-oldest-due"]) == 0
    await enqueue_job(connection, NewJob(kind="deploy-test"))
    await enqueue_job(connection, NewJob(kind="deploy-test"))
    await enqueue_job(connection, NewJob(kind="deploy-test", delay_seconds=3600))  # not due
    await connection.execute("UPDATE job SET run_at = run_at - interval '42 seconds'")
    assert await connection.fetchval(keda_queries["queue-due-jobs"]) == 2
    age = await connection.fetchval(keda_queries["queue-oldest-due"])
    assert isinstance(age, int)
    assert 42 <= age < 60
    # Cheap at any backlog: only queued rows are read, through the partial claim index.
    async with connection.transaction():
        await connection.execute("SET LOCAL enable_seqscan = off")
        for query in keda_queries.values():
            plan = "\n".join(r[0] for r in await connection.fetch(f"EXPLAIN {query}"))
            assert "job_claim_idx" in plan, plan


def test_the_keda_postgresql_queries_wrap_the_servers_queue_depth_statement(
    keda_queries: dict[str, str],
) -> None:
    """The scaler reads the same bounded statement as the /metrics gauges, not a count that
    grows with the backlog: the text inside each wrapper is QUEUE_BACKLOG's."""

    def words(sql: str) -> str:
        return " ".join(sql.split())

    statement = words(QUEUE_BACKLOG)
    for name, query in keda_queries.items():
        assert statement in words(query), name
