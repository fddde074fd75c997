# Linux PV guest scenario (the baseline): create with vif + loop disk, xenstore states Connected,
# ping from dom0, disk content seen by the guest, clean `xl shutdown`.
. /payload/lib.sh
NAME=linux-pv
CFG=$XL_CONFIG_DIR/linux-pv.cfg
GUEST_IP=10.0.0.3
DISK=$HARNESS_STATE/linux-disk.img
rc=0

mkdir -p "$HARNESS_STATE"
# A disk with known random content: the guest reports the md5 of its first MiB.
dd if=/dev/urandom of="$DISK" bs=1M count=1 2>/dev/null
truncate -s 16M "$DISK"
install_cfg /payload/xl/linux-pv.cfg "$CFG" "$DISK"
want_md5=$(dd if="$DISK" bs=1M count=1 2>/dev/null | md5sum | cut -d' ' -f1)

begin linux-create
t0=$(uptime_s)
if ! xl_create_logged "$NAME" "$CFG"; then
	fail linux-create "xl create failed: $(tail -n 5 /var/log/xen/create-$NAME.log | tr '\n' ' ')"
	exit 1
fi
t_created=$(elapsed "$t0")
if wait_until 120 console_has "$NAME" '@@GUEST-READY'; then
	t_ready=$(elapsed "$t0")
	pass linux-create "xl create returned after ${t_created} s, guest ready after ${t_ready} s"
	figure linux_xl_create_s "$t_created" s
	figure linux_create_to_ready_s "$t_ready" s
else
	fail linux-create "guest not ready within 120 s (xl create took ${t_created} s)"
	xl destroy "$NAME" >/dev/null 2>&1
	exit 1
fi

check_states linux-xenstore-connected "$NAME" || rc=1

begin linux-ping
if ping -c 3 -W 5 "$GUEST_IP" >/tmp/ping.log 2>&1; then
	pass linux-ping "$(tail -n 1 /tmp/ping.log)"
else
	fail linux-ping "$(tail -n 2 /tmp/ping.log | tr '\n' ' ')"
	rc=1
fi

begin linux-disk-read
got_md5=$(grep -o 'disk-md5=[0-9a-f]*' "$(console_log "$NAME")" | head -n 1 | cut -d= -f2)
if [ "$got_md5" = "$want_md5" ]; then
	pass linux-disk-read "guest read md5 $got_md5 from xvda"
else
	fail linux-disk-read "guest read md5 '$got_md5', dom0 wrote $want_md5"
	rc=1
fi

begin linux-http
t1=$(uptime_s)
if timeout 30 wget -q -O /tmp/linux-http.out "http://$GUEST_IP/" && grep -q linux-guest /tmp/linux-http.out; then
	pass linux-http "busybox httpd answered in $(elapsed "$t1") s"
else
	fail linux-http "no answer from http://$GUEST_IP/"
	rc=1
fi

begin linux-shutdown
t2=$(uptime_s)
if xl_shutdown_wait "$NAME" 60; then
	pass linux-shutdown "domain gone $(elapsed "$t2") s after xl shutdown"
else
	fail linux-shutdown "domain not gone after xl shutdown -w (60 s) + 30 s"
	xl destroy "$NAME" >/dev/null 2>&1
	rc=1
fi
exit $rc
