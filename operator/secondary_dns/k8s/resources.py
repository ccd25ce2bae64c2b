"""The kinds the operator reads and writes, and their API paths."""

from __future__ import annotations

from dataclasses import dataclass

from secondary_dns.api import (
    API_VERSION,
    SECONDARY_SERVER_KIND,
    SECONDARY_SERVER_PLURAL,
    ZONE_KIND,
    ZONE_PLURAL,
)


@dataclass(frozen=True)
class Resource:
    api_version: str
    kind: str
    plural: str
    namespaced: bool = True

    @property
    def key(self) -> tuple[str, str]:
        return (self.api_version, self.kind)

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        """The collection (all namespaces when `namespace` is None) or one object."""
        prefix = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        scope = f"/namespaces/{namespace}" if self.namespaced and namespace is not None else ""
        path = f"{prefix}{scope}/{self.plural}"
        return f"{path}/{name}" if name else path


SECONDARY_SERVERS = Resource(API_VERSION, SECONDARY_SERVER_KIND, SECONDARY_SERVER_PLURAL)
ZONES = Resource(API_VERSION, ZONE_KIND, ZONE_PLURAL)
PODS = Resource("v1", "Pod", "pods")
NODES = Resource("v1", "Node", "nodes", namespaced=False)
SECRETS = Resource("v1", "Secret", "secrets")
CONFIG_MAPS = Resource("v1", "ConfigMap", "configmaps")
SERVICES = Resource("v1", "Service", "services")
SERVICE_ACCOUNTS = Resource("v1", "ServiceAccount", "serviceaccounts")
STATEFUL_SETS = Resource("apps/v1", "StatefulSet", "statefulsets")
POD_DISRUPTION_BUDGETS = Resource("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets")
NETWORK_POLICIES = Resource("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies")
ROLES = Resource("rbac.authorization.k8s.io/v1", "Role", "roles")
ROLE_BINDINGS = Resource("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings")

# Every child a SecondaryServer owns (render/children.py) is one of these.
CHILDREN = (
    CONFIG_MAPS,
    SECRETS,
    SERVICES,
    SERVICE_ACCOUNTS,
    STATEFUL_SETS,
    POD_DISRUPTION_BUDGETS,
    NETWORK_POLICIES,
    ROLES,
    ROLE_BINDINGS,
)
BY_KIND: dict[tuple[str, str], Resource] = {
    resource.key: resource for resource in (SECONDARY_SERVERS, ZONES, PODS, NODES, *CHILDREN)
}


def resource_of(api_version: str, kind: str) -> Resource:
    try:
        return BY_KIND[(api_version, kind)]
    except KeyError:
        raise ValueError(f"the operator does not manage {api_version} {kind}") from None
