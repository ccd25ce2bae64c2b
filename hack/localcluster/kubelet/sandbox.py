"""The pod sandbox: what containerd's pause container holds for every container of a pod.

containerd keeps the pod's network, IPC and UTS namespaces alive in a pause
process; here they are persistent namespaces instead: the network namespace
`ip netns add` makes (network.py), and IPC and UTS namespaces bind-mounted on
files in the pod's directory (`unshare --ipc=FILE --uts=FILE`), with the
pod's hostname set in the UTS one. The pod's sysctls are written there before
any container starts, as the runtime writes them for the sandbox. The files
kubelet and containerd give each container (/etc/hosts, /etc/hostname,
/etc/resolv.conf) are written here too.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

CLUSTER_DOMAIN = "cluster.local"
NAMESPACE_DIR = "ns"
ETC_DIR = "etc"


def hostname(pod: Mapping[str, Any]) -> str:
    """spec.hostname, else the pod's name; at most 63 characters (GeneratePodHostNameAndDomain)."""
    spec = pod.get("spec") or {}
    name = str(spec.get("hostname") or pod["metadata"]["name"])
    return name[:63].rstrip("-.")


def hosts_file(pod: Mapping[str, Any], pod_ip: str) -> str:
    """kubelet's managed /etc/hosts (managedHostsFileContent)."""
    spec = pod.get("spec") or {}
    name = hostname(pod)
    lines = [
        "# Kubernetes-managed hosts file.",
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        "fe00::0\tip6-localnet",
        "fe00::0\tip6-mcastprefix",
        "fe00::1\tip6-allnodes",
        "fe00::2\tip6-allrouters",
    ]
    if spec.get("subdomain"):
        fqdn = f"{name}.{spec['subdomain']}.{pod['metadata']['namespace']}.svc.{CLUSTER_DOMAIN}"
        lines.append(f"{pod_ip}\t{fqdn}\t{name}")
    else:
        lines.append(f"{pod_ip}\t{name}")
    aliases = spec.get("hostAliases") or []
    if aliases:
        lines += ["", "# Entries added by HostAliases."]
        lines += [f"{a['ip']}\t" + "\t".join(a.get("hostnames") or []) for a in aliases]
    return "\n".join(lines) + "\n"


def resolv_conf(pod: Mapping[str, Any]) -> str:
    """The cluster's search path; no nameserver: this cluster runs no cluster DNS.

    A kubelet without a cluster DNS falls back to the node's resolv.conf; the
    node here is the developer's machine, whose resolvers the pods must not
    reach, so glibc's default (127.0.0.1, the pod's own loopback) is all a pod
    gets. Nothing in the project's pods resolves names: the agent reaches the
    API server by KUBERNETES_SERVICE_HOST, an address.
    """
    namespace = pod["metadata"]["namespace"]
    search = f"{namespace}.svc.{CLUSTER_DOMAIN} svc.{CLUSTER_DOMAIN} {CLUSTER_DOMAIN}"
    return f"search {search}\noptions ndots:5\n"


def etc_files(pod_dir: Path, pod: Mapping[str, Any], pod_ip: str) -> dict[str, Path]:
    """Write /etc/hosts, /etc/hostname and /etc/resolv.conf for the pod; their host paths."""
    directory = pod_dir / ETC_DIR
    directory.mkdir(parents=True, exist_ok=True)
    files = {
        "/etc/hosts": ("hosts", hosts_file(pod, pod_ip)),
        "/etc/hostname": ("hostname", hostname(pod) + "\n"),
        "/etc/resolv.conf": ("resolv.conf", resolv_conf(pod)),
    }
    paths = {}
    for target, (name, text) in files.items():
        path = directory / name
        if not path.exists() or path.read_text() != text:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.chmod(0o644)
            tmp.replace(path)
        paths[target] = path
    return paths


def namespace_files(pod_dir: Path) -> tuple[Path, Path]:
    """(ipc, uts): where the pod's persistent namespaces are bind-mounted."""
    directory = pod_dir / NAMESPACE_DIR
    return directory / "ipc", directory / "uts"


def _mounted(path: Path) -> bool:
    target = str(path)
    try:
        mountinfo = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return False
    return any(line.split()[4] == target for line in mountinfo.splitlines())


def create_namespaces(pod_dir: Path, name: str) -> tuple[Path, Path]:
    """The pod's IPC and UTS namespaces (idempotent), the hostname set in the latter."""
    ipc, uts = namespace_files(pod_dir)
    if _mounted(ipc) and _mounted(uts):
        return ipc, uts
    ipc.parent.mkdir(parents=True, exist_ok=True)
    for path in (ipc, uts):
        if _mounted(path):
            subprocess.run(["umount", str(path)], check=True)
        path.touch()
    subprocess.run(
        ["unshare", f"--ipc={ipc}", f"--uts={uts}", "hostname", name],
        check=True,
        capture_output=True,
    )
    return ipc, uts


def remove_namespaces(pod_dir: Path) -> None:
    for path in namespace_files(pod_dir):
        if _mounted(path):
            subprocess.run(["umount", str(path)], capture_output=True)


def apply_sysctls(pod_netns: str, ipc: Path, sysctls: Mapping[str, str]) -> None:
    """The pod's (safe) sysctls, in its namespaces: net.* in the network one, kernel.* in IPC."""
    for name, value in sorted(sysctls.items()):
        setting = f"{name}={value}"
        if name.startswith("net."):
            argv = ["ip", "netns", "exec", pod_netns, "sysctl", "-qw", setting]
        else:
            argv = ["nsenter", f"--ipc={ipc}", "sysctl", "-qw", setting]
        result = subprocess.run(argv, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"sysctl {setting}: {result.stderr.strip()}")
