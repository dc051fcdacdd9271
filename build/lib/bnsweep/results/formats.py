"""Selecting rows and columns of a results frame, and writing it as a table, CSV, Parquet, JSON or Markdown."""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Sequence

import numpy as np
import pandas as pd

from bnsweep.errors import UsageError
from bnsweep.results.where import mask

FORMATS = ("table", "csv", "parquet", "json", "markdown")
SUFFIX_FORMAT = {".csv": "csv", ".parquet": "parquet", ".json": "json", ".md": "markdown"}


def _check_columns(df: pd.DataFrame, names: list[str], option: str) -> None:
    unknown = [n for n in names if n not in df.columns]
    if unknown:
        raise UsageError(f"{option}: unknown column {', '.join(map(repr, unknown))} "
                         f"(available: {', '.join(map(str, df.columns))})")


def select(df: pd.DataFrame, where: str | None = None, columns: Sequence[str] = (),
           sort: Sequence[str] = (), descending: bool = False) -> pd.DataFrame:
    """Filter (see `where.mask`: comparisons over columns, nothing callable), pick columns, sort;
    UsageError names what was wrong."""
    if where:
        df = df[mask(df, where)]
    _check_columns(df, list(sort), "--sort")
    if sort:
        df = df.sort_values(list(sort), ascending=not descending, kind="stable")
    _check_columns(df, list(columns), "--columns")
    return df[list(columns)] if columns else df


def _plain(df: pd.DataFrame) -> pd.DataFrame:
    """Lists and mixed-type values as text, for formats that need one type per column."""
    out = df.copy()
    for name in out.columns:
        if out[name].dtype == object and pd.api.types.infer_dtype(out[name], skipna=True) not in (
                "string", "empty"):
            out[name] = out[name].map(lambda v: v if v is None else json.dumps(v, default=str))
    return out


def markdown_table(df: pd.DataFrame, float_format: str = "{:.4g}") -> str:
    """A GitHub-flavoured Markdown table (no `tabulate` dependency)."""
    def cell(v: Any) -> str:
        if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA:
            return ""
        text = float_format.format(v) if isinstance(v, float) else str(v)
        return text.replace("|", "\\|").replace("\n", " ")

    head = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, rule, *body]) + "\n"


def write_frame(df: pd.DataFrame, fmt: str, output: str | None) -> None:
    """Write `df` in one of FORMATS to `output` (stdout when None; parquet needs a file); missing
    parent directories of `output` are created."""
    if output:
        os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    if fmt == "parquet":
        if not output:
            raise UsageError("--format parquet needs -o FILE")
        _plain(df).to_parquet(output, index=False)
        return
    if fmt == "csv":
        text = df.to_csv(index=False)
    elif fmt == "json":
        text = df.to_json(orient="records", date_format="iso", indent=1) + "\n"
    elif fmt == "markdown":
        text = markdown_table(df)
    else:
        with pd.option_context("display.max_rows", None, "display.max_columns", None,
                               "display.width", 200):
            text = df.to_string(index=False) + "\n"
    if output:
        with open(output, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
