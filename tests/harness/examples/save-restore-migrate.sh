#!/bin/sh
# Example for `cargo xtask demo --dom0-script tests/harness/examples/save-restore-migrate.sh`: runs
# in dom0 (busybox sh) with GUEST_IP and GUEST_NAME set. Stores a value, then checkpoints the guest
# (xl save -c), saves and restores it, and migrates it to localhost (ssh replaced by a local
# stand-in), checking after each step that it serves the value. Save images go to a tmpfs (dom0's
# root is small).
set -e
echo "guest $GUEST_NAME at $GUEST_IP"
mkdir -p /tmp/srm
grep -q " /tmp/srm " /proc/mounts || mount -t tmpfs -o size=160m tmpfs /tmp/srm
printf '#!/bin/sh\nshift\nexec sh -c "$*"\n' >/tmp/srm-ssh
chmod +x /tmp/srm-ssh
printf 'survives save, restore and migration\n' >/tmp/value
status=$({ printf 'PUT /kv/note HTTP/1.1\r\nHost: x\r\nContent-Length: %s\r\nConnection: close\r\n\r\n' \
	"$(wc -c </tmp/value)"; cat /tmp/value; } | timeout 60 nc "$GUEST_IP" 80 | head -n 1 | tr -d '\r')
echo "PUT /kv/note: $status"
case "$status" in *" 20"[01]" "*) ;; *) echo "PUT not stored"; exit 1 ;; esac

serving() {
	i=0
	until wget -q -O /tmp/back "http://$GUEST_IP/kv/note" 2>/dev/null; do
		i=$((i + 1))
		[ $i -lt 120 ] || { echo "no answer after $1"; exit 1; }
		sleep 1
	done
	cmp /tmp/value /tmp/back
	echo "after $1: serving, value intact (domain id $(xl domid "$GUEST_NAME"))"
}

# run WHAT CMD...: runs an xl command quietly; on failure prints its output and stops.
run() {
	what=$1
	shift
	"$@" >/tmp/srm/xl.log 2>&1 || { echo "$what failed:"; cat /tmp/srm/xl.log; exit 1; }
}

run "xl save -c" xl save -c "$GUEST_NAME" /tmp/srm/ckpt.img
rm -f /tmp/srm/ckpt.img
serving "xl save -c"
run "xl save" xl save "$GUEST_NAME" /tmp/srm/save.img
run "xl restore" xl restore /tmp/srm/save.img
rm -f /tmp/srm/save.img
serving "xl save + xl restore"
run "xl migrate" xl migrate -s /tmp/srm-ssh "$GUEST_NAME" localhost
serving "xl migrate to localhost"
