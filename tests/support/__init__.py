"""Shared test helpers, one module per concern; test modules import them as ``support.<module>``.

- ``waiting``: ``wait_for``, polling a condition with a deadline instead of sleeping.
- ``scraping``: an exporter's /metrics over HTTP, and exposition text as samples keyed by name and labels.
- ``exposition``: a snapshot rendered as the daemon renders it, read back as comparable series.
- ``jetstream``: raw JetStream API requests that must succeed, and a stream's state.
- ``spec_platform``: the AI platform's streams, consumer and MessagePack messages, provisioned on a server.
- ``system_cluster``: a three-node cluster with a system account and JetStream accounts.
- ``cluster``: three-node clusters, stream leadership and placement, an exporter watched while nodes fail.
- ``apitap``: the JetStream API requests of one collection cycle, counted on a real server.
- ``jetstream_stand_in``: recorded JetStream API replies served on a nats-server without JetStream.
- ``poison``: dead letters no MessagePack decoder can turn into Python values.
- ``pki``: a CA, server and client certificates as PEM files.
- ``promstack``: real Prometheus and Alertmanager processes, their APIs, a webhook receiver.
- ``dashboard_queries``: the committed Grafana dashboards as data, their queries made runnable.

Fixtures (``nats_server``, ``nc``, ``exporter_nc``, ``promtool``) live in tests/conftest.py, which pytest
needs to define them; nothing imports from conftest.
"""
