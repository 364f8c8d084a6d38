#!/usr/bin/env bash
# Builds a static meshgw binary and the FROM scratch image meshgw:dev (or $IMAGE).
#   deploy/build.sh            # from the repository root or anywhere
#
# Node-to-node TLS material for the compose mesh is baked into the image
# under /tls: ca.pem and node1..node3.pem / -key.pem. By default every build
# makes a fresh dev CA, issues the three node certificates and throws the CA
# key away, so only images from the same build trust each other. Raft's TLS
# checks the peer's IP, so nodeN's certificate names ${MESHGW_SUBNET}.1N (the
# compose file's fixed addresses; MESHGW_SUBNET defaults to 172.28.5 and must
# match at build and at up). This is dev material: anyone holding the image
# holds the node keys. For your own CA set
#   MESHGW_TLS_DIR=DIR deploy/build.sh
# where DIR holds ca.pem and node1.pem, node1-key.pem ... (meshgw tls cert
# create -dir DIR -node node1), or mount your files over /tls.
# MESHGW_BIN=FILE uses a prebuilt static binary instead of building one.
#
# /bin is a static busybox (Debian: apt-get install busybox-static) with a
# link per applet, and /bin/meshgw: `docker exec CONTAINER sh -c '...'` and
# the CLI work inside. It is taken from $PATH, or MESHGW_BUSYBOX=FILE; a
# dynamically linked busybox (Debian's busybox package) cannot run FROM
# scratch and is refused.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
image=${IMAGE:-meshgw:dev}
subnet=${MESHGW_SUBNET:-172.28.5}
nodes=(node1 node2 node3)
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
if [ -n "${MESHGW_BIN:-}" ]; then
  cp "$MESHGW_BIN" "$ctx/meshgw"
else
  (cd "$root" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$ctx/meshgw" ./cmd/meshgw)
fi
busybox=${MESHGW_BUSYBOX:-$(command -v busybox || true)}
if [ -z "$busybox" ] || [ ! -x "$busybox" ]; then
  echo "build.sh: no busybox found: install a static one (apt-get install busybox-static) or set MESHGW_BUSYBOX=FILE" >&2
  exit 1
fi
if ldd "$busybox" >/dev/null 2>&1; then
  echo "build.sh: $busybox is dynamically linked and cannot run in a FROM scratch image: install busybox-static (it replaces busybox) or set MESHGW_BUSYBOX=FILE" >&2
  exit 1
fi
mkdir -p "$ctx/data" "$ctx/tls" "$ctx/bin"
cp "$busybox" "$ctx/bin/busybox"
for applet in $("$busybox" --list); do
  [ "$applet" = busybox ] || ln -s busybox "$ctx/bin/$applet"
done
ln -s /meshgw "$ctx/bin/meshgw"
if [ -n "${MESHGW_TLS_DIR:-}" ]; then
  cp "$MESHGW_TLS_DIR/ca.pem" "$ctx/tls/"
  for n in "${nodes[@]}"; do cp "$MESHGW_TLS_DIR/$n.pem" "$MESHGW_TLS_DIR/$n-key.pem" "$ctx/tls/"; done
else
  "$ctx/meshgw" tls ca create -dir "$ctx/tls" >/dev/null
  for i in 1 2 3; do
    "$ctx/meshgw" tls cert create -dir "$ctx/tls" -node "node$i" -host "$subnet.1$i" >/dev/null
  done
  rm -f "$ctx/tls/ca-key.pem"
fi
cp "$root/deploy/Dockerfile" "$ctx/Dockerfile"
docker build -q -t "$image" "$ctx" >/dev/null
echo "$image"
