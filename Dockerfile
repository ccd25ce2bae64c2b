# The project's one image: the operator, the pod agent and the DNS engines (BIND 9, Knot DNS).
# Every container of the project runs it; the Pod's command picks the role
# (`secondary-dns operator`, `secondary-dns agent`, `secondary-dns engine`).
#
# Build it with `make image` (hack/image.py, no registry needed) or anywhere else with
#   docker build --build-arg VERSION=<operator/secondary_dns/__init__.py __version__> .
# VERSION is checked against the installed package, so the version label cannot lie.

# ---- build: the project's wheel and the wheels of its dependencies ----------
FROM debian:bookworm-slim AS build

# Debian's own packages, not pinned: a pinned version disappears from the
# mirror at its next security update and the build breaks.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/

# A CA bundle may be handed in as the build secret `ca-certificates` (hack/image
# does, for networks that reach PyPI through a TLS-inspecting proxy); it is
# mounted for this step only and is in no layer. Without it pip uses its own.
RUN --mount=type=secret,id=ca-certificates \
    if [ -s /run/secrets/ca-certificates ]; then export PIP_CERT=/run/secrets/ca-certificates; fi \
 && python3 -m venv /opt/build \
 && /opt/build/bin/pip wheel --no-cache-dir --wheel-dir /dist /src

# The runtime virtualenv, made here at its final path and copied whole into the
# runtime stage: that stage then needs neither pip nor the wheels. (Installing
# there from a `RUN --mount=from=build` is what this would rather do, but
# buildah reuses such a layer from its cache after the build stage changed,
# containers/buildah#4522, and fails on a cached stage, #4375.)
# From local wheels only, no pip in it, no cache. Size: the Kubernetes client
# ships an asyncio twin (kubernetes/aio, about 70 MB) that nothing here
# imports, so it goes; its ~1,900 generated API and model modules load lazily
# and a process uses a handful, so they compile on import (0.2 s for the
# largest) instead of carrying 24 MB of bytecode. Everything else is compiled
# now, as unchecked-hash .pyc: valid whatever timestamps the layers end up
# with (the image never changes), because on the pod's read-only root Python
# could not replace a .pyc it found stale and would recompile on every start.
ARG VERSION
RUN test -n "${VERSION}" \
 && python3 -m venv --without-pip /opt/secondary-dns \
 && /opt/build/bin/pip --python /opt/secondary-dns/bin/python install --no-cache-dir \
        --no-compile --no-index --find-links /dist "secondary-dns-operator==${VERSION}" \
 && rm -rf /opt/secondary-dns/lib/python3*/site-packages/kubernetes/aio \
 && /opt/secondary-dns/bin/python -m compileall -q --invalidation-mode unchecked-hash \
        -x '/kubernetes/client/(api|models)/' /opt/secondary-dns/lib

# ---- runtime ------------------------------------------------------------------
FROM debian:bookworm-slim

ARG VERSION

LABEL org.opencontainers.image.title="secondary-dns" \
      org.opencontainers.image.description="secondary-dns-operator: the operator, the pod agent, BIND 9 and Knot DNS, for managed secondary authoritative DNS on Kubernetes" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="https://github.com/secondary-dns-operator/secondary-dns-operator" \
      org.opencontainers.image.licenses="Apache-2.0"

# The engines: named, named-checkconf and rndc (bind9, bind9-utils), and knotd,
# knotc (knot) with kdig (knot-dnsutils) for debugging a replica. The agent and
# the operator speak DNS through dnspython, so no dig.
#
# Left out, in this same layer so they take no room (measured in docs/image.md):
# - /etc/bind/rndc.key, which Debian's postinst generates: a secret that would be
#   the same in every copy of the image, and unused (the agent makes a key per pod
#   in /run/secondary-dns/keys; knotd's control channel is a socket, no key).
# - iproute2 (with libxtables12 and libcap2-bin, which only it uses): bind9
#   depends on it for its init scripts; nothing in a pod runs `ip` or `tc`.
#   Purged, not deleted, so the package database says what is really there.
# - ICU's libicui18n, libicuio, libicutest, libicutu: only libicuuc (and its
#   data) is linked, by libxml2 for BIND's statistics channel; these four link
#   only to each other.
# - knot's tools for what a secondary here never does: keymgr (DNSSEC keys),
#   kcatalogprint (catalog zones), kxdpgun (XDP load generator), knsupdate
#   (dynamic updates); Python's pydoc_data (the text of `help()` topics).
# The two directories are where the pod mounts its volumes (build_statefulset).
# Mode 1777, like /tmp: runc gives a tmpfs mounted on a directory that
# directory's mode (`--tmpfs` of podman and docker), and a Kubernetes emptyDir
# is a 0777 directory, so both work for any runAsUser.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 bind9 bind9-utils knot knot-dnsutils \
 && dpkg --purge --force-depends iproute2 libxtables12 libcap2-bin \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/log/apt /var/log/dpkg.log /var/cache/debconf/*-old \
 && rm -f /etc/bind/rndc.key \
          /usr/lib/x86_64-linux-gnu/libicui18n.so.* /usr/lib/x86_64-linux-gnu/libicuio.so.* \
          /usr/lib/x86_64-linux-gnu/libicutest.so.* /usr/lib/x86_64-linux-gnu/libicutu.so.* \
          /usr/sbin/keymgr /usr/sbin/kcatalogprint /usr/sbin/kxdpgun /usr/bin/knsupdate \
 && rm -rf /usr/lib/python3.11/pydoc_data \
 && groupadd --gid 65532 secondary-dns \
 && useradd --no-log-init --uid 65532 --gid 65532 --home-dir /nonexistent --no-create-home \
            --shell /usr/sbin/nologin secondary-dns \
 && mkdir -p /run/secondary-dns /var/lib/secondary-dns \
 && chmod 1777 /run/secondary-dns /var/lib/secondary-dns

COPY --from=build /opt/secondary-dns /opt/secondary-dns

# An explicit PATH: the venv first, then Debian's (named and knotd live in /usr/sbin).
# The root filesystem is read-only in the pod, so Python writes no bytecode.
ENV PATH=/opt/secondary-dns/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# The numeric user the pods run as (render/children.py RUN_AS_USER), so
# runAsNonRoot can verify it without a passwd lookup.
USER 65532:65532
WORKDIR /var/lib/secondary-dns
# The label above is the package's version, or the build fails here.
RUN test "$(secondary-dns --version)" = "secondary-dns ${VERSION}"
ENTRYPOINT ["secondary-dns"]
CMD ["--help"]
