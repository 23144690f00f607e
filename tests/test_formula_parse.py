"""Formula syntax: the split into response, fixed part and group terms, and clear errors."""

import pytest

import bayesinf as bi
from bayesinf.formula import GroupTerm, parse_formula
from bayesinf.formula.parse import UnsafeTermError, check_terms


def test_fixed_and_group_terms():
    p = parse_formula("log_radon ~ floor + np.log(x) + (1 + floor | county)")
    assert p.response == "log_radon" and p.trials is None
    assert p.fixed == "floor + np.log(x)"
    assert p.groups == (GroupTerm("1 + floor", ("county",), True),)


def test_uncorrelated_nested_and_interaction_groups():
    p = parse_formula("y ~ x + (x || g) + (1 | school/class) + (1 | a:b)")
    assert p.groups == (
        GroupTerm("x", ("g",), False),
        GroupTerm("1", ("school",), True),
        GroupTerm("1", ("school", "class"), True),
        GroupTerm("1", ("a", "b"), True),
    )


def test_intercept_only_and_trials():
    p = parse_formula("k | trials(n) ~ (1 | g)")
    assert (p.response, p.trials, p.fixed) == ("k", "n", "1")
    assert parse_formula("y ~ 0 + x").fixed == "0 + x"


@pytest.mark.parametrize("formula, message", [
    ("y x", "exactly one '~'"),
    ("y ~ x ~ z", "exactly one '~'"),
    ("y ~ ", "right-hand side is empty"),
    ("y ~ x + (1 | )", "not a column name"),
    ("y ~ x + (1 | g", "unbalanced"),
    ("y ~ x + 1 | g", "must be in parentheses"),
    ("y ~ x + ( | g)", "nothing before '|'"),
    ("log(y) ~ x", "must be a column name"),
    ("y | weights(w) ~ x", "trials(column)"),
    ("y ~ x + + z", "nothing on one side"),
    ("y ~ (1 | g) + (1 | g)", "appears twice"),
])
def test_malformed_formulas_name_the_problem(formula, message):
    with pytest.raises(bi.InputError, match="'formula'") as info:
        parse_formula(formula)
    assert message in str(info.value)


# ----------------------------------------------------------------------------- term whitelist
@pytest.mark.parametrize("formula, columns", [
    ("y ~ x + np.log(z) + (1 + w | g)", ("x", "z", "w")),
    ("y ~ scale(x, ddof=0) + center(z) + standardize(w) + I(x ** 2) + I(x > 2) + I(c == 'a')", ("x", "z", "w", "c")),
    ("y ~ C(c) + C(c, contr.treatment('b')):x + C(c, contr.sum) + C(c, Treatment(reference='b'))", ("c", "x")),
    ("y ~ C(c, levels=['b', 'a'], spans_intercept=True) + C(c, contrasts=contr.custom([[1], [0]]))", ("c",)),
    ("y ~ bs(x, df=4) + cr(z, 3) + cc(w, df=4) + cs(x, knots=[0.5], lower_bound=-1)", ("x", "z", "w")),
    ("y ~ log(x) + exp(-x) + log10(x) + np.sqrt(x) + np.where(x > 0, x, 0) + np.clip(x, 0, 1)", ("x",)),
    ("y ~ {x + 1} + `my col` + Q('other col') + I(np.pi * x) + x * z - 1", ("x", "my col", "other col", "z")),
])
def test_allowed_terms_parse_and_name_their_columns(formula, columns):
    assert parse_formula(formula).columns == columns


@pytest.mark.parametrize("formula, offending", [
    ("y ~ np.log(np.exp(x + 0*__import__('os').system('true')))", "__import__('os').system"),
    ("y ~ I(__import__('os').getpid() * 0 + x)", "__import__('os').getpid"),
    ("y ~ x + (1 + I(eval('1')) | g)", "'eval'"),
    ("y ~ np.linalg.inv(x)", "np.linalg.inv"),
    ("y ~ np.save('f', x)", "np.save"),
    ("y ~ np.log(x, out=x)", "no keyword options"),
    ("y ~ I(x.__class__)", "attributes"),
    ("y ~ x.__class__", "may start with '__'"),
    ("y ~ `__builtins__`", "may start with '__'"),
    ("y ~ I(x[0])", "Subscript"),
    ("y ~ I((lambda: x)())", "lambda"),
    ("y ~ I([v for v in x])", "ListComp"),
    ("y ~ scale(x, **{'ddof': 0})", "**kwargs"),
    ("y ~ scale(x, center=open)", "must be constants"),
    ("y ~ scale(x, offset=1)", "no option 'offset'"),
    ("y ~ C(c, eval)", "contrasts must be"),
    ("y ~ C(c, contr.treatment(__import__('os')))", "must be constants"),
    ("y ~ getattr(x, 'real')", "'getattr'"),
    ("y ~ I(np)", "'np' may only be called"),
    ("y ~ hashed(c)", "'hashed'"),
    ("y ~ I('text')", "only numbers"),
    ("y ~ I(x * 0 + 9 ** 9 ** 9)", "power of constants"),  # would hang: unbounded integers
])
def test_code_outside_the_whitelist_is_refused(formula, offending):
    with pytest.raises(bi.InputError, match="'formula'") as info:
        parse_formula(formula)
    message = str(info.value)
    assert "is not allowed" in message and offending in message
    assert "Expected terms made of column names" in message  # and lists what is allowed:
    assert "C(), I(), scale()" in message and "np.<f>() for f in abs" in message


def test_check_terms_restricts_columns_and_refuses_structured_formulas():
    assert check_terms("1 + scale(x) + C(g)", columns=("g", "x")) == ("x", "g")
    with pytest.raises(UnsafeTermError, match="reads 'secret'"):
        check_terms("1 + x + secret", columns=("x",))
    with pytest.raises(UnsafeTermError, match="single right-hand side"):
        check_terms("y ~ x")
    assert isinstance(UnsafeTermError("x", "why"), ValueError)  # so reading a saved model wraps it


def test_saved_group_term_is_checked():
    assert GroupTerm.from_json({"expr": "1 + x", "factor": ["g"], "correlated": True}) == GroupTerm("1 + x", ("g",))
    with pytest.raises(ValueError, match="not allowed"):
        GroupTerm.from_json({"expr": "1 + I(__import__('os').getpid())", "factor": ["g"], "correlated": True})
    with pytest.raises(ValueError, match="not a column name"):
        GroupTerm.from_json({"expr": "1", "factor": ["g.__class__()"], "correlated": True})
