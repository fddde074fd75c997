#!/bin/busybox sh
# /init of the dom0 initramfs built by `cargo xtask harness` (xtask/src/harness.rs).
#
# Brings up a minimal Xen dom0 (xenstored, xen-init-dom0, xenconsoled, bridge xenbr0 with
# 10.0.0.1/24), runs the scenario scripts named in /payload/env.sh and powers off.
# Everything it reports to the host goes over the console as lines starting with "@@"
# (see tests/harness/README.md for the protocol).

/bin/busybox mkdir -p /proc /sys /dev /tmp /run
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox mkdir -p /dev/pts /dev/shm
/bin/busybox mount -t devpts devpts /dev/pts
/bin/busybox mount -t tmpfs tmpfs /dev/shm
/bin/busybox mount -t tmpfs tmpfs /run
# devtmpfs has none of these; Debian's hotplug locking (flock on /dev/fd/N) needs them.
/bin/busybox ln -sf /proc/self/fd /dev/fd
/bin/busybox ln -sf /proc/self/fd/0 /dev/stdin
/bin/busybox ln -sf /proc/self/fd/1 /dev/stdout
/bin/busybox ln -sf /proc/self/fd/2 /dev/stderr

export PATH=/usr/lib/xen-4.17/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root TERM=dumb
. /payload/lib.sh

fatal() {
	echo "@@FATAL $*"
	harness_dump_logs
	echo "@@DONE 1"
	poweroff_now
}

mkdir -p /run/lock /var/run/xen /var/run/xenstored /var/lib/xen /var/log/xen/console /root "$HARNESS_STATE"
echo "@@DOM0-BOOTED $(uptime_s)"

# Kernel modules, in dependency order (written by the harness when it built the initramfs).
while read -r mod; do
	[ -n "$mod" ] || continue
	insmod "/lib/modules/$(uname -r)/$mod" || fatal "insmod $mod failed"
done < /etc/harness/modules

mount -t xenfs xenfs /proc/xen || fatal "cannot mount xenfs"

# Xen control plane.
xenstored --pid-file=/var/run/xenstored.pid || fatal "xenstored failed"
for _ in $(seq 1 50); do
	[ -S /var/run/xenstored/socket ] && break
	xenstore-exists /local >/dev/null 2>&1 && break
	sleep 0.1
done
xen-init-dom0 >/var/log/xen/xen-init-dom0.log 2>&1 || fatal "xen-init-dom0 failed: $(cat /var/log/xen/xen-init-dom0.log)"
xenconsoled --log=all --log-dir=/var/log/xen/console --pid-file=/var/run/xenconsoled.pid \
	|| fatal "xenconsoled failed"

# The guest network: a bridge with dom0's address, no uplink (nothing leaves the nested VM).
ip link set lo up
brctl addbr xenbr0 || fatal "brctl addbr failed"

brctl setfd xenbr0 0 2>/dev/null
ip addr add "$DOM0_IP/24" dev xenbr0 || fatal "cannot set the dom0 address"
ip link set xenbr0 up

xl info >/var/log/xen/xl-info.log 2>&1 || fatal "xl info failed: $(cat /var/log/xen/xl-info.log)"
echo "@@DOM0-READY $(uptime_s) $(grep -E '^virt_caps' /var/log/xen/xl-info.log | tr -s ' ')"

status=0
for s in $SCENARIOS; do
	script=/payload/scenarios/$s.sh
	[ -f "$script" ] || script=$s
	if [ ! -f "$script" ]; then
		echo "@@RESULT $s fail no such scenario script"
		status=1
		continue
	fi
	sh "$script"
	rc=$?
	[ $rc -eq 0 ] || status=$rc
	if [ $rc -ne 0 ] && [ "$STOP_ON_FAILURE" = 1 ]; then
		break
	fi
done

if [ $status -eq 0 ] && [ "$FULL_LOGS" != 1 ]; then
	harness_dump_logs consoles
else
	harness_dump_logs
fi
echo "@@DONE $status"
poweroff_now
