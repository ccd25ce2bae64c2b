"""Kubernetes resource quantities (`100m`, `64Mi`, `1.5`, `1e3`) by value, exactly.

One parser for the whole project: the drift check compares the operator's quantities
with the API server's canonical form by value (`0.5` equals `500m`), and the local
cluster's pod runner turns limits into bytes and millicores as the kubelet does.
"""

from __future__ import annotations

import re
from fractions import Fraction

# The grammar of k8s.io/apimachinery/pkg/api/resource: a decimal number, then either a
# decimal exponent or one suffix (binary SI, decimal SI). Stricter than the CRD pattern
# controller-gen writes (fields.QUANTITY), which also admits a fractional exponent.
_GRAMMAR = re.compile(
    r"(?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?:(?P<exponent>[eE][+-]?[0-9]+)|(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?)"
)
_SUFFIXES = {
    "": Fraction(1),
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 1000),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
    "Ki": Fraction(2**10),
    "Mi": Fraction(2**20),
    "Gi": Fraction(2**30),
    "Ti": Fraction(2**40),
    "Pi": Fraction(2**50),
    "Ei": Fraction(2**60),
}


def value(quantity: object) -> Fraction | None:
    """The quantity's exact value; None when `quantity` is not one (a bool is not)."""
    if isinstance(quantity, bool) or not isinstance(quantity, str | int | float):
        return None
    match = _GRAMMAR.fullmatch(str(quantity).strip())
    if match is None:
        return None
    number = Fraction(match["number"])
    if match["exponent"]:
        return number * Fraction(10) ** int(match["exponent"][1:])
    return number * _SUFFIXES[match["suffix"] or ""]
