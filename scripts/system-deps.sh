#!/bin/sh
# Debian packages the test suite uses as real, independent clients and codecs.
# Installed with apt-get when running as root; otherwise the missing ones are named.
set -u
PKGS="swaks fetchmail libnet-ssleay-perl libio-socket-ssl-perl libwbxml2-utils curl openssl isync"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends $missing >/dev/null 2>&1 || {
    apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends $missing >/dev/null; }
else
  echo "system-deps: not root; please install:$missing" >&2
fi
