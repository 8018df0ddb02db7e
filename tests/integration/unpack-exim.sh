#!/bin/sh
# Unpack Debian's Exim 4 (exim4-daemon-light, exim4-base, libidn12) into DIR without
# installing it: the package conflicts with Postfix (both are the system's MTA), which
# the test suite needs. Prints the HURRICANE_EXIM value to use. Needs apt-get (root).
set -eu
dir=${1:?usage: unpack-exim.sh DIR}
mkdir -p "$dir/debs" "$dir/root"
cd "$dir/debs"
# (the package lists may not be there yet on a fresh machine)
apt-get download -q exim4-daemon-light exim4-base libidn12 >/dev/null 2>&1 || {
    apt-get update -q >/dev/null && apt-get download -q exim4-daemon-light exim4-base libidn12 >/dev/null
}
for deb in *.deb; do dpkg-deb -x "$deb" "$dir/root"; done
echo "HURRICANE_EXIM=$dir/root/usr/sbin/exim4"
