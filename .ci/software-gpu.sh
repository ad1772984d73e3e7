#!/usr/bin/env bash
# A software WebGPU adapter, so that the WebGPU tests run on a machine without a GPU (CI): Mesa's lavapipe, a Vulkan
# driver on the CPU, under onnxruntime-node's WebGPU provider (Dawn over Vulkan). Dawn needs Mesa ≥ 23: it refuses
# Debian 12's own Mesa 22.3 ("shaderUniform*ArrayDynamicIndexing required"), so on bookworm the driver comes from
# bookworm-backports (Mesa 25). packages/trainer-ort/README.md, "Training on a GPU", says more.
# Needs root and apt-get. Where it cannot install, it says why on one line and exits 0: the WebGPU tests are then
# reported as skipped.
set -uo pipefail
say() { echo "software-gpu: $*" >&2; }
installed=$(dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null || true)
if [ -n "$installed" ] && [ "${installed%%.*}" -ge 23 ] 2>/dev/null && dpkg-query -W libvulkan1 >/dev/null 2>&1; then
  say "lavapipe already installed (mesa-vulkan-drivers $installed)"
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  say "not root with apt-get: no software adapter installed (the WebGPU tests will be skipped)"
  exit 0
fi
codename=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
target=()
if [ "$codename" = bookworm ]; then
  printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    >/etc/apt/sources.list.d/staged-bookworm-backports.sources
  target=(-t bookworm-backports)
fi
export DEBIAN_FRONTEND=noninteractive
if timeout 600 apt-get update -qq >/dev/null 2>&1 &&
  timeout 600 apt-get install -y -qq --no-install-recommends "${target[@]}" mesa-vulkan-drivers libvulkan1 >/dev/null 2>&1; then
  say "installed lavapipe (mesa-vulkan-drivers $(dpkg-query -W -f='${Version}' mesa-vulkan-drivers))"
else
  say "apt-get could not install mesa-vulkan-drivers: no software adapter (the WebGPU tests will be skipped)"
fi
exit 0
