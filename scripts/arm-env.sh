#!/usr/bin/env bash
# Create (or reuse) an aarch64 userland that qemu-aarch64 runs, for tests/e2e/test_arm.py: Debian bookworm's
# arm64 python3.11 and the libraries it and the wheels need (fetched with `apt-get download` from a private
# arm64 package list and unpacked with `dpkg -x` into DIR/sysroot: nothing is installed on this host), and
# PyPI's aarch64 wheels of numpy and onnxruntime (the versions in this checkout's .venv) in DIR/site.
#
# Usage: bash scripts/arm-env.sh [DIR]   (default ${RERANK_EXPORT_CACHE:-$HOME/.cache/rerank-export}/arm64)
# Prints, as its last line, DIR/python: a launcher running the arm64 python under qemu-aarch64 (qemu's CPU
# model from $QEMU_CPU, else neoverse-n1). Needs qemu-aarch64 (Debian: qemu-user), apt-get, dpkg, network.
# ONNXRUNTIME_VERSION / NUMPY_VERSION override the versions read from .venv; ARM_ENV_MIRROR the Debian mirror.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="$(realpath -m "${1:-${RERANK_EXPORT_CACHE:-$HOME/.cache/rerank-export}/arm64}")"
SUITE="bookworm"       # its python3.11 matches the cp311 wheels
PYVER="3.11"
MIRROR="${ARM_ENV_MIRROR:-http://deb.debian.org}"
# python3.11's interpreter and stdlib, the libraries its stdlib modules that onnxruntime/numpy import link,
# and libstdc++/libgcc for the wheels (manylinux wheels bundle neither). readline, sqlite, gdbm: not needed.
DEBS="libc6 libgcc-s1 libstdc++6 zlib1g libexpat1 libssl3 libffi8 libbz2-1.0 liblzma5 libuuid1 libcrypt1
      libpython3.11-minimal libpython3.11-stdlib python3.11-minimal"

die() { echo "arm-env: $*" >&2; exit 1; }
command -v qemu-aarch64 >/dev/null 2>&1 \
  || die "qemu-aarch64 not found: install qemu-user (apt-get install qemu-user) to run aarch64 programs"
command -v apt-get >/dev/null 2>&1 && command -v dpkg >/dev/null 2>&1 \
  || die "apt-get and dpkg are needed (a Debian host) to fetch Debian's arm64 python"

host_python="$root/.venv/bin/python"
[ -x "$host_python" ] || host_python="$(command -v python3 || true)"
version_of() {  # the x86 environment's version of a package, unless given in $2
  if [ -n "$2" ]; then echo "$2"; return; fi
  "$host_python" -c "import importlib.metadata as m; print(m.version('$1'))" 2>/dev/null \
    || die "cannot read $1's version from $host_python: set ${1^^}_VERSION or run scripts/venv.sh first"
}
ORT="$(version_of onnxruntime "${ONNXRUNTIME_VERSION:-}")"
NUMPY="$(version_of numpy "${NUMPY_VERSION:-}")"

stamp="$dir/.installed-$(sha256sum "$root/scripts/arm-env.sh" | cut -c1-12)-ort$ORT-numpy$NUMPY"
if [ ! -f "$stamp" ]; then
  mkdir -p "$dir"
  build="$(mktemp -d "$dir/.build.XXXXXX")"
  trap 'rm -rf "$build"' EXIT
  # A private arm64 package list from Debian's own mirror (the host's sources and dpkg database untouched).
  mkdir -p "$build/apt/lists/partial" "$build/apt/cache/archives/partial" "$build/apt/parts" "$build/debs"
  keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  [ -f "$keyring" ] || die "$keyring not found: install debian-archive-keyring"
  {
    echo "deb [arch=arm64 signed-by=$keyring] $MIRROR/debian $SUITE main"
    echo "deb [arch=arm64 signed-by=$keyring] $MIRROR/debian $SUITE-updates main"
    echo "deb [arch=arm64 signed-by=$keyring] $MIRROR/debian-security $SUITE-security main"
  } > "$build/apt/sources.list"
  apt_opts=(-q -oAPT::Architecture=arm64 -oAPT::Architectures=arm64 -oAPT::Sandbox::User=root
            -oDir::Etc::SourceList="$build/apt/sources.list" -oDir::Etc::SourceParts="$build/apt/parts"
            -oDir::State::Lists="$build/apt/lists" -oDir::Cache="$build/apt/cache"
            -oDir::State::Status=/dev/null -oDebug::NoLocking=1)
  apt-get "${apt_opts[@]}" update >"$build/apt.log" 2>&1 \
    || die "apt-get update of Debian's arm64 lists failed ($(tail -n 1 "$build/apt.log"))"
  # shellcheck disable=SC2086
  (cd "$build/debs" && apt-get "${apt_opts[@]}" download $DEBS) >>"$build/apt.log" 2>&1 \
    || die "apt-get download of the arm64 packages failed ($(tail -n 1 "$build/apt.log"))"
  for deb in "$build"/debs/*.deb; do dpkg -x "$deb" "$build/sysroot"; done
  [ -x "$build/sysroot/usr/bin/python$PYVER" ] || die "the arm64 packages hold no usr/bin/python$PYVER"
  # qemu-user 7.2 passes /proc/cpuinfo through from the host, and onnxruntime's cpuinfo library segfaults
  # at load parsing an x86 one. Under -L a path is looked up in the sysroot first, so an arm64 one goes
  # there: Neoverse N1 cores (uarch only; the ISA features onnxruntime uses come from qemu's AT_HWCAP,
  # which follows -cpu), more entries than any host's CPUs (the ones without a CPU are ignored).
  mkdir -p "$build/sysroot/proc"
  for i in $(seq 0 511); do
    printf 'processor\t: %d\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp' "$i"
    printf ' asimdhp cpuid asimdrdm lrcpc dcpop asimddp ssbs\nCPU implementer\t: 0x41\nCPU architecture: 8\n'
    printf 'CPU variant\t: 0x3\nCPU part\t: 0xd0c\nCPU revision\t: 1\n\n'
  done > "$build/sysroot/proc/cpuinfo"

  # aarch64 wheels; onnxruntime at the x86 version, else (said aloud) the nearest older one that has one.
  wheel_opts=(--only-binary=:all: --platform manylinux_2_28_aarch64 --platform manylinux_2_17_aarch64
              --platform manylinux2014_aarch64 --python-version "$PYVER" --implementation cp --no-deps)
  pip_() {  # this machine's pip config names index folders that may not exist: drop those warnings
    "$host_python" -m pip "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
    return "${PIPESTATUS[0]}"
  }
  pip_ download -q "${wheel_opts[@]}" -d "$build/wheels" "numpy==$NUMPY" >"$build/pip.log" \
    || die "no aarch64 cp311 wheel of numpy==$NUMPY on the package index ($(tail -n 1 "$build/pip.log"))"
  if ! pip_ download -q "${wheel_opts[@]}" -d "$build/wheels" "onnxruntime==$ORT" >>"$build/pip.log"; then
    echo "arm-env: onnxruntime==$ORT has no aarch64 cp311 wheel; using the newest older one" >&2
    pip_ download -q "${wheel_opts[@]}" -d "$build/wheels" "onnxruntime<$ORT" >>"$build/pip.log" \
      || die "no aarch64 cp311 wheel of onnxruntime<=$ORT ($(tail -n 1 "$build/pip.log"))"
  fi
  pip_ install -q --no-index --target "$build/site" "${wheel_opts[@]}" \
    "$build"/wheels/*.whl >>"$build/pip.log" || die "installing the aarch64 wheels failed ($(tail -n 1 "$build/pip.log"))"

  cat > "$build/python" <<EOF
#!/bin/sh
# The arm64 python of $dir under qemu-aarch64 (made by scripts/arm-env.sh). CPU model: \$QEMU_CPU, else
# neoverse-n1 (Graviton2 / Ampere Altra: NEON + dotprod, no i8mm/SVE), whose int8 kernels ARM servers run.
exec qemu-aarch64 -cpu "\${QEMU_CPU:-neoverse-n1}" -L "$dir/sysroot" -U LD_LIBRARY_PATH -U LD_PRELOAD \\
  -E PYTHONHOME="$dir/sysroot/usr" -E PYTHONPATH="$dir/site" -E PYTHONNOUSERSITE=1 \\
  "$dir/sysroot/usr/bin/python$PYVER" "\$@"
EOF
  chmod +x "$build/python"
  rm -rf "$dir/sysroot" "$dir/site" "$dir/python" "$dir"/.installed-*
  mv "$build/sysroot" "$build/site" "$build/python" "$dir/"
  rm -rf "$build"
  trap - EXIT
  # Byte-compile once (later starts are faster), then prove the interpreter, the wheels and the CPU.
  "$dir/python" -m compileall -q -j 0 "$dir/sysroot/usr/lib/python$PYVER" "$dir/site" >/dev/null 2>&1 || true
  check="$("$dir/python" -c 'import platform, numpy, onnxruntime
assert platform.machine() == "aarch64", platform.machine()
numpy.ones(3) @ numpy.ones(3)
print(platform.machine(), "numpy", numpy.__version__, "onnxruntime", onnxruntime.__version__, onnxruntime.get_device())' 2>&1)" \
    || die "the arm64 python does not import numpy and onnxruntime: $(echo "$check" | tail -n 1)"
  echo "arm-env: $check" >&2
  touch "$stamp"
fi
echo "$dir/python"
