"""Markdown cells and tables for the generated reports (tfseg.report, tfseg.report_studies)."""
from __future__ import annotations

from tfseg.runs import as_number

DASH = "—"  # a missing value


def text(value) -> str:
    """A table cell: the value as text, '|' escaped; a dash when it is missing."""
    return DASH if value is None or value == "" else str(value).replace("|", "\\|")


def fixed(value, digits: int) -> str:
    """A number with ``digits`` decimals; a dash when it is missing or not a number."""
    value = as_number(value)
    return DASH if value is None else f"{value:.{digits}f}"


def table(headers: list[str], rows: list[list[str]]) -> list[str]:
    """Lines of a Markdown table."""
    return ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|",
            *("| " + " | ".join(row) + " |" for row in rows)]
