#!/bin/sh
# build-ptx.sh [OUTDIR]: compile every kernels/*.cu to PTX with Debian's
# clang-16 (no CUDA toolkit needed): NAME.sm80.ptx (PTX 7.2, runs on Ampere
# and later) and NAME.sm90.ptx (PTX 7.8, Hopper). `make ptx` writes them
# next to the sources; the staleness test writes them to a temporary folder
# and compares.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here}
CLANG=${CLANG:-clang-16}
# Other builds of clang-16 (another distribution's) may emit different PTX;
# the staleness test compares only under the same version line.
"$CLANG" --version | head -1 >"$out/clang-version.txt"
for src in "$here"/*.cu; do
	name=$(basename "$src" .cu)
	for arch in sm80:sm_80:ptx72 sm90:sm_90:ptx78; do
		tag=${arch%%:*}; rest=${arch#*:}; gpu=${rest%%:*}; ptx=${rest#*:}
		"$CLANG" -x cuda --cuda-device-only -nocudainc -nocudalib \
			--cuda-gpu-arch="$gpu" -Xclang -target-feature -Xclang "+$ptx" \
			-O3 -S -o "$out/$name.$tag.ptx" "$src"
	done
	# The timeline build of the Hopper PTX (see OCTET_TRACE in octet.cu).
	"$CLANG" -x cuda --cuda-device-only -nocudainc -nocudalib \
		--cuda-gpu-arch=sm_90 -Xclang -target-feature -Xclang +ptx78 -DOCTET_TRACE \
		-O3 -S -o "$out/$name.trace.sm90.ptx" "$src"
done
