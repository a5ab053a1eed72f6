"""The SRE artefacts: alert rules and a scrape pass promtool; the dashboard is valid JSON
whose every query names metrics the service really exports."""

from __future__ import annotations

import json
import re
import subprocess
import urllib.request
from pathlib import Path

from nichefeed.v1 import ranking_pb2

ROOT = Path(__file__).resolve().parents[1]
OPS = ROOT / "ops"


def test_alert_rules_pass_promtool(promtool):
    proc = subprocess.run(
        [promtool, "check", "rules", str(OPS / "prometheus" / "alerts.yml")], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def _scrape(ranker, metrics_port) -> str:
    ranker.Rank(ranking_pb2.RankRequest(user_id="u3", limit=5), timeout=10)
    return urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()


def test_a_scrape_passes_promtool_check_metrics(promtool, ranker, metrics_port):
    text = _scrape(ranker, metrics_port)
    proc = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    # promtool exits 0 with lint notes only for style issues it tolerates; errors exit 1.
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _metric_names(expr: str) -> set[str]:
    return {m for m in re.findall(r"\b(nichefeed_[a-z_]+)", expr)}


def test_dashboard_queries_name_exported_metrics(ranker, metrics_port):
    dash = json.loads((OPS / "grafana" / "nichefeed.json").read_text())
    assert dash["uid"] and dash["panels"]
    exported = set(re.findall(r"^# TYPE (nichefeed_[a-z_]+) (\w+)", _scrape(ranker, metrics_port), re.M))
    families = {name for name, _ in exported}
    series = set(families)
    for name, kind in exported:
        if kind == "histogram":
            series |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        if kind == "counter":
            series.add(f"{name}_total" if not name.endswith("_total") else name)
    ids = set()
    for panel in dash["panels"]:
        assert panel["id"] not in ids
        ids.add(panel["id"])
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            for metric in _metric_names(target["expr"]):
                assert metric in series, f"panel {panel['title']!r} queries {metric}, which the service does not export"


def test_alert_rules_name_exported_metrics(ranker, metrics_port):
    text = (OPS / "prometheus" / "alerts.yml").read_text()
    exported = _scrape(ranker, metrics_port)
    for metric in _metric_names(text):
        base = re.sub(r"_(bucket|sum|count)$", "", metric)
        assert f"# TYPE {base} " in exported or f"# TYPE {re.sub(r'_total$', '', base)} " in exported, metric


def test_alert_rules_fire_on_their_unit_tests(promtool):
    """ops/prometheus/alerts_test.yml: series in, the alerts that must (and must not) fire."""
    proc = subprocess.run(
        [promtool, "test", "rules", str(OPS / "prometheus" / "alerts_test.yml")], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout
