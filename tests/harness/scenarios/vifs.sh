# Serving on every vif (issues 8, 12, 7 step 3): a unikernel booted with two vifs on two bridges
# (two subnets) answers HTTP and ping on both, with one store behind them; `xl network-detach`
# of vif 1 takes its interface down while vif 0 keeps serving; `xl network-attach` brings it back
# (noticed through the guest's watch on device/vif), announced by a gratuitous ARP and serving
# the same store; a vif that was never there at boot is noticed and served too.
. /payload/lib.sh
W=/tmp/vifs
mkdir -p $W
rc=0
NAME=uk-vifs
CFG=$XL_CONFIG_DIR/unikernel-vifs.cfg
CONS=$(console_log "$NAME")
IP0=10.0.0.6
IP1=10.0.1.2
IP2=10.0.2.2
MAC1=00:16:3e:00:01:01
MAC2=00:16:3e:00:01:02
IPROUTE=/usr/bin/ip
[ -x $IPROUTE ] || IPROUTE=/usr/sbin/ip

# Bridges xenbr1 (10.0.1.1/24) and xenbr2 (10.0.2.1/24) beside dom0-init's xenbr0.
for n in 1 2; do
	brctl addbr xenbr$n 2>/dev/null
	brctl setfd xenbr$n 0 2>/dev/null
	$IPROUTE addr add 10.0.$n.1/24 dev xenbr$n 2>/dev/null
	$IPROUTE link set xenbr$n up
	echo 1 >/proc/sys/net/ipv4/conf/xenbr$n/arp_accept
done
mkdir -p "$XL_CONFIG_DIR"
cp /payload/xl/unikernel-vifs.cfg "$CFG"

# answers IP: GET /stats on IP answers.
answers() { GUEST_IP=$1 HTTP_TIMEOUT=10 http_get /stats $W/stats-$1.json 2>/dev/null; }
silent() { ! GUEST_IP=$1 HTTP_TIMEOUT=3 http_get /stats $W/silent.json 2>/dev/null; }
pings() { ping -c 3 -W 3 "$1" >$W/ping-$1.log 2>&1 && grep -q ' 0% packet loss' $W/ping-$1.log; }
neigh_is() { $IPROUTE neigh show "$1" | grep -q "$2"; }
cons_has() { grep -qE "$1" "$CONS" 2>/dev/null; }
vif_ids() { xl network-list "$NAME" 2>/dev/null | awk 'NR > 1 { print $1 }' | tr '\n' ' '; }

# A client that GETs /stats on vif 0 twice a second while vifs come and go: every answer counts.
watch_vif0() {
	: >$W/bg.log
	while [ ! -f $W/bg.stop ]; do
		if GUEST_IP=$IP0 HTTP_TIMEOUT=20 http_get /stats $W/bg.json 2>/dev/null; then echo ok; else echo "fail $(uptime_s)"; fi >>$W/bg.log
		sleep 0.5
	done
}

domain_exists "$NAME" && xl destroy "$NAME" >/dev/null 2>&1

begin vifs-create
t0=$(uptime_s)
if ! xl_create_logged "$NAME" "$CFG"; then
	fail vifs-create "xl create failed: $(tail -n 5 /var/log/xen/create-$NAME.log | tr '\n' ' ')"
	exit 1
fi
if wait_until 120 answers $IP0; then
	pass vifs-create "two vifs ($(vif_ids)); first HTTP answer on $IP0 $(elapsed "$t0") s after xl create"
else
	fail vifs-create "no HTTP answer on $IP0 within 120 s; console: $(tail -n 5 "$CONS" | tr '\n' '|')"
	xl destroy "$NAME" >/dev/null 2>&1
	exit 1
fi

begin vifs-second-serves
bad=
wait_until 30 answers $IP1 || bad="$bad no-HTTP-on-$IP1"
random_file $W/v1 5000
code=$(GUEST_IP=$IP1 http_put via-vif1 $W/v1)
is_2xx "$code" || bad="$bad PUT-via-vif1=$code"
GUEST_IP=$IP0 http_get /kv/via-vif1 $W/v1.back && cmp -s $W/v1 $W/v1.back || bad="$bad not-read-back-via-vif0"
pings $IP0 || bad="$bad ping-$IP0:$(tail -n 1 $W/ping-$IP0.log)"
pings $IP1 || bad="$bad ping-$IP1:$(tail -n 1 $W/ping-$IP1.log)"
neigh_is $IP1 $MAC1 || bad="$bad arp-$IP1:$($IPROUTE neigh show $IP1)"
cons_has 'net: ready, serving http://10\.0\.1\.2:80/ on vif1' || bad="$bad no-ready-line-vif1"
grep -q '"ipv4_vif1":"10.0.1.2/24"' $W/stats-$IP0.json || bad="$bad no-ipv4_vif1-in-stats"
if [ -z "$bad" ]; then
	pass vifs-second-serves "HTTP and ping on $IP0 (vif0, xenbr0) and $IP1 (vif1, xenbr1); PUT via vif1 read back via vif0; $($IPROUTE neigh show $IP1)"
	figure vifs_ping_vif1_avg_ms "$(sed -n 's|.*min/avg/max = [0-9.]*/\([0-9.]*\)/.*|\1|p' $W/ping-$IP1.log)" ms
else
	fail vifs-second-serves "$bad; console: $(grep -E 'vif1|net:' "$CONS" | tail -n 5 | tr '\n' '|')"
	rc=1
fi

rm -f $W/bg.stop
watch_vif0 &
BG=$!

begin vifs-detach
bad=
t0=$(uptime_s)
timeout 90 xl network-detach "$NAME" 1 >$W/detach.log 2>&1 || bad="$bad xl-network-detach-failed:$(tail -n 2 $W/detach.log | tr '\n' ' ')"
td=$(elapsed "$t0")
gone() { ! xenstore-exists "/local/domain/$(domid_of $NAME)/device/vif/1" 2>/dev/null; }
wait_until 30 gone || bad="$bad device/vif/1-still-there"
wait_until 30 cons_has 'device/vif/1 is gone; interface vif1 removed' || bad="$bad no-removed-line"
silent $IP1 || bad="$bad $IP1-still-answers"
answers $IP0 || bad="$bad vif0-stopped-serving"
if [ -z "$bad" ]; then
	pass vifs-detach "xl network-detach took $td s; device/vif/1 gone, interface vif1 removed, $IP1 silent, $IP0 serving; vifs now: $(vif_ids)"
	figure vifs_network_detach_s "$td" s
else
	fail vifs-detach "$bad; console: $(grep -E 'vif1|vif/1' "$CONS" | tail -n 5 | tr '\n' '|')"
	rc=1
fi

begin vifs-attach
bad=
$IPROUTE neigh flush dev xenbr1 2>/dev/null
t0=$(uptime_s)
timeout 90 xl network-attach "$NAME" bridge=xenbr1 mac=$MAC1 >$W/attach.log 2>&1 || bad="$bad xl-network-attach-failed:$(tail -n 2 $W/attach.log | tr '\n' ' ')"
ta=$(elapsed "$t0")
# Nothing in dom0 talked to $IP1 since the flush: an entry comes from the guest's gratuitous ARP.
wait_until 60 neigh_is $IP1 $MAC1 || bad="$bad no-gratuitous-ARP-for-$IP1"
wait_until 60 answers $IP1 || bad="$bad no-HTTP-on-$IP1"
tr=$(elapsed "$t0")
GUEST_IP=$IP1 http_get /kv/via-vif1 $W/v1.again && cmp -s $W/v1 $W/v1.again || bad="$bad value-not-served-via-new-vif1"
pings $IP1 || bad="$bad ping-$IP1"
if [ -z "$bad" ]; then
	pass vifs-attach "xl network-attach took $ta s (vifs $(vif_ids)); gratuitous ARP seen, HTTP and ping on $IP1 again $tr s after it began; the value stored before is served"
	figure vifs_network_attach_to_http_s "$tr" s
else
	fail vifs-attach "$bad; console: $(grep -E 'vif1|vif/1' "$CONS" | tail -n 6 | tr '\n' '|')"
	rc=1
fi

begin vifs-new
bad=
t0=$(uptime_s)
timeout 90 xl network-attach "$NAME" bridge=xenbr2 mac=$MAC2 >$W/attach2.log 2>&1 || bad="$bad xl-network-attach-failed:$(tail -n 2 $W/attach2.log | tr '\n' ' ')"
wait_until 60 answers $IP2 || bad="$bad no-HTTP-on-$IP2"
tn=$(elapsed "$t0")
pings $IP2 || bad="$bad ping-$IP2"
neigh_is $IP2 $MAC2 || bad="$bad arp-$IP2"
cons_has 'net: ready, serving http://10\.0\.2\.2:80/ on vif2' || bad="$bad no-ready-line-vif2"
if [ -z "$bad" ]; then
	pass vifs-new "vif 2 (never there at boot) on xenbr2: HTTP and ping on $IP2 $tn s after xl network-attach; vifs $(vif_ids)"
	figure vifs_new_vif_to_http_s "$tn" s
else
	fail vifs-new "$bad; console: $(grep -E 'vif2|vif/2' "$CONS" | tail -n 6 | tr '\n' '|')"
	rc=1
fi

touch $W/bg.stop
wait $BG 2>/dev/null
begin vifs-vif0-kept-serving
n_ok=$(grep -c '^ok' $W/bg.log)
n_fail=$(grep -c '^fail' $W/bg.log)
if [ "$n_fail" = 0 ] && [ "$n_ok" -gt 0 ]; then
	pass vifs-vif0-kept-serving "$n_ok GETs on $IP0 during detach, attach and the new vif, none failed"
else
	fail vifs-vif0-kept-serving "$n_ok ok, $n_fail failed: $(grep '^fail' $W/bg.log | head -n 3 | tr '\n' ' ')"
	rc=1
fi

begin vifs-shutdown
if xl_shutdown_wait "$NAME" 60 && grep -q 'shutdown: vif2 closed' "$CONS"; then
	pass vifs-shutdown "domain gone after xl shutdown; $(grep -E 'shutdown: vif[0-9] closed' "$CONS" | tr '\n' ' ')"
else
	fail vifs-shutdown "$(grep -E 'shutdown:' "$CONS" | tail -n 4 | tr '\n' '|')"
	xl destroy "$NAME" >/dev/null 2>&1
	rc=1
fi
exit $rc
