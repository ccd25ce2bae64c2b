"""API group, version and the small reference types both custom resources share."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

GROUP = "secondarydns.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

SECONDARY_SERVER_KIND = "SecondaryServer"
SECONDARY_SERVER_PLURAL = "secondaryservers"
ZONE_KIND = "Zone"
ZONE_PLURAL = "zones"
CATEGORY = "secondarydns"

# Label-selector operators as in metav1.LabelSelectorRequirement.
SELECTOR_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


@dataclass(frozen=True, order=True, slots=True)
class ObjectRef:
    """A namespaced object, ordered so that sorted output is deterministic."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> ObjectRef:
        """The reference of an object as the API returns it (namespace and name set)."""
        return cls(obj["metadata"]["namespace"], obj["metadata"]["name"])


@dataclass(frozen=True, slots=True)
class SecretKeyRef:
    """A TSIG key in a Secret of the referring object's namespace.

    `key` is a prefix: with key "p1" the Secret's data keys are "p1.secret",
    "p1.algorithm" and "p1.name", so one Secret can hold several TSIG keys.
    """

    name: str
    key: str | None = None


@dataclass(frozen=True)
class LabelSelectorRequirement:
    key: str
    operator: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        # Semantics of k8s.io/apimachinery/pkg/labels: NotIn and DoesNotExist
        # match objects that do not carry the label at all.
        if self.operator == "In":
            return self.key in labels and labels[self.key] in self.values
        if self.operator == "NotIn":
            return self.key not in labels or labels[self.key] not in self.values
        if self.operator == "Exists":
            return self.key in labels
        if self.operator == "DoesNotExist":
            return self.key not in labels
        raise ValueError(f"unknown label selector operator {self.operator!r}")


@dataclass(frozen=True)
class LabelSelector:
    """metav1.LabelSelector; the empty selector matches every object, as in Kubernetes."""

    match_labels: tuple[tuple[str, str], ...] = ()
    match_expressions: tuple[LabelSelectorRequirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(key) == value for key, value in self.match_labels) and all(
            requirement.matches(labels) for requirement in self.match_expressions
        )
