#!/bin/sh
# Install the Debian packages named as arguments when any is missing.
# Used by `make test` and `make demo`, so a fresh Debian 12 needs nothing else.
missing=""
for p in "$@"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
	echo "heymarket: missing packages:$missing" >&2
	echo "heymarket: this is not a Debian-like system; install their equivalents and try again" >&2
	exit 1
fi
if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
echo "heymarket: installing$missing"
$sudo apt-get update -q >/dev/null || exit 1
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends $missing || exit 1
