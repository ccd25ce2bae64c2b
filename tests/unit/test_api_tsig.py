"""TSIG keys from Secrets: the format in docs/api.md, algorithms, and secrets kept out of sight."""

from __future__ import annotations

import base64
import os
import pickle
from typing import Any

import dns.message
import dns.name
import dns.tsig
import dns.tsigkeyring
import pytest
from hypothesis import given
from hypothesis import strategies as st

from secondary_dns.api import SecretKeyRef, SpecError, TsigKey, TsigSecretError, parse_tsig_secret

# Long enough for every algorithm (hmac-sha512 needs 64 octets).
KEY = os.urandom(64)
KEY_TEXT = base64.b64encode(KEY).decode()


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def secret_object(data: dict[str, str] | None = None, **string_data: str) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "tsig-primary", "namespace": "dns"},
    }
    if data is not None:
        obj["data"] = {key: b64(value) for key, value in data.items()}
    if string_data:
        obj["stringData"] = string_data
    return obj


def test_data_as_the_api_returns_it() -> None:
    key = parse_tsig_secret(secret_object({"secret": KEY_TEXT}), SecretKeyRef("tsig-primary"))
    assert key == TsigKey(dns.name.from_text("tsig-primary."), dns.tsig.HMAC_SHA256, KEY)
    assert key.secret_base64 == KEY_TEXT
    assert key.algorithm_text == "hmac-sha256"


def test_string_data_and_trailing_newline() -> None:
    obj = secret_object(secret=KEY_TEXT + "\n", algorithm="HMAC-SHA512\n", name="Transfer-Key.")
    key = parse_tsig_secret(obj, SecretKeyRef("tsig-primary"))
    assert key.algorithm == dns.tsig.HMAC_SHA512
    assert key.name == dns.name.from_text("transfer-key.")
    assert key.secret == KEY


def test_string_data_wins_over_data_as_on_the_server() -> None:
    obj = secret_object({"secret": KEY_TEXT, "algorithm": "hmac-sha1"}, algorithm="hmac-sha384")
    assert parse_tsig_secret(obj, SecretKeyRef("x")).algorithm == dns.tsig.HMAC_SHA384


@pytest.mark.parametrize(
    ("text", "algorithm"),
    [
        ("hmac-sha256", dns.tsig.HMAC_SHA256),
        ("hmac-sha384", dns.tsig.HMAC_SHA384),
        ("hmac-sha512", dns.tsig.HMAC_SHA512),
        ("hmac-sha224", dns.tsig.HMAC_SHA224),
        ("hmac-sha1", dns.tsig.HMAC_SHA1),
    ],
)
def test_allowed_algorithms(text: str, algorithm: dns.name.Name) -> None:
    obj = secret_object({"secret": KEY_TEXT, "algorithm": text})
    assert parse_tsig_secret(obj, SecretKeyRef("tsig-primary")).algorithm == algorithm


@pytest.mark.parametrize(
    "text", ["hmac-md5", "HMAC-MD5.SIG-ALG.REG.INT", "hmac-md5.sig-alg.reg.int."]
)
def test_md5_is_refused_with_why_and_what_to_use(text: str) -> None:
    obj = secret_object({"secret": KEY_TEXT, "algorithm": text})
    with pytest.raises(TsigSecretError) as caught:
        parse_tsig_secret(obj, SecretKeyRef("tsig-primary"))
    error = caught.value
    assert error.field == 'Secret dns/tsig-primary key "algorithm"'
    assert error.data_key == "algorithm"
    assert "RFC 8945" in error.message and "MD5 is broken" in error.message
    assert "tsig-keygen -a hmac-sha256" in error.message


@pytest.mark.parametrize("text", ["hmac-sha256-128", "gss-tsig", "sha256", "hmac-sha3"])
def test_unsupported_algorithms_list_the_allowed_ones(text: str) -> None:
    obj = secret_object({"secret": KEY_TEXT, "algorithm": text})
    with pytest.raises(TsigSecretError, match="use one of hmac-sha256, hmac-sha384"):
        parse_tsig_secret(obj, SecretKeyRef("tsig-primary"))


def test_key_prefix_selects_one_of_several_keys() -> None:
    other = base64.b64encode(os.urandom(64)).decode()
    obj = secret_object(
        {
            "primary-a.secret": KEY_TEXT,
            "primary-b.secret": other,
            "primary-b.algorithm": "hmac-sha512",
            "primary-b.name": "partner.example.",
        }
    )
    a = parse_tsig_secret(obj, SecretKeyRef("tsig-primary", "primary-a"))
    b = parse_tsig_secret(obj, SecretKeyRef("tsig-primary", "primary-b"))
    # Without a name, a prefixed key is named after its prefix, never the Secret:
    # two keys of one Secret must not share a name in named.conf.
    assert a == TsigKey(dns.name.from_text("primary-a."), dns.tsig.HMAC_SHA256, KEY)
    assert b.name == dns.name.from_text("partner.example.")
    assert b.algorithm == dns.tsig.HMAC_SHA512
    assert b.secret == base64.b64decode(other)


@pytest.mark.parametrize(
    ("obj", "data_key", "words"),
    [
        (secret_object({}), "secret", "is missing"),
        (secret_object({"secret": "not base64!"}), "secret", "is not base64"),
        (secret_object({"secret": ""}), "secret", "is empty"),
        (
            secret_object(
                {"secret": f'key "k" {{ algorithm hmac-sha256; secret "{KEY_TEXT}"; }};'}
            ),
            "secret",
            "whole key statement",
        ),
        (secret_object({"secret": KEY_TEXT, "name": "bad name"}), "name", "TSIG key name"),
        (secret_object({"secret": KEY_TEXT, "name": "a..b"}), "name", "TSIG key name"),
    ],
    ids=["missing", "not-base64", "empty", "key-statement", "name-space", "name-empty-label"],
)
def test_errors_name_the_secret_and_the_data_key(
    obj: dict[str, Any], data_key: str, words: str
) -> None:
    with pytest.raises(TsigSecretError) as caught:
        parse_tsig_secret(obj, SecretKeyRef("tsig-primary"))
    assert caught.value.field == f'Secret dns/tsig-primary key "{data_key}"'
    assert words in caught.value.message
    assert isinstance(caught.value, SpecError)


def test_data_that_is_not_base64_is_reported() -> None:
    obj = secret_object()
    obj["data"] = {"secret": "%%%"}
    with pytest.raises(TsigSecretError, match="not base64-encoded"):
        parse_tsig_secret(obj, SecretKeyRef("tsig-primary"))


@given(st.binary(min_size=32, max_size=128))
def test_secret_never_shows_in_repr_or_messages(secret: bytes) -> None:
    text = base64.b64encode(secret).decode()
    key = parse_tsig_secret(secret_object({"secret": text}), SecretKeyRef("tsig-primary"))
    assert key.secret == secret
    for shown in (repr(key), str(key)):
        assert text not in shown and repr(secret) not in shown
    # The secret in the wrong data key: the message must not echo it either.
    for misplaced in ({"secret": text, "algorithm": text}, {"secret": text, "name": text + "!"}):
        with pytest.raises(TsigSecretError) as caught:
            parse_tsig_secret(secret_object(misplaced), SecretKeyRef("tsig-primary"))
        assert text not in str(caught.value) or len(text) < 8
    # A secret that is almost base64 is not echoed when it is refused.
    with pytest.raises(TsigSecretError) as caught:
        parse_tsig_secret(secret_object({"secret": text + "*"}), SecretKeyRef("tsig-primary"))
    assert text not in str(caught.value)


def test_key_signs_and_verifies_with_dnspython() -> None:
    key = parse_tsig_secret(secret_object({"secret": KEY_TEXT}), SecretKeyRef("tsig-primary"))
    query = dns.message.make_query("example.com.", "SOA")
    query.use_tsig(key.to_dnspython())
    wire = query.to_wire()
    keyring = dns.tsigkeyring.from_text({"tsig-primary.": ("hmac-sha256", KEY_TEXT)})
    assert dns.message.from_wire(wire, keyring=keyring).had_tsig


def test_error_pickles() -> None:
    error = TsigSecretError("dns/tsig", "secret", "is missing")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.field, copy.data_key, copy.message) == (error.field, "secret", "is missing")


@pytest.mark.parametrize(
    ("algorithm", "octets"),
    [
        ("hmac-sha1", 20),
        ("hmac-sha224", 28),
        ("hmac-sha256", 32),
        ("hmac-sha384", 48),
        ("hmac-sha512", 64),
    ],
)
def test_a_secret_shorter_than_the_algorithms_output_is_refused(
    algorithm: str, octets: int
) -> None:
    """RFC 2104 §3: a key shorter than the hash output (L) weakens the MAC."""
    short = base64.b64encode(os.urandom(octets - 1)).decode()
    obj = secret_object({"secret": short, "algorithm": algorithm})
    with pytest.raises(TsigSecretError) as caught:
        parse_tsig_secret(obj, SecretKeyRef("tsig-primary"))
    assert caught.value.field == 'Secret dns/tsig-primary key "secret"'
    assert f"{octets - 1} octets" in caught.value.message
    assert f"at least {octets}" in caught.value.message and algorithm in caught.value.message
    assert f"tsig-keygen -a {algorithm}" in caught.value.message
    assert short not in str(caught.value)
    enough = base64.b64encode(os.urandom(octets)).decode()
    key = parse_tsig_secret(
        secret_object({"secret": enough, "algorithm": algorithm}), SecretKeyRef("x")
    )
    assert len(key.secret) == octets
