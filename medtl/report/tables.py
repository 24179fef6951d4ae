"""Formatting helpers of the report: numbers for tables, tables for the template."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import numpy as np


def fmt(x: Any, digits: int = 3) -> str:
    """A number for a table: fixed digits, '–' for missing values."""
    if x is None:
        return "–"
    if isinstance(x, (bool, np.bool_)):
        return str(bool(x))
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, (float, np.floating)):
        return "–" if not math.isfinite(float(x)) else f"{float(x):.{digits}f}"
    return str(x)


def fmt_value(x: Any) -> str:
    """A value of the plan or config: lists of numbers as ``a × b × c``."""
    if isinstance(x, (list, tuple)) and x and all(isinstance(v, (int, float)) for v in x):
        return " × ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in x)
    if isinstance(x, float):
        return f"{x:.4g}"
    if isinstance(x, (list, tuple, dict)):
        return json.dumps(x)
    return str(x)


def table(columns: list[str], rows: list[list[Any]], numeric_from: int = 1) -> dict:
    """A table for the template; columns from ``numeric_from`` on are right-aligned."""
    return {
        "columns": columns,
        "rows": [[str(c) for c in row] for row in rows],
        "numeric_from": numeric_from,
    }


def json_safe(obj: Any) -> Any:
    """NaN/inf to None, numpy scalars to Python, recursively (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(float(obj)) else None
    return obj


def parse_triplet(text: str) -> list[float]:
    parts = re.split(r"[x×,\s]+", str(text).strip())
    try:
        vals = [float(p) for p in parts if p]
    except ValueError:
        return [math.nan] * 3
    return vals if len(vals) == 3 else [math.nan] * 3
