#!/bin/busybox sh
# /init of the tiny Linux PV guest started by the harness (the baseline guest).
#
# Reads `ip=ADDR/PREFIX` and `gw=ADDR` from the kernel command line (the same convention as the
# unikernel), loads netfront and blkfront, configures eth0, reads its disk and reports on hvc0:
#   @@GUEST-READY ip=<addr> disk-md5=<md5 of the first MiB of /dev/xvda>
# `xl shutdown` makes the kernel run /sbin/poweroff, which powers off at once.
/bin/busybox mkdir -p /proc /sys /dev /tmp
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
export PATH=/sbin:/bin

for m in $(cat /etc/modules-order); do
	insmod "/lib/modules/$m" || echo "@@GUEST-ERROR insmod $m"
done

ip=
gw=
netwatch=
wdt=
hang_after=
for kv in $(cat /proc/cmdline); do
	case "$kv" in
	ip=*) ip=${kv#ip=} ;;
	gw=*) gw=${kv#gw=} ;;
	netwatch=*) netwatch=${kv#netwatch=} ;;
	wdt=*) wdt=${kv#wdt=} ;;
	hang_after=*) hang_after=${kv#hang_after=} ;;
	esac
done

ip link set lo up
n=0
while [ ! -e /sys/class/net/eth0 ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
configure_eth0() {
	ip addr add "$ip" dev eth0 || echo "@@GUEST-ERROR bad ip=$ip"
	ip link set eth0 up
	[ -n "$gw" ] && ip route add default via "$gw"
}
[ -n "$ip" ] && configure_eth0
n=0
while [ ! -b /dev/xvda ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
md5=$(dd if=/dev/xvda bs=1M count=1 2>/dev/null | md5sum | cut -d' ' -f1)

# Serve a trivial HTTP page so dom0 can measure a TCP round trip against the baseline guest, and
# /cgi-bin/w?N, which writes the request body into 4 KiB block N of /dev/xvda and fsyncs it
# before answering 200: the write load of the HA and hot-plug scenarios (ha.sh, hotplug.sh). A
# body shorter than its Content-Length (the client went away mid-request) is refused, never
# written in part. `writer=` on the ready line tells dom0 this initramfs has the CGI.
mkdir -p /www/cgi-bin && echo "linux-guest" >/www/index.html
cat >/www/cgi-bin/w <<'EOF'
#!/bin/sh
n=$QUERY_STRING
answer() { printf 'Status: %s\r\nContent-Type: text/plain\r\n\r\n%s\n' "$1" "$2"; exit 0; }
case "$n" in '' | *[!0-9]*) answer '400 Bad Request' 'bad block' ;; esac
len=${CONTENT_LENGTH:-0}
case "$len" in '' | *[!0-9]*) answer '400 Bad Request' 'bad length' ;; esac
[ "$len" -gt 0 ] && [ "$len" -le 4096 ] || answer '400 Bad Request' 'length not 1..4096'
# No disk (detached, hotplug.sh): refuse, rather than let dd create a regular file /dev/xvda.
[ -b /dev/xvda ] || answer '503 Service Unavailable' 'no disk'
f=/tmp/body.$$
head -c "$len" >$f
got=$(wc -c <$f)
[ "$got" -eq "$len" ] || { rm -f $f; answer '400 Bad Request' "short body ($got of $len)"; }
if dd if=$f of=/dev/xvda bs=4096 seek="$n" count=1 conv=notrunc,fsync 2>/dev/null; then
	rm -f $f
	answer '200 OK' ok
fi
rm -f $f
answer '500 Internal Server Error' 'dd failed'
EOF
chmod +x /www/cgi-bin/w
echo "@@GUEST-READY ip=$ip disk-md5=$md5 writer=/cgi-bin/w"
# Optional additions (cargo xtask bench --xen adds tests/harness/tools/guest-hook.sh here).
[ -f /etc/guest-hook.sh ] && . /etc/guest-hook.sh
httpd -p 80 -h /www

# wdt=SECONDS (watchdog.sh): Xen's watchdog through xen_wdt, fed every second by busybox's
# watchdog daemon, as a Linux user arms it. hang_after=SECONDS: at that uptime the guest stops
# its watchdog daemon and its httpd (kill -STOP: the service hangs, the kernel still runs), so
# Xen's watchdog fires and xl (on_watchdog="restart") restarts the domain.
if [ -n "$wdt" ]; then
	if watchdog -T "$wdt" -t 1 /dev/watchdog; then
		echo "@@GUEST-WATCHDOG armed, ${wdt} s"
	else
		echo "@@GUEST-ERROR watchdog -T $wdt /dev/watchdog failed"
	fi
fi
if [ -n "$hang_after" ]; then
	(
		up=$(cut -d. -f1 /proc/uptime)
		[ "$up" -lt "$hang_after" ] && sleep $((hang_after - up))
		echo "@@GUEST-HANG hang_after=$hang_after: stopping the watchdog daemon and httpd"
		kill -STOP $(pidof watchdog) $(pidof httpd)
	) &
fi

# netwatch=1 (hotplug.sh): an eth0 that comes back (`xl network-detach` + `xl network-attach`: a
# new netfront device, a new ifindex) is configured like at boot, as a network manager would on
# the kernel's event; here checked every 0.1 s (the kernel has no uevent helper; shell builtins
# only, apart from sleep).
if [ "$netwatch" = 1 ] && [ -n "$ip" ]; then
	(
		cur=
		read -r cur </sys/class/net/eth0/ifindex
		while sleep 0.1; do
			idx=
			[ -e /sys/class/net/eth0/ifindex ] && read -r idx </sys/class/net/eth0/ifindex
			if [ -n "$idx" ] && [ "$idx" != "$cur" ]; then
				configure_eth0
				cur=$idx
				echo "@@GUEST-NET eth0 back (ifindex $idx), configured again"
			fi
		done
	) &
fi

while :; do sleep 3600; done
