"""Series selectors that honour the dashboards' template variables.

Every selector is built here from the labels its family carries (see docs/metrics.md), so a
panel cannot forget a variable: a stream family always gets ``account`` and ``stream`` matchers, a consumer
family also ``consumer``. Values are matched with ``=~`` because the variables are multi-value with
"All" = ``.*``.

No query sums over exporter replicas or instances: the exporter reports each stream once, so the only
aggregations are over a label the query names (``subject``, the fill-ratio ``limit``), or keep the exporter
target and the entity they total (``sum by (job, instance, account)`` for an account's streams).
"""

from __future__ import annotations

RATE_WINDOW = "$__rate_interval"
RANGE_WINDOW = "$__range"


def _selector(metric: str, matchers: tuple[str, ...]) -> str:
    return f"{metric}{{{', '.join(matchers)}}}"


def account_series(metric: str) -> str:
    """A family labelled ``account`` (``nats_account_*``)."""
    return _selector(metric, ('account=~"$account"',))


def stream_series(metric: str, *matchers: str) -> str:
    """A family labelled ``account``, ``stream`` (``nats_stream_*``), plus any ``matchers`` of its own."""
    return _selector(metric, ('account=~"$account"', 'stream=~"$stream"', *matchers))


def consumer_series(metric: str, *matchers: str) -> str:
    """A family labelled ``account``, ``stream``, ``consumer`` (``nats_consumer_*``), plus ``matchers``."""
    return _selector(metric, ('account=~"$account"', 'stream=~"$stream"', 'consumer=~"$consumer"', *matchers))


def stream_threshold(check: str, severity: str) -> str:
    """One ``io.nats.monitor`` threshold per stream, labelled like the stream's data series."""
    selector = stream_series("nats_stream_threshold", f'check="{check}"', f'severity="{severity}"')
    return f"max without (check, severity) ({selector})"


def consumer_threshold(check: str, severity: str = "critical") -> str:
    """One ``io.nats.monitor`` threshold per consumer, labelled like the consumer's data series."""
    selector = consumer_series("nats_consumer_threshold", f'check="{check}"', f'severity="{severity}"')
    return f"max without (check, severity) ({selector})"


def stream_peer_series(metric: str) -> str:
    """A per-peer stream family labelled ``account``, ``stream``, ``server`` (``nats_stream_replica_*``)."""
    return _selector(metric, ('account=~"$account"', 'stream=~"$stream"', 'server=~"$server"'))


def server_series(metric: str) -> str:
    """A per-server family labelled ``server`` (``nats_server_jetstream_*``, the meta group's replicas)."""
    return _selector(metric, ('server=~"$server"',))


def dead_letter_series(metric: str) -> str:
    """A family about a dead-letter stream: its ``stream`` label is chosen by ``$dlq_stream``.

    Dead-letter streams have their own variable because the ``$stream`` of the delivery-failure panels
    names the streams the failing consumers read, never the dead-letter stream itself.
    """
    return _selector(metric, ('account=~"$account"', 'stream=~"$dlq_stream"'))


def exporter_series(metric: str) -> str:
    """An exporter health family: no JetStream labels, chosen by the scraped ``instance``."""
    return _selector(metric, ('instance=~"$instance"',))


def per_second(selector: str) -> str:
    return f"rate({selector}[{RATE_WINDOW}])"


def increase_over(selector: str, window: str) -> str:
    return f"increase({selector}[{window}])"


def per_account(operator: str, expr: str) -> str:
    """``expr`` folded to one value per account, per exporter target (never across exporter replicas)."""
    return f"{operator} by (job, instance, account) ({expr})"
