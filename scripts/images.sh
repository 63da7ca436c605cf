#!/usr/bin/env bash
# Builds, locally and without pulling anything, the images the container tests use:
#   sluice-debian:bookworm  a Debian base made with debootstrap from this machine's own apt
#                           mirror (built once; delete the image to rebuild it)
#   sluice:local            the runtime stage of ./Dockerfile, on that base, with binaries built
#                           here (cargo, --profile release by default) and stripped
#   sluice-moto:local       the AWS emulator, from wheels built on the host, installed offline
# Usage: scripts/images.sh [--profile release|dev]    (prints each image's size at the end)
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=release
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) PROFILE="$2"; shift 2 ;;
    *) echo "usage: $0 [--profile release|dev]" >&2; exit 2 ;;
  esac
done
MOTO_VERSION="5.2.5" # as scripts/ensure-moto.sh

# A docker CLI that builds with BuildKit (the Dockerfile needs it to skip unused stages): the
# buildx plugin if present, else a client older than 23.0, which has BuildKit built in (a newer
# client without buildx refuses DOCKER_BUILDKIT=1).
buildkit_cli() {
  if docker buildx version >/dev/null 2>&1; then echo "docker buildx build --load"; return; fi
  local d v
  for d in $(which -a docker | awk '!seen[$0]++'); do
    v=$("$d" version --format '{{.Client.Version}}' 2>/dev/null | cut -d. -f1)
    if [ -n "$v" ] && [ "$v" -lt 23 ] 2>/dev/null; then echo "env DOCKER_BUILDKIT=1 $d build"; return; fi
  done
  echo "no docker CLI with BuildKit (install the buildx plugin)" >&2
  exit 1
}
BUILD=$(buildkit_cli)

# The first Debian (not security) mirror apt is configured with, deb822 or one-line style.
debian_mirror() {
  if [ -n "${DEBIAN_MIRROR:-}" ]; then echo "$DEBIAN_MIRROR"; return; fi
  local m
  m=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}')
  [ -n "$m" ] || m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
    | awk '$1 == "deb" && $2 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}')
  [ -n "$m" ] || { echo "no Debian mirror in apt's sources; set DEBIAN_MIRROR" >&2; exit 1; }
  echo "$m"
}

build_base() {
  if docker image inspect sluice-debian:bookworm >/dev/null 2>&1; then return; fi
  if ! command -v debootstrap >/dev/null; then
    echo "installing debootstrap" >&2
    apt-get install -y -qq debootstrap >/dev/null
  fi
  local rootfs
  rootfs=$(mktemp -d /tmp/sluice-rootfs.XXXXXX)
  echo "debootstrap bookworm into $rootfs" >&2
  debootstrap --variant=minbase --include=ca-certificates,python3,python3-venv \
    bookworm "$rootfs" "$(debian_mirror)" >/dev/null
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | docker import -c 'CMD ["/bin/bash"]' - sluice-debian:bookworm >/dev/null
  rm -rf "$rootfs"
}

build_runtime() {
  local dir=$PROFILE
  if [ "$PROFILE" = dev ]; then
    # The binaries `cargo test --workspace` already built (same features): no second build.
    dir=debug
    cargo build --workspace --tests --bins
  else
    cargo build --profile "$PROFILE" -p sluice -p sluice-relay --bins
  fi
  mkdir -p target/docker
  for b in sluice sluice-relay; do
    cp "target/$dir/$b" "target/docker/$b"
    strip "target/docker/$b"
  done
  $BUILD -q --target runtime --build-arg BINARIES=prebuilt \
    --build-arg BASE_IMAGE=sluice-debian:bookworm -t sluice:local . >/dev/null
}

build_moto() {
  local wheels=target/wheels
  if [ ! -f "$wheels/.complete-$MOTO_VERSION" ]; then
    python3 -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$wheels" \
      "moto[server]==$MOTO_VERSION"
    touch "$wheels/.complete-$MOTO_VERSION"
  fi
  $BUILD -q -f scripts/images/moto.Dockerfile --build-arg MOTO_VERSION="$MOTO_VERSION" \
    -t sluice-moto:local "$wheels" >/dev/null
}

build_base
build_runtime
build_moto
docker image ls --format '{{.Repository}}:{{.Tag}}\t{{.Size}}' \
  | grep -E '^(sluice-debian:bookworm|sluice:local|sluice-moto:local)\b'
