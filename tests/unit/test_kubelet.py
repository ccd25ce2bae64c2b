"""The pod runner's kubelet and containerd decisions, pure: spec, users, env, status, back-off."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from localcluster.kubelet import (
    envvars,
    images,
    ocispec,
    sandbox,
    seccomp,
    security,
    status,
    volumes,
)
from localcluster.kubelet.backoff import Backoff, go_duration
from localcluster.kubelet.lifecycle import Handler, HandlerResult, resolve_port
from localcluster.kubelet.probes import LIVENESS, READINESS, ProbeSpec, ProbeWorker
from secondary_dns.api import ObjectRef, parse_secondary_server
from secondary_dns.render import children

UID = "4d945fbe-2f44-4423-852f-e991a886b66a"
SERVER = children.ServerIdentity(ObjectRef("dns", "edge"), "uid-1", {})


def _dns_pod() -> dict[str, Any]:
    """A pod of the operator's StatefulSet, as the API server would hand it to a kubelet."""
    manifest = {
        "apiVersion": "secondarydns.io/v1alpha1",
        "kind": "SecondaryServer",
        "metadata": {"name": "edge", "namespace": "dns"},
        "spec": {},
    }
    sts = children.build_statefulset(SERVER, parse_secondary_server(manifest), "h")
    template = sts["spec"]["template"]
    return {
        "metadata": {**template["metadata"], "name": "edge-0", "namespace": "dns", "uid": UID},
        "spec": {**template["spec"], "nodeName": "kwok-zone-a-1", "hostname": "edge-0"},
        "status": {"podIP": "10.244.1.254"},
    }


def _container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(c for c in pod["spec"]["containers"] if c["name"] == name)
    return found


def _image_rootfs(tmp_path: Path) -> Path:
    etc = tmp_path / "rootfs" / "etc"
    etc.mkdir(parents=True)
    (etc / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/bash\n"
        "secondary-dns:x:65532:65532::/nonexistent:/usr/sbin/nologin\n"
        "app:x:1000:1000::/home/app:/bin/sh\n"
    )
    (etc / "group").write_text(
        "root:x:0:\nsecondary-dns:x:65532:\napp:x:1000:\ndialout:x:20:app\naudio:x:29:app,x\n"
    )
    return tmp_path / "rootfs"


# ---- the OCI runtime spec ------------------------------------------------------------


def _spec_for(pod: dict[str, Any], name: str, rootfs: Path) -> dict[str, Any]:
    container = _container(pod, name)
    sc = security.effective(pod, container)
    user = security.resolve_user(
        sc, "65532:65532", security.read_passwd(rootfs), security.read_group(rootfs)
    )
    caps = security.capabilities(sc, security.all_capabilities())
    mounts = [
        ocispec.Mount(m["mountPath"], f"/pod/volumes/{m['name']}", bool(m.get("readOnly")))
        for m in container.get("volumeMounts") or []
    ]
    return ocispec.build(
        args=["secondary-dns"],
        env=["PATH=/bin"],
        cwd="/var/lib/secondary-dns",
        user=user,
        sc=sc,
        capabilities=caps,
        rootfs=str(rootfs),
        kubelet_mounts=mounts,
        namespaces=ocispec.Namespaces("/run/netns/p", "/pod/ns/ipc", "/pod/ns/uts"),
        cgroups_path="c/kubepods/burstable/podu/id",
        resources=security.container_resources(container),
        oom_score_adj=security.oom_score_adj("Burstable", container, 256 * 2**30),
        seccomp=None,
        annotations={},
    )


def test_the_dns_containers_run_unprivileged_as_containerd_would_run_them(tmp_path: Path) -> None:
    rootfs = _image_rootfs(tmp_path)
    pod = _dns_pod()
    for name in ("engine", "agent"):
        spec = _spec_for(pod, name, rootfs)
        process = spec["process"]
        assert process["user"] == {"uid": 65532, "gid": 65532, "additionalGids": [65532]}
        # drop: [ALL] and nothing added: no capability in any set.
        assert process["capabilities"] == {"bounding": [], "effective": [], "permitted": []}
        assert process["noNewPrivileges"] is True
        assert spec["root"] == {"path": str(rootfs), "readonly": True}
        namespaces = {n["type"]: n.get("path") for n in spec["linux"]["namespaces"]}
        assert namespaces == {
            "pid": None,
            "ipc": "/pod/ns/ipc",
            "uts": "/pod/ns/uts",
            "mount": None,
            "network": "/run/netns/p",
        }
        destinations = [m["destination"] for m in spec["mounts"]]
        # containerd's CRI plugin: no /run tmpfs, a read-only cgroup mount.
        assert "/run" not in destinations and "/sys/fs/cgroup" in destinations
        assert "/proc/kcore" in spec["linux"]["maskedPaths"]
        assert "/proc/sys" in spec["linux"]["readonlyPaths"]
    agent = {m["destination"]: m for m in _spec_for(pod, "agent", rootfs)["mounts"]}
    engine = {m["destination"]: m for m in _spec_for(pod, "engine", rootfs)["mounts"]}
    # Only the agent gets the API token, read-only.
    assert agent[children.TOKEN_MOUNT_PATH]["options"] == ["rbind", "rprivate", "ro"]
    assert children.TOKEN_MOUNT_PATH not in engine
    assert engine["/run/secondary-dns"]["options"] == ["rbind", "rprivate", "rw"]


def test_added_capabilities_reach_bounding_effective_permitted_never_ambient() -> None:
    def caps(add: list[str] | None = None, drop: list[str] | None = None) -> list[str]:
        sc = security.SecurityContext(
            capabilities_add=tuple(add or ()), capabilities_drop=tuple(drop or ())
        )
        return security.capabilities(sc, security.all_capabilities())

    # containerd's defaults when the Pod says nothing.
    assert caps() == list(security.DEFAULT_CAPABILITIES)
    assert caps(["NET_BIND_SERVICE"], ["ALL"]) == ["CAP_NET_BIND_SERVICE"]
    assert caps(drop=["NET_RAW", "chown"]) == [
        c for c in security.DEFAULT_CAPABILITIES if c not in ("CAP_NET_RAW", "CAP_CHOWN")
    ]
    everything = caps(["ALL"], ["CHOWN"])
    assert "CAP_SYS_ADMIN" in everything and "CAP_CHOWN" not in everything
    sc = security.SecurityContext(capabilities_add=("NET_ADMIN",), capabilities_drop=("ALL",))
    process = ocispec.build(
        args=["x"],
        env=[],
        cwd="/",
        user=security.ProcessUser(1000, 1000, (1000,)),
        sc=sc,
        capabilities=security.capabilities(sc, security.all_capabilities()),
        rootfs="/r",
        kubelet_mounts=[],
        namespaces=ocispec.Namespaces("/n", "/i", "/u"),
        cgroups_path="c",
        resources=security.container_resources({}),
        oom_score_adj=1000,
        seccomp=None,
        annotations={},
    )["process"]
    assert set(process["capabilities"]) == {"bounding", "effective", "permitted"}


def test_kubelet_mounts_are_sorted_by_depth_and_replace_defaults() -> None:
    mounts = ocispec.mounts(
        [
            ocispec.Mount("/var/run/secrets/x", "/a", True),
            ocispec.Mount("/tmp", "/b"),
            ocispec.Mount("/dev/termination-log", "/c"),
            ocispec.Mount("/dev/shm", "/d"),
        ]
    )
    destinations = [m["destination"] for m in mounts]
    kubelet = destinations[-4:]
    # By depth, and in the kubelet's order within one depth (a stable sort).
    assert kubelet == ["/tmp", "/dev/termination-log", "/dev/shm", "/var/run/secrets/x"]
    # A kubelet mount at a default's destination replaces the default.
    assert destinations.count("/dev/shm") == 1


def test_memory_limit_cpu_and_oom_score_follow_kubelet() -> None:
    container = {"resources": {"requests": {"cpu": "250m", "memory": "64Mi"},
                               "limits": {"cpu": "1", "memory": "128Mi"}}}  # fmt: skip
    resources = security.container_resources(container)
    assert resources == security.Resources(256, 100_000, 100_000, 128 * 2**20)
    assert security.container_resources({}) == security.Resources(2, None, 100_000, None)
    assert security.oom_score_adj("Guaranteed", container, 2**34) == -997
    assert security.oom_score_adj("BestEffort", {}, 2**34) == 1000
    # 1000 - 1000 * request / capacity, kept within 2..999.
    assert security.oom_score_adj("Burstable", container, 2**30) == 938
    assert security.oom_score_adj("Burstable", {}, 2**30) == 999
    assert security.qos_class({"spec": {"containers": [container]}}) == "Burstable"
    guaranteed = {"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}
    assert security.qos_class({"spec": {"containers": [guaranteed]}}) == "Guaranteed"
    assert security.qos_class({"spec": {"containers": [{}]}}) == "BestEffort"


# ---- users and runAsNonRoot ----------------------------------------------------------


def test_users_and_groups_are_resolved_in_the_image_as_containerd_does(tmp_path: Path) -> None:
    rootfs = _image_rootfs(tmp_path)
    passwd, groups = security.read_passwd(rootfs), security.read_group(rootfs)

    def user(image_user: str, **sc: Any) -> security.ProcessUser:
        return security.resolve_user(security.SecurityContext(**sc), image_user, passwd, groups)

    # The image's USER by name: its primary group and the groups listing it.
    assert user("app") == security.ProcessUser(1000, 1000, (20, 29, 1000))
    # runAsUser alone: the group from the image's passwd entry.
    assert user("", run_as_user=65532) == security.ProcessUser(65532, 65532, (65532,))
    # Unknown uid: group 0 (containerd's default), and no supplementary groups.
    assert user("", run_as_user=4242) == security.ProcessUser(4242, 0, (0,))
    # runAsGroup, supplementalGroups and fsGroup: all of them, sorted.
    assert user(
        "", run_as_user=1000, run_as_group=3000, supplemental_groups=(5, 7), fs_group=2000
    ) == security.ProcessUser(1000, 3000, (5, 7, 20, 29, 2000, 3000))
    assert user("") == security.ProcessUser(0, 0, (0,))
    with pytest.raises(envvars.CreateContainerError, match="unable to find user nobody"):
        user("nobody")
    with pytest.raises(envvars.CreateContainerError, match="specified without user"):
        user("", run_as_group=5)


def test_run_as_non_root_is_verified_with_kubelet_s_messages() -> None:
    pod = {"metadata": {"name": "p", "namespace": "n", "uid": "u"}}
    container = {"name": "c"}
    where = '(pod: "p_n(u)", container: c)'

    def check(image_user: str, **sc: Any) -> None:
        sc.setdefault("run_as_non_root", True)
        security.verify_run_as_non_root(pod, container, security.SecurityContext(**sc), image_user)

    check("65532:65532")
    check("", run_as_user=1000)
    check("", run_as_non_root=False)
    with pytest.raises(envvars.ContainerConfigError) as root:
        check("")
    assert str(root.value) == f"container has runAsNonRoot and image will run as root {where}"
    with pytest.raises(envvars.ContainerConfigError, match="image will run as root"):
        check("0:0")
    with pytest.raises(envvars.ContainerConfigError, match="runAsUser breaks non-root policy"):
        check("65532", run_as_user=0)
    with pytest.raises(envvars.ContainerConfigError, match=r"non-numeric user \(app\)"):
        check("app")


def test_container_settings_override_the_pod_s() -> None:
    pod = {
        "spec": {
            "securityContext": {
                "runAsUser": 1,
                "runAsNonRoot": True,
                "fsGroup": 9,
                "seccompProfile": {"type": "RuntimeDefault"},
            }
        }
    }
    sc = security.effective(
        pod, {"securityContext": {"runAsUser": 2, "allowPrivilegeEscalation": False}}
    )
    assert (sc.run_as_user, sc.run_as_non_root, sc.fs_group) == (2, True, 9)
    assert sc.seccomp_type == "RuntimeDefault" and sc.no_new_privileges
    assert not security.effective(pod, {}).no_new_privileges


def test_only_safe_sysctls_are_admitted() -> None:
    pod = _dns_pod()
    assert security.forbidden_sysctls(pod) == []
    assert security.pod_sysctls(pod) == {"net.ipv4.ip_unprivileged_port_start": "53"}
    unsafe = {"spec": {"securityContext": {"sysctls": [{"name": "kernel.msgmax", "value": "1"}]}}}
    assert security.forbidden_sysctls(unsafe) == ["kernel.msgmax"]


# ---- env and argv --------------------------------------------------------------------


def test_dollar_references_expand_as_kubernetes_expands_them() -> None:
    defined = {"A": "x", "B": "y"}
    assert envvars.expand("$(A)-$(B)", defined) == "x-y"
    assert envvars.expand("$$(A)", defined) == "$(A)"
    assert envvars.expand("$(MISSING)", defined) == "$(MISSING)"
    assert envvars.expand("cost $5 $(A", defined) == "cost $5 $(A"


def test_env_from_the_downward_api_objects_and_services() -> None:
    pod = _dns_pod()
    pod["metadata"]["labels"]["tier"] = "dns"
    container = {
        "name": "c",
        "resources": {"limits": {"memory": "128Mi"}},
        "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}],
        "env": [
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "TIER", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['tier']"}}},
            {"name": "ADDR", "value": "$(POD_IP):53"},
            {"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
            {
                "name": "MEM_MI",
                "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}},
            },
            {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
        ],
    }
    objects = {
        ("ConfigMap", "cfg"): {"mode": "fast", "not valid!": "x"},
        ("Secret", "s"): {"k": "v"},
    }
    kubernetes_service = {
        "metadata": {"name": "kubernetes", "namespace": "default"},
        "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443}]},
    }
    services = envvars.visible_services([kubernetes_service], "dns", False)
    env = envvars.container_env(
        container,
        pod,
        envvars.service_env(services),
        lambda k, n: objects.get((k, n)),
        {"cpu": "32"},
    )
    assert env["POD_IP"] == "10.244.1.254" and env["ADDR"] == "10.244.1.254:53"
    assert env["TIER"] == "dns" and env["KEY"] == "v" and env["CFG_mode"] == "fast"
    assert "CFG_not valid!" not in env
    assert env["MEM_MI"] == "128" and env["CPU"] == "32"
    assert env["KUBERNETES_SERVICE_HOST"] == "10.96.0.1"
    assert env["KUBERNETES_SERVICE_PORT"] == env["KUBERNETES_SERVICE_PORT_HTTPS"] == "443"
    assert env["KUBERNETES_PORT_443_TCP"] == "tcp://10.96.0.1:443"

    missing_key = {"name": "c", "env": [
        {"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "nope"}}}
    ]}  # fmt: skip
    with pytest.raises(envvars.ContainerConfigError, match="couldn't find key nope in ConfigMap"):
        envvars.container_env(missing_key, pod, {}, lambda k, n: objects.get((k, n)), {})
    optional = {"name": "c", "env": [
        {"name": "X", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k", "optional": True}}}
    ]}  # fmt: skip
    assert envvars.container_env(optional, pod, {}, lambda k, n: None, {}) == {}


def test_service_links_only_when_enabled() -> None:
    own = {"metadata": {"name": "dns-pods", "namespace": "dns"}, "spec": {"clusterIP": "None"}}
    web = {
        "metadata": {"name": "web-ui", "namespace": "dns"},
        "spec": {"clusterIP": "10.96.3.4", "ports": [{"port": 80, "protocol": "TCP"}]},
    }
    assert envvars.visible_services([own, web], "dns", False) == []
    env = envvars.service_env(envvars.visible_services([own, web], "dns", True))
    assert env["WEB_UI_SERVICE_HOST"] == "10.96.3.4" and "DNS_PODS_SERVICE_HOST" not in env


def test_argv_and_environment_follow_containerd() -> None:
    image = images.ImageConfig(
        env=("PATH=/opt/bin:/bin", "LANG=C"), entrypoint=("secondary-dns",), cmd=("--help",)
    )
    assert envvars.process_args({}, image, {}) == ["secondary-dns", "--help"]
    assert envvars.process_args({"args": ["agent"]}, image, {}) == ["secondary-dns", "agent"]
    assert envvars.process_args({"command": ["sh"]}, image, {}) == ["sh"]
    assert envvars.process_args({"command": ["echo", "$(X)"]}, image, {"X": "1"}) == ["echo", "1"]
    with pytest.raises(envvars.CreateContainerError, match="no command specified"):
        envvars.process_args({}, images.ImageConfig(), {})
    env = envvars.runtime_env(image, {"LANG": "C.UTF-8", "A": "1"}, "edge-0")
    assert env == ["PATH=/opt/bin:/bin", "HOSTNAME=edge-0", "LANG=C.UTF-8", "A=1"]


# ---- images --------------------------------------------------------------------------


def test_image_names_are_normalised_as_containerd_resolves_them() -> None:
    assert images.normalize("debian:bookworm-slim") == "docker.io/library/debian:bookworm-slim"
    assert images.normalize("busybox") == "docker.io/library/busybox:latest"
    assert images.normalize("org/app:1") == "docker.io/org/app:1"
    assert images.normalize("localhost:5000/app") == "localhost:5000/app:latest"
    ref = "ghcr.io/secondary-dns-operator/secondary-dns:0.1.0"
    assert images.normalize(ref) == ref
    digest = "quay.io/a/b@sha256:" + "0" * 64
    assert images.normalize(digest) == digest
    assert images.pull_policy({"image": "busybox"}) == images.ALWAYS
    assert images.pull_policy({"image": "busybox:1.36"}) == images.IF_NOT_PRESENT
    assert images.pull_policy({"image": "x:1", "imagePullPolicy": "Never"}) == images.NEVER


# ---- back-off ---------------------------------------------------------------------


def test_backoff_doubles_from_10s_to_5min_and_is_forgotten_after_10min() -> None:
    now = [0.0]
    backoff = Backoff(lambda: now[0])
    delays = []
    for _ in range(7):
        backoff.next("c", now[0])
        delays.append(backoff.get("c"))
        now[0] += 1
    assert delays == [10, 20, 40, 80, 160, 300, 300]
    assert [go_duration(d) for d in delays[:6]] == ["10s", "20s", "40s", "1m20s", "2m40s", "5m0s"]
    # In back-off while less than the current delay has passed since the exit.
    exit_at = now[0]
    now[0] += 299
    assert backoff.in_backoff_since("c", exit_at)
    now[0] += 2
    assert not backoff.in_backoff_since("c", exit_at)
    # A container that ran for more than 10 minutes starts again from 10 s.
    now[0] += 601
    backoff.next("c", now[0])
    assert backoff.get("c") == 10


# ---- seccomp -------------------------------------------------------------------------

PROFILE = {
    "defaultAction": "SCMP_ACT_ERRNO",
    "defaultErrnoRet": 38,
    "archMap": [
        {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]}
    ],
    "syscalls": [
        {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
        {"names": ["bpf"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
        {"names": ["bpf"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
         "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
        {"names": ["arm_only"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["arm64"]}},
        {"names": ["new_one"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "7.0"}},
    ],
}  # fmt: skip


def test_runtime_default_seccomp_depends_on_arch_capabilities_and_kernel() -> None:
    plain = seccomp.oci_profile(PROFILE, "amd64", [], "6.18.44-fc")
    assert plain["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    assert plain["defaultErrnoRet"] == 38
    names = [(rule["names"], rule["action"]) for rule in plain["syscalls"]]
    assert names == [(["read", "write"], "SCMP_ACT_ALLOW"), (["bpf"], "SCMP_ACT_ERRNO")]
    admin = seccomp.oci_profile(PROFILE, "amd64", ["CAP_SYS_ADMIN"], "7.1.0")
    names = [(rule["names"], rule["action"]) for rule in admin["syscalls"]]
    assert (["bpf"], "SCMP_ACT_ALLOW") in names and (["new_one"], "SCMP_ACT_ALLOW") in names


def test_the_installed_default_profile_converts() -> None:
    if not seccomp.PROFILE.is_file():
        pytest.skip("containers-common's seccomp.json is not installed (make system-packages)")
    converted = seccomp.oci_profile(seccomp.load_default_profile(), "amd64", [], "6.1")
    allowed = {
        n for r in converted["syscalls"] if r["action"] == "SCMP_ACT_ALLOW" for n in r["names"]
    }
    assert {"read", "socket", "execve", "setsockopt"} <= allowed
    assert "chroot" not in allowed  # only with CAP_SYS_CHROOT


# ---- status --------------------------------------------------------------------------

T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z"


def _running(name: str, ready: bool) -> status.ContainerView:
    return status.ContainerView(
        name, "img", container_id=f"runc://u-{name}-0", running_since=T0, ready=ready, started=True
    )


def test_pod_status_reads_as_kubelet_writes_it() -> None:
    pod: dict[str, Any] = {
        "metadata": {"name": "p"},
        "status": {
            "conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": T0}]
        },
    }
    view = status.PodView(
        "10.244.1.254", "10.250.0.1", True, [_running("engine", True), _running("agent", False)]
    )
    first = status.pod_status(pod, view, T0)
    conditions = {c["type"]: c for c in first["conditions"]}
    assert first["phase"] == "Running" and first["podIPs"] == [{"ip": "10.244.1.254"}]
    assert conditions["PodScheduled"]["lastTransitionTime"] == T0  # kept, not ours
    assert conditions["Ready"]["reason"] == "ContainersNotReady"
    assert conditions["Ready"]["message"] == "containers with unready status: [agent]"
    assert first["containerStatuses"][1]["containerID"] == "runc://u-agent-0"

    ready = status.PodView(
        "10.244.1.254", "10.250.0.1", True, [_running("engine", True), _running("agent", True)]
    )
    second = status.pod_status({**pod, "status": first}, ready, T1)
    after = {c["type"]: c for c in second["conditions"]}
    assert after["Ready"]["status"] == "True" and after["Ready"]["lastTransitionTime"] == T1
    assert after["Initialized"]["lastTransitionTime"] == T0
    assert status.status_differs(second, first)
    assert not status.status_differs(second, {**first, **second})


def test_phase_follows_restart_policy_and_exits() -> None:
    ok = status.Terminated(0, "Completed", T0, T1)
    failed = status.Terminated(1, "Error", T0, T1)

    def phase(*views: status.ContainerView, policy: str = "Always", **kw: Any) -> str:
        return status.phase(status.PodView("ip", "h", True, views, restart_policy=policy, **kw))

    assert phase(status.ContainerView("c", "i", waiting_reason="ErrImagePull")) == "Pending"
    crash = status.ContainerView(
        "c", "i", waiting_reason="CrashLoopBackOff", last_terminated=failed
    )
    assert phase(crash) == "Running"
    assert phase(status.ContainerView("c", "i", terminated=ok), policy="Never") == "Succeeded"
    assert phase(status.ContainerView("c", "i", terminated=failed), policy="Never") == "Failed"
    assert phase(status.ContainerView("c", "i", terminated=failed), policy="OnFailure") == "Running"
    assert phase(_running("c", True), failed_reason="Evicted") == "Failed"
    # A deleted pod whose containers stopped ends in a terminal phase.
    killed = status.Terminated(143, "Error", T0, T1)
    assert phase(status.ContainerView("c", "i", terminated=killed), terminated=True) == "Failed"
    assert phase(status.ContainerView("c", "i", terminated=ok), terminated=True) == "Succeeded"


def test_a_restarting_container_shows_its_last_exit() -> None:
    crashed = status.Terminated(137, "Error", T0, T1, container_id="runc://u-c-0", signal=9)
    view = status.ContainerView(
        "c",
        "img",
        waiting_reason="CrashLoopBackOff",
        waiting_message="back-off 10s restarting failed container=c pod=p_n(u)",
        last_terminated=crashed,
        restart_count=1,
    )
    entry = view.status()
    assert entry["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert entry["lastState"]["terminated"] == {
        "exitCode": 137,
        "reason": "Error",
        "startedAt": T0,
        "finishedAt": T1,
        "containerID": "runc://u-c-0",
        "signal": 9,
    }
    assert entry["restartCount"] == 1 and entry["started"] is False


# ---- volumes -------------------------------------------------------------------------


def test_token_renewal_follows_kubelet_s_token_manager() -> None:
    issued = 1_000_000.0
    expiration = issued + 3600
    assert not volumes.requires_refresh(issued + 60, expiration, 3600, 0)
    assert not volumes.requires_refresh(issued + 2879, expiration, 3600, 0)
    assert volumes.requires_refresh(issued + 2881, expiration, 3600, 0)  # past 80%
    long = issued + 7 * 24 * 3600
    assert volumes.requires_refresh(issued + 24 * 3600 + 1, long, 7 * 24 * 3600, 0)


def test_projected_files_are_replaced_in_one_rename(tmp_path: Path) -> None:
    target = tmp_path / "token"
    first = {
        "token": volumes.FileProjection(b"a", 0o600),
        "ns/namespace": volumes.FileProjection(b"dns", 0o644),
    }
    assert volumes.write_atomically(target, first)
    assert (target / "token").read_bytes() == b"a"
    assert (target / "ns" / "namespace").read_bytes() == b"dns"
    assert (target / "token").is_symlink() and (target / "..data").is_symlink()
    assert oct((target / "..data" / "token").stat().st_mode & 0o777) == oct(0o600)
    old = (target / "..data").resolve()
    assert not volumes.write_atomically(target, first)  # unchanged: nothing written
    assert volumes.write_atomically(target, {"token": volumes.FileProjection(b"b", 0o600)})
    assert (target / "token").read_bytes() == b"b"
    assert not old.exists() and not (target / "ns").exists()
    with pytest.raises(volumes.VolumeError, match="invalid path"):
        volumes.write_atomically(target, {"../x": volumes.FileProjection(b"", 0o644)})


def test_config_map_payloads_honour_items_modes_and_optional() -> None:
    data = {"a": b"1", "b": b"2"}
    everything = volumes.key_payload("ConfigMap", "c", data, [], 0o644, False)
    assert {k: v.data for k, v in everything.items()} == data
    items = volumes.key_payload(
        "ConfigMap", "c", data, [{"key": "a", "path": "x/a", "mode": 0o400}], 0o644, False
    )
    assert items == {"x/a": volumes.FileProjection(b"1", 0o400)}
    with pytest.raises(volumes.VolumeError, match='configmap "c" not found'):
        volumes.key_payload("ConfigMap", "c", None, [], 0o644, False)
    assert volumes.key_payload("Secret", "s", None, [], 0o644, True) == {}


def test_the_token_belongs_to_the_pod_s_one_user() -> None:
    pod = _dns_pod()
    assert volumes.fs_user(pod) == children.RUN_AS_USER
    pod["spec"]["containers"][0]["securityContext"]["runAsUser"] = 7
    assert volumes.fs_user(pod) is None


# ---- probes --------------------------------------------------------------------------


def _worker(kind: str, outcomes: list[bool], **probe: Any) -> tuple[ProbeWorker, list[str]]:
    results = iter(outcomes)
    seen: list[str] = []
    spec = ProbeSpec.parse({f"{kind}Probe": {"exec": {"command": ["true"]}, **probe}}, kind)
    assert spec is not None
    worker = ProbeWorker(
        spec,
        lambda handler, timeout: HandlerResult(next(results), "out"),
        0.0,
        lambda: True,
        lambda w, outcome: seen.append("failure"),
        lambda w: seen.append(f"result={w.result}"),
    )
    return worker, seen


def test_probe_results_flip_at_their_thresholds() -> None:
    readiness, seen = _worker(READINESS, [True, False, False, True, True], successThreshold=2,
                              failureThreshold=2)  # fmt: skip
    assert readiness.result is False  # readiness starts failed
    for _ in range(5):
        readiness.probe_once()
    # Two failures in a row confirm the initial False (no change to report),
    # two successes flip it.
    assert seen == ["failure", "failure", "result=True"]
    assert readiness.result is True
    liveness, seen = _worker(LIVENESS, [False, False, False], failureThreshold=3)
    assert liveness.result is True
    keep_going = [liveness.probe_once() for _ in range(3)]
    assert keep_going == [True, True, False]  # no more probing of a container to restart
    assert liveness.result is False and seen == ["failure", "failure", "failure", "result=False"]
    spec = ProbeSpec.parse(
        {"readinessProbe": {"httpGet": {"port": "agent", "path": "/readyz"}}}, READINESS
    )
    assert spec is not None and (spec.period, spec.timeout, spec.failure_threshold) == (10, 1, 3)
    assert resolve_port("agent", {"ports": [{"name": "agent", "containerPort": 8081}]}) == 8081
    assert Handler.parse({"sleep": {"seconds": 5}}).seconds == 5


# ---- the sandbox ---------------------------------------------------------------------


def test_pod_files_are_kubelet_s() -> None:
    pod = _dns_pod()
    pod["spec"]["subdomain"] = "edge-pods"
    hosts = sandbox.hosts_file(pod, "10.244.1.254")
    assert hosts.startswith("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n")
    assert hosts.endswith("10.244.1.254\tedge-0.edge-pods.dns.svc.cluster.local\tedge-0\n")
    resolv = sandbox.resolv_conf(pod)
    assert "nameserver" not in resolv  # no cluster DNS here, and never the host's resolvers
    assert "search dns.svc.cluster.local svc.cluster.local cluster.local" in resolv
    assert sandbox.hostname({"metadata": {"name": "x" * 70}, "spec": {}}) == "x" * 63


def test_the_agent_s_token_volume_is_what_in_cluster_clients_read() -> None:
    # In-cluster clients read their token, CA and namespace from this directory.
    assert children.TOKEN_MOUNT_PATH == "/var/run/secrets/kubernetes.io/serviceaccount"
    volume = next(v for v in _dns_pod()["spec"]["volumes"] if v["name"] == children.TOKEN_VOLUME)
    sources = volume["projected"]["sources"]
    assert [next(iter(s)) for s in sources] == ["serviceAccountToken", "configMap", "downwardAPI"]
    assert sources[0]["serviceAccountToken"]["path"] == "token"
    assert sources[1]["configMap"]["name"] == "kube-root-ca.crt"
    assert json.dumps(sources[2]).count("metadata.namespace") == 1
