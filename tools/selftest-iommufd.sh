#!/bin/sh
# make selftest-iommufd: build the Linux 7.3 iommufd selftest from Debian's linux-source-7.3
# and run it against the model's /dev/iommu (iommusim iommufd run).
#
#   tools/selftest-iommufd.sh BUILD_DIR IOMMUSIM [DEB]
#
# The package comes from trixie-backports of the Debian archive the host's apt already uses:
# a private apt configuration under BUILD_DIR/apt (its own sources list, lists and cache) is
# written from the host's sources, which stay untouched; no mirror name is kept anywhere
# but there. DEB names an already downloaded linux-source-7.3 .deb instead. Only what
# `make headers_install` and `make -C tools/testing/selftests/iommu` need is extracted.
# libcap's headers (the selftest links -lcap) are fetched the same way when the host has none.
set -eu
BUILD=$1
IOMMUSIM=$2
DEB=${3:-}
SUITE=trixie-backports
SRC=$BUILD/linux-source-7.3
mkdir -p "$BUILD"
BUILD=$(cd "$BUILD" && pwd)
SRC=$BUILD/linux-source-7.3

# The first Debian archive URI of the host's apt sources (deb822 .sources or one-line lists),
# skipping the security archive.
host_mirror() {
	{
		cat /etc/apt/sources.list.d/*.sources 2>/dev/null | sed -n 's/^URIs:[[:space:]]*//p' | tr ' ' '\n'
		cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
			sed -n 's/^deb[[:space:]]\{1,\}\(\[[^]]*\][[:space:]]\{1,\}\)\{0,1\}\([^[:space:]]*\).*/\2/p'
	} | grep -v -- '-security' | grep '/debian/*$' | head -n 1
}

host_suite() {
	. /etc/os-release && echo "$VERSION_CODENAME"
}

apt_private() {
	mirror=$(host_mirror)
	if [ -z "$mirror" ]; then
		echo "selftest-iommufd: no Debian archive in the host's apt sources; pass DEB=linux-source-7.3_*.deb" >&2
		exit 2
	fi
	mkdir -p "$BUILD/apt/lists/partial" "$BUILD/apt/cache/archives/partial"
	key=/usr/share/keyrings/debian-archive-keyring.gpg
	{
		echo "deb [signed-by=$key] $mirror $SUITE main"
		echo "deb [signed-by=$key] $mirror $(host_suite) main"
	} >"$BUILD/apt/sources.list"
	cat >"$BUILD/apt/apt.conf" <<CONF
Dir::Etc::SourceList "$BUILD/apt/sources.list";
Dir::Etc::SourceParts "/dev/null";
Dir::State::Lists "$BUILD/apt/lists";
Dir::Cache "$BUILD/apt/cache";
CONF
	if [ ! -f "$BUILD/apt/.updated" ]; then
		APT_CONFIG=$BUILD/apt/apt.conf apt-get -q update >&2
		touch "$BUILD/apt/.updated"
	fi
}

download() { # PACKAGE: prints the .deb's path
	found=$(ls "$BUILD/debs/$1"_*.deb 2>/dev/null | head -n 1 || true)
	if [ -z "$found" ]; then
		apt_private
		mkdir -p "$BUILD/debs"
		(cd "$BUILD/debs" && APT_CONFIG=$BUILD/apt/apt.conf apt-get -q download "$1" >&2)
		found=$(ls "$BUILD/debs/$1"_*.deb | head -n 1)
	fi
	echo "$found"
}

if [ ! -f "$SRC/.extracted" ]; then
	[ -n "$DEB" ] || DEB=$(download linux-source-7.3)
	echo "selftest-iommufd: extracting from $(basename "$DEB")" >&2
	rm -rf "$SRC"
	dpkg-deb --fsys-tarfile "$DEB" | tar -xO ./usr/src/linux-source-7.3.tar.xz | xz -dc |
		tar -x -C "$BUILD" --wildcards \
			'linux-source-7.3/Makefile' \
			'linux-source-7.3/scripts/*' \
			'linux-source-7.3/include/*' \
			'linux-source-7.3/arch/x86/*' \
			'linux-source-7.3/usr/*' \
			'linux-source-7.3/tools/include/*' \
			'linux-source-7.3/tools/arch/x86/*' \
			'linux-source-7.3/tools/scripts/*' \
			'linux-source-7.3/tools/build/*' \
			'linux-source-7.3/tools/testing/selftests/Makefile' \
			'linux-source-7.3/tools/testing/selftests/lib.mk' \
			'linux-source-7.3/tools/testing/selftests/kselftest*' \
			'linux-source-7.3/tools/testing/selftests/iommu/*' \
			'linux-source-7.3/drivers/iommu/iommufd/iommufd_test.h'
	touch "$SRC/.extracted"
fi

CAPFLAGS=
if ! printf '#include <sys/capability.h>\n' | ${CC:-cc} -E -x c - >/dev/null 2>&1; then
	if [ ! -f "$BUILD/libcap/.extracted" ]; then
		capdeb=$(download libcap-dev)
		rm -rf "$BUILD/libcap"
		mkdir -p "$BUILD/libcap"
		dpkg-deb -x "$capdeb" "$BUILD/libcap"
		lib=$(find /lib /usr/lib -name 'libcap.so.2' 2>/dev/null | head -n 1)
		mkdir -p "$BUILD/libcap/lib"
		ln -sf "$lib" "$BUILD/libcap/lib/libcap.so"
		touch "$BUILD/libcap/.extracted"
	fi
	CAPFLAGS="-I$BUILD/libcap/usr/include -L$BUILD/libcap/lib"
fi

OUT=$BUILD/out
if [ ! -x "$OUT/iommufd" ] || [ ! -x "$OUT/iommufd_fail_nth" ]; then
	# headers_install is `headers` plus an rsync of usr/include onto itself (the default
	# INSTALL_HDR_PATH); without rsync, `headers` alone leaves the same tree.
	if command -v rsync >/dev/null; then
		make -s -C "$SRC" headers_install >&2
	else
		make -s -C "$SRC" headers >&2
	fi
	mkdir -p "$OUT"
	# From the environment, so the Makefile's own `CFLAGS +=` still apply.
	CFLAGS="$CAPFLAGS" LDFLAGS="${CAPFLAGS#* }" \
		make -s -C "$SRC/tools/testing/selftests/iommu" OUTPUT="$OUT" >&2
fi

status=0
for t in iommufd iommufd_fail_nth; do
	echo "== $t"
	start=$(date +%s)
	$IOMMUSIM iommufd run -- "$OUT/$t" >"$BUILD/$t.log" 2>&1 || status=$?
	end=$(date +%s)
	# Per fixture (the test name's first part): pass / fail / skip, then the harness totals.
	awk '/^(not )?ok [0-9]+ / {
		split($0, w, " "); name = ($1 == "not") ? w[4] : w[3]; split(name, part, ".")
		f = part[1]; fx[f] = 1
		if ($1 == "not") fail[f]++; else if ($0 ~ /# SKIP/) skip[f]++; else pass[f]++
	} END { for (f in fx) printf "  %-28s pass %3d  fail %3d  skip %3d\n", f, pass[f], fail[f], skip[f] }' \
		"$BUILD/$t.log" | sort
	grep -E '^# (Totals|PASSED|FAILED)' "$BUILD/$t.log" || true
	grep -E '^not ok' "$BUILD/$t.log" | sed 's/^/  /' || true
	tail -n 1 "$BUILD/$t.log"
	echo "wall time $((end - start)) s (log: $BUILD/$t.log)"
done
exit $status
