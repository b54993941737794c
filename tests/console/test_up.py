"""``plankton up`` prints the console's URL, and that URL serves the console (the README's
first steps for a new user)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.servers import free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]


def test_up_prints_the_console_url_and_serves_it(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLANKTON_")}
    env["PYTHONPATH"] = str(ROOT)
    out = tmp_path / "up.log"
    port = free_port()
    with open(out, "wb") as sink:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "plankton.cli",
                "up",
                "--import",
                "examples.simple",
                "--workers",
                "1",
                "--port",
                str(port),
                "--dir",
                str(tmp_path / "pk"),
            ],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        found = wait_for(
            lambda: re.search(rb"web console: (http://\S+)", out.read_bytes()),
            timeout=60,
            what="the console URL in up's banner",
        )
        url = found.group(1).decode()
        assert url == f"http://127.0.0.1:{port}/"

        def page() -> str:
            try:
                with urllib.request.urlopen(url + "ui/dags", timeout=2) as reply:
                    return reply.read().decode()
            except OSError:
                return ""

        html = wait_for(page, timeout=30, what="the console answering")
        assert 'id="trigger-simple"' in html
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
