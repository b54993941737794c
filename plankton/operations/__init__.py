"""Operations: what keeps a deployment observable and safe to run. Prometheus metrics,
alerts and webhooks, log set-up, the scheduler's leader lease, and clean stops on signals.
"""
