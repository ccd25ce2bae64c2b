"""Condition types and reasons of both resources.

Types follow the kstatus conventions (Ready, Reconciling, Stalled) so Argo CD and
Flux read health without custom scripts; reasons are CamelCase constants so that
alerts and tests match on a name, never on a message. Conditions are set by
`status.conditions.set_condition`.
"""

from __future__ import annotations

# Types
READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"
CONFIG_VALID = "ConfigValid"
SYNCED = "Synced"
STALE = "Stale"
EXPIRING = "Expiring"
SERIAL_REGRESSED = "SerialRegressed"
PRIMARY_UNREACHABLE = "PrimaryUnreachable"
SPREAD = "Spread"
# A warning, never a failure: allowTransfer lets any address transfer the zone.
TRANSFER_OPEN = "TransferOpen"
ENGINE_DIVERSE = "EngineDiverse"

CONDITION_TYPES = (
    READY,
    RECONCILING,
    STALLED,
    CONFIG_VALID,
    SYNCED,
    STALE,
    EXPIRING,
    SERIAL_REGRESSED,
    PRIMARY_UNREACHABLE,
    SPREAD,
    TRANSFER_OPEN,
    ENGINE_DIVERSE,
)

# Statuses (metav1.ConditionStatus)
TRUE = "True"
FALSE = "False"
UNKNOWN = "Unknown"
STATUSES = (TRUE, FALSE, UNKNOWN)

# Reasons: configuration
INVALID_SPEC = "InvalidSpec"
SECRET_NOT_FOUND = "SecretNotFound"
INVALID_TSIG_KEY = "InvalidTsigKey"
SERVER_NOT_FOUND = "ServerNotFound"
NO_SERVERS_SELECTED = "NoServersSelected"
# A SecondaryServer selects the Zone but has not rendered it yet (just created, or
# its own spec is invalid: its Stalled condition says so).
SERVER_NOT_RECONCILED = "ServerNotReconciled"
ZONE_CONFLICT = "ZoneConflict"
# A primary inside a range the operator refuses (--refused-primary-networks).
PRIMARY_NOT_ALLOWED = "PrimaryNotAllowed"
RENDERED = "Rendered"
# Served, but an engine cannot express a field exactly; the message says what it does.
ENGINE_LIMITATIONS = "EngineLimitations"
CONFIG_REJECTED = "ConfigRejected"
# Reasons: rollout and serving
PROGRESSING = "Progressing"
REPLICAS_NOT_READY = "ReplicasNotReady"
ALL_REPLICAS_READY = "AllReplicasReady"
APPLY_FAILED = "ApplyFailed"
SPREAD_SATISFIED = "SpreadSatisfied"
TOO_FEW_FAILURE_DOMAINS = "TooFewFailureDomains"
TOO_FEW_REPLICAS = "TooFewReplicas"
# Reasons: serial monitoring (RFC 1982 comparisons)
IN_SYNC = "InSync"
REPLICAS_BEHIND = "ReplicasBehind"
NOT_TRANSFERRED = "NotTransferred"
TRANSFER_FAILED = "TransferFailed"
REFRESH_OVERDUE = "RefreshOverdue"
EXPIRY_APPROACHING = "ExpiryApproaching"
EXPIRED = "Expired"
SERIAL_WENT_BACKWARDS = "SerialWentBackwards"
SERIAL_ADVANCING = "SerialAdvancing"
PRIMARIES_DISAGREE = "PrimariesDisagree"
PRIMARY_REACHABLE = "PrimaryReachable"
PRIMARY_TIMEOUT = "PrimaryTimeout"
PRIMARY_REFUSED = "PrimaryRefused"
RETRANSFER_REQUESTED = "RetransferRequested"
# Reasons: TransferOpen
OPEN_TO_ANY_ADDRESS = "OpenToAnyAddress"
TRANSFER_RESTRICTED = "TransferRestricted"
# Reasons: engine diversity of a zone's replicas (RFC 2182 §3.1)
MULTIPLE_ENGINES = "MultipleEngines"
SINGLE_ENGINE = "SingleEngine"
ENGINES_NOT_ANSWERING = "EnginesNotAnswering"
# Configured everywhere; serial status not known yet.
AWAITING_SERIALS = "AwaitingSerials"
