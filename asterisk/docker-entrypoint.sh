#!/bin/sh
# Render /opt/dialerd-pbx/conf/*.conf into /etc/asterisk: every @@NAME@@ becomes the value of $NAME.
# ARI_PASSWORD and AMI_SECRET have no default (no secrets in the image); use [A-Za-z0-9] values.
set -eu

: "${ARI_PASSWORD:?set ARI_PASSWORD}"
: "${AMI_SECRET:?set AMI_SECRET}"
MOD_DIR=${MOD_DIR:-$(ls -d /usr/lib/*/asterisk/modules | head -n 1)}
export MOD_DIR

rm -f /etc/asterisk/users.conf   # the deprecated Debian sample only logs warnings
for src in /opt/dialerd-pbx/conf/*.conf; do
  dst=/etc/asterisk/$(basename "$src")
  cp "$src" "$dst.tmp"
  for name in MOD_DIR BIND_ADDR SIP_PORT HTTP_PORT AMI_PORT DEAD_UDP_PORT DEAD_TCP_PORT DEAD_QUAL_PORT \
              ARI_USER ARI_PASSWORD AMI_USER AMI_SECRET; do
    eval "value=\${$name:?set $name}"
    sed -i "s|@@${name}@@|${value}|g" "$dst.tmp"
  done
  if grep -q '@@[A-Z_]*@@' "$dst.tmp"; then
    echo "docker-entrypoint: unknown placeholder left in $dst" >&2
    exit 1
  fi
  mv "$dst.tmp" "$dst"
done
mkdir -p /var/lib/asterisk/keys /var/log/asterisk/cdr-csv

exec "$@"
