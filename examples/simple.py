"""The original project's first example: two producers stream strings through two
multipliers into an aggregator.

Producer "hi" emits 15 strings, producer "lo" 25; each multiplier repeats every string it
receives n (or m) times, so the aggregator's sorted result holds "hi" * n fifteen times and
"lo" * m twenty-five times.
"""

import time

import plankton as pk


class Producer(pk.Task):
    payload = pk.Param(str)
    interval = pk.Param(int, default=15)
    delay = pk.Param(float, default=0.01)

    def run(self):
        for i in range(self.interval):
            self.emit(self.payload)
            if self.delay:
                time.sleep(self.delay)
        self.log.info("emitted %d x %r", self.interval, self.payload)


class Multiplier(pk.Task):
    n = pk.Param(int)

    def run(self):
        for value in self.results():
            self.emit(value * self.n)


class Aggregator(pk.Task):
    def run(self):
        return sorted(self.results())


@pk.dag(schedule="*/5 * * * *")
def simple(n: int = 10, m: int = 20):
    """Two producers -> two multipliers -> one aggregator."""
    return Aggregator().add_children(
        Multiplier(n=n).add_children(Producer(payload="hi", interval=15)),
        Multiplier(n=m).add_children(Producer(payload="lo", interval=25)),
    )
