"""compose.yaml cannot run here (no Docker engine); check it is well-formed and that every
service command is a valid ``plankton`` invocation."""

from __future__ import annotations

from pathlib import Path

import click
import yaml

from plankton.cli.main import cli
from plankton.operations import metrics

ROOT = Path(__file__).resolve().parent.parent


def _compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def test_compose_has_the_services_and_redis_uses_aof():
    services = _compose()["services"]
    assert {"redis", "scheduler", "worker", "api"} <= set(services)
    assert "--appendonly" in services["redis"]["command"]
    assert "yes" in services["redis"]["command"]


def test_every_service_command_parses_as_a_plankton_command():
    for name, service in _compose()["services"].items():
        command = service.get("command")
        if name in ("redis", "prometheus"):
            continue
        assert command[0] == "plankton", name
        sub = cli.get_command(click.Context(cli), command[1])
        assert sub is not None, f"{name}: unknown command {command[1]}"
        sub.make_context(command[1], list(command[2:]), parent=click.Context(cli))


def test_services_share_one_image_and_the_redis_url():
    services = _compose()["services"]
    images = {services[s].get("image") for s in ("scheduler", "worker", "api")}
    assert images == {"plankton:latest"}
    for s in ("scheduler", "worker", "api"):
        assert services[s]["environment"]["PLANKTON_REDIS_URL"].startswith("redis://redis:")


def test_dockerfile_copies_every_package_the_commands_need():
    text = (ROOT / "Dockerfile").read_text()
    for pkg in ("plankton", "scheduler", "workers", "examples"):
        assert f"COPY {pkg}" in text


def test_prometheus_scrapes_the_api_with_its_token_and_loads_the_alert_rules():
    service = _compose()["services"]["prometheus"]
    assert "/tmp/plankton-token" in service["command"][0]
    assert service["depends_on"]["api"]["condition"] == "service_healthy"
    mounts = {
        v.split(":")[1]: ROOT / v.split(":")[0] for v in service["volumes"] if v.startswith("./")
    }
    config = yaml.safe_load(mounts["/etc/prometheus/prometheus.yml"].read_text())
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["api:8080"]
    assert job["authorization"]["credentials_file"] == "/tmp/plankton-token"
    assert config["rule_files"] == ["/etc/prometheus/plankton-alerts.yml"]
    assert "/etc/prometheus/plankton-alerts.yml" in mounts


def test_the_alert_rules_use_only_metrics_that_the_api_serves(redis_url):
    import re

    from plankton.engine.connection import connect

    served = metrics.scrape(metrics.registry_for(connect(redis_url))).decode()
    names = set(re.findall(r"^# TYPE (\w+)", served, re.M))
    rules = yaml.safe_load((ROOT / "deploy" / "plankton-alerts.yml").read_text())
    alerts = {r["alert"]: r["expr"] for g in rules["groups"] for r in g["rules"]}
    assert set(alerts) == {"PlanktonRunFailed", "PlanktonQueueLatencyHigh", "PlanktonNoLiveWorkers"}
    for alert, expr in alerts.items():
        used = set(re.findall(r"plankton_\w+", expr))
        assert used and used <= names, (alert, used - names)
