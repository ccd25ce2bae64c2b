"""Parts both resources share: the top level, label selectors, Secret references, server names."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from secondary_dns.api.errors import SpecError
from secondary_dns.api.fields import (
    DNS1035_LABEL,
    check_label_key,
    check_labels,
    check_object_name,
    child,
    read_list,
    read_object,
    read_string,
    read_string_list,
    read_string_map,
    require_string,
)
from secondary_dns.api.limits import (
    MAX_LABEL_VALUE,
    MAX_LABELS,
    MAX_MATCH_EXPRESSIONS,
    MAX_SECRET_KEY_PREFIX,
    MAX_SELECTOR_VALUES,
    MAX_SERVER_NAME,
)
from secondary_dns.api.meta import (
    API_VERSION,
    SELECTOR_OPERATORS,
    LabelSelector,
    LabelSelectorRequirement,
    SecretKeyRef,
)

ROOT_FIELDS = ("apiVersion", "kind", "metadata", "spec", "status")


def parse_label_selector(value: object, path: str) -> LabelSelector:
    selector = read_object(value, path, ("matchLabels", "matchExpressions"))
    match_labels = read_string_map(selector, "matchLabels", path, max_properties=MAX_LABELS) or {}
    check_labels(match_labels, child(path, "matchLabels"))
    requirements = []
    expressions = read_list(selector, "matchExpressions", path, max_items=MAX_MATCH_EXPRESSIONS)
    for index, item in enumerate(expressions or []):
        item_path = f"{path}.matchExpressions[{index}]"
        expression = read_object(item, item_path, ("key", "operator", "values"))
        key = require_string(expression, "key", item_path, hint="the label key to match")
        check_label_key(key, child(item_path, "key"))
        operator = require_string(
            expression,
            "operator",
            item_path,
            enum=SELECTOR_OPERATORS,
            hint="In, NotIn, Exists or DoesNotExist",
        )
        values = (
            read_string_list(expression, "values", item_path, max_items=MAX_SELECTOR_VALUES) or []
        )
        for value_index, value in enumerate(values):
            if len(value) > MAX_LABEL_VALUE:
                raise SpecError(
                    f"{item_path}.values[{value_index}]",
                    f"must have at most {MAX_LABEL_VALUE} characters (a label value), "
                    f"has {len(value)}",
                )
        if operator in ("In", "NotIn") and not values:
            raise SpecError(
                child(item_path, "values"),
                f"operator {operator} needs at least one value; list the label values to match",
            )
        if operator in ("Exists", "DoesNotExist") and values:
            raise SpecError(
                child(item_path, "values"),
                f"operator {operator} takes no values; remove values or use In/NotIn",
            )
        requirements.append(LabelSelectorRequirement(key, operator, tuple(values)))
    return LabelSelector(tuple(sorted(match_labels.items())), tuple(requirements))


def parse_secret_key_ref(value: object, path: str) -> SecretKeyRef:
    ref = read_object(value, path, ("name", "key"))
    name = require_string(ref, "name", path, hint="the name of the Secret holding the TSIG key")
    check_object_name(name, child(path, "name"))
    key = read_string(ref, "key", path, max_length=MAX_SECRET_KEY_PREFIX)
    if key is not None and not _is_secret_data_key(key):
        raise SpecError(
            child(path, "key"),
            f'"{key}" cannot prefix a Secret data key; use letters, digits, "-", "_" and ".", '
            "e.g. primary-a (the Secret then holds primary-a.secret and primary-a.algorithm)",
        )
    return SecretKeyRef(name=name, key=key)


def _is_secret_data_key(key: str) -> bool:
    return bool(key) and all(c.isascii() and (c.isalnum() or c in "-._") for c in key)


def check_root(obj: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """The object's top level: known fields only, and the kind this parser reads."""
    root = read_object(obj, "", ROOT_FIELDS)
    api_version = root.get("apiVersion", API_VERSION)
    if api_version != API_VERSION:
        raise SpecError("apiVersion", f'must be "{API_VERSION}", not "{api_version}"')
    if root.get("kind", kind) != kind:
        raise SpecError("kind", f'must be "{kind}", not "{root.get("kind")}"')
    return root


def check_server_name(name: str, field: str) -> None:
    if len(name) > MAX_SERVER_NAME or DNS1035_LABEL.fullmatch(name) is None:
        raise SpecError(
            field,
            f'"{name}" is not a valid SecondaryServer name; use at most {MAX_SERVER_NAME} '
            "lowercase letters, digits and '-', starting with a letter and ending with a "
            "letter or digit, e.g. secondary-dns",
        )
