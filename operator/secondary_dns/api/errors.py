"""The one error the api layer raises for a bad object: it names the field and the fix."""

from __future__ import annotations


class SpecError(ValueError):
    """A custom resource (or a Secret it refers to) that the operator must not act on.

    `field` is a Kubernetes-style path ("spec.primaries[1].port"), the same path
    the API server names when it rejects the object, so a user reads one vocabulary
    whether kubectl or the operator's status condition tells them.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

    def __reduce__(self) -> tuple[type[SpecError], tuple[str, str]]:
        # Exceptions pickle their args by default; ours has two constructor arguments.
        return (type(self), (self.field, self.message))
