"""Markdown table helpers shared by the report modules."""

from __future__ import annotations

from typing import Any

__all__ = ["_f", "_insert_section", "_ok", "_r", "_table"]


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


def _insert_section(text: str, lines: list[str]) -> str:
    """``text`` (a rendered report) with ``lines`` before its errors and figures."""
    if not lines:
        return text
    section = "\n".join(lines) + "\n"
    for marker in ("\n## Errors\n", "\n## Figures\n"):
        at = text.find(marker)
        if at >= 0:
            return text[: at + 1] + section + text[at + 1 :]
    return text + "\n" + section
