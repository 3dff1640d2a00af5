"""Markdown table helpers shared by the report modules."""

from __future__ import annotations

from typing import Any

__all__ = ["_f", "_ok", "_r", "_table"]


def _f(value: Any, digits: int = 0) -> str:
    if not isinstance(value, (int, float)):
        return str(value)
    return f"{value:,.{digits}f}"


def _r(value: float) -> str:
    return f"**{value:.2f}×**"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return [*lines, ""]


def _ok(results: dict[str, Any], key: str) -> bool:
    return isinstance(results.get(key), dict) and "error" not in results[key]
