"""Metric rows as a Markdown table (:func:`format_metrics_table`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from torch import Tensor

from mechgym.errors import ConfigurationError

__all__ = ["format_metrics_table"]


def _cell(value: Any, float_format: str) -> str:
    if value is None:
        return ""
    if isinstance(value, float | np.floating):
        text = format(float(value), float_format)
    elif isinstance(value, Tensor) and value.numel() == 1:
        text = format(value.item(), float_format) if value.is_floating_point() else str(value.item())
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.number) and not isinstance(value, bool)


def format_metrics_table(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, float_format: str = ".4g"
) -> str:
    """A Markdown table of metric rows (e.g. ``{"model": "DIML", **evaluate(...)}`` per fit).

    Args:
        rows: One mapping per table row.
        columns: Column order; ``None`` for every key in order of first appearance.
        float_format: Format spec of floats (``".4g"``: four significant digits).

    Returns:
        The table, one line per row after the header; numeric columns are right-aligned, missing
        entries are empty, ``|`` in text is escaped.

    Raises:
        ConfigurationError: no rows or no columns.

    Example:
        >>> print(format_metrics_table([{"model": "DIML", "diff_mse": 0.0099}]))
        | model | diff_mse |
        | ----- | -------: |
        | DIML  |   0.0099 |
    """
    if not rows:
        raise ConfigurationError("format_metrics_table needs at least one row")
    names = list(columns) if columns is not None else list(dict.fromkeys(key for row in rows for key in row))
    if not names:
        raise ConfigurationError("format_metrics_table needs at least one column")
    cells = [[_cell(row.get(name), float_format) for name in names] for row in rows]
    numeric = [all(_is_number(row.get(name)) for row in rows if row.get(name) is not None) for name in names]
    widths = [max(3, len(name), *(len(line[j]) for line in cells)) for j, name in enumerate(names)]

    def line(parts: Sequence[str]) -> str:
        return "| " + " | ".join(parts) + " |"

    header = line([name.ljust(width) for name, width in zip(names, widths, strict=True)])
    rule = line([("-" * (w - 1) + ":") if num else "-" * w for w, num in zip(widths, numeric, strict=True)])
    body = [
        line([c.rjust(w) if num else c.ljust(w) for c, w, num in zip(row, widths, numeric, strict=True)])
        for row in cells
    ]
    return "\n".join([header, rule, *body])
