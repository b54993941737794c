"""Scheduled DAGs for the cron tests (imported only by those tests' processes)."""

from __future__ import annotations

import plankton as pk


class Window(pk.Task):
    """Returns its window, so tests can check contiguity."""

    def run(self):
        return [self.since.isoformat(), self.to.isoformat()]


@pk.dag(schedule="* * * * * */2", max_active_runs=50)
def every2():
    return Window()


@pk.dag(schedule="* * * * * */2", catchup=False, max_active_runs=50)
def every2_latest():
    return Window()
