"""Plankton benchmark suite (see ../shared/BENCHMARKS.md): Plankton workloads and peers."""
