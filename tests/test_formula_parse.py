"""Formula syntax: the split into response, fixed part and group terms, and clear errors."""

import pytest

import bayesinf as bi
from bayesinf.formula import GroupTerm, parse_formula


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
