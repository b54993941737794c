"""Views: how runs are shown to people. Redaction of secrets, the terminal rendering of a
run's tree, and the DAG catalogue of ``plankton dags`` and ``GET /dags``.
"""
