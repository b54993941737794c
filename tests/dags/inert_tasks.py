"""Task classes that no worker runs: tests that play the worker themselves (driving the
transitions, the channel ends and their claims by hand) build their runs from these."""

from __future__ import annotations

import plankton as pk


class Leaf(pk.Task):
    def run(self):  # never run: the test plays the worker
        raise NotImplementedError


class Parent(pk.Task):
    def run(self):
        raise NotImplementedError
