"""The worker process: RQ as transport, Plankton's executor runs the tasks."""
