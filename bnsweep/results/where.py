"""`--where` filters: a small expression language over a frame's columns that cannot run code.

The expression is parsed with Python's `ast` and evaluated node by node over the columns; anything
but column names (`backquoted` when not identifiers, e.g. `robust_acc_eps0.5`), literals,
comparisons, `in`/`not in` a list, `and`/`or`/`not` and `+ - * / // %` on numbers is refused, so no
name outside the columns and no function or method can be reached (pandas' `query` reaches both,
through `@name` and attribute access).
"""

from __future__ import annotations

import ast
import operator
from typing import Any

import numpy as np
import pandas as pd

from bnsweep.errors import UsageError

ALLOWED = ("column names, `backquoted column names`, numbers, 'strings', [lists] after in, "
           "== != < <= > >=, in, not in, and, or, not, + - * / // % on numbers")
_COMPARE = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
            ast.Gt: operator.gt, ast.GtE: operator.ge}
_ARITHMETIC = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
               ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod}
_LITERALS = (str, int, float)  # bool is an int


_KINDS = {ast.Call: "a call", ast.Attribute: "attribute access", ast.Subscript: "a subscript",
          ast.Lambda: "a lambda", ast.NamedExpr: "an assignment", ast.JoinedStr: "an f-string",
          ast.IfExp: "a conditional expression", ast.Constant: "the literal", ast.Dict: "a dict",
          ast.BinOp: "the operator in", ast.UnaryOp: "the operator in"}


def _short(text: str, limit: int = 80) -> str:
    """`text` quoted, cut to `limit` characters: error messages stay one readable line."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def mask(df: pd.DataFrame, where: str) -> pd.Series:
    """The rows of `df` for which `where` holds, as a boolean Series; UsageError names the problem."""
    text, quoted = _unquote(where)
    try:
        tree = ast.parse(text.strip(), mode="eval")
        value = _Evaluator(df, where, quoted).visit(tree.body)
    except UsageError:  # a ValueError too, already worded
        raise
    except (SyntaxError, MemoryError, RecursionError) as err:  # the last two: nested too deeply
        raise UsageError(f"--where {_short(where)}: not a valid expression ({type(err).__name__}); "
                         f"allowed: {ALLOWED}") from None
    except (TypeError, ValueError, ArithmeticError) as err:  # e.g. a text column compared with a number
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UsageError(f"--where {_short(where)}: {reason}") from None
    if _is_bool_scalar(value):
        return pd.Series(bool(value), index=df.index)
    if not _is_bool_series(value):
        raise UsageError(f"--where {_short(where)}: not a condition; allowed: a comparison, e.g. robust_acc > 0.5")
    return value.fillna(False).astype(bool)


def _unquote(where: str) -> tuple[str, dict[str, str]]:
    """Replace each `backquoted name` outside string literals by a placeholder identifier."""
    quoted: dict[str, str] = {}
    out, quote, i = [], None, 0
    while i < len(where):
        char = where[i]
        if quote:  # inside a string literal: copy, minding escapes
            out.append(where[i:i + 2] if char == "\\" else char)
            i += 2 if char == "\\" else 1
            quote = None if char == quote else quote
            continue
        if char == "`":
            end = where.find("`", i + 1)
            if end < 0:
                raise UsageError(f"--where {_short(where)}: unclosed ` quote; allowed: {ALLOWED}")
            placeholder = f"_bnsweep_quoted_{len(quoted)}"
            quoted[placeholder] = where[i + 1:end]
            out.append(placeholder)
            i = end + 1
            continue
        quote = char if char in "'\"" else None
        out.append(char)
        i += 1
    return "".join(out), quoted


def _is_bool_scalar(value: Any) -> bool:
    return isinstance(value, (bool, np.bool_))


def _is_bool_series(value: Any) -> bool:
    return isinstance(value, pd.Series) and pd.api.types.is_bool_dtype(value.dtype)


class _Evaluator:
    """Evaluates the allowed nodes over the columns of `df`; every other node is refused."""

    def __init__(self, df: pd.DataFrame, where: str, quoted: dict[str, str]):
        self.df, self.where, self.quoted = df, where, quoted

    def show(self, node: ast.AST) -> str:
        """The source of `node` as the user wrote it (backquoted names restored)."""
        text = ast.unparse(node)
        for placeholder, name in self.quoted.items():
            text = text.replace(placeholder, f"`{name}`")
        return text

    def refuse(self, node: ast.AST, what: str | None = None) -> UsageError:
        kind = _KINDS.get(type(node), type(node).__name__)
        return UsageError(f"--where {_short(self.where)}: {what or kind + ' ' + _short(self.show(node))} "
                          f"is not allowed; allowed: {ALLOWED}")

    def visit(self, node: ast.AST) -> Any:
        method = getattr(self, f"visit_{type(node).__name__}", None)
        if method is None:
            raise self.refuse(node)
        return method(node)

    def visit_Name(self, node: ast.Name) -> pd.Series:
        name = self.quoted.get(node.id, node.id)
        if name not in self.df.columns:
            raise UsageError(f"--where {_short(self.where)}: unknown column {name!r} "
                             f"(available: {', '.join(map(str, self.df.columns))})")
        return self.df[name]

    def visit_Constant(self, node: ast.Constant) -> Any:
        if not isinstance(node.value, _LITERALS):
            raise self.refuse(node)
        return node.value

    def visit_BoolOp(self, node: ast.BoolOp) -> Any:
        values = [self.condition(v) for v in node.values]
        combine = operator.and_ if isinstance(node.op, ast.And) else operator.or_
        result = values[0]
        for value in values[1:]:
            result = combine(result, value)
        return result

    def visit_UnaryOp(self, node: ast.UnaryOp) -> Any:
        if isinstance(node.op, ast.Not):
            value = self.condition(node.operand)
            return (not value) if _is_bool_scalar(value) else ~value
        if isinstance(node.op, (ast.USub, ast.UAdd)):
            value = self.number(node.operand)
            return -value if isinstance(node.op, ast.USub) else value
        raise self.refuse(node)

    def visit_BinOp(self, node: ast.BinOp) -> Any:
        op = _ARITHMETIC.get(type(node.op))
        if op is None:
            raise self.refuse(node)
        return op(self.number(node.left), self.number(node.right))

    def visit_Compare(self, node: ast.Compare) -> Any:
        result, left = True, self.visit(node.left)
        for op, right_node in zip(node.ops, node.comparators):
            if isinstance(op, (ast.In, ast.NotIn)):
                right = self.choices(right_node)
                held = left.isin(right) if isinstance(left, pd.Series) else left in right
                value = held if isinstance(op, ast.In) else (~held if isinstance(held, pd.Series) else not held)
            elif type(op) in _COMPARE:
                right = self.visit(right_node)
                value = _COMPARE[type(op)](left, right)
            else:  # is, is not
                raise self.refuse(node, f"{_short(self.show(node))} (is, is not)")
            result = value if result is True else result & value
            left = right
        return result

    def condition(self, node: ast.AST) -> Any:
        value = self.visit(node)
        if not (_is_bool_scalar(value) or _is_bool_series(value)):
            raise UsageError(f"--where {_short(self.where)}: and, or, not combine conditions, and "
                             f"{_short(self.show(node))} is not one; allowed: a comparison, e.g. robust_acc > 0.5")
        return value

    def number(self, node: ast.AST) -> Any:
        """An operand of arithmetic: a number or a numeric column (never text, which `*` would repeat)."""
        value = self.visit(node)
        numeric = (isinstance(value, (int, float)) and not _is_bool_scalar(value)) or (
            isinstance(value, pd.Series) and pd.api.types.is_numeric_dtype(value.dtype)
            and not pd.api.types.is_bool_dtype(value.dtype))
        if not numeric:
            raise UsageError(f"--where {_short(self.where)}: arithmetic needs numbers, and {_short(self.show(node))} "
                             f"is not one; allowed: {ALLOWED}")
        return value

    def choices(self, node: ast.AST) -> list[Any]:
        """The right side of `in`: a list or tuple of literals."""
        if not isinstance(node, (ast.List, ast.Tuple)):
            raise self.refuse(node, f"in {_short(self.show(node))} (only a list of values may follow in)")
        values = []
        for element in node.elts:
            value = self.visit(element)
            if isinstance(value, pd.Series):
                raise self.refuse(element, f"column {_short(self.show(element))} inside a list")
            values.append(value)
        return values
