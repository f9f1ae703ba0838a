#!/usr/bin/env bash
# Builds the spheromesh container image `spheromesh:local` without any image registry.
#
#   bash scripts/docker-image.sh            # base image (cached) + spheromesh:local
#   REBUILD_BASE=1 bash scripts/docker-image.sh   # rebuild the base image too
#   BASE_ONLY=1 bash scripts/docker-image.sh       # only the base image
#   RABBITMQ_ONLY=1 bash scripts/docker-image.sh   # base + the RabbitMQ image (no binary needed)
#   SKIP_RABBITMQ=1 / REBUILD_RABBITMQ=1           # leave out / force the RabbitMQ image
#
# 1. Base image `spheromesh-base:bookworm`: a Debian bookworm minbase root made with
#    debootstrap (its default mirror, or DEBIAN_MIRROR when set) and `docker import`ed.
#    Skipped when the image exists.
#    It includes ca-certificates (TLS to a broker/callbacks) and curl (HEALTHCHECK).
# 2. `spheromesh:local`: compose/Dockerfile FROM the base, with the host-built release
#    binary and models/ copied in. The binary is built with `cargo build --release` only
#    when it is missing. It links only glibc/libm/libgcc_s (checked with ldd below), which
#    the bookworm base has; the host must be bookworm (or older glibc) for it to run.
# 3. `spheromesh-rabbitmq:local` (IMAGE_RABBITMQ): compose/rabbitmq/Dockerfile FROM the
#    base, Debian's rabbitmq-server package (apt-get in the build: needs the Debian
#    mirror). Rebuilt only when the image is missing or its label
#    spheromesh.rabbitmq.hash (sha256 of compose/rabbitmq/* and the base image id) differs,
#    so a CI machine builds it once.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

BASE_IMAGE="${BASE_IMAGE:-spheromesh-base:bookworm}"
IMAGE="${IMAGE:-spheromesh:local}"
IMAGE_RABBITMQ="${IMAGE_RABBITMQ:-spheromesh-rabbitmq:local}"
# Empty: debootstrap picks its own default mirror.
MIRROR="${DEBIAN_MIRROR:-}"
INCLUDE="ca-certificates,curl,tini"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
# SPHEROMESH_BIN: the binary to ship (the tests pass the one cargo built for them).
BIN="${SPHEROMESH_BIN:-$TARGET_DIR/release/spheromesh}"

log() { echo "docker-image.sh: $*" >&2; }

# ---- 1. base image -------------------------------------------------------------------
if [[ -n "${REBUILD_BASE:-}" ]] || ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    if ! command -v debootstrap >/dev/null 2>&1; then
        log "installing debootstrap (apt-get)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq debootstrap
    fi
    ROOTFS="$(mktemp -d /tmp/spheromesh-rootfs.XXXXXX)"
    trap 'rm -rf "$ROOTFS"' EXIT
    log "debootstrap --variant=minbase --include=$INCLUDE bookworm -> $ROOTFS"
    nice -n 10 debootstrap --variant=minbase --include="$INCLUDE" bookworm "$ROOTFS" ${MIRROR:+"$MIRROR"} >&2
    # Slim it: apt lists, caches, docs and man pages are not needed at run time.
    rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin \
           "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/usr/share/doc/* \
           "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/locale/*
    log "docker import -> $BASE_IMAGE"
    tar -C "$ROOTFS" -c . | docker import \
        -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        -c 'CMD ["/bin/bash"]' - "$BASE_IMAGE" >&2
    rm -rf "$ROOTFS"
    trap - EXIT
else
    log "base image $BASE_IMAGE exists (REBUILD_BASE=1 to rebuild)"
fi

[[ -z "${BASE_ONLY:-}" ]] || exit 0

# ---- RabbitMQ image (cached by content hash) -------------------------------------------
if [[ -z "${SKIP_RABBITMQ:-}" ]]; then
    base_id="$(docker image inspect -f '{{.Id}}' "$BASE_IMAGE")"
    want="$( (cd compose/rabbitmq && find . -type f | LC_ALL=C sort | xargs sha256sum; echo "$base_id") \
             | sha256sum | cut -c1-16)"
    have="$(docker image inspect -f '{{index .Config.Labels "spheromesh.rabbitmq.hash"}}' \
             "$IMAGE_RABBITMQ" 2>/dev/null || true)"
    if [[ -z "${REBUILD_RABBITMQ:-}" && "$have" == "$want" ]]; then
        log "$IMAGE_RABBITMQ is up to date (hash $want; REBUILD_RABBITMQ=1 to rebuild)"
    else
        log "docker build compose/rabbitmq -> $IMAGE_RABBITMQ (hash $want, was ${have:-none})"
        nice -n 10 docker build --build-arg "BASE_IMAGE=$BASE_IMAGE" \
            --label "spheromesh.rabbitmq.hash=$want" -t "$IMAGE_RABBITMQ" compose/rabbitmq >&2
        docker image ls "$IMAGE_RABBITMQ" >&2
    fi
fi
[[ -z "${RABBITMQ_ONLY:-}" ]] || exit 0

# ---- 2. application image ------------------------------------------------------------
if [[ ! -x "$BIN" ]]; then
    log "no $BIN: cargo build --release"
    nice -n 10 cargo build --release --bin spheromesh >&2
fi
# The image only has bookworm's base libraries: refuse a binary that needs anything else.
missing="$(ldd "$BIN" | awk '/=>/ {print $1}' | grep -Ev '^(libc|libm|libgcc_s|libpthread|libdl|librt|ld-linux-x86-64)\.so' || true)"
if [[ -n "$missing" ]]; then
    log "the binary links libraries the base image lacks: $missing"
    exit 1
fi

# Small build context: only the binary, the models and the Dockerfile's helper files.
CTX="$(mktemp -d /tmp/spheromesh-ctx.XXXXXX)"
trap 'rm -rf "$CTX"' EXIT
# The release profile keeps line tables (~150 MB); the image gets the binary without debug
# info (~25 MB; symbols are kept, so panics still name functions).
if command -v strip >/dev/null 2>&1; then
    strip --strip-debug -o "$CTX/spheromesh" "$BIN"
else
    cp "$BIN" "$CTX/spheromesh"
fi
cp -r models "$CTX/models"
cp compose/Dockerfile compose/entrypoint.sh compose/healthcheck.sh "$CTX/"
log "docker build -> $IMAGE ($(du -sh "$CTX" | cut -f1) context)"
nice -n 10 docker build --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$IMAGE" "$CTX" >&2
docker image ls "$IMAGE" >&2
