"""One fan-out round (dns/relay/fanout.py) against small UDP replicas on loopback.

Each replica records the datagrams it hears and answers as told: NOERROR signed
with its key, REFUSED, signed with a wrong key, not at all, or only from the
second attempt on.
"""

from __future__ import annotations

import asyncio
import functools
import secrets
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, cast

import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.tsig
import pytest

from secondary_dns.api import TsigKey
from secondary_dns.api.soa import ProbeTarget
from secondary_dns.dns.relay.fanout import notify_all

ZONE = dns.name.from_text("example.com.")


def tsig_key(name: str = "secondary-dns-relay.") -> TsigKey:
    return TsigKey(dns.name.from_text(name), dns.tsig.HMAC_SHA256, secrets.token_bytes(32))


@dataclass
class Replica(asyncio.DatagramProtocol):
    key: TsigKey
    # "ok", "refused", "forged" (answer signed with another secret), "silent",
    # "second" (ignore the first datagram), "stranger" (answer from another socket)
    behaviour: str = "ok"
    heard: list[bytes] = field(default_factory=list)
    transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.heard.append(data)
        if self.behaviour == "silent" or (self.behaviour == "second" and len(self.heard) == 1):
            return
        message = dns.message.from_wire(data, keyring={self.key.name: self.key.to_dnspython()})
        response = dns.message.make_response(message)
        if self.behaviour == "refused":
            response.set_rcode(dns.rcode.REFUSED)
        if self.behaviour == "forged":
            forged = TsigKey(self.key.name, self.key.algorithm, secrets.token_bytes(32))
            response.use_tsig(forged.to_dnspython(), original_id=message.id)
        assert self.transport is not None
        self.transport.sendto(response.to_wire(), addr)

    @property
    def serials(self) -> list[int]:
        found = []
        for data in self.heard:
            message = dns.message.from_wire(data, keyring={self.key.name: self.key.to_dnspython()})
            found += [int(next(iter(rrset)).serial) for rrset in message.answer]
        return found


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    @functools.wraps(test)
    def sync() -> None:
        asyncio.run(test())

    return sync


async def start(replica: Replica) -> ProbeTarget:
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: replica, local_addr=("127.0.0.1", 0)
    )
    return ProbeTarget("127.0.0.1", int(transport.get_extra_info("sockname")[1]))


async def close(replicas: list[Replica]) -> None:
    for replica in replicas:
        assert replica.transport is not None
        replica.transport.close()


@run
async def test_every_replica_of_one_key_gets_the_same_signed_notify() -> None:
    key_a, key_b = tsig_key(), tsig_key()
    replicas = [Replica(key_a) for _ in range(3)] + [Replica(key_b) for _ in range(3)]
    targets = [(await start(r), r.key) for r in replicas]
    results = await notify_all(ZONE, targets, 2026120301, timeout=2.0, attempts=1)
    await close(replicas)
    assert results == {target: None for target, _ in targets}
    # One signature per key: the three replicas of a key heard the same bytes (each
    # verified them with its key above), the two keys' messages differ.
    assert len({r.heard[0] for r in replicas[:3]}) == 1
    assert len({r.heard[0] for r in replicas[3:]}) == 1
    assert replicas[0].heard[0] != replicas[3].heard[0]
    assert all(r.serials == [2026120301] for r in replicas)


@run
async def test_final_answers_and_timeouts_per_replica() -> None:
    key = tsig_key()
    replicas = [Replica(key, b) for b in ("ok", "refused", "forged", "silent")]
    targets = [(await start(r), key) for r in replicas]
    results = await notify_all(ZONE, targets, None, timeout=0.3, attempts=2)
    await close(replicas)
    ok, refused, forged, silent = (results[target] for target, _ in targets)
    assert ok is None
    assert refused == "REFUSED"
    assert forged is not None and "TSIG verification of the response failed" in forged
    assert silent == "timeout after 2 attempts of 0.3s"
    # Final answers are not retransmitted; the silent replica got every attempt.
    assert [len(r.heard) for r in replicas] == [1, 1, 1, 2]
    # No serial hint: no SOA in the NOTIFY's answer section.
    assert replicas[0].serials == []


@run
async def test_a_lost_notify_is_retransmitted_with_the_same_id() -> None:
    key = tsig_key()
    replicas = [Replica(key, "second"), Replica(key)]
    targets = [(await start(r), key) for r in replicas]
    results = await notify_all(ZONE, targets, 7, timeout=0.2, attempts=3)
    await close(replicas)
    assert results == {target: None for target, _ in targets}
    assert len(replicas[0].heard) == 2 and len(replicas[1].heard) == 1
    keyring = {key.name: key.to_dnspython()}
    assert len({dns.message.from_wire(d, keyring=keyring).id for d in replicas[0].heard}) == 1


@run
async def test_an_answer_from_elsewhere_does_not_count() -> None:
    key = tsig_key()
    silent = Replica(key, "silent")
    target = await start(silent)
    stranger = Replica(key)
    await start(stranger)
    assert stranger.transport is not None

    async def answer_as_stranger() -> None:
        # Once the NOTIFY was sent, answer it correctly, but from another port.
        while not silent.heard:
            await asyncio.sleep(0.01)
        message = dns.message.from_wire(silent.heard[0], keyring={key.name: key.to_dnspython()})
        assert stranger.transport is not None
        # To the relay's socket (where the NOTIFY came from), from the wrong port.
        stranger.transport.sendto(dns.message.make_response(message).to_wire(), source[0])

    source: list[tuple[str, int]] = []
    original = silent.datagram_received

    def record(data: bytes, addr: tuple[Any, ...]) -> None:
        source.append((str(addr[0]), int(addr[1])))
        original(data, addr)

    silent.datagram_received = record  # type: ignore[method-assign]
    results, _ = await asyncio.gather(
        notify_all(ZONE, [(target, key)], 1, timeout=0.3, attempts=1), answer_as_stranger()
    )
    await close([silent, stranger])
    assert results[target] == "timeout after 1 attempt of 0.3s"


@run
async def test_no_targets_no_round() -> None:
    assert await notify_all(ZONE, [], 1, timeout=0.1, attempts=1) == {}
    with pytest.raises(ValueError, match="attempts"):
        await notify_all(ZONE, [], 1, timeout=0.1, attempts=0)


@run
async def test_a_target_that_is_not_an_address_fails_alone() -> None:
    key = tsig_key()
    replica = Replica(key)
    target = await start(replica)
    bad = ProbeTarget("replica-0.example", 53)
    results = await notify_all(ZONE, [(bad, key), (target, key)], 1, timeout=1.0, attempts=1)
    await close([replica])
    assert results == {bad: "'replica-0.example' is not an IP address", target: None}
