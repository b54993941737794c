"""Task code and DAGs the tests' workers import (``--import tests.dags.tasks`` and the like).

A task's family is ``module:QualName``, so these modules' dotted paths are part of the
family names the tests assert (``tests.dags.obs_tasks:Holder``).
"""
