"""Authoring: what a user writes. Tasks, DAGs, typed params, secrets, schedules, the registry
of imported DAGs, and the collision-free hashes that identify a task by family and params.

Nothing here talks to Redis; the engine and the run modules build on it.
"""
