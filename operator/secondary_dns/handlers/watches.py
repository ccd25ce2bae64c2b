"""The operator's watch caches, each one's events going to the controller.

SecondaryServers and Zones are cached whole; Pods and the children a server
owns by the server label (LABEL_SERVER) only, so the operator holds its own
objects and not the rest of the namespace. Secrets are not watched: the
operator reads a Zone's key Secret by name, and kopf's filtered Secret events
say when one changed (handlers/operator.py).
"""

from __future__ import annotations

from collections.abc import Sequence

from secondary_dns.api.agent_contract import LABEL_SERVER
from secondary_dns.handlers.controller import Controller
from secondary_dns.k8s import resources
from secondary_dns.k8s.informer import ApiTransport, Informer

# The kinds of a server's children that are watched (every one but Secrets).
WATCHED_CHILDREN = tuple(child for child in resources.CHILDREN if child != resources.SECRETS)


def add_watches(
    transport: ApiTransport,
    controller: Controller,
    namespaces: Sequence[str] = (),
) -> list[Informer]:
    """Informers for `namespaces` (every namespace when empty), added to the cluster's cache."""
    cache = controller.cluster.cache
    added: list[Informer] = []
    scopes: list[str | None] = [*namespaces] or [None]
    for namespace in scopes:
        added.append(
            Informer(
                transport,
                resources.SECONDARY_SERVERS,
                namespace=namespace,
                handler=controller.on_server,
            )
        )
        added.append(
            Informer(transport, resources.ZONES, namespace=namespace, handler=controller.on_zone)
        )
        for kind in (resources.PODS, *WATCHED_CHILDREN):
            added.append(
                Informer(
                    transport,
                    kind,
                    namespace=namespace,
                    label_selector=LABEL_SERVER,
                    handler=controller.on_child,
                )
            )
    for informer in added:
        cache.add(informer)
    return added
