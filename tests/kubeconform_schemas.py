"""JSON schemas for kubeconform, made here: the API server's OpenAPI and our CRDs.

kubeconform fetches its schemas from GitHub by default, which these machines
cannot reach. It reads them from a directory as well, one file per kind named
`<kind>-<group>-<version>.json` (`<kind>-<version>.json` for the core group:
kubeconform's `{{ .ResourceKind }}{{ .KindSuffix }}`). They are made from the
local API server's `/openapi/v2` (the built-in kinds of the very Kubernetes
version the cluster runs) and from crds/ (ours, as the API server would check
them), the way kubeconform's own openapi2jsonschema does, in strict mode: an
unknown field is an error.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

INT_OR_STRING = {"oneOf": [{"type": "string"}, {"type": "integer"}]}
QUANTITY = {"oneOf": [{"type": "string"}, {"type": "number"}]}


def file_name(kind: str, api_version: str) -> str:
    group, _, version = api_version.rpartition("/")
    suffix = f"-{group.split('.')[0]}-{version}" if group else f"-{version}"
    return f"{kind.lower()}{suffix}.json"


def _strict(node: Any) -> Any:
    """Closed objects, int-or-string as both, recursively (openapi2jsonschema --strict).

    Walks schema positions only (properties, items, ...): a property may well be
    called `properties` or `format` (JSONSchemaProps has both).
    """
    if not isinstance(node, dict):
        return node
    if node.get("format") == "int-or-string" or node.get("x-kubernetes-int-or-string") is True:
        return INT_OR_STRING
    node = dict(node)
    if isinstance(node.get("properties"), dict):
        node["properties"] = {k: _strict(v) for k, v in node["properties"].items()}
        if "additionalProperties" not in node and not node.get(
            "x-kubernetes-preserve-unknown-fields"
        ):
            node["additionalProperties"] = False
    for key in ("items", "additionalProperties", "not"):
        if isinstance(node.get(key), dict):
            node[key] = _strict(node[key])
    for key in ("allOf", "anyOf", "oneOf"):
        if isinstance(node.get(key), list):
            node[key] = [_strict(item) for item in node[key]]
    return node


def _refs(node: Any) -> Iterator[str]:
    # Any "$ref" string below: a property named "$ref" holds a schema, not a string.
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/definitions/"):
            yield ref.removeprefix("#/definitions/")
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def from_openapi(openapi: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """file name -> standalone schema, for every kind the OpenAPI document defines."""
    definitions = {
        name: QUANTITY if name.endswith(".api.resource.Quantity") else _strict(schema)
        for name, schema in openapi["definitions"].items()
    }
    schemas: dict[str, dict[str, Any]] = {}
    for name, schema in openapi["definitions"].items():
        for gvk in schema.get("x-kubernetes-group-version-kind") or []:
            api_version = f"{gvk['group']}/{gvk['version']}" if gvk["group"] else gvk["version"]
            needed: dict[str, Any] = {}
            pending = [name]
            while pending:
                current = pending.pop()
                if current in needed or current not in definitions:
                    continue
                needed[current] = definitions[current]
                pending.extend(_refs(definitions[current]))
            standalone = copy.deepcopy(definitions[name])
            standalone["definitions"] = needed
            schemas[file_name(gvk["kind"], api_version)] = standalone
    return schemas


def from_crd(crd: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    schemas = {}
    group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
    for version in crd["spec"]["versions"]:
        schema = _strict(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
        properties = schema.setdefault("properties", {})
        properties.setdefault("apiVersion", {"type": "string"})
        properties.setdefault("kind", {"type": "string"})
        # metadata is the API server's to check; ours is an open object.
        properties["metadata"] = {"type": "object"}
        schemas[file_name(kind, f"{group}/{version['name']}")] = schema
    return schemas


def write(directory: Path, openapi: Mapping[str, Any], crd_files: list[Path]) -> int:
    """Write every schema into `directory`; the number of files."""
    directory.mkdir(parents=True, exist_ok=True)
    schemas = from_openapi(openapi)
    for path in crd_files:
        for document in yaml.safe_load_all(path.read_text()):
            if document and document.get("kind") == "CustomResourceDefinition":
                schemas.update(from_crd(document))
    for name, schema in schemas.items():
        (directory / name).write_text(json.dumps(schema))
    return len(schemas)
