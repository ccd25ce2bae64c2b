"""GitOps for real (issue 14): Flux applies SecondaryServers and Zones from git.

Flux's real source-controller and kustomize-controller, the in-cluster git
server, the chart's operator (release.py), real BIND primaries and the
SecondaryServer's real named pods. The repository holds what a platform team
keeps in git (README, "GitOps"):

    dns/tsig-secret.yaml        the primary's TSIG key (in real life a SealedSecret
                                or SOPS-encrypted: never a plain Secret in git)
    dns/secondaryserver.yaml    examples/secondaryserver.yaml, minus the cloud parts
    dns/zones/<name>.yaml       one Zone per file

and one Flux Kustomization (`path: ./dns`, `wait: true`, `prune: true`). The
tests run in order on one setup and each prints its figures; none asserts on
a time.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
import yaml

from localcluster import flux as local_flux
from localcluster import kstatus, netns, release, scenario
from localcluster.cluster import LocalCluster
from localcluster.constants import PRIMARY_ADDRESS
from localcluster.demo import example_server
from localcluster.gitserver import ManifestRepository
from localcluster.named import PrimaryServer, TsigCredentials, make_zone, soa_serial
from localcluster.waiting import wait_for

pytestmark = pytest.mark.cluster

API = "secondarydns.io/v1alpha1"
SERVER = "secondary-dns"
SECRET = "transfer-key"
# A second primary for beta.test (the commit that changes its primaries), on
# the cluster namespace's lo beside the first.
SECOND_PRIMARY_ADDRESS = "10.250.0.11"
ZONES = {"alpha": "alpha.test.", "beta": "beta.test."}
FIRST_SERIAL = 2026120301
SECOND_SERIAL = 2026120399
# Short intervals, so that a few minutes hold several reconciles of each controller.
FLUX_INTERVAL = "15s"
OPERATOR_RESYNC = 15.0
# What the chart and the operator create, for kstatus.
CHILD_KINDS = "statefulsets,services,poddisruptionbudgets,configmaps,networkpolicies"
OUR_KINDS = "secondaryservers,zones"
OPERATOR_MANAGER = "secondary-dns-operator"
FLUX_MANAGER = "kustomize-controller"


def zone_yaml(namespace: str, name: str, primary: str, secret: str = SECRET) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": API,
            "kind": "Zone",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "zone": ZONES.get(name, f"{name}.test."),
                "primaries": [{"address": primary, "tsigKeySecretRef": {"name": secret}}],
                "servers": [SERVER],
            },
        }
    )


def secret_yaml(namespace: str, name: str, key: TsigCredentials) -> str:
    return yaml.safe_dump(key.secret_manifest(name, namespace))


@dataclass
class GitOps:
    cluster: LocalCluster
    namespace: str
    repository: ManifestRepository
    primary: PrimaryServer
    second_primary: PrimaryServer
    operator: scenario.OperatorProcess
    commits: list[str] = field(default_factory=list)

    def commit(self, files: dict[str, str], message: str, remove: tuple[str, ...] = ()) -> str:
        sha = self.repository.commit(files, message, remove=remove)
        self.commits.append(sha)
        # What Flux's webhook Receiver does on a push.
        now = datetime.now(UTC).isoformat()
        self.cluster.kubectl(
            "annotate", "--overwrite", "-n", self.namespace, "gitrepository/dns",
            f"reconcile.fluxcd.io/requestedAt={now}",
        )  # fmt: skip
        return sha

    def get(self, *args: str) -> Any:
        return scenario.kubectl_json(self.cluster, "get", "-n", self.namespace, *args)

    def kustomization(self) -> dict[str, Any]:
        found: dict[str, Any] = self.get("kustomization", "dns") or {}
        return found

    def wait_ready_at(self, sha: str, timeout: float = 300) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            obj = self.kustomization()
            applied = obj.get("status", {}).get("lastAppliedRevision", "").endswith(f":{sha}")
            cond = scenario.condition(obj, "Ready") or {}
            return obj if applied and cond.get("status") == "True" else None

        found: dict[str, Any] = wait_for(f"Kustomization Ready at {sha[:8]}", ready, timeout)
        return found

    def replicas(self) -> dict[str, str]:
        return scenario.replica_addresses(self.cluster, self.namespace, SERVER)

    def zone(self, name: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = self.get("zone", name)
        return found


def answer(origin: str, address: str) -> tuple[str, bool, int | None]:
    """(rcode, authoritative, SOA serial) of a replica asked for `origin`'s SOA."""
    request = dns.message.make_query(origin, dns.rdatatype.SOA)
    request.flags &= ~dns.flags.RD
    response = dns.query.udp(request, address, timeout=3)
    serials = [int(r[0].serial) for r in response.answer if r.rdtype == dns.rdatatype.SOA]
    return (
        dns.rcode.to_text(response.rcode()),
        bool(response.flags & dns.flags.AA),
        serials[0] if serials else None,
    )


@pytest.fixture(scope="module")
def gitops(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitOps]:
    workdir = tmp_path_factory.mktemp("gitops")
    netns.require_inside(cluster.netns)
    namespace = f"gitops-{time.strftime('%H%M%S')}"
    scenario.install_crds(cluster)
    scenario.ensure_namespace(cluster, namespace)
    key = TsigCredentials.generate("transfer-key")
    notify = [release.relay_notify_target(cluster)]
    zones = [make_zone(origin, serial=FIRST_SERIAL, refresh=86400) for origin in ZONES.values()]
    netns.add_address(cluster.netns, PRIMARY_ADDRESS)
    netns.add_address(cluster.netns, SECOND_PRIMARY_ADDRESS)
    primary = PrimaryServer(
        workdir / "primary", zones, key, address=PRIMARY_ADDRESS, also_notify=notify
    )
    second = PrimaryServer(
        workdir / "second-primary",
        [make_zone(ZONES["beta"], serial=SECOND_SERIAL, refresh=86400)],
        key,
        address=SECOND_PRIMARY_ADDRESS,
        also_notify=notify,
    )
    primary.start()
    second.start()
    try:
        with (
            local_flux.running(cluster) as flux,
            scenario.run_operator(
                cluster,
                workdir / "operator.log",
                resync_seconds=OPERATOR_RESYNC,
                probe_seconds=2,
            ) as operator,
        ):
            repository = flux.git.create_repository(f"dns-{namespace}")
            setup = GitOps(cluster, namespace, repository, primary, second, operator)
            yield setup
            print(f"operator log: {operator.log}")
            for kind in ("kustomizations", "gitrepositories"):
                cluster.kubectl(
                    "delete", "-n", namespace, kind, "--all", "--timeout=120s", check=False
                )
    finally:
        primary.stop()
        second.stop()
        netns.remove_address(cluster.netns, SECOND_PRIMARY_ADDRESS)
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def flux_objects(namespace: str, url: str) -> list[dict[str, Any]]:
    """The GitRepository and the Kustomization a user applies once (or bootstraps)."""
    return [
        {
            "apiVersion": "source.toolkit.fluxcd.io/v1",
            "kind": "GitRepository",
            "metadata": {"name": "dns", "namespace": namespace},
            "spec": {"url": url, "interval": FLUX_INTERVAL, "ref": {"branch": "main"}},
        },
        {
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
            "kind": "Kustomization",
            "metadata": {"name": "dns", "namespace": namespace},
            "spec": {
                "interval": FLUX_INTERVAL,
                "retryInterval": "10s",
                "sourceRef": {"kind": "GitRepository", "name": "dns"},
                "path": "./dns",
                "prune": True,
                # kstatus on everything applied: the SecondaryServer and every Zone.
                "wait": True,
                "timeout": "4m",
            },
        },
    ]


class KstatusSampler:
    """kstatus of the namespace's objects, sampled in a thread: every status each one showed."""

    def __init__(self, cluster: LocalCluster, namespace: str) -> None:
        self.cluster, self.namespace = cluster, namespace
        self.seen: dict[str, list[str]] = defaultdict(list)
        self.messages: dict[tuple[str, str], str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                found = kstatus.of_objects(
                    self.cluster, "-n", self.namespace, f"{CHILD_KINDS},{OUR_KINDS}"
                )
            except (RuntimeError, subprocess.SubprocessError):
                continue
            for s in found:
                key = f"{s.kind}/{s.name}"
                if not self.seen[key] or self.seen[key][-1] != s.status:
                    self.seen[key].append(s.status)
                self.messages.setdefault((key, s.status), s.message)
            self._stop.wait(0.5)

    def __enter__(self) -> KstatusSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def report(self) -> str:
        return "\n".join(f"  {key}: {' -> '.join(seen)}" for key, seen in sorted(self.seen.items()))


def test_1_kustomization_is_ready_only_once_every_zone_is_synced(gitops: GitOps) -> None:
    ns = gitops.namespace
    key = gitops.primary.key
    files = {
        "dns/tsig-secret.yaml": secret_yaml(ns, SECRET, key),
        "dns/secondaryserver.yaml": yaml.safe_dump(
            {**example_server(), "metadata": {**example_server()["metadata"], "namespace": ns}}
        ),
        **{f"dns/zones/{n}.yaml": zone_yaml(ns, n, PRIMARY_ADDRESS) for n in ZONES},
    }
    with KstatusSampler(gitops.cluster, ns) as sampler:
        started = time.monotonic()
        sha = gitops.repository.commit(files, "secondary DNS for alpha.test and beta.test")
        gitops.commits.append(sha)
        scenario.apply(
            gitops.cluster, ns, *flux_objects(ns, gitops.repository.url)
        )  # the GitRepository and the Kustomization, once
        ready = gitops.wait_ready_at(sha)
        ready_seconds = time.monotonic() - started
        # Read at once: Ready came only after every Zone's own Ready (kstatus Current).
        zones = {n: gitops.zone(n) for n in ZONES}
    print(f"\ncommit to Kustomization Ready (server, 3 pods, 2 zones): {ready_seconds:.1f}s")
    print(f"kstatus seen while Flux waited:\n{sampler.report()}")
    print(f"Kustomization: {scenario.condition(ready, 'Ready')}")
    for name, zone in zones.items():
        status = (zone or {}).get("status", {})
        synced = scenario.condition(zone, "Synced") or {}
        assert synced.get("status") == "True", (name, status)
        assert status["primarySerial"] == status["servedSerial"] == FIRST_SERIAL
        assert status["replicasInSync"] == 3
    for address in gitops.replicas().values():
        for origin in ZONES.values():
            assert soa_serial(origin, address) == FIRST_SERIAL
    # Flux did wait: the Zones and the StatefulSet were InProgress before Current.
    for name in ZONES:
        assert kstatus.IN_PROGRESS in sampler.seen[f"Zone/{name}"], sampler.report()
        assert sampler.seen[f"Zone/{name}"][-1] == kstatus.CURRENT
    assert kstatus.IN_PROGRESS in sampler.seen[f"StatefulSet/{SERVER}"], sampler.report()
    inventory = {e["id"] for e in ready["status"]["inventory"]["entries"]}
    assert inventory == {
        f"{ns}_{SECRET}__Secret",
        f"{ns}_{SERVER}_secondarydns.io_SecondaryServer",
        *(f"{ns}_{n}_secondarydns.io_Zone" for n in ZONES),
    }


def test_2_kstatus_of_everything_the_chart_and_operator_create_is_current(
    gitops: GitOps,
) -> None:
    every = [
        *kstatus.of_objects(
            gitops.cluster,
            "-n",
            release.NAMESPACE,
            "deployments,services,poddisruptionbudgets,configmaps,networkpolicies,serviceaccounts",
        ),
        *kstatus.of_objects(gitops.cluster, "-n", gitops.namespace, f"{CHILD_KINDS},{OUR_KINDS}"),
    ]
    print("\n" + "\n".join(str(s) for s in every))
    kinds = Counter(s.kind for s in every)
    print(f"kinds: {dict(kinds)}")
    for kind in (
        "Deployment",
        "StatefulSet",
        "Service",
        "PodDisruptionBudget",
        "ConfigMap",
        "NetworkPolicy",
        "SecondaryServer",
        "Zone",
    ):
        assert kinds[kind] > 0, kind
    assert [s for s in every if s.status != kstatus.CURRENT] == []


# ---- no fights ---------------------------------------------------------------------------


@dataclass
class WriteCounter:
    """Every change of our objects, seen by watches, attributed to field managers."""

    writes: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    # (manager, what changed: spec, status, metadata)
    parts: Counter[tuple[str, str]] = field(default_factory=Counter)
    unattributed: int = 0

    def observe(self, before: dict[str, Any], after: dict[str, Any]) -> None:
        def stamps(obj: dict[str, Any]) -> dict[tuple[str, str, str], str]:
            return {
                (m["manager"], m["operation"], m.get("subresource", "")): m.get("time", "")
                for m in obj["metadata"].get("managedFields") or []
            }

        old, new = stamps(before), stamps(after)
        writers = [entry for entry, stamp in new.items() if old.get(entry) != stamp]
        changed = [
            part for part in ("spec", "status", "data") if before.get(part) != after.get(part)
        ]
        meta = ("labels", "annotations", "finalizers", "ownerReferences")
        if any(before["metadata"].get(k) != after["metadata"].get(k) for k in meta):
            changed.append("metadata")
        if not writers:
            self.unattributed += 1
        for writer in writers:
            self.writes[writer] += 1
            for part in changed:
                self.parts[(writer[0], part)] += 1


def watch(
    cluster: LocalCluster, namespace: str, kind: str, counter: WriteCounter, stop: threading.Event
) -> subprocess.Popen[str]:
    command = [
        "kubectl", "get", kind, "-n", namespace, "--watch", "--output-watch-events",
        "--show-managed-fields", "-o", "json",
    ]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, text=True, env=cluster.environment()
    )

    def read() -> None:
        decoder = json.JSONDecoder()
        buffer = ""
        last: dict[str, dict[str, Any]] = {}
        assert process.stdout is not None
        for line in process.stdout:
            buffer += line
            try:
                event, end = decoder.raw_decode(buffer.lstrip())
            except json.JSONDecodeError:
                continue
            buffer = buffer.lstrip()[end:]
            obj = event["object"]
            name = obj["metadata"]["name"]
            if event["type"] == "MODIFIED" and name in last and not stop.is_set():
                counter.observe(last[name], obj)
            last[name] = obj

    threading.Thread(target=read, daemon=True).start()
    return process


@contextmanager
def counting_writes(gitops: GitOps) -> Iterator[WriteCounter]:
    """Watches of our objects (and their Secrets) for the block; their writes counted."""
    counter = WriteCounter()
    stop = threading.Event()
    kinds = ("zones", "secondaryservers", "secrets")
    processes = [watch(gitops.cluster, gitops.namespace, kind, counter, stop) for kind in kinds]
    time.sleep(2)  # each watch's initial list
    try:
        yield counter
        time.sleep(2)  # the last events
    finally:
        stop.set()
        for process in processes:
            process.terminate()
            process.wait(timeout=30)


def test_3_neither_controller_rewrites_the_other_s_fields(gitops: GitOps) -> None:
    """Several reconciles of both controllers: the operator writes only status, Flux nothing."""
    ns = gitops.namespace
    log = gitops.cluster.logs / "kustomize-controller.log"
    log_start = log.stat().st_size
    window = 75.0
    with counting_writes(gitops) as counter:
        time.sleep(window)
    reconciles = [
        json.loads(line)
        for line in log.read_bytes()[log_start:].decode(errors="replace").splitlines()
        if line.startswith("{") and f'"namespace":"{ns}"' in line
    ]
    applied = [r for r in reconciles if r.get("msg") == "server-side apply completed"]
    outputs = Counter(
        f"{obj}: {change}" for r in applied for obj, change in (r.get("output") or {}).items()
    )
    print(
        f"\nover {window:.0f}s (Flux interval {FLUX_INTERVAL}, operator resync {OPERATOR_RESYNC}s)"
    )
    print(f"kustomize-controller applies: {len(applied)}; what they did: {dict(outputs)}")
    print(f"writes per (manager, operation, subresource): {dict(counter.writes)}")
    print(f"what each manager's writes changed: {dict(counter.parts)}")
    print(f"changes with no manager's timestamp moved: {counter.unattributed}")
    # Several reconciles of Flux happened, and each found nothing drifted.
    assert len(applied) >= 3
    assert set(outputs) and all(key.endswith(": unchanged") for key in outputs)
    # Flux wrote nothing; the operator wrote only status.
    for manager, _, subresource in counter.writes:
        assert manager != FLUX_MANAGER, counter.writes
        if manager == OPERATOR_MANAGER:
            assert subresource == "status", counter.writes
    assert {part for _, part in counter.parts} <= {"status"}, counter.parts
    # Flux still owns exactly what is in git, the operator only status.
    for name in ZONES:
        zone = gitops.get("zone", name, "--show-managed-fields")
        managers = {
            (m["manager"], m.get("subresource", "")) for m in zone["metadata"]["managedFields"]
        }
        assert managers == {(FLUX_MANAGER, ""), (OPERATOR_MANAGER, "status")}, managers


# ---- a Zone that cannot be served -------------------------------------------------------


def test_4_a_zone_with_a_missing_secret_fails_the_kustomization_others_keep_serving(
    gitops: GitOps,
) -> None:
    ns = gitops.namespace
    bad_key = {
        **gitops.primary.key.secret_manifest("bad-key", ns),
        "stringData": {"secret": "not base64!", "algorithm": "hmac-sha256", "name": "bad"},
    }
    with KstatusSampler(gitops.cluster, ns) as sampler:
        started = time.monotonic()
        sha = gitops.commit(
            {
                "dns/zones/gamma.yaml": zone_yaml(ns, "gamma", PRIMARY_ADDRESS, "no-such-secret"),
                "dns/bad-key.yaml": yaml.safe_dump(bad_key),
                "dns/zones/delta.yaml": zone_yaml(ns, "delta", PRIMARY_ADDRESS, "bad-key"),
            },
            "gamma.test (its Secret is not in git) and delta.test (a broken key)",
        )

        def failed() -> dict[str, Any] | None:
            obj = gitops.kustomization()
            attempted = obj.get("status", {}).get("lastAttemptedRevision", "")
            ready = scenario.condition(obj, "Ready") or {}
            return ready if ready.get("status") == "False" and attempted.endswith(sha) else None

        ready = wait_for("the Kustomization to fail its health check", failed, timeout=300)
        seconds = time.monotonic() - started
    print(f"\ncommit to Kustomization failed: {seconds:.1f}s (its timeout is 4m)")
    print(f"Kustomization Ready: {ready['reason']}: {ready['message']}")
    print(f"kstatus seen:\n{sampler.report()}")
    assert ready["reason"] == "HealthCheckFailed"
    # At once (fail-fast on kstatus Failed), not at the timeout. Fail-fast stops
    # at the first Failed object it sees, so the message names one of the two
    # (every attempt the same one here), never an InProgress one.
    assert "failed early due to stalled resources" in ready["message"]
    assert "InProgress" not in ready["message"]
    named = [z for z in ("gamma", "delta") if f"Zone/{ns}/{z} status: 'Failed'" in ready["message"]]
    assert named, ready["message"]
    # Our reason and message are on the Zones, and are what kstatus reports.
    statuses = {s.name: s for s in kstatus.of_objects(gitops.cluster, "-n", ns, "zones")}
    for name, reason in (("gamma", "SecretNotFound"), ("delta", "InvalidTsigKey")):
        stalled = scenario.condition(gitops.zone(name), "Stalled") or {}
        print(f"Zone {name}: Stalled {stalled.get('reason')}: {stalled.get('message')}")
        assert (stalled.get("status"), stalled.get("reason")) == ("True", reason)
        assert statuses[name].status == kstatus.FAILED
        assert statuses[name].message == stalled["message"]
    assert "no-such-secret" in statuses["gamma"].message
    # The other Zones keep serving, on every replica.
    for name in ZONES:
        assert statuses[name].status == kstatus.CURRENT
    for pod, address in gitops.replicas().items():
        for origin in ZONES.values():
            assert answer(origin, address) == ("NOERROR", True, FIRST_SERIAL), (pod, origin)
        assert answer("gamma.test.", address)[:2] == ("REFUSED", False), pod


def test_5_new_primaries_are_applied_and_served_a_removed_zone_is_pruned(gitops: GitOps) -> None:
    ns = gitops.namespace
    replicas = gitops.replicas()
    # The new primary refuses the replicas for a while: the transfer stays under
    # way, so what kstatus and Flux say meanwhile is seen for certain.
    gitops.second_primary.refuse(*replicas.values())
    with KstatusSampler(gitops.cluster, ns) as sampler, counting_writes(gitops) as counter:
        started = time.monotonic()
        sha = gitops.commit(
            {"dns/zones/beta.yaml": zone_yaml(ns, "beta", SECOND_PRIMARY_ADDRESS)},
            "beta.test moves to its new primary; gamma and delta out",
            remove=("dns/zones/gamma.yaml", "dns/zones/delta.yaml", "dns/bad-key.yaml"),
        )

        def transfer_pending() -> kstatus.ObjectStatus | None:
            zone = gitops.zone("beta") or {}
            if (zone.get("status") or {}).get("primarySerial") != SECOND_SERIAL:
                return None
            [found] = kstatus.of_objects(gitops.cluster, "-n", ns, "zone", "beta")
            return found if found.status == kstatus.IN_PROGRESS else None

        pending = wait_for("beta InProgress at its new primary", transfer_pending, timeout=300)
        reconciling = scenario.condition(gitops.zone("beta"), "Reconciling") or {}
        waiting = gitops.kustomization()
        released = time.monotonic()
        gitops.second_primary.refuse()
        ready = gitops.wait_ready_at(sha)
        seconds = time.monotonic() - started
        after_release = time.monotonic() - released
        beta = gitops.zone("beta")
    print(f"\nbeta while its replicas cannot transfer yet: {pending}")
    print(f"  Reconciling: {reconciling.get('reason')}: {reconciling.get('message')}")
    print(f"  Kustomization meanwhile: {scenario.condition(waiting, 'Ready')}")
    print(
        f"commit (new primary) to Kustomization Ready again: {seconds:.1f}s, "
        f"{after_release:.1f}s of it after the primary let the replicas transfer"
    )
    # The transfer under way: Reconciling with our message, kstatus InProgress,
    # and Flux still waiting (not Ready at this commit, not failed).
    assert reconciling.get("status") == "True"
    assert pending.message == reconciling["message"]
    waiting_ready = scenario.condition(waiting, "Ready") or {}
    assert not (
        waiting["status"].get("lastAppliedRevision", "").endswith(sha)
        and waiting_ready.get("status") == "True"
    ), waiting_ready
    print(f"kstatus seen:\n{sampler.report()}")
    print(f"writes per (manager, operation, subresource): {dict(counter.writes)}")
    print(f"what each manager's writes changed: {dict(counter.parts)}")
    # Both wrote, each only its own part: Flux the spec from git, the operator status.
    assert counter.parts[(FLUX_MANAGER, "spec")] >= 1, counter.parts
    assert counter.parts[(OPERATOR_MANAGER, "status")] >= 1, counter.parts
    assert {part for manager, part in counter.parts if manager == OPERATOR_MANAGER} == {"status"}, (
        counter.parts
    )
    assert (FLUX_MANAGER, "status") not in counter.parts, counter.parts
    assert scenario.condition(ready, "Ready")["status"] == "True"  # type: ignore[index]
    status = (beta or {})["status"]
    assert status["primarySerial"] == status["servedSerial"] == SECOND_SERIAL
    assert (scenario.condition(beta, "Synced") or {}).get("status") == "True"
    for address in replicas.values():
        assert soa_serial("beta.test.", address) == SECOND_SERIAL
    for name in ("gamma", "delta"):
        assert gitops.zone(name) is None
    assert gitops.get("secret", "bad-key") is None

    # A Zone removed from git: pruned, and the replicas stop serving it.
    started = time.monotonic()
    sha = gitops.commit({}, "alpha.test is no longer ours", remove=("dns/zones/alpha.yaml",))
    gitops.wait_ready_at(sha)
    pruned = time.monotonic() - started
    assert gitops.zone("alpha") is None
    addresses = gitops.replicas()

    def refused_everywhere() -> bool:
        return all(answer("alpha.test.", a)[:2] == ("REFUSED", False) for a in addresses.values())

    wait_for("every replica to stop serving alpha.test", refused_everywhere, timeout=180)
    gone = time.monotonic() - started
    print(
        f"commit (removal) to Kustomization Ready: {pruned:.1f}s; "
        f"to no replica serving it: {gone:.1f}s"
    )
    for address in addresses.values():
        assert answer("beta.test.", address) == ("NOERROR", True, SECOND_SERIAL)
    # Everything Current again.
    left = kstatus.of_objects(gitops.cluster, "-n", ns, f"{CHILD_KINDS},{OUR_KINDS}")
    assert [str(s) for s in left if s.status != kstatus.CURRENT] == []
