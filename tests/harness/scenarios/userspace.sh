# The /dev/xen services and the userspace block frontend (tools/xen-blk) in dom0.
#
# Where the frontend runs: in dom0, on a vbd attached to dom0 itself (`xl block-attach 0`). Xen
# and libxl allow a domain to be the frontend of a backend in the same domain (libxl's own "local
# attach" of disks for bootloaders does this), dom0 has every /dev/xen device, and the harness
# dom0 does not load xen-blkfront, so no kernel driver claims the vbd (checked below). A Linux
# domU would additionally need the programs and gntalloc/evtchn in its initramfs and a way to
# get the data out for the comparisons; here the backing file is right beside the frontend.
#
# Steps:
#   userspace-devices   xen-dev-check: xenstore over /dev/xen/xenbus against the real xenstored,
#                       evtchn loopback, gntalloc -> gntdev mapping, unmap notification
#   userspace-blkfront  xen-blk on xvdb of dom0: data both ways (sha256 against the backing file),
#                       flush, discard (the range reads back as zeros from the file), bench figures,
#                       and after detach no grant (Xen's 'g' key) or event channel ('e' key) of
#                       dom0 is left, and the vbd is gone from xenstore.
#   userspace-netfront  xen-net on a vif of dom0: ping both ways, TCP both ways (sha256), a server,
#                       and after detach no grant or event channel of dom0 is left.
#   c-abi               the C ABI (libxenblk.a + cbindgen header) from gcc-built programs: the
#                       block frontend on xvdc, the network frontend on a second vif (ARP, pings
#                       with payloads compared, a raw-segment TCP exchange with nc checked by
#                       sha256, pings from dom0 answered), nothing left behind.
#   blkfront-kernel-vs-userspace   QD1 figures of xen-blk and of the kernel's xen-blkfront.
. /payload/lib.sh
B=/payload/bin
# A tmpfs of its own for the disk images and work files: dom0's root is small (a full root makes
# every write, the programs' output included, fail).
W=/tmp/userspace
mkdir -p $W
grep -q " $W tmpfs " /proc/mounts || mount -t tmpfs -o size=200m tmpfs $W
status=0
# drop_disk FILE: detaches FILE's loop devices and deletes it.
drop_disk() {
	for _l in $(/usr/sbin/losetup -j "$1" | cut -d: -f1); do /usr/sbin/losetup -d "$_l"; done
	rm -f "$1"
}

begin userspace-devices
if timeout 120 $B/xen-dev-check --domid 0 >$W/devcheck.log 2>&1; then
	pass userspace-devices "$(tr '\n' ';' <$W/devcheck.log)"
else
	fail userspace-devices "status $?: $(tr '\n' ';' <$W/devcheck.log)"
	status=1
fi

VDEV=xvdb
ID=51728 # 202 << 8 | 16
FRONT=/local/domain/0/device/vbd/$ID
BACK=/local/domain/0/backend/vbd/0/$ID
DISK=$W/userspace-disk.img
XB="timeout 300 $B/xen-blk --vbd $ID --timeout 60"
MIB=1048576
BS=512

# Active (mapped) grant entries, from the last dump of Xen's 'g' debug key: one "[ref] ..." line
# each, ref in hex. dom0 is the only domain during this scenario, so they are all dom0's grants
# (the dump can be longer than Xen's console ring, whose start may then be gone).
d0_grants() {
	xl debug-keys g >/dev/null 2>&1
	xl dmesg 2>/dev/null >$W/g.log
	awk '/gnttab_usage_print_all \[/ { n = 0 }
		/\[ *(0x)?[0-9a-f]+\] +[0-9]+ +0x[0-9a-f]+ +0x/ { n++ }
		END { print n + 0 }' $W/g.log
}
# dom0's event channels in use, from the last dump of Xen's 'e' debug key.
d0_ports() {
	xl debug-keys e >/dev/null 2>&1
	xl dmesg 2>/dev/null >$W/e.log
	awk '/Event channel information for domain/ { d0 = ($0 ~ /domain 0:/); if (d0) n = 0 }
		d0 && /^\(XEN\) +[0-9]+ \[/ { n++ }
		END { print n + 0 }' $W/e.log
}
blk() { # blk NAME ARGS...: runs xen-blk, its output in $W/NAME.log
	_n=$1
	shift
	$XB -v "$@" >$W/$_n.log 2>&1
}
note() { echo "$*" >>$W/steps.log; }
bfail() {
	fail userspace-blkfront "$*"
	dump_file xen-blk-steps $W/steps.log
	for f in $W/*.log; do dump_file "$(basename "$f" .log)" "$f" 40; done
	timeout 120 xl block-detach 0 $VDEV >/dev/null 2>&1
	exit 1
}

begin userspace-blkfront
: >$W/steps.log
[ -d /sys/module/xen_blkfront ] && bfail "the kernel's xen-blkfront is loaded in dom0; it would claim the vbd"
g0=$(d0_grants)
p0=$(d0_ports)
note "before attach: dom0 active grants $g0, dom0 event channels $p0"
make_disk "$DISK" 64
target=$(disk_target "$DISK")
t0=$(uptime_s)
xl block-attach 0 "format=raw,vdev=$VDEV,access=rw,target=$target" >$W/attach.log 2>&1 ||
	bfail "xl block-attach 0 failed: $(tail -n 3 $W/attach.log)"
wait_until 30 sh -c "[ \"\$(xenstore-read $BACK/state 2>/dev/null)\" = 2 ]" ||
	bfail "backend not in InitWait: $(xenstore-read $BACK/state 2>&1)"
note "attached in $(elapsed "$t0") s: front state $(xenstore-read $FRONT/state) back state $(xenstore-read $BACK/state)"
if [ -e /sys/bus/xen/devices/vbd-$ID/driver ]; then
	bfail "a kernel driver claimed vbd-$ID: $(readlink /sys/bus/xen/devices/vbd-$ID/driver)"
fi
note "no kernel driver bound to vbd-$ID"

blk list list || bfail "xen-blk list: $(cat $W/list.log)"
note "list: $(tr '\n' ' ' <$W/list.log)"
blk info info || bfail "xen-blk info: $(tail -n 3 $W/info.log)"
note "info: $(grep -v '^xen-blk' $W/info.log | tr '\n' ';')"

# 1. Userspace writes 4 MiB at 1 MiB; dom0 reads the backing file.
random_file $W/a 4194304
t=$(uptime_s)
blk write write --lba $((MIB / BS)) -i $W/a --flush || bfail "xen-blk write: $(tail -n 3 $W/write.log)"
tw=$(elapsed "$t")
dd if="$DISK" of=$W/a.back bs=$MIB skip=1 count=4 2>/dev/null
[ "$(sha $W/a)" = "$(sha $W/a.back)" ] || bfail "written through userspace, the backing file differs"
note "userspace write 4 MiB ($tw s incl. attach/detach) = backing file: sha256 $(sha $W/a)"

# 2. dom0 writes 4 MiB at 16 MiB into the file; userspace reads and verifies it.
random_file $W/b 4194304
dd if=$W/b of="$DISK" bs=$MIB seek=16 conv=notrunc 2>/dev/null
sync
blk read read --lba $((16 * MIB / BS)) --blocks $((4 * MIB / BS)) -o $W/b.read || bfail "xen-blk read: $(tail -n 3 $W/read.log)"
[ "$(sha $W/b)" = "$(sha $W/b.read)" ] || bfail "written in dom0, read through userspace: different data"
blk verify verify --lba $((16 * MIB / BS)) -i $W/b || bfail "xen-blk verify: $(tail -n 3 $W/verify.log)"
# verify must also fail on wrong data (exit status 1).
$XB verify --lba $((16 * MIB / BS)) -i $W/a >$W/verify-neg.log 2>&1
[ $? -eq 1 ] || bfail "xen-blk verify accepted wrong data: $(cat $W/verify-neg.log)"
note "dom0 write 4 MiB = userspace read: sha256 $(sha $W/b); verify passes, and fails on other data"

# 3. Flush and discard. Discard 1 MiB at 2 MiB (inside what step 1 wrote): the loop device punches
#    a hole, so the backing file reads zeros there.
blk flush flush || bfail "xen-blk flush: $(tail -n 3 $W/flush.log)"
note "flush: $(grep -v '^xen-blk' $W/flush.log)"
if grep -q '^discard no' $W/info.log; then
	bfail "the backend offers no discard: $(grep discard $W/info.log)"
fi
blk discard discard --lba $((2 * MIB / BS)) --blocks $((MIB / BS)) || bfail "xen-blk discard: $(tail -n 3 $W/discard.log)"
dd if="$DISK" of=$W/d.back bs=$MIB skip=2 count=1 2>/dev/null
head -c $MIB /dev/zero >$W/zero
[ "$(sha $W/d.back)" = "$(sha $W/zero)" ] || bfail "after discard the backing file range is not zero"
head -c $MIB $W/a.back >$W/a1
dd if="$DISK" of=$W/a1.back bs=$MIB skip=1 count=1 2>/dev/null
[ "$(sha $W/a1)" = "$(sha $W/a1.back)" ] || bfail "discard touched the MiB before its range"
note "discard of 1 MiB: the backing file reads zeros there, the MiB before is intact"

# 4. Bench on 16 MiB at 32 MiB.
blk bench bench --lba $((32 * MIB / BS)) --mib 16 --seconds 3 || bfail "xen-blk bench: $(tail -n 3 $W/bench.log)"
note "bench: $(grep -v '^xen-blk' $W/bench.log | tr '\n' ';')"

# 5. A xen-blk killed (SIGKILL) while Connected leaves the frontend Connected and blkback mapping
#    its pages (the kernel keeps them until then). The next run closes the stale frontend first,
#    then connects; the leak checks below include what the killed one had.
$B/xen-blk --vbd $ID bench --lba $((32 * MIB / BS)) --mib 16 --seconds 60 >$W/killed.log 2>&1 &
kpid=$!
wait_until 60 sh -c "[ \"\$(xenstore-read $FRONT/state 2>/dev/null)\" = 4 ]" ||
	bfail "the run to be killed never connected: $(tail -n 3 $W/killed.log)"
# While it is Connected Xen must show dom0's extra grants and ports: this proves that the
# before/after counts below can see a leak.
gd=$(d0_grants)
pd=$(d0_ports)
note "while a xen-blk run was attached: dom0 active grants $gd, event channels $pd"
kill -9 $kpid
wait $kpid 2>/dev/null
[ "$gd" -gt "$g0" ] && [ "$pd" -gt "$p0" ] ||
	bfail "while attached Xen showed grants $gd (before $g0) and ports $pd (before $p0)"
note "killed xen-blk while Connected: front state $(xenstore-read $FRONT/state) back $(xenstore-read $BACK/state)"
blk after-kill info || bfail "xen-blk after a killed run: $(tail -n 3 $W/after-kill.log)"
grep -q 'left in state' $W/after-kill.log || bfail "the next run did not see the stale frontend: $(head -n 3 $W/after-kill.log)"
note "the next run reset the stale frontend and attached: $(grep -c . $W/after-kill.log) lines of info"

# 6. Nothing left behind: each run detached (xen-blk checks its own counts, see -v output);
#    Xen's view of dom0 afterwards, then detach the vbd.
grep -h 'still held' $W/*.log | sort | uniq -c >$W/held.txt
g1=$(d0_grants)
p1=$(d0_ports)
timeout 120 xl block-detach 0 $VDEV >$W/detach.log 2>&1 || note "xl block-detach: $(tail -n 2 $W/detach.log | tr '\n' ' ')"
wait_until 30 sh -c "! xenstore-exists $FRONT 2>/dev/null && ! xenstore-exists $BACK 2>/dev/null" ||
	bfail "the vbd is still in xenstore after detach: front $(xenstore-read $FRONT/state 2>&1) back $(xenstore-read $BACK/state 2>&1)"
g2=$(d0_grants)
p2=$(d0_ports)
note "after the runs: dom0 active grants $g1, event channels $p1; after detach: $g2, $p2"
note "xen-blk's own counts at detach: $(tr '\n' ' ' <$W/held.txt)"
[ "$g1" = "$g0" ] && [ "$g2" = "$g0" ] || bfail "dom0 grants before $g0, after runs $g1, after detach $g2"
[ "$p1" = "$p0" ] && [ "$p2" = "$p0" ] || bfail "dom0 event channels before $p0, after runs $p1, after detach $p2"
grep -v ' 0 grant(s), 0 event channel(s) still held' $W/held.txt | grep -q . &&
	bfail "a xen-blk run held grants or ports at detach: $(cat $W/held.txt)"

for k in seq_write seq_read; do
	v=$(awk -v k=$k '$1 == k { print $2 }' $W/bench.log)
	[ -n "$v" ] && figure "userspace_blk_${k}_mib_s" "$v" MiB/s
done
for k in seq_read_4k_qd1 rand_read_4k_qd1 rand_read_4k_qd32; do
	v=$(awk -v k=$k '$1 == k { print $2 }' $W/bench.log)
	[ -n "$v" ] && figure "userspace_blk_${k}_iops" "$v" IOPS
done
pass userspace-blkfront "$(tr '\n' ';' <$W/steps.log)"
drop_disk "$DISK"
rm -f $W/a $W/b $W/*.back $W/b.read $W/a1 $W/zero

# userspace-netfront: a vif attached to dom0 itself (`xl network-attach 0`, bridge xenbr0, as for
# the vbds above: dom0 has every /dev/xen device, and the harness dom0 never loads the kernel's
# xen-netfront, so no driver claims the vif; checked below). netback's vif0.N joins xenbr0, so
# the userspace netfront (xen-net, smoltcp at 10.0.0.50) talks to dom0's 10.0.0.1 over the real
# netback: xen-net pings dom0; dom0 pings xen-net; TCP 4 MiB each way (xen-net as a client in
# both directions against busybox nc, and as a server), sha256-checked; after detach no grant or
# event channel of dom0 is left and the vif is gone from xenstore.
NET_IP=10.0.0.50
NET_MAC=00:16:3e:5e:00:01
begin userspace-netfront
: >$W/net-steps.log
nnote() { echo "$*" >>$W/net-steps.log; }
nfail() {
	fail userspace-netfront "$*"
	dump_file xen-net-steps $W/net-steps.log
	for f in $W/net-*.log; do dump_file "$(basename "$f" .log)" "$f" 40; done
	[ -n "$VIF" ] && timeout 120 xl network-detach 0 "$VIF" >/dev/null 2>&1
	exit 1
}
[ -d /sys/module/xen_netfront ] && nfail "the kernel's xen-netfront is loaded in dom0; it would claim the vif"
VIF=
ng0=$(d0_grants)
np0=$(d0_ports)
t0=$(uptime_s)
xl network-attach 0 bridge=xenbr0 mac=$NET_MAC >$W/net-attach.log 2>&1 ||
	nfail "xl network-attach 0 failed: $(tail -n 3 $W/net-attach.log)"
VIF=$(xenstore-list /local/domain/0/device/vif 2>/dev/null | tail -n 1)
[ -n "$VIF" ] || nfail "no vif in dom0's xenstore home after network-attach"
NFRONT=/local/domain/0/device/vif/$VIF
NBACK=/local/domain/0/backend/vif/0/$VIF
wait_until 30 sh -c "[ \"\$(xenstore-read $NBACK/state 2>/dev/null)\" = 2 ]" ||
	nfail "backend not in InitWait: $(xenstore-read $NBACK/state 2>&1)"
nnote "attached vif $VIF in $(elapsed "$t0") s: front state $(xenstore-read $NFRONT/state) back state $(xenstore-read $NBACK/state)"
[ -e /sys/bus/xen/devices/vif-$VIF/driver ] &&
	nfail "a kernel driver claimed vif-$VIF: $(readlink /sys/bus/xen/devices/vif-$VIF/driver)"
nnote "no kernel driver bound to vif-$VIF"
XN="timeout 300 $B/xen-net --vif $VIF --timeout 120 -v"
net() { # net NAME ARGS...: runs xen-net, its output in $W/net-NAME.log
	_n=$1
	shift
	$XN "$@" >$W/net-$_n.log 2>&1
}
net info info || nfail "xen-net info: $(tail -n 3 $W/net-info.log)"
grep -q "^mac $NET_MAC" $W/net-info.log || nfail "xen-net info shows another MAC: $(grep mac $W/net-info.log)"
nnote "info: $(grep -v '^xen-net' $W/net-info.log | tr '\n' ';')"

# 1. xen-net pings dom0 (every request answered).
net ping ping --ip $NET_IP/24 $DOM0_IP --count 5 || nfail "xen-net ping: $(tail -n 3 $W/net-ping.log)"
grep -q 'ping: sent 5 received 5 ' $W/net-ping.log || nfail "xen-net ping: $(grep 'ping:' $W/net-ping.log)"
nnote "$(grep 'ping:' $W/net-ping.log)"

# 2. xen-net uploads 4 MiB to dom0 (busybox nc -l saves it; it exits when xen-net closes).
random_file $W/n1 4194304
nc -l -p 7001 >$W/n1.got 2>$W/net-nc1.log &
ncpid=$!
wait_until 10 sh -c "netstat -ltn 2>/dev/null | grep -q ':7001 '" || nfail "nc -l -p 7001 is not listening"
net upload tcp --ip $NET_IP/24 --connect $DOM0_IP:7001 --send $W/n1 || nfail "xen-net upload: $(tail -n 3 $W/net-upload.log)"
wait $ncpid
[ "$(sha $W/n1)" = "$(sha $W/n1.got)" ] || nfail "uploaded through the userspace netfront, dom0 got other data ($(wc -c <$W/n1.got) bytes)"
nnote "upload 4 MiB, sha256 equal: $(grep '^tcp:' $W/net-upload.log)"

# 3. dom0 sends 4 MiB to xen-net (nc -l sends the file and closes).
random_file $W/n2 4194304
nc -l -p 7002 <$W/n2 2>$W/net-nc2.log &
ncpid=$!
wait_until 10 sh -c "netstat -ltn 2>/dev/null | grep -q ':7002 '" || nfail "nc -l -p 7002 is not listening"
net download tcp --ip $NET_IP/24 --connect $DOM0_IP:7002 --recv $W/n2.got || nfail "xen-net download: $(tail -n 3 $W/net-download.log)"
wait $ncpid
[ "$(sha $W/n2)" = "$(sha $W/n2.got)" ] || nfail "sent by dom0, xen-net saved other data ($(wc -c <$W/n2.got) bytes)"
nnote "download 4 MiB, sha256 equal: $(grep '^tcp:' $W/net-download.log)"

# 4. xen-net as a server: dom0 pings it (smoltcp answers), then fetches a file from it with nc.
random_file $W/n3 1048576
$XN tcp --ip $NET_IP/24 --listen 7003 --send $W/n3 >$W/net-server.log 2>&1 &
srvpid=$!
# xen-net connects its netfront first: wait until it answers at all, then count 3 of 3.
wait_until 60 ping -c 1 -W 2 $NET_IP >/dev/null 2>&1 || nfail "xen-net's server never answered a ping"
ping -c 3 -w 60 $NET_IP >$W/net-dom0ping.log 2>&1 || nfail "dom0 could not ping xen-net: $(tail -n 2 $W/net-dom0ping.log)"
nnote "dom0 pinged xen-net: $(grep -E 'transmitted|round-trip' $W/net-dom0ping.log | tr '\n' ' ')"
nc $NET_IP 7003 </dev/null >$W/n3.got 2>$W/net-nc3.log || nfail "nc to xen-net's server: $(cat $W/net-nc3.log)"
wait $srvpid || nfail "xen-net server (status $?): $(tail -n 3 $W/net-server.log)"
[ "$(sha $W/n3)" = "$(sha $W/n3.got)" ] || nfail "fetched from xen-net's server, dom0 got other data ($(wc -c <$W/n3.got) bytes)"
nnote "server: dom0 fetched 1 MiB, sha256 equal: $(grep '^tcp:' $W/net-server.log)"

# 5. Nothing left behind: every run's own counts, Xen's view of dom0, then detach.
grep -h 'still held' $W/net-*.log | sed 's/;.*//' | sort | uniq -c >$W/net-held.txt
ng1=$(d0_grants)
np1=$(d0_ports)
timeout 120 xl network-detach 0 $VIF >$W/net-detach.log 2>&1 || nnote "xl network-detach: $(tail -n 2 $W/net-detach.log | tr '\n' ' ')"
wait_until 30 sh -c "! xenstore-exists $NFRONT 2>/dev/null && ! xenstore-exists $NBACK 2>/dev/null" ||
	nfail "the vif is still in xenstore after detach: front $(xenstore-read $NFRONT/state 2>&1) back $(xenstore-read $NBACK/state 2>&1)"
VIF=
ng2=$(d0_grants)
np2=$(d0_ports)
nnote "dom0 active grants before $ng0, after the runs $ng1, after detach $ng2; event channels $np0, $np1, $np2"
nnote "xen-net's own counts at detach: $(tr '\n' ' ' <$W/net-held.txt)"
[ "$ng1" = "$ng0" ] && [ "$ng2" = "$ng0" ] || nfail "dom0 grants before $ng0, after runs $ng1, after detach $ng2"
[ "$np1" = "$np0" ] && [ "$np2" = "$np0" ] || nfail "dom0 event channels before $np0, after runs $np1, after detach $np2"
grep -q . $W/net-held.txt || nfail "no xen-net run reported its counts at detach"
grep -v ' 0 grant(s), 0 event channel(s) still held' $W/net-held.txt | grep -q . &&
	nfail "a xen-net run held grants or ports at detach: $(cat $W/net-held.txt)"
mibs() { sed -n 's/.* mib_s \([0-9.]*\).*/\1/p' "$1"; }
figure userspace_net_tcp_upload_mib_s "$(mibs $W/net-upload.log)" MiB/s
figure userspace_net_tcp_download_mib_s "$(mibs $W/net-download.log)" MiB/s
figure userspace_net_ping_avg_rtt_ms "$(sed -n 's/.*avg_rtt_ms \([0-9.]*\).*/\1/p' $W/net-ping.log)" ms
pass userspace-netfront "$(tr '\n' ';' <$W/net-steps.log)"
rm -f $W/n1 $W/n2 $W/n3 $W/n1.got $W/n2.got $W/n3.got

# c-abi: the C ABI (libxenblk.a + the cbindgen header xenblk.h, Linux flavour) from two programs
# built with gcc (tools/xen-blk-capi/c/).
#   block: xenblk-demo on a second vbd of dom0 writes 1 MiB at 2 MiB, flushes, reads back,
#          discards, detaches; dom0 compares the backing file.
#   net:   xennet-demo on a second vif of dom0 (as in userspace-netfront) sends raw frames: ARP
#          for dom0's address (the reply must name xenbr0's MAC), three pings of dom0 with
#          1024-byte random payloads (echoed payloads compared), a TCP exchange with busybox nc
#          written with raw segments (64 KiB each way, sha256-compared in dom0), then it answers
#          ARP and three pings from dom0.
#   Afterwards no grant or event channel of dom0 is left, and both devices are gone from xenstore.
begin c-abi
VDEV2=xvdc
ID2=51744 # 202 << 8 | 32
FRONT2=/local/domain/0/device/vbd/$ID2
BACK2=/local/domain/0/backend/vbd/0/$ID2
DISK2=$W/c-abi-disk.img
CIP=10.0.0.51
CMAC=00:16:3e:5e:00:02
CVIF=
ncpid=
dpid=
: >$W/cabi-steps.log
cnote() { echo "$*" >>$W/cabi-steps.log; }
cfail() {
	fail c-abi "$*"
	dump_file c-abi-steps $W/cabi-steps.log
	dump_file c-abi-blk $W/cabi.log
	dump_file c-abi-net $W/cabi-net.log
	dump_file c-abi-nc $W/cabi-nc.log
	dump_file c-abi-ping $W/cabi-ping.log
	[ -n "$dpid" ] && kill "$dpid" 2>/dev/null
	[ -n "$ncpid" ] && kill "$ncpid" 2>/dev/null
	timeout 120 xl block-detach 0 $VDEV2 >/dev/null 2>&1
	[ -n "$CVIF" ] && timeout 120 xl network-detach 0 "$CVIF" >/dev/null 2>&1
	exit 1
}
make_disk "$DISK2" 16
xl block-attach 0 "format=raw,vdev=$VDEV2,access=rw,target=$(disk_target "$DISK2")" >$W/attach2.log 2>&1 ||
	cfail "xl block-attach 0 failed: $(tail -n 3 $W/attach2.log)"
wait_until 30 sh -c "[ \"\$(xenstore-read $BACK2/state 2>/dev/null)\" = 2 ]" ||
	cfail "backend not in InitWait"
random_file $W/c 1048576
timeout 300 $B/xenblk-demo $ID2 $((2 * MIB / BS)) $W/c >$W/cabi.log 2>&1 ||
	cfail "xenblk-demo failed: $(tail -n 3 $W/cabi.log | tr '\n' ' ')"
dd if="$DISK2" of=$W/c.back bs=$MIB skip=2 count=1 2>/dev/null
[ "$(sha $W/c)" = "$(sha $W/c.back)" ] || cfail "the backing file differs from what the C program wrote"
cnote "blk: $(tr '\n' ';' <$W/cabi.log) backing file sha256 $(sha $W/c) matches"
timeout 120 xl block-detach 0 $VDEV2 >/dev/null 2>&1
wait_until 30 sh -c "! xenstore-exists $FRONT2 2>/dev/null && ! xenstore-exists $BACK2 2>/dev/null" ||
	cfail "the vbd is still in xenstore after detach"
drop_disk "$DISK2"

# The network half. The vif is the one whose mac is CMAC (ids are not reused in order).
xl network-attach 0 bridge=xenbr0 mac=$CMAC >$W/cabi-attach.log 2>&1 ||
	cfail "xl network-attach 0 failed: $(tail -n 3 $W/cabi-attach.log)"
for v in $(xenstore-list /local/domain/0/device/vif 2>/dev/null); do
	[ "$(xenstore-read /local/domain/0/device/vif/$v/mac 2>/dev/null)" = $CMAC ] && CVIF=$v
done
[ -n "$CVIF" ] || cfail "no vif with mac $CMAC in dom0's xenstore home after network-attach"
CFRONT=/local/domain/0/device/vif/$CVIF
CBACK=/local/domain/0/backend/vif/0/$CVIF
wait_until 30 sh -c "[ \"\$(xenstore-read $CBACK/state 2>/dev/null)\" = 2 ]" ||
	cfail "vif backend not in InitWait: $(xenstore-read $CBACK/state 2>&1)"
[ -e /sys/bus/xen/devices/vif-$CVIF/driver ] &&
	cfail "a kernel driver claimed vif-$CVIF: $(readlink /sys/bus/xen/devices/vif-$CVIF/driver)"
random_file $W/cn-out 65536
random_file $W/cn-in 65536
timeout 240 nc -l -p 7010 <$W/cn-in >$W/cn-out.got 2>$W/cabi-nc.log &
ncpid=$!
wait_until 10 sh -c "netstat -ltn 2>/dev/null | grep -q ':7010 '" || cfail "nc -l -p 7010 is not listening"
timeout 200 $B/xennet-demo $CVIF $CIP $DOM0_IP 7010 $W/cn-out $W/cn-in.got 3 >$W/cabi-net.log 2>&1 &
dpid=$!
wait_until 150 sh -c "grep -q '^serving' $W/cabi-net.log || ! grep -q '^State:.*[RSD]' /proc/$dpid/status 2>/dev/null"
grep -q '^serving' $W/cabi-net.log || cfail "xennet-demo ended or stalled before serving: $(tail -n 3 $W/cabi-net.log | tr '\n' ' ')"
ping -c 3 -w 60 $CIP >$W/cabi-ping.log 2>&1
pst=$?
wait $dpid
dst=$?
dpid=
# A failed run may never have connected: cfail stops nc then, rather than waiting for its timeout.
[ $dst = 0 ] || cfail "xennet-demo failed (status $dst): $(tail -n 3 $W/cabi-net.log | tr '\n' ' ')"
wait $ncpid
ncpid=
bmac=$(cat /sys/class/net/xenbr0/address)
grep -q "^$DOM0_IP is-at $bmac" $W/cabi-net.log ||
	cfail "the ARP reply does not name xenbr0's MAC $bmac: $(grep is-at $W/cabi-net.log)"
grep -q '^icmp: 3 of 3 echo replies' $W/cabi-net.log || cfail "pings from C: $(grep icmp $W/cabi-net.log)"
[ "$(sha $W/cn-out)" = "$(sha $W/cn-out.got)" ] ||
	cfail "sent over TCP from C, dom0's nc got other data ($(wc -c <$W/cn-out.got) bytes)"
[ "$(sha $W/cn-in)" = "$(sha $W/cn-in.got)" ] ||
	cfail "sent by dom0's nc, the C program saved other data ($(wc -c <$W/cn-in.got 2>/dev/null) bytes)"
[ $pst = 0 ] && grep -q '3 packets received' $W/cabi-ping.log ||
	cfail "dom0 pinging the C program (status $pst): $(grep -E 'transmitted|received' $W/cabi-ping.log)"
grep -q '^answered 3 echo request' $W/cabi-net.log || cfail "the C program answered: $(grep answered $W/cabi-net.log)"
grep -q '^closed' $W/cabi-net.log || cfail "xennet-demo did not close the device"
cnote "net: $(tr '\n' ';' <$W/cabi-net.log) TCP sha256 equal both ways (C->dom0 $(sha $W/cn-out), dom0->C $(sha $W/cn-in)); dom0 pinged C: $(grep -E 'received' $W/cabi-ping.log)"
timeout 120 xl network-detach 0 $CVIF >$W/cabi-detach.log 2>&1 || cnote "xl network-detach: $(tail -n 2 $W/cabi-detach.log | tr '\n' ' ')"
wait_until 30 sh -c "! xenstore-exists $CFRONT 2>/dev/null && ! xenstore-exists $CBACK 2>/dev/null" ||
	cfail "the vif is still in xenstore after detach: front $(xenstore-read $CFRONT/state 2>&1) back $(xenstore-read $CBACK/state 2>&1)"
CVIF=
g3=$(d0_grants)
p3=$(d0_ports)
[ "$g3" = "$g0" ] && [ "$p3" = "$p0" ] || cfail "after detach dom0 grants $g3 (before $g0), ports $p3 (before $p0)"
v=$(sed -n 's/.*avg rtt \([0-9.]*\) ms.*/\1/p' $W/cabi-net.log)
[ -n "$v" ] && figure cabi_net_icmp_1k_avg_rtt_ms "$v" ms
pass c-abi "$(tr '\n' ' ' <$W/cabi-steps.log) dom0 grants $g3 ports $p3 as before"
rm -f $W/c $W/c.back $W/cn-out $W/cn-in $W/cn-out.got $W/cn-in.got

# blkfront-kernel-vs-userspace: the same queue-depth-1 transfers through xen-blk (vbd xvdd) and
# through the kernel's xen-blkfront (a fresh vbd xvde, module loaded only now, so it claims only
# that one; O_DIRECT dd): sequential 256 KiB writes (+flush) and reads of 16 MiB, 4 KiB reads.
begin blkfront-kernel-vs-userspace
kfail() {
	fail blkfront-kernel-vs-userspace "$*"
	dump_file kernel-vs-userspace $W/kvu.log
	timeout 120 xl block-detach 0 xvdd >/dev/null 2>&1
	timeout 120 xl block-detach 0 xvde >/dev/null 2>&1
	exit 1
}
: >$W/kvu.log
attach_fresh() { # attach_fresh VDEV ID DISK
	make_disk "$3" 64
	xl block-attach 0 "format=raw,vdev=$1,access=rw,target=$(disk_target "$3")" >>$W/kvu.log 2>&1 || return 1
	wait_until 30 sh -c "[ \"\$(xenstore-read /local/domain/0/backend/vbd/0/$2/state 2>/dev/null)\" = 2 ]"
}
attach_fresh xvdd 51760 "$W/kvu-user.img" || kfail "attach xvdd"
timeout 300 $B/xen-blk --vbd 51760 bench --mib 16 --depth 1 --request-kib 256 --seconds 3 >$W/ubench.log 2>&1 ||
	kfail "xen-blk bench (status $?): $(tail -n 3 $W/ubench.log)"
cat $W/ubench.log >>$W/kvu.log
timeout 120 xl block-detach 0 xvdd >>$W/kvu.log 2>&1
drop_disk "$W/kvu-user.img"
attach_fresh xvde 51776 "$W/kvu-kernel.img" || kfail "attach xvde"
while read -r m; do
	[ -n "$m" ] && insmod "/payload/modules/$m" >>$W/kvu.log 2>&1
done </payload/modules/order
wait_until 60 sh -c "[ -b /dev/xvde ] && [ \"\$(xenstore-read /local/domain/0/device/vbd/51776/state 2>/dev/null)\" = 4 ]" ||
	kfail "the kernel's blkfront did not connect xvde"
random_file $W/k 16777216
t=$(uptime_s)
dd if=$W/k of=/dev/xvde bs=262144 oflag=direct conv=fsync 2>>$W/kvu.log || kfail "dd write"
kw=$(elapsed "$t")
t=$(uptime_s)
dd if=/dev/xvde of=$W/k.back bs=262144 count=64 iflag=direct 2>>$W/kvu.log || kfail "dd read"
kr=$(elapsed "$t")
[ "$(sha $W/k)" = "$(sha $W/k.back)" ] || kfail "kernel blkfront read back different data"
t=$(uptime_s)
dd if=/dev/xvde of=/dev/null bs=4096 count=1000 iflag=direct 2>>$W/kvu.log || kfail "dd 4k"
k4=$(elapsed "$t")
timeout 120 xl block-detach 0 xvde >>$W/kvu.log 2>&1
rmmod xen-blkfront >>$W/kvu.log 2>&1
drop_disk "$W/kvu-kernel.img"
rm -f $W/k $W/k.back
val() { awk -v k="$1" '$1 == k { print $2 }' $W/ubench.log; }
uw=$(val seq_write)
ur=$(val seq_read)
u4=$(val seq_read_4k_qd1)
kwm=$(awk -v t="$kw" 'BEGIN { printf "%.2f", 16 / t }')
krm=$(awk -v t="$kr" 'BEGIN { printf "%.2f", 16 / t }')
k4i=$(awk -v t="$k4" 'BEGIN { printf "%.0f", 1000 / t }')
figure kernel_blk_seq_write_qd1_mib_s "$kwm" MiB/s
figure kernel_blk_seq_read_qd1_mib_s "$krm" MiB/s
figure kernel_blk_read_4k_qd1_iops "$k4i" IOPS
figure userspace_blk_seq_write_qd1_mib_s "$uw" MiB/s
figure userspace_blk_seq_read_qd1_mib_s "$ur" MiB/s
figure userspace_blk_read_4k_qd1_iops "$u4" IOPS
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
figure userspace_vs_kernel_seq_write_ratio "$(ratio "$uw" "$kwm")" x
figure userspace_vs_kernel_seq_read_ratio "$(ratio "$ur" "$krm")" x
figure userspace_vs_kernel_read_4k_qd1_ratio "$(ratio "$u4" "$k4i")" x
pass blkfront-kernel-vs-userspace "QD1, 16 MiB: write userspace $uw kernel $kwm MiB/s; read userspace $ur kernel $krm MiB/s; 4 KiB reads userspace $u4 kernel $k4i IOPS"
exit $status
