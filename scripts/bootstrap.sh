#!/usr/bin/env bash
# Installs what the system needs from Debian's archive and the npm registry, then builds the TypeScript
# and the web console. Chromium is for the console's browser tests (playwright-core drives /usr/bin/chromium;
# no test tool downloads a browser).
# Idempotent and quiet when everything is already there. Images (kernel, rootfs) are built later,
# on first need, by the host daemon (`createos-sandbox images build`).
set -euo pipefail
cd "$(dirname "$0")/.."
DEB_PKGS=(qemu-system-x86 qemu-utils mmdebstrap e2fsprogs linux-source-6.1 flex bison libelf-dev bc dwarves
  golang-go fuse3 dnsmasq-base nftables iproute2 libssl-dev cpio xz-utils tmux jq openssh-client gcc libc6-dev
  xfsprogs
  curl openssl
  chromium)
missing=()
for p in "${DEB_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "bootstrap: installing Debian packages: ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "bootstrap: npm ci" >&2
  npm ci --no-audit --no-fund >&2
fi
# --clean (npm test): build from nothing, so compiled files of deleted or renamed sources cannot linger.
if [ "${1:-}" = "--clean" ]; then
  rm -rf packages/*/dist packages/*/tsconfig.tsbuildinfo
fi
npx tsc -b packages/protocol packages/sdk packages/hostd packages/server packages/cli >&2
# The web console (/console): Vite bundles it into packages/console/dist, which the server serves.
npm run --silent build -w packages/console >&2
