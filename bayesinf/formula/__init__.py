"""Formula models (lme4 / brms / Bambi syntax) on bayesinf.

>>> from bayesinf.formula import Model, Prior
>>> m = Model.from_formula("log_radon ~ floor + (1 | county)", data=df)       # doctest: +SKIP
>>> post = m.fit(method="nuts", seed=0)                                         # doctest: +SKIP
>>> post.predict(new_df, levels=(0.5, 0.9), new_groups="sample")               # doctest: +SKIP
"""

from .design import NEW_GROUPS, Design, InputColumn
from .families import FAMILIES, LINKS, Family, get_family
from .model import FormulaModel, Model, build_model
from .parse import GroupTerm, ParsedFormula, parse_formula
from .priors import Prior, default_priors

__all__ = ["Model", "FormulaModel", "Prior", "build_model", "parse_formula", "ParsedFormula", "GroupTerm",
           "Design", "InputColumn", "NEW_GROUPS", "Family", "FAMILIES", "LINKS", "get_family", "default_priors"]
