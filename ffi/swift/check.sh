#!/usr/bin/env bash
# Checks what of the Swift binding can be checked without a Swift compiler (none can be
# installed here): the generator produces the module (conclave.swift, conclaveFFI.h,
# conclaveFFI.modulemap); the C header compiles (with cc; the clang nullability
# qualifiers it uses are defined away); and every function the header declares is
# exported by the conclave-ffi library, so the Swift module links. The Swift sources
# themselves (the generated module and example/Lifecycle.swift) are compiled only by
# build-xcframework.sh on a Mac.
set -euo pipefail
cd "$(dirname "$0")/../.."

cargo="${CARGO:-cargo}"
profile="${CONCLAVE_FFI_PROFILE:-dev}"
target_dir="$("$cargo" metadata --format-version 1 --no-deps --locked |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
out="$target_dir/$([ "$profile" = dev ] && echo debug || echo "$profile")"
"$cargo" build --locked --profile "$profile" -p conclave-ffi -p conclave-uniffi-bindgen

work="$(mktemp -d "${TMPDIR:-/tmp}/conclave-swift.XXXXXX")"
trap 'rm -rf "$work"' EXIT
"$out/uniffi-bindgen" generate --no-format --library "$out/libconclave_ffi.so" \
    --language swift --out-dir "$work"
for f in conclave.swift conclaveFFI.h conclaveFFI.modulemap; do
    [ -s "$work/$f" ] || { echo "the generator did not write $f" >&2; exit 1; }
done
grep -q 'header "conclaveFFI.h"' "$work/conclaveFFI.modulemap"

printf '#include "conclaveFFI.h"\n' |
    cc -D_Nullable= -D_Nonnull= -Wall -Werror -fsyntax-only -I"$work" -x c -

grep -oE '(uniffi|ffi)_conclave_ffi_[a-z0-9_]+\(' "$work/conclaveFFI.h" | tr -d '(' | sort -u >"$work/declared"
nm -D --defined-only "$out/libconclave_ffi.so" | awk '{print $3}' | sort -u >"$work/exported"
missing="$(comm -23 "$work/declared" "$work/exported")"
if [ -n "$missing" ]; then
    echo "declared in conclaveFFI.h but not exported by the library:" >&2
    echo "$missing" >&2
    exit 1
fi
echo "Swift module generated; header compiles; all $(wc -l <"$work/declared") FFI functions are exported"
