"""Grafana's JSON model, a panel at a time: the grid, the targets, the thresholds.

:class:`Layout` places panels left to right on Grafana's 24-column grid and
numbers them; :mod:`metrics.dashboard` says which panels there are.

Examples
--------
>>> lay = Layout()
>>> lay.row("Throughput")
>>> lay.stat("Workers up", [("sum(up)", "up")])
>>> [(p["type"], p["gridPos"]) for p in lay.panels]
[('row', {'h': 1, 'w': 24, 'x': 0, 'y': 0}), ('stat', {'h': 4, 'w': 6, 'x': 0, 'y': 1})]
>>> quantiles("lat")[2]
('histogram_quantile(0.99, sum by (le) (rate(lat_bucket[1m])))', 'p99')
"""

from __future__ import annotations

from typing import Any

from streamlearn.metrics.monitoring_metrics import THRESHOLD

__all__ = ["DATASOURCE", "Layout", "Target", "quantiles", "threshold_series", "threshold_steps"]

#: The Prometheus data source every panel queries.
DATASOURCE: dict[str, str] = {"type": "prometheus", "uid": "prometheus"}

#: A panel target: ``(PromQL expression, legend)``.
Target = tuple[str, str]


def quantiles(metric: str, by: str = "") -> list[Target]:
    """The p50, p95 and p99 of histogram ``metric`` over 1m, optionally ``by`` a label."""
    group = f"le, {by}" if by else "le"
    legend = f"{{{{{by}}}}} " if by else ""
    return [
        (
            f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket[1m])))",
            f"{legend}p{round(q * 100)}",
        )
        for q in (0.5, 0.95, 0.99)
    ]


def threshold_series(*names: str) -> list[Target]:
    """The exported alert thresholds ``names``, as lines on a panel."""
    return [(f'max({THRESHOLD}{{name="{n}"}})', f"threshold {n}") for n in names]


def threshold_steps(*levels: tuple[float, str], base: str = "green") -> dict[str, Any]:
    """Panel thresholds: ``base`` colour below the first level, each ``(value, colour)`` above."""
    steps: list[dict[str, Any]] = [{"color": base, "value": None}]
    steps += [{"color": color, "value": value} for value, color in levels]
    return {"mode": "absolute", "steps": steps}


class Layout:
    """Places panels left to right, 24 columns wide, and numbers them."""

    def __init__(self) -> None:
        self.panels: list[dict[str, Any]] = []
        self.x = 0
        self.y = 0
        self.row_height = 0
        self.next_id = 1

    def _place(self, w: int, h: int) -> dict[str, int]:
        if self.x + w > 24:
            self.x = 0
            self.y += self.row_height
            self.row_height = 0
        pos = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.x += w
        self.row_height = max(self.row_height, h)
        return pos

    def row(self, title: str) -> None:
        """Start a new row of panels under a ``title``."""
        if self.x:
            self.x = 0
            self.y += self.row_height
            self.row_height = 0
        self.panels.append(
            {
                "type": "row",
                "id": self.next_id,
                "title": title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y},
                "panels": [],
            }
        )
        self.next_id += 1
        self.y += 1

    def timeseries(
        self,
        title: str,
        targets: list[Target],
        *,
        unit: str = "short",
        description: str = "",
        thresholds: dict[str, Any] | None = None,
        w: int = 12,
        h: int = 8,
        min_value: float | None = None,
        max_value: float | None = None,
    ) -> None:
        """Add a time-series panel of ``targets`` (``w`` columns wide, ``h`` high)."""
        defaults: dict[str, Any] = {
            "unit": unit,
            "custom": {
                "drawStyle": "line",
                "lineWidth": 1,
                "fillOpacity": 10,
                "showPoints": "never",
                "spanNulls": False,
                "thresholdsStyle": {"mode": "line+area" if thresholds else "off"},
            },
            "thresholds": thresholds or threshold_steps(),
        }
        if min_value is not None:
            defaults["min"] = min_value
        if max_value is not None:
            defaults["max"] = max_value
        self._add(
            title,
            "timeseries",
            targets,
            description,
            w,
            h,
            {
                "fieldConfig": {"defaults": defaults, "overrides": []},
                "options": {
                    "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                    "tooltip": {"mode": "multi", "sort": "none"},
                },
            },
        )

    def stat(self, title: str, targets: list[Target], *, description: str = "", w: int = 6) -> None:
        """Add a stat panel showing the last value of each of ``targets``."""
        self._add(
            title,
            "stat",
            targets,
            description,
            w,
            4,
            {
                "fieldConfig": {"defaults": {"unit": "short"}, "overrides": []},
                "options": {
                    "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                    "textMode": "value_and_name",
                    "colorMode": "none",
                },
            },
        )

    def alert_list(self, title: str, *, w: int = 12, h: int = 8) -> None:
        """Add a panel listing the streamlearn alerts that fire or are pending."""
        self.panels.append(
            {
                "type": "alertlist",
                "id": self.next_id,
                "title": title,
                "gridPos": self._place(w, h),
                "options": {
                    "viewMode": "list",
                    "groupMode": "default",
                    "groupBy": [],
                    "maxItems": 50,
                    "sortOrder": 1,
                    "dashboardAlerts": False,
                    "alertName": "Streamlearn",
                    "alertInstanceLabelFilter": "",
                    "datasource": "Prometheus",
                    "stateFilter": {
                        "firing": True,
                        "pending": True,
                        "noData": False,
                        "normal": False,
                        "error": True,
                    },
                },
            }
        )
        self.next_id += 1

    def _add(
        self,
        title: str,
        kind: str,
        targets: list[Target],
        description: str,
        w: int,
        h: int,
        extra: dict[str, Any],
    ) -> None:
        self.panels.append(
            {
                "type": kind,
                "id": self.next_id,
                "title": title,
                "description": description,
                "datasource": dict(DATASOURCE),
                "gridPos": self._place(w, h),
                "targets": [
                    {
                        "datasource": dict(DATASOURCE),
                        "expr": expr,
                        "legendFormat": legend,
                        "refId": chr(ord("A") + i),
                    }
                    for i, (expr, legend) in enumerate(targets)
                ],
                **extra,
            }
        )
        self.next_id += 1
