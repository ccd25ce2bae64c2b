"""The custom resources' models: parsed from objects with the CRDs' defaults and rules.

This is the bottom layer: it imports nothing else of the operator (import-linter).
"""

from __future__ import annotations

from secondary_dns.api import agent_contract, conditions, limits
from secondary_dns.api.errors import SpecError
from secondary_dns.api.fields import IPAddress, IPNetwork, parse_dns_name
from secondary_dns.api.meta import (
    API_VERSION,
    CATEGORY,
    GROUP,
    SECONDARY_SERVER_KIND,
    SECONDARY_SERVER_PLURAL,
    VERSION,
    ZONE_KIND,
    ZONE_PLURAL,
    LabelSelector,
    LabelSelectorRequirement,
    ObjectRef,
    SecretKeyRef,
)
from secondary_dns.api.server import (
    EngineSpec,
    Limits,
    PodTemplateSpec,
    SecondaryServerSpec,
    ServiceSpec,
    SpreadSpec,
    StorageSpec,
    parse_secondary_server,
)
from secondary_dns.api.tsig import TsigKey, TsigSecretError, parse_tsig_secret
from secondary_dns.api.zone import Primary, TransferAclEntry, ZoneSpec, ZoneTimers, parse_zone

__all__ = [
    "API_VERSION",
    "CATEGORY",
    "GROUP",
    "SECONDARY_SERVER_KIND",
    "SECONDARY_SERVER_PLURAL",
    "VERSION",
    "ZONE_KIND",
    "ZONE_PLURAL",
    "EngineSpec",
    "IPAddress",
    "IPNetwork",
    "LabelSelector",
    "LabelSelectorRequirement",
    "Limits",
    "ObjectRef",
    "PodTemplateSpec",
    "Primary",
    "SecondaryServerSpec",
    "SecretKeyRef",
    "ServiceSpec",
    "SpecError",
    "SpreadSpec",
    "StorageSpec",
    "TransferAclEntry",
    "TsigKey",
    "TsigSecretError",
    "ZoneSpec",
    "ZoneTimers",
    "agent_contract",
    "conditions",
    "limits",
    "parse_dns_name",
    "parse_secondary_server",
    "parse_tsig_secret",
    "parse_zone",
]
