"""Kubernetes resource quantities (`100m`, `64Mi`, `1.5`, `1e3`), exactly, as fractions."""

from __future__ import annotations

import re
from fractions import Fraction

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
_PATTERN = re.compile(r"^([+-]?[0-9.]+)(?:([eE][+-]?[0-9]+)|(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])?)$")


def parse(text: str | int | float) -> Fraction:
    """The quantity's value; ValueError for anything the API server would refuse."""
    match = _PATTERN.match(str(text).strip())
    if match is None or match.group(1) in ("", ".", "+", "-"):
        raise ValueError(f"not a quantity: {text!r}")
    number = Fraction(match.group(1))
    if match.group(2):
        return number * Fraction(10) ** int(match.group(2)[1:])
    return number * _SUFFIXES[match.group(3) or ""]


def to_bytes(text: str | int | float) -> int:
    """Memory and storage: whole bytes, rounded up as the kubelet does."""
    value = parse(text)
    return -((-value.numerator) // value.denominator)


def to_millicores(text: str | int | float) -> int:
    value = parse(text) * 1000
    return -((-value.numerator) // value.denominator)
