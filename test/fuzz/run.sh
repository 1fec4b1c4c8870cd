#!/bin/bash
#
# test/fuzz/run.sh [SECONDS]
#
# Build the URL validator's libFuzzer target (fuzz_url.c + src/url.c) with
# clang's fuzzer, address and undefined-behaviour sanitizers, and run it for
# SECONDS (default 20) starting from the seed corpus.  Exits non-zero if the
# fuzzer finds a crash or a violated property.
#
# Needs clang with the libFuzzer runtime (Debian: clang-NN and
# libclang-rt-NN-dev, NN the release's clang, as test/setup.sh installs) and
# libcurl headers.  When run as root, missing
# packages are installed with apt-get; otherwise the run is skipped (exit 0)
# with a message saying what to install.
#
# The fuzzer works in a temporary directory: the seed corpus is copied there,
# so new inputs never land in the repository.  On failure the directory is
# kept and its path printed, so the crashing input can be inspected.

set -euo pipefail

seconds="${1:-20}"
case "$seconds" in
	''|*[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac

here="$(cd "$(dirname "$0")" && pwd)"
src="$here/../../src"

# Does this clang build and link a libFuzzer program with sanitizers?
fuzzer_works() {
	local cc="$1" probe
	command -v "$cc" >/dev/null 2>&1 || return 1
	probe="$(mktemp -d)"
	printf '%s\n' \
		'#include <stddef.h>' \
		'#include <stdint.h>' \
		'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);' \
		'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void) d; (void) n; return 0; }' \
		> "$probe/probe.c"
	if "$cc" -fsanitize=fuzzer,address,undefined "$probe/probe.c" \
		-o "$probe/probe" >/dev/null 2>&1; then
		rm -rf "$probe"
		return 0
	fi
	rm -rf "$probe"
	return 1
}

find_clang() {
	local cc
	# the newest versioned clang first (Debian installs only clang-NN)
	for cc in $(ls /usr/bin/clang-[0-9]* 2>/dev/null | grep -x '/usr/bin/clang-[0-9]*' |
		sort -t- -k2 -rn) clang; do
		if fuzzer_works "$cc"; then
			echo "$cc"
			return 0
		fi
	done
	return 1
}

curl_headers() {
	echo '#include <curl/curl.h>' | cc -E -x c - >/dev/null 2>&1 ||
		echo '#include <curl/curl.h>' | clang -E -x c - >/dev/null 2>&1
}

CC="$(find_clang || true)"
if [ -z "$CC" ] || ! curl_headers; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "fuzz: SKIPPED: clang with libFuzzer (clang-NN, libclang-rt-NN-dev)" \
			"or libcurl4-openssl-dev is missing, and not root to install them" \
			"(test/setup.sh does)" >&2
		exit 0
	fi
	echo "fuzz: installing clang, libFuzzer and libcurl headers (test/setup.sh)"
	bash "$here/../setup.sh"
	CC="$(find_clang || true)"
	if [ -z "$CC" ]; then
		echo "fuzz: FAILED: clang still cannot build a libFuzzer target" >&2
		exit 1
	fi
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/fuzz_url.XXXXXX")"
keep=0
cleanup() {
	if [ "$keep" -eq 0 ]; then
		rm -rf "$work"
	fi
}
trap cleanup EXIT

mkdir "$work/corpus"
cp "$here"/corpus/* "$work/corpus/"

# A dictionary of URL pieces helps the fuzzer reach the interesting parses.
cat > "$work/url.dict" <<'EOF'
"https://"
"HTTPS://"
"http://"
"://"
"["
"]"
"::"
"::ffff:"
"64:ff9b::"
"fe80::"
"fd00:ec2::254"
"%25"
"%00"
"%2e"
"@"
"\\"
":443"
":0"
":65536"
"#"
"?"
"/.."
"0x"
"0x7f"
"0177"
"127.0.0.1"
"169.254.169.254"
"2130706433"
"localhost"
".localhost"
"metadata.google.internal"
"instance-data"
"xn--"
EOF

echo "fuzz: building with $CC"
"$CC" -g -O1 -fno-omit-frame-pointer \
	-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	-I"$src" "$src/url.c" "$here/fuzz_url.c" -lcurl -o "$work/fuzz_url"

echo "fuzz: running for $seconds seconds in $work"
status=0
(
	cd "$work"
	ASAN_OPTIONS="detect_leaks=1:abort_on_error=1" \
	UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
	./fuzz_url -max_total_time="$seconds" -max_len=4096 -timeout=10 \
		-dict=url.dict -artifact_prefix="$work/" -print_final_stats=1 \
		corpus
) > "$work/fuzz.log" 2>&1 || status=$?

if [ "$status" -ne 0 ]; then
	keep=1
	tail -n 40 "$work/fuzz.log" >&2
	echo "fuzz: FAILED (exit $status); log, binary and crashing input kept in $work" >&2
	exit 1
fi

grep -E '^(stat::number_of_executed_runs|stat::new_units_added|#[0-9]+.*DONE)' \
	"$work/fuzz.log" || true
echo "fuzz: OK, no crash in $seconds seconds"
