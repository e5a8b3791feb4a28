"""Grafana dashboards for the NATS JetStream exporter, built as code with grafana-foundation-sdk.

Regenerate the committed JSON with ``python -m dashboards.build`` from the repository root.
"""
