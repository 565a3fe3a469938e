"""The shipped alert rules (one set in two forms) and Grafana dashboard name only metrics we
export."""

from __future__ import annotations

import json
import re
from typing import Any

import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agenticore import metrics
from agenticore.config import Settings
from agenticore.gauges import FleetCollector
from agenticore.jobs import JobStore
from tests.conftest import REPO_ROOT

RULES = REPO_ROOT / "deploy" / "prometheus"
ALERTS = {
    "AgenticoreQueueStuck", "AgenticoreNoLiveWorkers", "AgenticoreBreakerOpen",
    "AgenticoreJobFailureRatioHigh", "AgenticoreDeadLetterGrowing",
}  # fmt: skip


def load(name: str) -> Any:
    return yaml.safe_load((RULES / name).read_text())


def exported_series(settings: Settings) -> set[str]:
    """Every series name the API and the workers expose (counters as ``..._total``)."""
    store = JobStore(settings)
    store.rebuild_index()  # as the reconciler does first: job gauges need a ready index
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(settings, store, lambda: {"normal": 0}))
    text = metrics.exposition().decode() + generate_latest(registry).decode()
    families = list(text_string_to_metric_families(text))
    names = {family.name for family in families}
    names |= {f"{f.name}_total" for f in families if f.type == "counter"}
    return names | {sample.name for family in families for sample in family.samples}


def test_given_the_rules_file_and_the_prometheusrule_then_they_hold_the_same_groups() -> None:
    rule = load("prometheusrule.yaml")

    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["kind"] == "PrometheusRule"
    assert rule["spec"] == load("alerts.yml")


def test_given_the_rules_then_each_asked_for_alert_is_there_with_a_summary() -> None:
    rules = [rule for group in load("alerts.yml")["groups"] for rule in group["rules"]]

    assert {rule["alert"] for rule in rules} == ALERTS
    for rule in rules:
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]
    breaker = next(rule for rule in rules if rule["alert"] == "AgenticoreBreakerOpen")
    assert breaker["for"] == "10m"


def test_given_the_rules_then_every_metric_they_name_is_exported(settings: Settings) -> None:
    exported = exported_series(settings)
    rules = [rule for group in load("alerts.yml")["groups"] for rule in group["rules"]]

    named = {name for rule in rules for name in re.findall(r"agenticore_\w+", rule["expr"])}

    assert named, "the rules name our metrics"
    assert named <= exported, named - exported


def test_given_the_grafana_dashboard_then_every_panel_queries_exported_metrics(
    settings: Settings,
) -> None:
    exported = exported_series(settings)
    dashboard = json.loads((REPO_ROOT / "deploy/grafana/agenticore-dashboard.json").read_text())

    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    named = {name for expr in exprs for name in re.findall(r"agenticore_\w+", expr)}

    assert len(exprs) >= 14 and all(expr.count("(") == expr.count(")") for expr in exprs)
    assert named <= exported, named - exported
