"""Runs: writing one (``writing``, from a ``planning.Plan``), reading one back (``reading``),
and re-creating one: ``rerun`` (same tree, today's code), ``resume`` (reuse what succeeded),
``skip`` (``complete()``) and ``prefill`` (tasks written already finished).
"""
