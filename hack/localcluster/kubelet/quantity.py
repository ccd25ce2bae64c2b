"""Kubernetes resource quantities as the kubelet rounds them: whole bytes, millicores."""

from __future__ import annotations

from fractions import Fraction

# The product's own parser (the operator's drift check uses it too): one grammar.
from secondary_dns.api.quantity import value


def parse(text: str | int | float) -> Fraction:
    """The quantity's value; ValueError for anything the API server would refuse."""
    parsed = value(text)
    if parsed is None:
        raise ValueError(f"not a quantity: {text!r}")
    return parsed


def to_bytes(text: str | int | float) -> int:
    """Memory and storage: whole bytes, rounded up as the kubelet does."""
    amount = parse(text)
    return -((-amount.numerator) // amount.denominator)


def to_millicores(text: str | int | float) -> int:
    amount = parse(text) * 1000
    return -((-amount.numerator) // amount.denominator)
