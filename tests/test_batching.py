"""How a run's ready tasks are cut into RQ jobs (plankton.engine.transport.batch_size and cut).

Job counts, not job sizes, decide how evenly workers finish: 2,000 tasks for 16 workers cut
into 250 jobs of 8 gave 10 workers a 16th job while 6 waited (benchmarks/scale_hosts.py)."""

from __future__ import annotations

import pytest

from plankton.engine.transport import MAX_BATCH, batch_size, cut


def _todo(n: int) -> list[tuple[str, int]]:
    return [(str(i), 1) for i in range(n)]


@pytest.mark.parametrize("workers", [1, 2, 3, 4, 8, 16, 32])
def test_a_run_is_cut_into_16_jobs_per_worker_of_near_equal_size(workers):
    todo = _todo(2000)
    parts = cut(todo, batch_size(len(todo), workers))
    assert [t for p in parts for t in p] == todo  # every task once, in order
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1 and max(sizes) <= MAX_BATCH
    assert sizes == sorted(sizes, reverse=True)  # the smallest are taken last
    if 2000 / (16 * workers) <= MAX_BATCH:
        assert len(parts) == 16 * workers  # a whole number of rounds


def test_small_and_empty_inputs():
    assert cut([], 8) == []
    assert [len(p) for p in cut(_todo(3), MAX_BATCH)] == [3]
    assert [len(p) for p in cut(_todo(5), 0.2)] == [1] * 5  # at least one task per job
    assert [len(p) for p in cut(_todo(200), 1000)] == [50] * 4  # at most MAX_BATCH
    assert batch_size(0, 0) == 1.0 and batch_size(10, 4) == 1.0
