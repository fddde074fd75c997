#!/bin/sh
# Example for `cargo xtask demo --dom0-script tests/harness/examples/persist.sh`: runs in dom0
# (busybox sh) with GUEST_IP, GUEST_NAME and XL_CONFIG set; its exit status is the demo's.
set -e
echo "guest $GUEST_NAME at $GUEST_IP (config $XL_CONFIG)"
printf 'kept across destroy/create\n' >/tmp/value
{ printf 'PUT /kv/note HTTP/1.1\r\nHost: x\r\nContent-Length: %s\r\nConnection: close\r\n\r\n' \
	"$(wc -c </tmp/value)"; cat /tmp/value; } | nc "$GUEST_IP" 80 | head -n 1
xl destroy "$GUEST_NAME"
xl create "$XL_CONFIG" >/dev/null 2>&1
i=0
until wget -q -O /tmp/back "http://$GUEST_IP/kv/note" 2>/dev/null; do
	i=$((i + 1))
	[ $i -lt 120 ] || { echo "no answer after re-create"; exit 1; }
	sleep 1
done
echo "after xl destroy + xl create: $(cat /tmp/back)"
cmp /tmp/value /tmp/back
