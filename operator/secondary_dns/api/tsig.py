"""TSIG keys (RFC 8945) read from Kubernetes Secrets.

Secret format (docs/api.md): data key `secret` holds the base64 text tsig-keygen
prints, `algorithm` (default hmac-sha256) and `name` (the key name on the wire) are
optional. With a SecretKeyRef key prefix "p", the data keys are "p.secret",
"p.algorithm" and "p.name". The secret bytes never appear in a message or a repr:
they would end up in events, status conditions and logs.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import dns.name
import dns.tsig

from secondary_dns.api.errors import SpecError
from secondary_dns.api.fields import parse_dns_name
from secondary_dns.api.meta import SecretKeyRef

DEFAULT_ALGORITHM = "hmac-sha256"
# RFC 8945 §6: hmac-sha256 is RECOMMENDED; sha224/384/512 MAY be used; hmac-sha1 is
# NOT RECOMMENDED but still what many appliances speak, so it is accepted. The
# truncated variants (hmac-sha256-128, ...) are not, because BIND spells them
# differently in named.conf and no primary we know needs them.
ALGORITHMS: Mapping[str, dns.name.Name] = {
    "hmac-sha256": dns.tsig.HMAC_SHA256,
    "hmac-sha384": dns.tsig.HMAC_SHA384,
    "hmac-sha512": dns.tsig.HMAC_SHA512,
    "hmac-sha224": dns.tsig.HMAC_SHA224,
    "hmac-sha1": dns.tsig.HMAC_SHA1,
}
REFUSED_ALGORITHMS = frozenset({"hmac-md5", "hmac-md5.sig-alg.reg.int"})
# The output length of each algorithm's hash in octets: the shortest secret
# accepted. RFC 2104 §3: a key shorter than the output "is strongly discouraged
# as it would decrease the security strength of the function"; tsig-keygen makes
# keys of exactly this length.
MIN_SECRET_OCTETS: Mapping[str, int] = {
    "hmac-sha256": 32,
    "hmac-sha384": 48,
    "hmac-sha512": 64,
    "hmac-sha224": 28,
    "hmac-sha1": 20,
}
# The most clock skew a signed message may show, whatever fudge its sender sets
# (RFC 8945 §5.2.3 compares with the sender's fudge, up to 65535 s; 300 s is the
# value RFC 8945 recommends).
MAX_FUDGE_SECONDS = 300
_ALGORITHM_LIKE = re.compile(r"[A-Za-z0-9.-]{1,64}")


class TsigSecretError(SpecError):
    """A TSIG Secret that cannot be used; names the Secret and the data key, never the value."""

    def __init__(self, secret: str, data_key: str, message: str) -> None:
        super().__init__(f'Secret {secret} key "{data_key}"', message)
        self.secret = secret
        self.data_key = data_key

    def __reduce__(self) -> tuple[type[TsigSecretError], tuple[str, str, str]]:  # type: ignore[override]
        return (type(self), (self.secret, self.data_key, self.message))


@dataclass(frozen=True, slots=True)
class TsigKey:
    name: dns.name.Name
    algorithm: dns.name.Name
    secret: bytes = field(repr=False)

    @property
    def algorithm_text(self) -> str:
        """The algorithm as named.conf and knot.conf spell it, e.g. hmac-sha256."""
        return str(self.algorithm.to_text(omit_final_dot=True))

    @property
    def secret_base64(self) -> str:
        """The secret as a `secret "...";` statement expects it; never log it."""
        return base64.b64encode(self.secret).decode("ascii")

    def to_dnspython(self) -> dns.tsig.Key:
        return dns.tsig.Key(self.name, self.secret, self.algorithm)


def data_keys(ref: SecretKeyRef) -> tuple[str, str, str]:
    """The Secret data keys of the secret, algorithm and name for this reference."""
    prefix = f"{ref.key}." if ref.key else ""
    return (f"{prefix}secret", f"{prefix}algorithm", f"{prefix}name")


def parse_tsig_secret(secret_obj: Mapping[str, Any], ref: SecretKeyRef) -> TsigKey:
    """The TSIG key `ref` points at in this Secret, or a TsigSecretError."""
    metadata = secret_obj.get("metadata") or {}
    secret_name = str(metadata.get("name") or ref.name)
    namespace = metadata.get("namespace")
    where = f"{namespace}/{secret_name}" if namespace else secret_name
    secret_key, algorithm_key, name_key = data_keys(ref)

    secret_text = _read_value(secret_obj, where, secret_key, sensitive=True)
    if secret_text is None:
        raise TsigSecretError(
            where,
            secret_key,
            "is missing; put the base64 text tsig-keygen prints after `secret` here "
            "(e.g. from `tsig-keygen -a hmac-sha256 NAME`)",
        )
    secret = _decode_secret(secret_text, where, secret_key)

    algorithm_text = _read_value(secret_obj, where, algorithm_key, sensitive=False)
    algorithm = _parse_algorithm(algorithm_text or DEFAULT_ALGORITHM, where, algorithm_key)
    _check_secret_length(secret, algorithm, where, secret_key)

    # One Secret holding several keys would otherwise give them all one name, and
    # named.conf cannot hold two keys of the same name.
    default_name = ref.key if ref.key else secret_name
    name_text = _read_value(secret_obj, where, name_key, sensitive=False) or default_name
    try:
        name = parse_dns_name(name_text, "name")
    except SpecError:
        # Not echoed: a secret pasted under the wrong data key must not leak.
        raise TsigSecretError(
            where,
            name_key,
            "is not a usable TSIG key name: labels of letters, digits, '_' and '-', 1 to 63 "
            "characters each, e.g. transfer-key; it must be the name the primary uses",
        ) from None
    return TsigKey(name=name, algorithm=algorithm, secret=secret)


def _read_value(
    secret_obj: Mapping[str, Any], where: str, data_key: str, *, sensitive: bool
) -> str | None:
    # stringData is write-only on the server (merged into data), but manifests and
    # tests hold it; where both have the key, stringData wins, as on the server.
    string_data = secret_obj.get("stringData") or {}
    if data_key in string_data:
        value = string_data[data_key]
        if not isinstance(value, str):
            raise TsigSecretError(where, data_key, "must be a string in stringData")
        return value.strip()
    data = secret_obj.get("data") or {}
    if data_key not in data:
        return None
    encoded = data[data_key]
    try:
        raw = base64.b64decode(str(encoded), validate=True)
        text = raw.decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        what = "the secret's text" if sensitive else "text"
        raise TsigSecretError(
            where,
            data_key,
            f"is not base64-encoded UTF-8 in data; data values are base64 of {what} "
            "(or use stringData for plain text)",
        ) from None
    # `echo ... | kubectl create secret --from-file` keeps the newline.
    return text.strip()


def _decode_secret(text: str, where: str, data_key: str) -> bytes:
    if "{" in text or text.startswith("key "):
        raise TsigSecretError(
            where,
            data_key,
            "holds a whole key statement; put only the quoted value after `secret` here, "
            "and the algorithm under the algorithm key",
        )
    try:
        secret = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise TsigSecretError(
            where,
            data_key,
            "is not base64; put the value tsig-keygen prints after `secret` "
            "(e.g. from `tsig-keygen -a hmac-sha256 NAME`)",
        ) from None
    if not secret:
        raise TsigSecretError(
            where, data_key, "is empty; generate a key with `tsig-keygen -a hmac-sha256 NAME`"
        )
    return secret


def _check_secret_length(
    secret: bytes, algorithm: dns.name.Name, where: str, data_key: str
) -> None:
    text = str(algorithm.to_text(omit_final_dot=True))
    needed = MIN_SECRET_OCTETS[text]
    if len(secret) < needed:
        raise TsigSecretError(
            where,
            data_key,
            f"is {len(secret)} octets, shorter than the {needed}-octet output of {text}: a "
            f"{text} secret must have at least {needed} octets (RFC 2104 §3); "
            f"generate one with `tsig-keygen -a {text} NAME` and configure it on the "
            "primary too",
        )


def _parse_algorithm(text: str, where: str, data_key: str) -> dns.name.Name:
    normalised = text.lower().rstrip(".")
    if normalised in REFUSED_ALGORITHMS:
        raise TsigSecretError(
            where,
            data_key,
            "hmac-md5 is refused: MD5 is broken (RFC 6151) and RFC 8945 §6 marks it NOT "
            "RECOMMENDED; generate a new key with `tsig-keygen -a hmac-sha256 NAME`, "
            "configure it on the primary too, and set algorithm to hmac-sha256",
        )
    if normalised not in ALGORITHMS:
        # Echo only what cannot be a secret: every algorithm name has a '-', and
        # base64 (RFC 4648 §4) never does, so a misplaced secret is not shown.
        shown = f'"{text}"' if "-" in text and _ALGORITHM_LIKE.fullmatch(text) else "the value"
        allowed = ", ".join(ALGORITHMS)
        raise TsigSecretError(
            where,
            data_key,
            f"{shown} is not a supported TSIG algorithm; use one of {allowed} "
            f"(default {DEFAULT_ALGORITHM})",
        )
    return ALGORITHMS[normalised]
