"""Every numeric bound of the API, defined once.

The CRDs in crds/ state these bounds to the API server (maximum, minItems,
maxLength, ...); the models (`api.zone`, `api.server`, `api.common`,
`api.fields`), the renderer and the status writers read them from here.
tests/unit/test_api_limits.py walks the CRDs' OpenAPI schemas and compares
every bound with these constants, so the two cannot drift apart: a Zone the API
server accepts is never refused by the renderer for a number.
"""

from __future__ import annotations

# ---- DNS names (RFC 1035 §2.3.4): 63 octets per label, 255 on the wire, which is
# 253 characters of text without the trailing dot (254 with it).
MAX_NAME_LENGTH = 253
MAX_LABEL_LENGTH = 63

# ---- Kubernetes names and labels (k8s.io/apimachinery/pkg/util/validation)
MAX_OBJECT_NAME = 253  # a DNS-1123 subdomain: Secret, StorageClass, PriorityClass
# A SecondaryServer's name becomes StatefulSet, Service and pod names with
# suffixes, all DNS-1035 labels of at most 63 characters.
MAX_SERVER_NAME = 48
# A DNS-1123 subdomain prefix (253), "/" and a name of 63.
MAX_LABEL_KEY = 317
MAX_LABEL_VALUE = 63
MAX_LABELS = 64  # labels, annotations, node selector and matchLabels entries
MAX_MATCH_EXPRESSIONS = 16
MAX_SELECTOR_VALUES = 64
# A prefix, then "." and one of secret/algorithm/name, must still be a Secret data
# key: at most 253 characters of [-._a-zA-Z0-9].
MAX_SECRET_KEY_PREFIX = 200
# Text bounds that keep the API server's CEL rules cheap: no address or CIDR is
# longer (an IPv6 CIDR is at most 43 characters), nor any quantity we accept.
MAX_ADDRESS_LENGTH = 64
MAX_QUANTITY_LENGTH = 64
MAX_RESOURCE_QUANTITIES = 16  # entries of engine.resources.limits / .requests
MAX_IMAGE = 512

# ---- Zone
MIN_PRIMARIES = 1
MAX_PRIMARIES = 8
MIN_PORT = 1
MAX_PORT = 65535
MAX_SERVERS = 32
MAX_ALLOW_TRANSFER = 64
MAX_NOTIFY_ALLOW_FROM = 32
MAX_RETRANSFER_REQUEST = 253
# Floors and ceilings of the SOA refresh and retry (BIND min/max-refresh-time,
# min/max-retry-time). BIND takes any 32-bit value but zero for each of the four
# (named-checkconf 9.18: "must not be zero", "out of range" from 2^32); the API
# allows 1 second to 4 weeks for all four. BIND's 4 weeks (max-refresh-time) and 2
# weeks (max-retry-time) are its defaults, not bounds: a retry ceiling of 3 weeks
# is rendered as written.
MIN_TIMER_SECONDS = 1
MAX_TIMER_SECONDS = 2_419_200

# ---- SecondaryServer
MIN_REPLICAS = 1
MIN_DOMAINS = 1
MAX_SOURCE_RANGES = 64
MAX_TOLERATIONS = 32
# BIND keeps max-records in 32 bits; 0 would mean "no limit". Leaving the field
# out gives DEFAULT_RECORDS: a public secondary must not let one primary fill
# its memory. A million records is far above a zone managed one object each, and
# MAX_RECORDS is the way to say "as good as no limit".
MIN_RECORDS = 1
MAX_RECORDS = 2**32 - 1
DEFAULT_RECORDS = 1_000_000
# Response rate limiting (BIND rate-limit responses-per-second, Knot mod-rrl
# rate-limit): identical answers per second to one client network (/24, /56).
# 0 turns it off; BIND takes at most 1000 (named-checkconf).
MIN_RESPONSES_PER_SECOND = 0
MAX_RESPONSES_PER_SECOND = 1000
DEFAULT_RESPONSES_PER_SECOND = 20
# BIND counts max-transfer-time-in and max-transfer-idle-in in whole minutes,
# 0..40320 (28 days, named-checkconf); the timeout is rounded up to minutes, so at
# least one minute, and 0 ("no timeout" in BIND) is what leaving it out says.
MAX_TRANSFER_MINUTES = 40_320
MIN_TRANSFER_TIMEOUT = 60
MAX_TRANSFER_TIMEOUT = MAX_TRANSFER_MINUTES * 60

# ---- status (metav1.Condition as the API server validates it; RFC 1982 serials)
MAX_CONDITION_TYPE = 316
MAX_CONDITION_REASON = 1024
MAX_CONDITION_MESSAGE = 32768
MAX_SERIAL = 2**32 - 1
