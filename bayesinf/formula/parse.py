"""Split a model formula into its parts: the response (with binomial trials), the fixed-effects
right-hand side handed to formulaic, and the group-level terms ``(expr | group)`` that formulaic
does not know.

Syntax (lme4 / brms):

- ``y ~ x1 + x2``: fixed effects in formulaic's syntax (``x1:x2``, ``x1 * x2``, ``0 +`` / ``- 1``
  to drop the intercept), with the terms allowed below (``C(x)``, ``np.log(x)``, ``scale(x)``...).
- ``(1 | g)``: varying intercepts by ``g``; ``(1 + x | g)`` or ``(x | g)``: varying intercepts and
  slopes, correlated; ``(0 + x | g)``: slopes only; ``(1 + x || g)``: uncorrelated.
- ``(1 | g1/g2)``: ``g2`` nested in ``g1``, i.e. ``(1 | g1) + (1 | g1:g2)``.
- ``successes | trials(n) ~ ...``: binomial outcome with the number of trials in column ``n``.

Terms are code that formulaic evaluates, so every factor of every term is checked against a
whitelist before anything is evaluated (``check_terms``), both for a formula a user writes and for
a design read back from a saved model (a saved model is data, never code). Allowed:

- data column names (```name with spaces``` or ``Q("name with spaces")`` for other names),
  numbers, ``+ - * / **`` (not a power of two constants), unary ``-``, comparisons with numbers
  or strings (``I(x > 0)``, ``I(g == "a")``), ``np.pi`` and ``np.e``;
- the transforms ``I``, ``C`` (``C(g, levels=[...])``, contrasts ``contr.treatment("b")``,
  ``contr.sum``, ``contr.helmert``, ``contr.poly``, ``contr.diff``, ``contr.SAS``,
  ``contr.custom(...)``, ``Treatment(reference=...)``, ``Sum``, ``Helmert``, ``Poly``, ``Diff``),
  ``scale``, ``center``, ``standardize``, ``log``, ``log2``, ``log10``, ``exp``, ``exp2``, the
  splines ``bs``, ``cr``, ``cs``, ``cc`` (constant options such as ``df=4``), and the numpy
  functions of ``NUMPY_FUNCTIONS`` as ``np.<name>(...)``.

Anything else (other calls or attributes, names starting with ``__``, subscripts, lambdas,
comprehensions, ``**kwargs``) is refused.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

from ..errors import InputError

__all__ = ["GroupTerm", "ParsedFormula", "parse_formula", "check_terms", "UnsafeTermError", "NUMPY_FUNCTIONS",
           "TRANSFORMS", "ALLOWED_TERMS"]

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
        """Read a saved term; raises ``ValueError`` (``UnsafeTermError``) for a factor that is not a
        column name or an expression outside the whitelist of ``check_terms``."""
        term = cls(str(d["expr"]), tuple(str(f) for f in d["factor"]), bool(d["correlated"]))
        for name in term.factor:
            if not _NAME.match(name):
                raise UnsafeTermError(term.factor_label, f"the grouping {name!r} is not a column name")
        check_terms(term.expr)
        return term


@dataclass(frozen=True)
class ParsedFormula:
    """A formula split into response, fixed part and group terms.

    ``columns`` are the data columns the fixed part and the group terms' expressions read (not
    the response, trials or grouping columns), as ``check_terms`` finds them.
    """

    text: str
    response: str
    trials: str | None
    fixed: str
    groups: tuple[GroupTerm, ...]
    columns: tuple[str, ...] = ()


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
        a group term that is not ``(expr | factor)``, or a term outside the whitelist of
        ``check_terms`` (the message names the term and lists what is allowed).
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
    columns: dict[str, None] = {}
    for rhs in (fixed_text, *dict.fromkeys(g.expr for g in groups)):
        try:
            columns.update(dict.fromkeys(check_terms(rhs)))
        except UnsafeTermError as exc:
            raise InputError("formula", f"{formula!r} has term {exc.term!r}, which is not allowed: {exc.reason}",
                             ALLOWED_TERMS) from None
    return ParsedFormula(formula, response, trials, fixed_text, tuple(groups), tuple(columns))


# ----------------------------------------------------------------------------- what a term may contain
#: numpy functions a term may call as ``np.<name>(...)``: elementwise, with positional arguments only.
NUMPY_FUNCTIONS = frozenset({
    "abs", "absolute", "arccos", "arccosh", "arcsin", "arcsinh", "arctan", "arctan2", "arctanh", "ceil", "clip",
    "cos", "cosh", "exp", "exp2", "expm1", "floor", "fmax", "fmin", "hypot", "log", "log10", "log1p", "log2",
    "maximum", "minimum", "power", "rint", "round", "sign", "sin", "sinh", "sqrt", "square", "tan", "tanh",
    "trunc", "where",
})
_NUMPY_CONSTANTS = frozenset({"pi", "e"})
_SPLINE_OPTIONS = ("df", "knots", "lower_bound", "upper_bound", "constraints", "extrapolation")
#: formulaic transforms a term may call, with the options each takes after its data argument (the
#: option values must be constants: numbers, strings, booleans, None, lists of those).
TRANSFORMS = {
    "C": ("contrasts", "levels", "spans_intercept"),
    "I": (),
    "scale": ("center", "scale", "ddof"),
    "center": (),
    "standardize": ("center", "rescale", "ddof"),
    "log": (), "log2": (), "log10": (), "exp": (), "exp2": (),
    "bs": ("df", "knots", "degree", "include_intercept", "lower_bound", "upper_bound", "extrapolation"),
    "cr": _SPLINE_OPTIONS, "cs": _SPLINE_OPTIONS, "cc": _SPLINE_OPTIONS,
    "Q": (),
}
_CONTRASTS = frozenset({"treatment", "sum", "helmert", "poly", "diff", "SAS", "custom"})
_PATSY_CONTRASTS = frozenset({"Treatment", "Sum", "Helmert", "Poly", "Diff"})
_BINARY_OPS = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow)
_COMPARE_OPS = (ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.Eq, ast.NotEq)
#: What a term may contain, in words (for error messages).
ALLOWED_TERMS = ("terms made of column names, numbers, + - * / ** and comparisons, the transforms "
                 + ", ".join(f"{name}()" for name in TRANSFORMS) + " and np.<f>() for f in "
                 + ", ".join(sorted(NUMPY_FUNCTIONS)))


class UnsafeTermError(InputError):
    """A formula term holds code outside the whitelist of ``check_terms`` (or cannot be parsed).

    An ``InputError`` (so a ``ValueError``) on field ``"formula"``; reading a saved model turns it
    into ``ModelFileError``.

    Attributes
    ----------
    term : str
        The offending factor, as formulaic writes it.
    reason : str
        What in it is not allowed.
    """

    def __init__(self, term: str, reason: str):
        self.term, self.reason = term, reason
        super().__init__("formula", f"term {term!r} is not allowed: {reason}", ALLOWED_TERMS)


def check_terms(formula: str, columns=None) -> tuple[str, ...]:
    """Check every factor of a formulaic right-hand side against the whitelist (module docstring),
    without evaluating anything.

    Parameters
    ----------
    formula : str
        A right-hand side such as ``"1 + scale(x) + C(g)"`` (no ``~``, no ``|``).
    columns : collection of str, optional
        The data columns the formula may read (a saved design's variables); other names are refused.

    Returns
    -------
    tuple of str
        The data columns the formula reads, in order of appearance.

    Raises
    ------
    UnsafeTermError
        A factor is not allowed, names a column outside ``columns``, or the text is not a single
        formulaic right-hand side.
    """
    from formulaic import Formula
    from formulaic.formula import SimpleFormula

    if not isinstance(formula, str):
        raise UnsafeTermError(repr(formula), f"a formula must be a string, not {type(formula).__name__}")
    try:
        parsed = Formula(formula)
        terms = list(parsed) if isinstance(parsed, SimpleFormula) else None
    except Exception as exc:  # formulaic's parser only tokenizes; it evaluates nothing
        detail = re.sub(r"\x1b\[[0-9;]*m|[⧛⧚]", "", str(exc)).strip()  # formulaic's terminal highlighting
        raise UnsafeTermError(formula, f"it cannot be parsed ({type(exc).__name__}: {detail})") from None
    if terms is None:
        raise UnsafeTermError(formula, "it must be a single right-hand side, without '~' or '|'")
    found: dict[str, None] = {}
    for term in terms:
        for factor in term.factors:
            method = factor.eval_method.value
            if method == "literal":
                _check_literal(factor.expr)
            elif method == "lookup":
                found[_check_column(factor.expr, factor.expr)] = None
            elif method == "python":
                for name in _check_python(factor.expr):
                    found[name] = None
            else:
                raise UnsafeTermError(factor.expr, f"unknown evaluation method {method!r}")
    if columns is not None:
        allowed = set(columns)
        unknown = [c for c in found if c not in allowed]
        if unknown:
            raise UnsafeTermError(formula, f"it reads {unknown[0]!r}, which is not one of its columns {list(columns)}")
    return tuple(found)


def _check_literal(expr: str) -> None:
    try:
        node = ast.parse(expr, mode="eval").body
    except SyntaxError:
        raise UnsafeTermError(expr, "it is not a number") from None
    if not (isinstance(node, ast.Constant) and type(node.value) in (int, float)):
        raise UnsafeTermError(expr, "it is not a number")


def _check_column(term: str, name: str) -> str:
    if not isinstance(name, str) or not name or any(part.startswith("__") for part in name.split(".")):
        raise UnsafeTermError(term, f"{name!r} is not a column name (no name or attribute may start with '__')")
    return name


def _check_python(expr: str) -> list[str]:
    """Validate one Python factor; returns the column names it reads."""
    from formulaic.utils.code import sanitize_variable_names

    aliases: dict[str, str] = {}
    try:  # backquoted names (`my col`) become identifiers, exactly as formulaic evaluates them
        tree = ast.parse(sanitize_variable_names(expr, {}, aliases), mode="eval")
    except (SyntaxError, ValueError) as exc:
        raise UnsafeTermError(expr, f"it is not a valid expression ({exc})") from None
    names: list[str] = []
    _Checker(expr, aliases, names).data(tree.body)
    return names


class _Checker:
    """Walks the AST of one factor, accepting only the grammar of the module docstring."""

    def __init__(self, expr: str, aliases: dict[str, str], names: list[str]):
        self.expr, self.aliases, self.names = expr, aliases, names

    def refuse(self, node: ast.AST, what: str):
        raise UnsafeTermError(self.expr, f"{what} ({ast.unparse(node)!r})")

    def data(self, node: ast.AST) -> None:
        """An expression evaluated on the data columns."""
        if isinstance(node, ast.Constant):
            if type(node.value) not in (int, float, bool):
                self.refuse(node, "only numbers may appear outside comparisons and transform options")
        elif isinstance(node, ast.Name):
            if node.id in TRANSFORMS or node.id in ("np", "contr"):
                self.refuse(node, f"{node.id!r} may only be called")
            self.names.append(_check_column(self.expr, self.aliases.get(node.id, node.id)))
        elif isinstance(node, ast.BinOp) and isinstance(node.op, _BINARY_OPS):
            if isinstance(node.op, ast.Pow) and not (_reads_data(node.left) or _reads_data(node.right)):
                # Python computes it with unbounded integers: 9 ** 9 ** 9 would hang the reader
                self.refuse(node, "a power of constants is not allowed (write the number)")
            self.data(node.left)
            self.data(node.right)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            self.data(node.operand)
        elif isinstance(node, ast.Compare) and all(isinstance(op, _COMPARE_OPS) for op in node.ops):
            for operand in (node.left, *node.comparators):
                if not (isinstance(operand, ast.Constant) and isinstance(operand.value, str)):
                    self.data(operand)
        elif isinstance(node, ast.Attribute):
            if not (_is_np(node.value) and node.attr in _NUMPY_CONSTANTS):
                self.refuse(node, "the only attributes allowed are np.<function> calls, np.pi and np.e")
        elif isinstance(node, ast.Call):
            self.call(node)
        else:
            self.refuse(node, f"{type(node).__name__} expressions are not allowed")

    def call(self, node: ast.Call) -> None:
        if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
            self.refuse(node, "*args and **kwargs are not allowed")
        func = node.func
        if isinstance(func, ast.Attribute) and _is_np(func.value) and func.attr in NUMPY_FUNCTIONS:
            if node.keywords:
                self.refuse(node, f"np.{func.attr} takes no keyword options here")
            for arg in node.args:
                self.data(arg)
            return
        if not (isinstance(func, ast.Name) and func.id in TRANSFORMS):
            self.refuse(func, "this function is not an allowed transform")
        name, options = func.id, TRANSFORMS[func.id]
        if name == "Q":
            if len(node.args) != 1 or node.keywords or not (isinstance(node.args[0], ast.Constant)
                                                             and isinstance(node.args[0].value, str)):
                self.refuse(node, "Q() takes one column name as a string")
            self.names.append(_check_column(self.expr, node.args[0].value))
            return
        if not node.args:
            self.refuse(node, f"{name}() needs the data it transforms as its first argument")
        self.data(node.args[0])
        extra = node.args[1:]
        if len(extra) > len(options):
            self.refuse(node, f"{name}() takes {len(options)} option(s) after its data: {list(options)}")
        given = list(zip(options, extra)) + [(k.arg, k.value) for k in node.keywords]
        for option, value in given:
            if option not in options:
                self.refuse(node, f"{name}() has no option {option!r} (allowed: {list(options)})")
            if name == "C" and option == "contrasts":
                self.contrasts(value)
            else:
                self.constant(value)

    def contrasts(self, node: ast.AST) -> None:
        """``contr.<kind>``, ``contr.<kind>(...)``, ``Treatment(...)`` and the like, constant options."""
        target = node.func if isinstance(node, ast.Call) else node
        known = ((isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name)
                  and target.value.id == "contr" and target.attr in _CONTRASTS)
                 or (isinstance(target, ast.Name) and target.id in _PATSY_CONTRASTS))
        if not known:
            self.refuse(node, "contrasts must be contr.<" + "|".join(sorted(_CONTRASTS)) + ">(...) or one of "
                        f"{sorted(_PATSY_CONTRASTS)}")
        if isinstance(node, ast.Call):
            if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
                self.refuse(node, "*args and **kwargs are not allowed")
            for arg in (*node.args, *(k.value for k in node.keywords)):
                self.constant(arg)

    def constant(self, node: ast.AST) -> None:
        """A literal option value: number, string, bool, None, or a list, tuple or dict of those."""
        if isinstance(node, ast.Constant) and (node.value is None or type(node.value) in (int, float, bool, str)):
            return
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant) \
                and type(node.operand.value) in (int, float):
            return
        if isinstance(node, (ast.List, ast.Tuple)):
            for element in node.elts:
                self.constant(element)
            return
        if isinstance(node, ast.Dict) and all(k is not None for k in node.keys):
            for element in (*node.keys, *node.values):
                self.constant(element)
            return
        self.refuse(node, "transform options must be constants")


def _reads_data(node: ast.AST) -> bool:
    """Whether an expression reads a data column (a name other than ``np``, or ``Q(...)``)."""
    return any(isinstance(n, ast.Name) and n.id not in ("np", "Q") or isinstance(n, ast.Call) and _is_q(n)
               for n in ast.walk(node))


def _is_q(node: ast.Call) -> bool:
    return isinstance(node.func, ast.Name) and node.func.id == "Q"


def _is_np(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and node.id == "np"
