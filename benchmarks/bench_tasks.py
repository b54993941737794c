"""Task code of Plankton's benchmark workloads (imported by the benchmark's workers)."""

from __future__ import annotations

import time

import plankton as pk


class BLeaf(pk.Task):
    i = pk.Param(int)

    def run(self):
        self.emit(str(self.i))


class BCount(pk.Task):
    def run(self):
        return sum(1 for _ in self.results())


class BSum(pk.Task):
    """Sums its children's values and emits the total (a mid task of scale-100k)."""

    def run(self):
        total = sum(self.results())
        self.emit(total)
        return total


class BLink(pk.Task):
    k = pk.Param(int)

    def run(self):
        got = list(self.results())
        value = got[0] + 1 if got else 1
        self.emit(value)
        return value


class BStream(pk.Task):
    n = pk.Param(int)

    def run(self):
        emit = self.emit
        for i in range(self.n):
            emit(f"value-{i:014d}")


class BSleep(pk.Task):
    i = pk.Param(int)
    seconds = pk.Param(float, default=0.02)

    def run(self):
        time.sleep(self.seconds)
        self.emit(self.i)


class BNoop(pk.Task):
    def run(self):
        return 1


def fanin(n: int) -> pk.Task:
    return BCount().add_children(*(BLeaf(i=i) for i in range(n)))


def chain(n: int) -> pk.Task:
    node = BLink(k=0)
    for k in range(1, n):
        node = BLink(k=k).add_children(node)
    return node


def stream(n: int) -> pk.Task:
    return BCount().add_children(BStream(n=n))


class BOne(pk.Task):
    i = pk.Param(int)

    def run(self):
        self.emit(1)


def scale(leaves: int, mids: int) -> pk.Task:
    """leaves -> mids (each sums its leaves' 1s) -> root (sums the mids: == leaves)."""
    per = leaves // mids
    return BSum().add_children(
        *(BSum().add_children(*(BOne(i=m * per + j) for j in range(per))) for m in range(mids))
    )


def sleepers(n: int, seconds: float) -> pk.Task:
    return BCount().add_children(*(BSleep(i=i, seconds=seconds) for i in range(n)))


@pk.dag
def flat(n: int = 1000) -> pk.Task:
    """``n`` leaves under one parent, by name: the user path of fanin-1000, wide-10k and
    scale-100k-flat (``Client.submit("flat", params={"n": n})``)."""
    return fanin(n)


@pk.dag
def scale_io(n: int = 2000, seconds: float = 0.02) -> pk.Task:
    """``n`` leaves sleeping ``seconds`` under one parent, by name (benchmarks.scale_hosts)."""
    return sleepers(n, seconds)


class BBusy(pk.Task):
    """Works ``seconds`` in short naps (stop soak); one subclass per queue below, so the soak
    can keep one chosen worker busy."""

    seconds = pk.Param(float, default=1.0)

    def run(self):
        end = time.monotonic() + self.seconds
        while time.monotonic() < end:
            time.sleep(0.02)
        return self.seconds


STOP_QUEUES = 8
for _i in range(STOP_QUEUES):
    globals()[f"BBusy{_i}"] = type(
        f"BBusy{_i}",
        (BBusy,),
        {"queue": f"stop{_i}", "__module__": __name__, "__qualname__": f"BBusy{_i}"},
    )
