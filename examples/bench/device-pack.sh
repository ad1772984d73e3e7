#!/usr/bin/env bash
# Packs examples/bench/device-bench.mjs into one archive that runs on a linux/x64 GPU machine without internet and
# without Node.js: this machine's node binary, @staged/trainer-ort with its production dependencies (`pnpm deploy`,
# onnxruntime-node's binaries for linux/x64 only), the PyTorch side (device-bench-torch.py) and Debian's libvulkan1
# package (onnxruntime-node's WebGPU provider runs on Dawn over Vulkan). xz keeps it under 64 MiB.
#
# Usage (after `pnpm build`): bash examples/bench/device-pack.sh [out.tar.xz]   (default: device-bench.tar.xz here)
# On the GPU machine:          mkdir b && tar -xJf device-bench.tar.xz -C b && bash b/run.sh [device-bench options]
# run.sh unpacks libvulkan1 where the machine has none, points VK_DRIVER_FILES at the NVIDIA driver's ICD where it
# finds one, and runs `node device-bench.mjs` (default --device webgpu; `--json <file>` keeps every number).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=$(realpath -m "${1:-device-bench.tar.xz}")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for d in core scheduler trainer-ort; do
  [ -f "$root/packages/$d/dist/index.js" ] || { echo "device-pack: packages/$d/dist is missing: run pnpm build first" >&2; exit 2; }
done
(cd "$root" && pnpm --silent --filter @staged/trainer-ort deploy --prod "$work/app" >&2)
# onnxruntime-node ships every platform's binaries (245 MB): keep linux/x64's.
for bin in "$work"/app/node_modules/.pnpm/onnxruntime-node@*/node_modules/onnxruntime-node/bin/napi-v6; do
  find "$bin" -mindepth 1 -maxdepth 1 ! -name linux -exec rm -rf {} +
  find "$bin/linux" -mindepth 1 -maxdepth 1 ! -name x64 -exec rm -rf {} +
done
cp "$root/examples/bench/device-bench.mjs" "$root/examples/bench/device-bench-torch.py" "$work/app/"
cp "$(readlink -f "$(command -v node)")" "$work/node"
(cd "$work" && apt-get download libvulkan1 >/dev/null 2>&1) ||
  echo "device-pack: apt-get download libvulkan1 failed: the GPU machine then needs libvulkan1 installed for --device webgpu" >&2
cat > "$work/run.sh" <<'EOF'
#!/usr/bin/env bash
# device-bench, packed by examples/bench/device-pack.sh: bash run.sh [--device webgpu|cuda|cpu] [--json out.json] ...
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if ! ldconfig -p 2>/dev/null | grep -q 'libvulkan.so.1 ' && compgen -G "$here/libvulkan1_*.deb" >/dev/null; then
  [ -d "$here/vulkan" ] || dpkg -x "$here"/libvulkan1_*.deb "$here/vulkan"
  export LD_LIBRARY_PATH="$here/vulkan/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
if [ -z "${VK_DRIVER_FILES:-}" ]; then
  for f in /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json /usr/share/vulkan/icd.d/nvidia_icd.json /etc/vulkan/icd.d/nvidia_icd.json; do
    if [ -f "$f" ]; then export VK_DRIVER_FILES=$f; break; fi
  done
fi
exec "$here/node" "$here/app/device-bench.mjs" "$@"
EOF
chmod +x "$work/run.sh"
tar -C "$work" -cf - . | xz -T0 -6 > "$out.new"
mv "$out.new" "$out"
echo "$out: $(du -h "$out" | cut -f1)" >&2
