"""Prometheus exporter for NATS JetStream.

The layers, from the wire to the scrape:

- Configure: ``settings`` (frozen dataclasses, the one shape every module reads), ``config`` (defaults, YAML,
  ``NATS_EXPORTER_*`` environment, flags), ``cli`` (the command line and its subcommands), ``webconfig``
  (TLS and basic auth of the HTTP endpoints), ``logs`` (log format, secret redaction, log-on-change),
  ``durations`` and ``yamlfiles`` (how people write durations; what is wrong in a YAML file), ``errors``.
- Connect: ``connection`` (one NATS connection from the settings, for every command) and ``supervisor``
  (the daemon's connection: backoff, reconnects, state changes, close).
- Collect: ``source`` (one cycle: the only reader of JetStream for metrics), ``jsapi`` (raw API requests and
  what their failures mean), ``parse`` (API JSON -> data, pure), ``snapshot`` (the immutable data of a
  cycle), ``stages`` (the stages a cycle runs, fails at and is timed in), ``advisories`` (delivery-failure
  advisories -> counters).
- Render and serve: ``metrics`` (the table of every family and the renderer), ``server`` (the cached
  exposition and the HTTP endpoints), ``app`` (the daemon: the collection loop that ties all of the above
  together), ``memory`` (flat resident memory across cycles), ``reference`` (docs/metrics.md from the table).
- Tools: ``dlq`` and ``payload`` (the dead-letter inspector and message decoding), ``demo`` (the embedded
  platform: provisioning, traffic, a failing chat handler), ``natsserver`` (a real nats-server child process
  for the demo, tests and benchmark).
"""

__version__ = "0.1.0"
