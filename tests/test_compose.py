"""compose.yaml cannot run here (no Docker engine); check it is well-formed and that every
service command is a valid ``plankton`` invocation."""

from __future__ import annotations

from pathlib import Path

import click
import yaml

from plankton.cli.main import cli

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
        if name == "redis":
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
