#!/usr/bin/env bash
# test/matrix.sh [15|17|18|all]: the whole suite (test/check.sh) against each
# supported PostgreSQL, each from its Debian release's own packages.
#   15: natively, on this machine (Debian 12), into its system PostgreSQL 15
#   17: in a chroot of Debian 13 (trixie) with postgresql-17
#   18: in a chroot of Debian unstable (sid) with postgresql-18
#   all: 15, 17 and 18 in turn; a summary with each one's time; non-zero
#        exit if any failed
# The chroots are minimal roots (debootstrap --variant=minbase) kept under
# $WH_MATRIX_CACHE (default /var/cache/webhooks-matrix/<release>) and reused;
# a stamp file in each says its packages are installed (delete a release's
# directory to start it afresh, e.g. when unstable has moved on).  The Debian mirror is
# the one this machine's apt is configured with (override: WH_DEBIAN_MIRROR).
# Needs root (debootstrap, chroot, mount).  PG_CFLAGS (e.g. -Werror) and
# FUZZ_SECONDS are passed through to test/check.sh.  MATRIX_CMD runs another
# command than the suite in each version's tree, e.g. the benchmark:
#   MATRIX_CMD='bash test/setup.sh --bench && RUNS=3 SECTIONS=throughput bash test/bench/run.sh' \
#     bash test/matrix.sh all
set -euo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)
cache=${WH_MATRIX_CACHE:-/var/cache/webhooks-matrix}

die() { echo "matrix: $*" >&2; exit 2; }

release_of() {
	case "$1" in
		17) echo trixie ;;
		18) echo sid ;;
		*) return 1 ;;
	esac
}

# The first Debian archive (not -security) in this machine's apt sources,
# deb822 (*.sources) or one-line (sources.list, *.list) style.
debian_mirror() {
	if [ -n "${WH_DEBIAN_MIRROR:-}" ]; then
		echo "$WH_DEBIAN_MIRROR"
		return
	fi
	local f files=()
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -f "$f" ] && files+=("$f")
	done
	if [ ${#files[@]} -gt 0 ]; then
		awk '
			function flush() {
				if (types ~ /(^| )deb( |$)/ && suites !~ /security/ && uris != "" && found == "")
					found = uris
				types = ""; suites = ""; uris = ""
			}
			/^[ \t]*$/ { flush(); next }
			/^Types:/ { sub(/^Types:[ \t]*/, ""); types = $0 }
			/^Suites:/ { sub(/^Suites:[ \t]*/, ""); suites = $0 }
			/^URIs:/ { sub(/^URIs:[ \t]*/, ""); split($0, u, /[ \t]+/); uris = u[1] }
			ENDFILE { flush() }
			END { flush(); if (found != "") print found }
		' "${files[@]}" | head -n 1
	fi
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[ -f "$f" ] || continue
		awk '$1 == "deb" {
				i = 2
				if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
				if ($(i + 1) !~ /security/) { print $i; exit }
			}' "$f"
	done | head -n 1
}

mounted=()
unmount_all() {
	local i
	for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
		umount -R "${mounted[$i]}" 2>/dev/null || umount -l "${mounted[$i]}" || true
	done
	mounted=()
}
trap unmount_all EXIT

mount_root() {
	local root=$1
	mount -t proc proc "$root/proc"
	mounted+=("$root/proc")
	mount --rbind /dev "$root/dev"
	mount --make-rslave "$root/dev"
	mounted+=("$root/dev")
}

# in_root ROOT COMMAND...: run COMMAND in the chroot with a clean environment
in_root() {
	local root=$1; shift
	chroot "$root" /usr/bin/env -i \
		PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive \
		${PG_CFLAGS:+PG_CFLAGS="$PG_CFLAGS"} \
		${FUZZ_SECONDS:+FUZZ_SECONDS="$FUZZ_SECONDS"} \
		"$@"
}

# Copy the checkout (tracked and new files, not build products) to DEST.
copy_tree() {
	local dest=$1
	rm -rf "$dest"
	mkdir -p "$dest"
	if git -C "$top" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
		git -C "$top" ls-files -z --cached --others --exclude-standard |
			while IFS= read -r -d '' f; do
				[ -e "$f" ] && printf '%s\0' "$f"
			done |
			tar --null -T - -cf - | tar -xf - -C "$dest"
	else
		tar --exclude=.git -cf - . | tar -xf - -C "$dest"
		make -s -C "$dest" clean >/dev/null 2>&1 || true
	fi
}

# Make (once) the root of RELEASE with PostgreSQL VERSION and the test
# dependencies installed by test/setup.sh.
prepare_root() {
	local version=$1 release=$2 root=$3 mirror stamp
	stamp=$root/.webhooks-matrix-ready
	if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$(sha1sum < test/setup.sh) pg$version" ]; then
		return 0
	fi
	mirror=$(debian_mirror)
	[ -n "$mirror" ] || die "no Debian mirror found in /etc/apt (set WH_DEBIAN_MIRROR)"
	if [ ! -x "$root/usr/bin/apt-get" ]; then
		echo "matrix: debootstrap $release (minbase)"
		rm -rf "$root.partial"
		mkdir -p "$cache"
		debootstrap --variant=minbase "$release" "$root.partial" "$mirror" \
			> "$cache/debootstrap-$release.log" 2>&1 ||
			{ tail -20 "$cache/debootstrap-$release.log"; die "debootstrap $release failed"; }
		mv "$root.partial" "$root"
	fi
	echo "deb $mirror $release main" > "$root/etc/apt/sources.list"
	# sid's Release file can be past its Valid-Until date
	if [ "$release" = sid ]; then
		echo 'Acquire::Check-Valid-Until "false";' > "$root/etc/apt/apt.conf.d/99webhooks-matrix"
	fi
	# no daemons started by package scripts inside the chroot
	printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
	chmod 755 "$root/usr/sbin/policy-rc.d"
	cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
	mkdir -p "$root/etc/postgresql-common"
	echo 'create_main_cluster = false' > "$root/etc/postgresql-common/createcluster.conf"
	mkdir -p "$root/root/setup"
	cp test/setup.sh "$root/root/setup/setup.sh"
	mount_root "$root"
	echo "matrix: installing PostgreSQL $version and the test dependencies in $release"
	in_root "$root" bash /root/setup/setup.sh "$version"
	unmount_all
	echo "$(sha1sum < test/setup.sh) pg$version" > "$stamp"
}

cmd=${MATRIX_CMD:-bash test/check.sh}

run_native() {
	WH_PG_VERSION=15 bash -c "$cmd"
}

run_chroot() {
	local version=$1 release root
	release=$(release_of "$version")
	root=$cache/$release
	mkdir -p "$cache"
	exec 9> "$cache/$release.lock"
	flock 9
	prepare_root "$version" "$release" "$root"
	copy_tree "$root/src/webhooks"
	mount_root "$root"
	local status=0
	in_root "$root" env WH_PG_VERSION="$version" \
		bash -c "cd /src/webhooks && $cmd" || status=$?
	unmount_all
	exec 9>&-
	return $status
}

run_one() {
	local version=$1
	echo "=== matrix: PostgreSQL $version ==="
	case "$version" in
		15) run_native ;;
		17|18) run_chroot "$version" ;;
		*) die "unknown version $version (15, 17, 18 or all)" ;;
	esac
}

[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, chroot, mount)"

what=${1:-all}
if [ "$what" != all ]; then
	run_one "$what"
	exit $?
fi

summary=()
failed=0
for v in 15 17 18; do
	start=$SECONDS
	status=0
	# a process of its own: its own set -e, traps and lock
	bash "$top/test/matrix.sh" "$v" || status=$?
	took=$((SECONDS - start))
	if [ $status -eq 0 ]; then
		summary+=("PostgreSQL $v: passed in ${took}s")
	else
		summary+=("PostgreSQL $v: FAILED (exit $status) after ${took}s")
		failed=1
	fi
done
echo "=== matrix summary ==="
printf '%s\n' "${summary[@]}"
exit $failed
