#!/usr/bin/env bash
# Builds a static meshgw binary and the FROM scratch image meshgw:dev (or $IMAGE).
#   deploy/build.sh            # from the repository root or anywhere
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
image=${IMAGE:-meshgw:dev}
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
if [ -n "${MESHGW_BIN:-}" ]; then
  cp "$MESHGW_BIN" "$ctx/meshgw"
else
  (cd "$root" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$ctx/meshgw" ./cmd/meshgw)
fi
mkdir -p "$ctx/data"
cp "$root/deploy/Dockerfile" "$ctx/Dockerfile"
docker build -q -t "$image" "$ctx" >/dev/null
echo "$image"
