"""A container's environment and argv, as kubelet and containerd build them.

kubelet (`makeEnvironmentVariables`): Service variables (the `kubernetes`
Service always, the namespace's Services when `enableServiceLinks`), then
`envFrom`, then `env` in order, each value `$(VAR)`-expanded against what is
defined before it; then `command` and `args` are expanded against the result.
containerd (`WithProcessArgs`, `buildLinuxSpec`): the image's ENTRYPOINT and
CMD fill in what the Pod leaves out; the environment is PATH (a default),
HOSTNAME, the image's Env, then the kubelet's variables, later ones winning.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from localcluster.kubelet import quantity
from localcluster.kubelet.images import ImageConfig

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# The Services whose variables every pod gets (from the `default` namespace).
MASTER_SERVICES = ("kubernetes",)
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


class ContainerConfigError(Exception):
    """kubelet's CreateContainerConfigError: the Pod asks for something that cannot be given."""


class CreateContainerError(Exception):
    """The runtime's CreateContainerError: the spec cannot be made (e.g. no command)."""


# ---- $(VAR) expansion (third_party/forked/golang/expansion) ---------------------


def expand(text: str, defined: Mapping[str, str]) -> str:
    """`$(NAME)` replaced by its value when defined, `$$` by `$`; everything else as written."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == "$" and i + 1 < len(text):
            follower = text[i + 1]
            if follower == "$":
                out.append("$")
                i += 2
                continue
            if follower == "(":
                end = text.find(")", i + 2)
                if end == -1:
                    out.append(text[i:])
                    break
                name = text[i + 2 : end]
                out.append(defined.get(name, f"$({name})"))
                i = end + 1
                continue
        out.append(text[i])
        i += 1
    return "".join(out)


# ---- the downward API --------------------------------------------------------------


def field_value(pod: Mapping[str, Any], path: str) -> str:
    """A `fieldRef`'s value (kubelet's podFieldSelectorRuntimeValue and the downward API)."""
    metadata = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    simple: dict[str, Any] = {
        "metadata.name": metadata.get("name"),
        "metadata.namespace": metadata.get("namespace"),
        "metadata.uid": metadata.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.hostIP": status.get("hostIP"),
        "status.podIP": status.get("podIP"),
        "status.hostIPs": ",".join(a["ip"] for a in status.get("hostIPs") or []),
        "status.podIPs": ",".join(a["ip"] for a in status.get("podIPs") or []),
    }
    if path in simple:
        return "" if simple[path] is None else str(simple[path])
    for prefix, source in (("metadata.labels", "labels"), ("metadata.annotations", "annotations")):
        values = metadata.get(source) or {}
        if path == prefix:
            return "\n".join(f'{k}="{values[k]}"' for k in sorted(values))
        if path.startswith(prefix + "['") and path.endswith("']"):
            return str(values.get(path[len(prefix) + 2 : -2], ""))
    raise ContainerConfigError(f"unsupported fieldRef fieldPath {path!r}")


def resource_value(
    container: Mapping[str, Any],
    resource: str,
    divisor: str | None,
    node_allocatable: Mapping[str, str],
) -> str:
    """A `resourceFieldRef`'s value; an unset limit is the node's allocatable, as in kubelet."""
    kind, _, name = resource.partition(".")
    if kind not in ("limits", "requests") or name not in ("cpu", "memory", "ephemeral-storage"):
        raise ContainerConfigError(f"unsupported resourceFieldRef resource {resource!r}")
    resources = container.get("resources") or {}
    value = (resources.get(kind) or {}).get(name)
    if value is None:
        # kubelet merges unset limits with the node's allocatable; unset requests are 0.
        value = node_allocatable.get(name, "0") if kind == "limits" else "0"
    return str(math.ceil(quantity.parse(value) / quantity.parse(divisor or "1")))


# ---- Service variables -------------------------------------------------------------


def _env_name(text: str) -> str:
    return text.upper().replace("-", "_")


def service_env(services: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """The variables of each Service with a ClusterIP (kubelet's envvars.FromServices)."""
    env: dict[str, str] = {}
    for service in services:
        spec = service.get("spec") or {}
        ip = spec.get("clusterIP")
        if not ip or ip == "None":
            continue
        name = _env_name(str(service["metadata"]["name"]))
        ports = spec.get("ports") or []
        if not ports:
            continue
        env[f"{name}_SERVICE_HOST"] = ip
        env[f"{name}_SERVICE_PORT"] = str(ports[0]["port"])
        for port in ports:
            if port.get("name"):
                env[f"{name}_SERVICE_PORT_{_env_name(port['name'])}"] = str(port["port"])
        first = ports[0]
        env[f"{name}_PORT"] = f"{str(first.get('protocol', 'TCP')).lower()}://{ip}:{first['port']}"
        for port in ports:
            protocol = str(port.get("protocol", "TCP"))
            prefix = f"{name}_PORT_{port['port']}_{protocol.upper()}"
            env[prefix] = f"{protocol.lower()}://{ip}:{port['port']}"
            env[f"{prefix}_PROTO"] = protocol.lower()
            env[f"{prefix}_PORT"] = str(port["port"])
            env[f"{prefix}_ADDR"] = ip
    return env


def visible_services(
    services: Iterable[Mapping[str, Any]], namespace: str, enable_service_links: bool
) -> list[Mapping[str, Any]]:
    """The Services a pod in `namespace` gets variables for (kubelet's getServiceEnvVarMap)."""
    chosen: dict[str, Mapping[str, Any]] = {}
    for service in services:
        metadata = service.get("metadata") or {}
        name = str(metadata.get("name"))
        if metadata.get("namespace") == "default" and name in MASTER_SERVICES:
            chosen.setdefault(name, service)
        elif metadata.get("namespace") == namespace and enable_service_links:
            chosen[name] = service
    return [chosen[name] for name in sorted(chosen)]


# ---- the container's environment -----------------------------------------------------

ObjectData = Callable[[str, str], Mapping[str, str] | None]  # (kind, name) -> data or None


def _key_ref(ref: Mapping[str, Any], kind: str, namespace: str, data_of: ObjectData) -> str | None:
    name, key = str(ref.get("name") or ""), str(ref["key"])
    optional = bool(ref.get("optional"))
    data = data_of(kind, name)
    if data is None:
        if optional:
            return None
        raise ContainerConfigError(f'{kind.lower()} "{name}" not found')
    if key not in data:
        if optional:
            return None
        raise ContainerConfigError(f"couldn't find key {key} in {kind} {namespace}/{name}")
    return data[key]


def container_env(
    container: Mapping[str, Any],
    pod: Mapping[str, Any],
    services_env: Mapping[str, str],
    data_of: ObjectData,
    node_allocatable: Mapping[str, str],
) -> dict[str, str]:
    """kubelet's variables for one container (before the runtime adds the image's)."""
    namespace = str(pod["metadata"]["namespace"])
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = str(source.get("prefix") or "")
        for kind, field in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
            ref = source.get(field)
            if ref is None:
                continue
            data = data_of(kind, str(ref.get("name") or ""))
            if data is None:
                if ref.get("optional"):
                    continue
                raise ContainerConfigError(f'{kind.lower()} "{ref.get("name")}" not found')
            for key in sorted(data):
                if _ENV_NAME.match(prefix + key):
                    env[prefix + key] = data[key]
    for entry in container.get("env") or []:
        name = str(entry["name"])
        defined = {**services_env, **env}
        if "valueFrom" not in entry:
            env[name] = expand(str(entry.get("value") or ""), defined)
            continue
        source = entry["valueFrom"]
        value: str | None
        if "fieldRef" in source:
            value = field_value(pod, str(source["fieldRef"]["fieldPath"]))
        elif "resourceFieldRef" in source:
            ref = source["resourceFieldRef"]
            value = resource_value(
                container, str(ref["resource"]), ref.get("divisor"), node_allocatable
            )
        elif "configMapKeyRef" in source:
            value = _key_ref(source["configMapKeyRef"], "ConfigMap", namespace, data_of)
        elif "secretKeyRef" in source:
            value = _key_ref(source["secretKeyRef"], "Secret", namespace, data_of)
        else:
            raise ContainerConfigError(f"env {name}: unsupported valueFrom {sorted(source)}")
        if value is not None:
            env[name] = value
    for name, value in services_env.items():
        env.setdefault(name, value)
    return env


def runtime_env(image: ImageConfig, kubelet_env: Mapping[str, str], hostname: str) -> list[str]:
    """The process's environment in the OCI spec: later entries replace earlier ones by name."""
    merged: dict[str, str] = {"PATH": DEFAULT_PATH, "HOSTNAME": hostname}
    for entry in image.env:
        key, _, value = entry.partition("=")
        merged[key] = value
    merged.update(kubelet_env)
    return [f"{key}={value}" for key, value in merged.items()]


def process_args(
    container: Mapping[str, Any], image: ImageConfig, env: Mapping[str, str]
) -> list[str]:
    """argv: the Pod's command and args ($(VAR)-expanded), the image's ENTRYPOINT/CMD otherwise."""
    command = [expand(str(c), env) for c in container.get("command") or []]
    args = [expand(str(a), env) for a in container.get("args") or []]
    if not command:
        if not args:
            args = list(image.cmd)
        if not (len(image.entrypoint) == 1 and image.entrypoint[0] == ""):
            command = list(image.entrypoint)
    if not command and not args:
        raise CreateContainerError("no command specified")
    return command + args
