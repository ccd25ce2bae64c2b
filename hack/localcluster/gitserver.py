"""A git server inside the local cluster's network namespace, for Flux's GitRepository.

`git http-backend` (git's own smart-HTTP server, a CGI program) behind a small
Python HTTP server on an address of the cluster namespace's lo, so
source-controller clones over `http://` as it would from any git host, and no
packet leaves the namespace. It serves fetches only (http-backend refuses
pushes from anonymous clients); tests commit through the filesystem
(`ManifestRepository.commit`), which is what a push would leave behind.

Run as `python -m localcluster.gitserver --root DIR --listen ADDRESS:PORT`.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from localcluster import netns
from localcluster.cluster import HACK_DIR, LocalCluster

COMPONENT = "git-server"
# On the cluster namespace's lo, beside scenario.py's primary (10.250.0.10)
# and relay (10.250.0.53) and flux.py's controllers (10.250.0.21-22).
ADDRESS = "10.250.0.20"
PORT = 80
BRANCH = "main"
# Who commits in the tests' repositories (git refuses to commit without one).
AUTHOR = ("-c", "user.name=secondary-dns tests", "-c", "user.email=tests@secondarydns.invalid")


# ---- the HTTP side: pure helpers and the handler ---------------------------------------


def cgi_environment(
    method: str,
    target: str,
    headers: Mapping[str, str],
    project_root: Path,
    remote_address: str,
    content_length: int,
) -> dict[str, str]:
    """The CGI/1.1 variables git http-backend reads (git-http-backend(1))."""
    path, _, query = target.partition("?")
    env = {
        "GATEWAY_INTERFACE": "CGI/1.1",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "REMOTE_ADDR": remote_address,
        "CONTENT_LENGTH": str(content_length),
        "GIT_PROJECT_ROOT": str(project_root),
        # Every repository under the root is served, without a
        # git-daemon-export-ok file in each.
        "GIT_HTTP_EXPORT_ALL": "1",
        "PATH": "/usr/local/bin:/usr/bin:/bin",
    }
    for name, value in headers.items():
        key = name.upper().replace("-", "_")
        if key == "CONTENT_TYPE":
            env["CONTENT_TYPE"] = value
        elif key not in ("CONTENT_LENGTH", "AUTHORIZATION", "PROXY"):
            # HTTP_PROXY from a header would become the child's proxy (httpoxy).
            env[f"HTTP_{key}"] = value
    return env


def parse_cgi_response(output: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    """Split a CGI program's output into status, headers and body (RFC 3875 §6)."""
    for separator in (b"\r\n\r\n", b"\n\n"):
        head, found, body = output.partition(separator)
        if found:
            break
    else:
        raise ValueError("the CGI response has no blank line after its headers")
    status = 200
    headers: list[tuple[str, str]] = []
    for line in head.decode("latin-1").splitlines():
        name, colon, value = line.partition(":")
        if not colon:
            raise ValueError(f"malformed CGI header line {line!r}")
        if name.strip().lower() == "status":
            status = int(value.split()[0])
        else:
            headers.append((name.strip(), value.strip()))
    return status, headers, body


class GitHTTPHandler(BaseHTTPRequestHandler):
    project_root: Path = Path()
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._backend()

    def do_POST(self) -> None:
        self._backend()

    def _request_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _backend(self) -> None:
        body = self._request_body()
        headers = {k: v for k, v in self.headers.items() if k.lower() != "transfer-encoding"}
        env = cgi_environment(
            self.command, self.path, headers, self.project_root, self.client_address[0], len(body)
        )
        result = subprocess.run(
            ["git", "http-backend"], input=body, env=env, capture_output=True, check=False
        )
        if result.stderr:
            sys.stderr.write(result.stderr.decode(errors="replace"))
        try:
            status, response_headers, payload = parse_cgi_response(result.stdout)
        except ValueError as err:
            self.send_error(502, f"git http-backend: {err}")
            return
        self.send_response(status)
        for name, value in response_headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def serve(root: Path, address: str, port: int) -> None:
    handler = type("Handler", (GitHTTPHandler,), {"project_root": root})
    server = ThreadingHTTPServer((address, port), handler)
    print(f"serving {root} at http://{address}:{port}/", file=sys.stderr, flush=True)
    server.serve_forever()


# ---- the tests' side: repositories and the process -------------------------------------


def _git(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


@dataclass(frozen=True)
class ManifestRepository:
    """A bare repository the server serves, and a work tree next to it to commit from."""

    name: str
    bare: Path
    work: Path
    url: str

    def commit(self, files: Mapping[str, str], message: str, remove: Iterable[str] = ()) -> str:
        """Write `files` (path -> text), delete `remove`, commit, push; the new commit's SHA."""
        for path, text in files.items():
            target = self.work / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        for path in remove:
            (self.work / path).unlink()
        _git("add", "--all", cwd=self.work)
        _git(*AUTHOR, "commit", "--quiet", "--allow-empty", "-m", message, cwd=self.work)
        _git("push", "--quiet", "origin", BRANCH, cwd=self.work)
        return _git("rev-parse", "HEAD", cwd=self.work)

    def head(self) -> str:
        return _git("rev-parse", BRANCH, cwd=self.bare)


def answers_http(cluster: LocalCluster, url: str) -> int | None:
    """The HTTP status `url` answers with from inside the cluster's namespace; None if none."""
    if netns.inside(cluster.netns):
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return int(response.status)
        except urllib.error.HTTPError as err:
            return int(err.code)
        except OSError:
            return None
    probe = (
        "import sys, urllib.request, urllib.error\n"
        f"try: print(urllib.request.urlopen({url!r}, timeout=2).status)\n"
        "except urllib.error.HTTPError as e: print(e.code)\n"
        "except OSError: sys.exit(1)\n"
    )
    result = cluster.run_inside([sys.executable, "-c", probe], check=False, timeout=10)
    return int(result.stdout) if result.returncode == 0 else None


@dataclass(frozen=True)
class GitServer:
    cluster: LocalCluster

    @property
    def root(self) -> Path:
        return self.cluster.state_dir / "git"

    def url(self, name: str) -> str:
        return f"http://{ADDRESS}:{PORT}/{name}"

    def start(self) -> None:
        """Start the server unless it runs; return once it answers."""
        if self.cluster.component_pid(COMPONENT) is None:
            self.root.mkdir(parents=True, exist_ok=True)
            netns.add_address(self.cluster.netns, ADDRESS)
            self.cluster._start(
                COMPONENT,
                [
                    sys.executable,
                    "-m",
                    "localcluster.gitserver",
                    f"--root={self.root}",
                    f"--listen={ADDRESS}:{PORT}",
                ],  # fmt: skip
                env={"PYTHONPATH": str(HACK_DIR), "PATH": "/usr/local/bin:/usr/bin:/bin"},
            )
        deadline = time.monotonic() + 30
        while answers_http(self.cluster, self.url("")) is None:
            if self.cluster.component_pid(COMPONENT) is None:
                log = self.cluster.logs / f"{COMPONENT}.log"
                raise RuntimeError(f"the git server exited; see {log}")
            if time.monotonic() > deadline:
                raise TimeoutError("the git server did not answer within 30s")
            time.sleep(0.2)

    def repositories(self) -> list[str]:
        return sorted(p.name for p in self.root.glob("*.git")) if self.root.exists() else []

    def create_repository(self, name: str) -> ManifestRepository:
        """A new, empty repository `<name>.git` (an existing one is replaced)."""
        bare = self.root / f"{name}.git"
        work = self.root / "work" / name
        for path in (bare, work):
            shutil.rmtree(path, ignore_errors=True)
        bare.parent.mkdir(parents=True, exist_ok=True)
        _git("init", "--quiet", "--bare", f"--initial-branch={BRANCH}", str(bare))
        _git("clone", "--quiet", str(bare), str(work))
        _git("checkout", "--quiet", "-B", BRANCH, cwd=work)
        return ManifestRepository(name, bare, work, self.url(f"{name}.git"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="directory of bare repositories")
    parser.add_argument("--listen", required=True, metavar="ADDRESS:PORT")
    args = parser.parse_args(argv)
    address, _, port = args.listen.rpartition(":")
    serve(args.root, address, int(port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
