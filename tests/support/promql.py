"""The metric and label names a PromQL expression refers to, and the ones the server exports.

Not a PromQL parser: string literals, durations and Grafana variables are removed, label
matchers and `by (...)`-style lists are read as label names, an identifier followed by `(` is
a function, and every other identifier that is not a keyword is a metric name. That is exact
for the expressions deploy/ writes (tests/unit/test_deploy_monitoring.py checks it on known
cases), and it errs toward reporting a name, never toward missing one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import msgspec
from prometheus_client import REGISTRY
from prometheus_client.metrics_core import Metric

import server.app  # noqa: F401 - imports every module that declares a metric

# Labels Prometheus (with the Prometheus Operator's PodMonitor) adds to every scraped series,
# `role` from deploy/components/monitoring/podmonitor.yaml's podTargetLabels, and the ones
# histograms and summaries carry.
SCRAPE_LABELS = frozenset(
    {"namespace", "pod", "container", "instance", "job", "endpoint", "service", "role"}
)
KEYWORDS = frozenset(
    {
        "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
        "offset", "bool", "inf", "nan", "atan2",
    }
)  # fmt: skip
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+")
_RANGE = re.compile(r"\[[^\]]*\]")
_MATCHERS = re.compile(r"\{([^}]*)\}")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_IDENTIFIER = re.compile(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")
_NUMBER = re.compile(r"\b\d+(\.\d+)?([eE][+-]?\d+)?\b")


class References(msgspec.Struct, frozen=True):
    metrics: frozenset[str]
    labels: frozenset[str]


def references(expression: str) -> References:
    """The metric names and label names `expression` uses."""
    text = _VARIABLE.sub("1", expression)
    labels: set[str] = set()
    for matchers in _MATCHERS.findall(_STRING.sub('""', text)):
        labels.update(re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", matchers))
    text = _MATCHERS.sub(" ", _STRING.sub('""', text))
    for grouping in _GROUPING.finditer(text):
        labels.update(name.strip() for name in grouping.group(2).split(",") if name.strip())
    text = _GROUPING.sub(" ", _RANGE.sub(" ", text))
    text = _NUMBER.sub(" ", text)
    metrics = {
        match.group(1)
        for match in _IDENTIFIER.finditer(text)
        if match.group(2) is None and match.group(1).lower() not in KEYWORDS
    }
    return References(metrics=frozenset(metrics), labels=frozenset(labels))


def exported_metrics() -> dict[str, frozenset[str]]:
    """Every series name the server's /metrics can show, with its label names.

    Read from prometheus_client's default registry, which the app module (imported above)
    fills: a counter `x` is exposed as `x_total`, a histogram as `x_bucket` (with `le`),
    `x_sum` and `x_count`, a gauge as `x`.
    """
    names: dict[str, frozenset[str]] = {}
    for collector in list(REGISTRY._collector_to_names):  # no public listing
        describe = getattr(collector, "describe", None)
        families: Iterable[Metric] = describe() if describe else collector.collect()
        for family in families:
            labels = frozenset(getattr(collector, "_labelnames", ()))
            for name, extra in _series_of(family):
                names[name] = labels | extra
    return names


def _series_of(family: Metric) -> list[tuple[str, frozenset[str]]]:
    none: frozenset[str] = frozenset()
    if family.type == "counter":
        return [(f"{family.name}_total", none)]
    if family.type == "histogram":
        return [
            (f"{family.name}_bucket", frozenset({"le"})),
            (f"{family.name}_sum", none),
            (f"{family.name}_count", none),
        ]
    if family.type == "summary":
        return [
            (family.name, frozenset({"quantile"})),
            (f"{family.name}_sum", none),
            (f"{family.name}_count", none),
        ]
    if family.type == "info":
        return [(f"{family.name}_info", none)]
    return [(family.name, none)]
