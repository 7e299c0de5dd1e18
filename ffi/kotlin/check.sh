#!/usr/bin/env bash
# Checks the Kotlin binding for real: generates it from the conclave-ffi library,
# compiles it and the lifecycle example (example/Lifecycle.kt) with the Kotlin compiler,
# and runs the example on the JVM (JNA) against a real conclave-sfu on 127.0.0.1.
#
# Needs: java, Debian's libjna-java, libkotlinx-coroutines-java and
# libkotlinx-atomicfu-java (jars under /usr/share/java), and kotlinc: $KOTLINC, else the
# npm package kotlin-compiler installed into a cache directory ($KOTLIN_HOME_DIR,
# default target/kotlin-compiler). Debian's kotlinx-coroutines is 1.0.1, older than
# what the generated code names in one unused import; compat/ supplies that one
# annotation (see the file). Everything else compiles and runs against the real jars.
set -euo pipefail
cd "$(dirname "$0")/../.."
workspace="$PWD"

cargo="${CARGO:-cargo}"
profile="${CONCLAVE_FFI_PROFILE:-dev}"
target_dir="$("$cargo" metadata --format-version 1 --no-deps --locked |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
out="$target_dir/$([ "$profile" = dev ] && echo debug || echo "$profile")"

jars=/usr/share/java
for jar in jna.jar kotlinx-coroutines-core.jar kotlinx-coroutines-core-common.jar atomicfu.jar; do
    if [ ! -f "$jars/$jar" ]; then
        echo "missing $jars/$jar: apt-get install libjna-java libkotlinx-coroutines-java libkotlinx-atomicfu-java" >&2
        exit 1
    fi
done
classpath="$jars/jna.jar:$jars/kotlinx-coroutines-core.jar:$jars/kotlinx-coroutines-core-common.jar:$jars/atomicfu.jar"

kotlinc="${KOTLINC:-}"
if [ -z "$kotlinc" ]; then
    kotlin_home="${KOTLIN_HOME_DIR:-$target_dir/kotlin-compiler}"
    if [ ! -x "$kotlin_home/node_modules/kotlin-compiler/bin/kotlinc" ]; then
        mkdir -p "$kotlin_home"
        npm install --silent --no-audit --no-fund --prefix "$kotlin_home" kotlin-compiler@2.4.20
    fi
    kotlinc="$kotlin_home/node_modules/kotlin-compiler/bin/kotlinc"
fi
kotlin="$(dirname "$kotlinc")/kotlin"

"$cargo" build --locked --profile "$profile" -p conclave-ffi -p conclave-uniffi-bindgen -p conclave-sfu

work="$(mktemp -d "${TMPDIR:-/tmp}/conclave-kotlin.XXXXXX")"
sfu_pid=""
cleanup() {
    if [ -n "$sfu_pid" ]; then kill "$sfu_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

echo "generating the Kotlin binding"
"$out/uniffi-bindgen" generate --no-format --library "$out/libconclave_ffi.so" \
    --language kotlin --out-dir "$work/gen"

echo "compiling the binding and example/Lifecycle.kt ($("$kotlinc" -version 2>&1 | tail -1))"
"$kotlinc" -nowarn "$work/gen/uniffi/conclave/conclave.kt" ffi/kotlin/compat/*.kt \
    ffi/kotlin/example/Lifecycle.kt -cp "$classpath" -d "$work/conclave.jar"

echo "running the example against a conclave-sfu on 127.0.0.1"
mkfifo "$work/banner"
"$out/conclave-sfu" --listen 127.0.0.1:0 --data-dir "$work/sfu" --metrics-listen off \
    >"$work/banner" 2>"$work/sfu.log" &
sfu_pid=$!
exec 3<"$work/banner"
read -r -t 30 listening <&3
read -r -t 30 fingerprint_line <&3
addr="$(echo "$listening" | awk '{print $4}')"
fingerprint="${fingerprint_line##*: }"
if ! timeout 120 "$kotlin" -Djna.library.path="$out" -cp "$work/conclave.jar:$classpath" \
    LifecycleKt "$addr" "$fingerprint"; then
    echo "the Kotlin example failed; SFU log:" >&2
    tail -50 "$work/sfu.log" >&2
    exit 1
fi
