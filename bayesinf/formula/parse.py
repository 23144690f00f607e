"""Split a model formula into its parts: the response (with binomial trials), the fixed-effects
right-hand side handed to formulaic, and the group-level terms ``(expr | group)`` that formulaic
does not know.

Syntax (lme4 / brms):

- ``y ~ x1 + x2``: fixed effects; everything formulaic accepts (``C(x)``, ``x1:x2``, ``x1 * x2``,
  ``np.log(x)``, ``scale(x)``, ``0 +`` / ``- 1`` to drop the intercept).
- ``(1 | g)``: varying intercepts by ``g``; ``(1 + x | g)`` or ``(x | g)``: varying intercepts and
  slopes, correlated; ``(0 + x | g)``: slopes only; ``(1 + x || g)``: uncorrelated.
- ``(1 | g1/g2)``: ``g2`` nested in ``g1``, i.e. ``(1 | g1) + (1 | g1:g2)``.
- ``successes | trials(n) ~ ...``: binomial outcome with the number of trials in column ``n``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import InputError

__all__ = ["GroupTerm", "ParsedFormula", "parse_formula"]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
_TRIALS = re.compile(r"^trials\(\s*([A-Za-z_][A-Za-z0-9_.]*)\s*\)$")


@dataclass(frozen=True)
class GroupTerm:
    """One group-level term ``(expr | factor)``.

    Attributes
    ----------
    expr : str
        Right-hand side of the varying effects, in formulaic syntax ("1", "1 + x", "0 + x").
    factor : tuple of str
        Grouping columns; several for an interaction or a nested term (``g1:g2``).
    correlated : bool
        Whether the effects of one group are correlated (``|``) or independent (``||``).
    """

    expr: str
    factor: tuple[str, ...]
    correlated: bool = True

    @property
    def factor_label(self) -> str:
        """The grouping as written in names: ``"county"``, ``"g1:g2"``."""
        return ":".join(self.factor)

    def to_json(self) -> dict:
        return {"expr": self.expr, "factor": list(self.factor), "correlated": self.correlated}

    @classmethod
    def from_json(cls, d) -> "GroupTerm":
        return cls(str(d["expr"]), tuple(str(f) for f in d["factor"]), bool(d["correlated"]))


@dataclass(frozen=True)
class ParsedFormula:
    """A formula split into response, fixed part and group terms."""

    text: str
    response: str
    trials: str | None
    fixed: str
    groups: tuple[GroupTerm, ...]


def _malformed(formula: str, problem: str) -> InputError:
    return InputError("formula", f"{formula!r} is malformed: {problem}",
                      "a formula such as 'y ~ x + (1 + x | group)'")


def _split_top(text: str, sep: str) -> list[str]:
    """Split ``text`` at ``sep`` outside parentheses and quotes."""
    parts, depth, quote, start, i = [], 0, None, 0, 0
    while i < len(text):
        ch = text[i]
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
            if depth < 0:
                raise ValueError("unbalanced parentheses")
        elif depth == 0 and text.startswith(sep, i):
            parts.append(text[start:i])
            i += len(sep)
            start = i
            continue
        i += 1
    if depth != 0 or quote:
        raise ValueError("unbalanced parentheses or quotes")
    parts.append(text[start:])
    return parts


def _group_terms(formula: str, inner: str) -> list[GroupTerm]:
    correlated = True
    pieces = _split_top(inner, "||")
    if len(pieces) == 2:
        correlated = False
    else:
        pieces = _split_top(inner, "|")
    if len(pieces) != 2:
        raise _malformed(formula, f"group term '({inner})' needs exactly one '|' or '||'")
    expr, factor = pieces[0].strip(), pieces[1].strip()
    if not expr:
        raise _malformed(formula, f"group term '({inner})' has nothing before '|'")
    if "/" in factor:
        levels = [f.strip() for f in factor.split("/")]
        chains = [tuple(levels[:i + 1]) for i in range(len(levels))]
    else:
        chains = [tuple(f.strip() for f in factor.split(":"))]
    for chain in chains:
        for name in chain:
            if not _NAME.match(name):
                raise _malformed(formula, f"group term '({inner})' groups by {name!r}, which is not a column name")
    return [GroupTerm(expr, chain, correlated) for chain in chains]


def parse_formula(formula: str) -> ParsedFormula:
    """Parse ``formula`` into a ``ParsedFormula``.

    Raises
    ------
    InputError
        If the formula is not a string, has no single ``~``, a response that is not a column name,
        or a group term that is not ``(expr | factor)``.
    """
    if not isinstance(formula, str):
        raise InputError("formula", f"must be a string; got {type(formula).__name__}")
    sides = formula.split("~")
    if len(sides) != 2:
        raise _malformed(formula, f"it needs exactly one '~' (found {len(sides) - 1})")
    lhs, rhs = sides[0].strip(), sides[1].strip()
    trials = None
    if "|" in lhs:
        response, _, extra = (p.strip() for p in lhs.partition("|"))
        match = _TRIALS.match(extra)
        if not match:
            raise _malformed(formula, f"the response '{lhs}' can only carry 'trials(column)' after '|'")
        trials = match.group(1)
    else:
        response = lhs
    if not _NAME.match(response or ""):
        raise _malformed(formula, f"the response {response!r} must be a column name")
    if not rhs:
        raise _malformed(formula, "the right-hand side is empty")
    try:
        parts = [p.strip() for p in _split_top(rhs, "+")]
    except ValueError as exc:
        raise _malformed(formula, str(exc)) from None
    fixed, groups = [], []
    for part in parts:
        if not part:
            raise _malformed(formula, "a '+' has nothing on one side")
        if part.startswith("(") and part.endswith(")") and _split_top(part[1:-1], "|") != [part[1:-1]]:
            groups.extend(_group_terms(formula, part[1:-1]))
        elif _split_top(part, "|") != [part]:
            raise _malformed(formula, f"'{part}': a group term must be in parentheses, as '(1 | group)'")
        else:
            fixed.append(part)
    fixed_text = " + ".join(fixed) if fixed else "1"
    if not fixed and not groups:
        raise _malformed(formula, "no terms on the right-hand side")
    labels = [(g.expr, g.factor) for g in groups]
    if len(set(labels)) != len(labels):
        raise _malformed(formula, "a group term appears twice")
    return ParsedFormula(formula, response, trials, fixed_text, tuple(groups))
