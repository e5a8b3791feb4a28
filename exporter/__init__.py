"""Prometheus exporter for NATS JetStream.

The modules by layer, from the settings to the scrape (a test keeps this map naming every module):

- Configure: ``settingstable`` (every setting once: key, environment variable, flag, kind, help),
  ``valuekinds`` (how a setting's value is parsed, range-checked and shown), ``settings`` (the frozen
  dataclasses every module reads), ``config`` (defaults, YAML, ``NATS_EXPORTER_*`` environment, flags),
  ``configreference`` (docs/configuration.md from the table), ``cli`` and ``__main__`` (the command line and
  its subcommands), ``argtypes`` (flag values shared by subcommands), ``webconfig`` (TLS and basic auth of the
  HTTP endpoints), ``logs`` (log format, secret redaction), ``durations``, ``patterns`` (RE2 name patterns),
  ``subjects`` (NATS subject wildcards), ``yamlfiles`` (what is wrong in a YAML file), ``errors``.
- Connect: ``connection`` (one NATS connection from the settings, for every command), ``supervisor`` (the
  daemon's connection: backoff, reconnects, state changes, close), ``scope`` (one account's API or the whole
  cluster through the system account).
- Collect: ``collectionplan`` (what one exporter collects and renders), ``sharding`` (splitting a system
  between replicas), ``source`` (one account's cycle: the only reader of JetStream for metrics),
  ``cluster_source`` (every account and server through JSZ), ``account_lookups`` (dead-letter depth and
  lag inside one account), ``account_extras`` (cluster scope: what only the accounts' own connections see),
  ``jsapi`` (raw API requests and their errors),
  ``parse`` and ``parse_jsz`` (API JSON -> data, pure), ``snapshot`` (the immutable data of a cycle),
  ``ephemeral`` (what becomes of ephemeral consumers), ``monitoring`` (``io.nats.monitor.*`` thresholds),
  ``stages`` (where a cycle fails and what each stage costs), ``intake`` and ``advisories`` (advisories and
  ack samples published unasked -> counters), ``histogram`` (cumulative buckets), ``probe`` (one message
  published to a stream of the exporter's own and read back).
- Render and serve: ``metrics`` (the table of every family and the renderer), ``reference`` (docs/metrics.md
  from the table), ``gzipsegments`` (the exposition kept as per-family gzip pieces, reused while unchanged),
  ``server`` (the cached exposition and the HTTP endpoints), ``serving`` (the HTTP server on
  its own thread), ``httpguard`` (timeouts and a connection cap), ``app`` (the daemon: the collection loop
  that ties it together), ``memory`` (flat resident memory across cycles).
- Tools: ``dlq`` (the dead-letter inspector and replay), ``demo`` (the embedded platform: provisioning,
  traffic, a failing chat handler), ``natsserver`` (real nats-server child processes for the demo, tests and
  benchmark).
"""

__version__ = "0.1.0"
