"""Panel constructors with the conventions every dashboard shares.

Every panel reads the ``$datasource`` variable, carries a description (what it means, what to do when it
looks wrong) and names its unit. Panel ids are assigned by ``build.py`` when the dashboard is assembled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from grafana_foundation_sdk.builders import (
    bargauge,
    common,
    dashboard,
    gauge,
    prometheus,
    stat,
    table,
    timeseries,
)
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.variants import Dataquery
from grafana_foundation_sdk.models.common import (
    BarGaugeDisplayMode,
    BigValueColorMode,
    BigValueGraphMode,
    BigValueTextMode,
    GraphThresholdsStyleMode,
    LegendDisplayMode,
    LegendPlacement,
    VizOrientation,
)
from grafana_foundation_sdk.models.dashboard import (
    DataTransformerConfig,
    DynamicConfigValue,
    Panel,
    Threshold,
    ThresholdsMode,
    ValueMap,
    ValueMapping,
    ValueMappingResult,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from dashboards.variables import DATASOURCE

REF_IDS = "ABCDEFGHIJ"
PanelBuilder = Builder[Panel]
PanelT = TypeVar("PanelT", timeseries.Panel, stat.Panel, gauge.Panel, bargauge.Panel, table.Panel)

# Units Grafana knows by id; an unknown id is shown as a suffix, which is what "msg/s" relies on.
BYTES = "bytes"
SECONDS = "s"
RATIO = "percentunit"
COUNT = "short"
MESSAGES_PER_SECOND = "msg/s"
EVENTS_PER_SECOND = "events/s"
REQUESTS_PER_SECOND = "reqps"


@dataclass(frozen=True)
class Query:
    """One PromQL expression and the legend that names its series."""

    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Column:
    """A table column filled by one instant query, merged with the others on their labels."""

    header: str
    expr: str
    unit: str = COUNT


def thresholds(*steps: tuple[float, str]) -> dashboard.ThresholdsConfig:
    """Green below the first step, then each step's colour from its value up."""
    return (
        dashboard.ThresholdsConfig()
        .mode(ThresholdsMode.ABSOLUTE)
        .steps([Threshold(value=None, color="green"), *(Threshold(value=v, color=c) for v, c in steps)])
    )


# Limits: warn at 80 %, critical at 95 % of a limit.
LIMIT_THRESHOLDS = ((0.8, "orange"), (0.95, "red"))


def value_texts(texts: dict[str, tuple[str, str]]) -> list[ValueMapping]:
    """Value mappings from a raw value to (text, colour), e.g. 1 -> ("up", "green")."""
    options = {
        value: ValueMappingResult(text=text, color=colour, index=index)
        for index, (value, (text, colour)) in enumerate(texts.items())
    }
    return [ValueMap(options=options)]


def _targets(queries: tuple[Query, ...], *, instant: bool, as_table: bool) -> list[Builder[Dataquery]]:
    targets: list[Builder[Dataquery]] = []
    for ref_id, query in zip(REF_IDS, queries, strict=False):
        target = prometheus.Dataquery().expr(query.expr).ref_id(ref_id).datasource(DATASOURCE)
        if query.legend:
            target = target.legend_format(query.legend)
        if instant:
            target = target.instant()
        if as_table:
            target = target.format(PromQueryFormat.TABLE)
        targets.append(target)
    if len(targets) != len(queries):
        raise ValueError(f"at most {len(REF_IDS)} queries per panel")
    return targets


def _table_legend() -> common.VizLegendOptions:
    return (
        common.VizLegendOptions()
        .display_mode(LegendDisplayMode.TABLE)
        .placement(LegendPlacement.BOTTOM)
        .show_legend(show_legend=True)
        .calcs(["lastNotNull", "max"])
        .sort_by("Last *")
        .sort_desc(sort_desc=True)
    )


def _panel(  # noqa: PLR0913 (the same named options as the panel constructors it serves)
    panel: PanelT,
    title: str,
    description: str,
    targets: list[Builder[Dataquery]],
    *,
    width: int,
    height: int,
) -> PanelT:
    """What every panel has: a title, a description, the ``$datasource``, its queries and its size."""
    return (
        panel.title(title)
        .description(description)
        .datasource(DATASOURCE)
        .targets(targets)
        .span(width)
        .height(height)
    )


def timeseries_panel(  # noqa: PLR0913 (one call per panel reads best with every option named)
    title: str,
    description: str,
    *queries: Query,
    unit: str,
    width: int = 12,
    height: int = 8,
    limit_line: tuple[tuple[float, str], ...] = (),
    minimum: float | None = 0,
) -> timeseries.Panel:
    """A graph over time; ``limit_line`` draws dashed threshold lines (e.g. a ratio's 80 % and 95 %)."""
    targets = _targets(queries, instant=False, as_table=False)
    panel = (
        _panel(timeseries.Panel(), title, description, targets, width=width, height=height)
        .unit(unit)
        .legend(_table_legend())
        .fill_opacity(10)
        .line_width(1)
    )
    if minimum is not None:
        panel = panel.min(minimum)
    if limit_line:
        panel = panel.thresholds(thresholds(*limit_line)).thresholds_style(
            common.GraphThresholdsStyleConfig().mode(GraphThresholdsStyleMode.DASHED)
        )
    return panel


def stat_panel(  # noqa: PLR0913 (one call per panel reads best with every option named)
    title: str,
    description: str,
    *queries: Query,
    unit: str,
    width: int = 6,
    height: int = 5,
    steps: tuple[tuple[float, str], ...] = (),
    mappings: list[ValueMapping] | None = None,
    no_value: str | None = None,
) -> stat.Panel:
    """Current values as big numbers (the last point), one per series, named by the legend."""
    targets = _targets(queries, instant=False, as_table=False)
    panel = (
        _panel(stat.Panel(), title, description, targets, width=width, height=height)
        .unit(unit)
        .thresholds(thresholds(*steps))
        .color_mode(BigValueColorMode.BACKGROUND)
        .graph_mode(BigValueGraphMode.AREA)
        .text_mode(BigValueTextMode.VALUE_AND_NAME)
        .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(values=False))
    )
    if mappings:
        panel = panel.mappings(mappings)
    if no_value is not None:
        panel = panel.no_value(no_value)
    return panel


def gauge_panel(
    title: str,
    description: str,
    query: Query,
    *,
    width: int = 6,
    height: int = 8,
) -> gauge.Panel:
    """A ratio of a limit, 0 to 1, coloured at 80 % and 95 %."""
    targets = _targets((query,), instant=False, as_table=False)
    return (
        _panel(gauge.Panel(), title, description, targets, width=width, height=height)
        .unit(RATIO)
        .min(0)
        .max(1)
        .thresholds(thresholds(*LIMIT_THRESHOLDS))
        .show_threshold_markers(show_threshold_markers=True)
        .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(values=False))
    )


def bargauge_panel(  # noqa: PLR0913 (one call per panel reads best with every option named)
    title: str,
    description: str,
    query: Query,
    *,
    unit: str,
    width: int = 12,
    height: int = 8,
    steps: tuple[tuple[float, str], ...] = (),
) -> bargauge.Panel:
    """A ranking (``topk``) as horizontal bars, read at the end of the time range."""
    targets = _targets((query,), instant=True, as_table=False)
    return (
        _panel(bargauge.Panel(), title, description, targets, width=width, height=height)
        .unit(unit)
        .min(0)
        .thresholds(thresholds(*steps))
        .orientation(VizOrientation.HORIZONTAL)
        .display_mode(BarGaugeDisplayMode.GRADIENT)
        .show_unfilled(show_unfilled=True)
        .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(values=False))
    )


def _unit_override(unit: str) -> DynamicConfigValue:
    return DynamicConfigValue(id_val="unit", value=unit)


def table_panel(  # noqa: PLR0913 (one call per panel reads best with every option named)
    title: str,
    description: str,
    *columns: Column,
    label_columns: tuple[str, ...],
    sort_by: str,
    width: int = 24,
    height: int = 9,
) -> table.Panel:
    """One row per label set (e.g. per stream), one column per instant query, merged on the labels."""
    rename = {f"Value #{ref_id}": column.header for ref_id, column in zip(REF_IDS, columns, strict=False)}
    order = {name: index for index, name in enumerate((*label_columns, *rename))}
    targets = _targets(tuple(Query(c.expr) for c in columns), instant=True, as_table=True)
    panel = (
        _panel(table.Panel(), title, description, targets, width=width, height=height)
        .with_transformation(DataTransformerConfig(id_val="merge", options={}))
        .with_transformation(
            DataTransformerConfig(
                id_val="organize",
                options={
                    # job and instance say which exporter answered, not what the row is about.
                    "excludeByName": {"Time": True, "job": True, "instance": True},
                    "renameByName": rename,
                    "indexByName": order,
                },
            )
        )
        .sort_by([common.TableSortByFieldState().display_name(sort_by).desc(desc=True)])
    )
    for column in columns:
        panel = panel.override_by_name(column.header, [_unit_override(column.unit)])
    return panel


def info_table_panel(
    title: str,
    description: str,
    query: Query,
    *,
    width: int = 12,
    height: int = 5,
) -> table.Panel:
    """The labels of an ``*_info`` series (value always 1), one row per series."""
    targets = _targets((query,), instant=True, as_table=True)
    return _panel(table.Panel(), title, description, targets, width=width, height=height).with_transformation(
        DataTransformerConfig(
            id_val="organize",
            options={"excludeByName": {"Time": True, "Value": True, "__name__": True, "job": True}},
        )
    )
