"""The agent against the real API server: ConfigMap change -> named reconfigured -> Pod annotated.

The agent and the engine run as the real commands inside the session's network
namespace (the API server is https://127.0.0.1:6443 there); named serves on a
loopback address of its own and transfers from a real primary with TSIG.
"""

from __future__ import annotations

import ipaddress
import json
import statistics
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from localcluster.cluster import LocalCluster
from localcluster.named import NamedFleet, NamedProcess, TsigCredentials, free_port, make_zone
from localcluster.waiting import wait_for
from secondary_dns.api import agent_contract
from secondary_dns.api.agent_contract import PodLayout
from tests.agent_configs import (
    SERVER,
    Bundle,
    PrimaryZone,
    configmap_manifests,
    key_secret_manifest,
    render_bundle,
)
from tests.cli_processes import EngineProcess, SecondaryDnsProcess

POD = "edge-0"
RUNS = 5


def _pod_manifest(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": POD, "namespace": namespace, "labels": {"app": SERVER}},
        # kwok marks it Running; nothing is pulled or run.
        "spec": {"containers": [{"name": "agent", "image": "registry.k8s.io/pause:3.10"}]},
    }


def _apply(cluster: LocalCluster, objects: list[dict[str, Any]]) -> None:
    cluster.kubectl(
        "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
    )


def _pod_annotations(cluster: LocalCluster, namespace: str) -> dict[str, str]:
    result = cluster.kubectl("get", "pod", POD, "-n", namespace, "-o", "json")
    annotations: dict[str, str] = json.loads(result.stdout)["metadata"].get("annotations") or {}
    return annotations


@pytest.fixture
def fleet(test_netns: str, tmp_path: Path) -> Iterator[NamedFleet]:
    with NamedFleet(tmp_path / "named", test_netns) as named_fleet:
        yield named_fleet


def test_configmap_change_is_applied_and_reported_on_the_pod(
    cluster: LocalCluster, namespace: str, fleet: NamedFleet, tmp_path: Path
) -> None:
    key = TsigCredentials.generate("transfer-key.example.")
    added = [f"added-{run}.test." for run in range(RUNS)]
    primary = fleet.start_primary(
        [
            make_zone("example.test.", serial=1),
            *(make_zone(z, serial=10 + i) for i, z in enumerate(added)),
        ],
        key,
    )
    address = fleet.address()
    layout = PodLayout(PurePosixPath(tmp_path / "run"), PurePosixPath(tmp_path / "data"))
    control_port, statistics_port, http_port = free_port(), free_port(), free_port()

    def bundle(zones: list[str]) -> Bundle:
        return render_bundle(
            layout,
            [PrimaryZone(zone, primary.address) for zone in zones],
            key.name,
            key.secret,
            listen=ipaddress.ip_address(address),
            control_port=control_port,
            statistics_port=statistics_port,
        )

    first = bundle(["example.test."])
    _apply(cluster, [_pod_manifest(namespace), key_secret_manifest(first, namespace)])
    _apply(cluster, configmap_manifests(first, namespace))

    engine = EngineProcess(layout, tmp_path / "engine.log")
    agent = SecondaryDnsProcess(
        [
            "agent",
            "--namespace",
            namespace,
            "--server",
            SERVER,
            "--pod",
            POD,
            "--run-dir",
            str(layout.run_dir),
            "--data-dir",
            str(layout.data_dir),
            "--listen",
            f"127.0.0.1:{http_port}",
            "--kubeconfig",
            str(cluster.kubeconfig),
            "--dns-address",
            address,
            "--control-port",
            str(control_port),
            "--statistics-port",
            str(statistics_port),
        ],
        tmp_path / "agent.log",
    )
    named = NamedProcess("agent-pod", Path(layout.named_conf), tmp_path, address)
    agent.start()
    engine.start()
    try:
        wait_for("example.test. served", lambda: named.serial("example.test.") == 1)
        wait_for(
            "the Pod to show the applied config",
            lambda: (
                _pod_annotations(cluster, namespace).get(
                    agent_contract.ANNOTATION_APPLIED_CONFIG_HASH
                )
                == first.config_hash
            ),
        )
        named_pid = engine.engine_pid()
        assert named_pid == engine.pid

        latencies: list[float] = []
        kubectl_seconds: list[float] = []
        for run, zone in enumerate(added):
            config = bundle(["example.test.", zone])
            started = time.monotonic()
            _apply(cluster, configmap_manifests(config, namespace))
            kubectl_seconds.append(time.monotonic() - started)
            wait_for(f"{zone} served", lambda z=zone, s=10 + run: named.serial(z) == s, every=0.01)
            latencies.append(time.monotonic() - started)
            wait_for(
                "the Pod annotations",
                lambda c=config: (
                    (a := _pod_annotations(cluster, namespace)).get(
                        agent_contract.ANNOTATION_APPLIED_CONFIG_HASH
                    )
                    == c.config_hash
                    and a.get(agent_contract.ANNOTATION_ZONES_LOADED) == "2/2"
                    and a.get(agent_contract.ANNOTATION_CONFIG_ERROR) == ""
                ),
            )
        print(
            f"\nkubectl apply -> new zone served, {RUNS} runs: "
            f"p50 {statistics.median(latencies) * 1000:.0f} ms, "
            f"max {max(latencies) * 1000:.0f} ms "
            f"({', '.join(f'{x * 1000:.0f}' for x in latencies)} ms; of which kubectl apply "
            f"itself {', '.join(f'{x * 1000:.0f}' for x in kubectl_seconds)} ms)"
        )
        assert engine.alive() and engine.engine_pid() == named_pid
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/readyz", timeout=5) as response:
            assert response.status == 200

        # A config named-checkconf refuses: reported on the Pod, the last good one serves.
        good = config
        bad = good.with_file("zones.conf", good.files["zones.conf"] + "zone {\n")
        _apply(cluster, configmap_manifests(bad, namespace))
        error = wait_for(
            "config-error on the Pod",
            lambda: _pod_annotations(cluster, namespace).get(
                agent_contract.ANNOTATION_CONFIG_ERROR
            ),
        )
        assert error.startswith(f"{bad.config_hash}: named-checkconf: ")
        annotations = _pod_annotations(cluster, namespace)
        assert annotations[agent_contract.ANNOTATION_APPLIED_CONFIG_HASH] == good.config_hash
        assert named.serial(added[-1]) == 10 + RUNS - 1
    except BaseException:
        print(
            f"---- agent log ----\n{agent.log()[-6000:]}\n"
            f"---- engine log ----\n{engine.log()[-3000:]}"
        )
        raise
    finally:
        agent.stop()
        engine.stop()
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{http_port}/healthz", timeout=2)
    except (urllib.error.URLError, OSError):
        pass
    else:
        raise AssertionError("the agent kept serving after SIGTERM")
