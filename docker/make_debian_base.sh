#!/usr/bin/env bash
# Makes the base image that docker/Dockerfile.debian starts from, without a container registry: a minimal
# Debian bookworm root file system from Debian's archive (debootstrap), with Python 3.11, venv, pip and the
# C++ toolchain (the fused C++ CPU kernel is compiled with g++ on first use), imported as
# localhost/debian-python:bookworm.  Needs root, debootstrap and podman (or docker: TOOL=docker).
#   apt-get install -y podman debootstrap
#   bash docker/make_debian_base.sh [ROOTFS_DIR]
set -euo pipefail
TOOL=${TOOL:-podman}
ROOTFS=${1:-/tmp/torchace-rootfs}
MIRROR=${MIRROR:-}            # empty: debootstrap's default Debian mirror
TAG=${TAG:-localhost/debian-python:bookworm}

if [ ! -x "$ROOTFS/usr/bin/python3" ]; then
    debootstrap --variant=minbase \
        --include=python3,python3-venv,python3-pip,python3-dev,build-essential,ca-certificates \
        bookworm "$ROOTFS" ${MIRROR:+"$MIRROR"}
fi
# smaller image: no apt lists or downloaded .debs
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/archives/*.deb
tar -C "$ROOTFS" -c . | "$TOOL" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' - "$TAG"
"$TOOL" images "$TAG"
