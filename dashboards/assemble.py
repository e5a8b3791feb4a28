"""Assembling one dashboard: metadata, variables, rows of panels, links to its siblings, panel ids."""

from __future__ import annotations

from collections.abc import Sequence

from grafana_foundation_sdk.builders import dashboard
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.dashboard import DashboardCursorSync, DashboardLinkType

TAG = "nats-jetstream"
Section = tuple[str, Sequence[Builder[model.Panel]]]  # a row's title and its panels


def assemble_dashboard(
    *,
    uid: str,
    title: str,
    description: str,
    variables: Sequence[Builder[model.VariableModel]],
    sections: Sequence[Section],
) -> model.Dashboard:
    """A dashboard whose rows hold the given panels in order, with ids 1..n in reading order."""
    builder = (
        dashboard.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags([TAG])
        .editable()
        .time("now-1h", "now")
        .refresh("30s")
        .timezone("browser")
        # A shared crosshair lines up a consumer's lag with its stream's rate across panels.
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .variables(list(variables))
        .link(
            dashboard.DashboardLink("NATS JetStream")
            .type(DashboardLinkType.DASHBOARDS)
            .tags([TAG])
            .as_dropdown(as_dropdown=True)
            .include_vars(include_vars=True)
            .keep_time(keep_time=True)
        )
    )
    for row_title, panels in sections:
        builder = builder.with_row(dashboard.Row(row_title))
        for panel in panels:
            builder = builder.with_panel(panel)
    built = builder.build()
    for panel_id, built_panel in enumerate(built.panels or [], start=1):
        built_panel.id_val = panel_id
    return built
