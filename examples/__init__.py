"""Example DAGs (importable as ``examples.simple`` etc. by workers and schedulers)."""
