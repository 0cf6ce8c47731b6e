#!/bin/bash
# Packs a benchmark binary built here to run on another Linux machine with a newer or different
# userland (such as the project's device machine): the binary, every shared library it links
# except libc and libm (those come from the target), and `<name>.sh`, a wrapper that sets
# LD_LIBRARY_PATH for the binary alone.
#
#   bench/package_for_device.sh build/bench/attnserve_bench build-device
#   # on the other machine:  build-device/attnserve_bench.sh --benchmark_filter=BM_Sdpa
set -euo pipefail
if [[ $# -ne 2 ]]; then
  echo "usage: $0 <binary> <output folder>" >&2
  exit 2
fi
binary=$1
out=$2
name=$(basename "$binary")
mkdir -p "$out/lib"
cp "$binary" "$out/$name"
ldd "$binary" | awk '/=> \// {print $3}' | grep -v -E '/lib(c|m)\.so' | while read -r lib; do
  cp -L "$lib" "$out/lib/"
done
cat > "$out/$name.sh" <<WRAPPER
#!/bin/sh
here=\$(dirname "\$(readlink -f "\$0")")
LD_LIBRARY_PATH="\$here/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "\$here/$name" "\$@"
WRAPPER
chmod +x "$out/$name.sh"
echo "packed $name with $(ls "$out/lib" | wc -l) libraries into $out"
