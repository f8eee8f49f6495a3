#!/usr/bin/env bash
# Builds the CPU image with rootful podman from Debian's packages, without a container registry, and runs
# the test command in it.  This is the recipe that was run on the development machine (Debian bookworm,
# root, no Docker daemon, no registry reachable; see docs/docker.md for the errors each flag avoids).
#   apt-get install -y podman runc debootstrap
#   bash docker/podman_build_test.sh            (RUN_TESTS=0: build only)
# Build from a clean checkout (the image copies the whole context; there is no .dockerignore), e.g.
#   rm -rf /tmp/ctx && mkdir /tmp/ctx && git archive HEAD | tar -x -C /tmp/ctx && cd /tmp/ctx
# The pip settings of the build machine are passed into the build only (not kept in the image):
#   PIP_FIND_LINKS / PIP_EXTRA_INDEX_URL  local wheel folder / file:// indexes, mounted read-only
#   PIP_CERT                              the machine's CA bundle (its index is reached through a proxy
#                                         whose CA the fresh Debian base does not have)
set -euo pipefail
cd "$(dirname "$0")/.."
TAG=${TAG:-torchace:cpu-debian}
# crun (podman's default runtime) fails here: cgroup v1/v2 hybrid host; runc works.  podman's default
# ulimits (nofile/nproc 1048576) exceed the sandbox's hard limits: set them below.
PODMAN_RUN=(--runtime runc --ulimit nofile=20000:20000 --ulimit nproc=4096:4096)

podman image exists localhost/debian-python:bookworm || bash docker/make_debian_base.sh

MOUNTS=() ARGS=()
# folders named in the pip settings (default: this machine's layout)
PIP_FIND_LINKS=${PIP_FIND_LINKS-/opt/wheels}
PIP_EXTRA_INDEX_URL=${PIP_EXTRA_INDEX_URL-file:///opt/pypi/simple file:///opt/pypi-more/simple}
PIP_CERT=${PIP_CERT-/etc/ssl/certs/ca-certificates.crt}
PIP_LOCAL_DIRS=${PIP_LOCAL_DIRS-/opt/wheels /opt/pypi /opt/pypi-more}
for d in $PIP_LOCAL_DIRS; do [ -d "$d" ] && MOUNTS+=(-v "$d:$d:ro"); done
[ -n "${PIP_FIND_LINKS:-}" ] && ARGS+=(--build-arg "PIP_FIND_LINKS=$PIP_FIND_LINKS")
[ -n "${PIP_EXTRA_INDEX_URL:-}" ] && ARGS+=(--build-arg "PIP_EXTRA_INDEX_URL=$PIP_EXTRA_INDEX_URL")
if [ -f "${PIP_CERT:-}" ]; then
    MOUNTS+=(-v "$PIP_CERT:/run/host-ca.crt:ro"); ARGS+=(--build-arg PIP_CERT=/run/host-ca.crt)
fi

time podman build "${PODMAN_RUN[@]}" --network host --pull=never "${MOUNTS[@]}" "${ARGS[@]}" \
    -f docker/Dockerfile.debian -t "$TAG" .
podman images "$TAG"

if [ "${RUN_TESTS:-1}" = 1 ]; then
    SHARED=()
    [ -d ../shared/data ] && SHARED=(-v "$(cd ../shared && pwd):/shared:ro")
    time podman run --rm "${PODMAN_RUN[@]}" --network none "${SHARED[@]}" "$TAG"   # python -m pytest -q
fi
