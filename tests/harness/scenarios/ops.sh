# Operating the unikernel like a server (issues 12 and 7 step 4), from dom0:
#  run A (static ip=, ip6=, port=8080, max_value=64K, loglevel=info): gratuitous ARP seen by dom0,
#    ping and ping6 (static and link-local) answered, /metrics scraped and checked against the text
#    exposition format, the non-default port and max_value in effect, per-request log lines in the
#    console log (xenconsoled), /healthz;
#  run B (DHCP from busybox udhcpd with a 30 s lease, watchdog=10, debug_hang_after=60): the lease
#    renewed and shown in /stats, the data of run A served, then the guest hangs on purpose, Xen's
#    watchdog fires, xl (on_watchdog="restart") brings it back and it serves the same data.
. /payload/lib.sh
GUEST_IP=$UNIKERNEL_IP
W=/tmp/ops
mkdir -p $W
rc=0
UK_CFG=$XL_CONFIG_DIR/unikernel-ops.cfg
CONS=$(console_log "$UK_NAME")
LL6=fe80::216:3eff:fe00:2
IPROUTE=/usr/bin/ip
[ -x $IPROUTE ] || IPROUTE=/usr/sbin/ip

# The event-channel ABI of both runs (OPS_EVTCHN, default 2l: `cargo xtask test` runs the PVH
# unikernel over 2-level here and over FIFO in the unikernel scenario); ops-metrics checks /stats.
OPS_EVTCHN=${OPS_EVTCHN:-2l}
if [ "$OPS_EVTCHN" = 2l ]; then OPS_ABI=2l; else OPS_ABI=fifo; fi

# ops_cfg EXTRA: the ops xl config with the kernel command line EXTRA.
ops_cfg() {
	mkdir -p "$HARNESS_STATE" "$XL_CONFIG_DIR"
	make_disk "$UK_DISK" "${UNIKERNEL_DISK_MIB:-64}"
	install_cfg /payload/xl/unikernel-ops.cfg "$UK_CFG.in" "$UK_DISK"
	sed "s|@EXTRA@|$1 evtchn=$OPS_EVTCHN|" "$UK_CFG.in" >"$UK_CFG"
}

# cons_mark: the console log's size now; cons_new MARK: what was logged since.
cons_mark() { wc -c <"$CONS" 2>/dev/null || echo 0; }
cons_new() { tail -c +$(($1 + 1)) "$CONS" 2>/dev/null; }
cons_new_has() { cons_new "$1" | grep -qE "$2"; }

# check_exposition FILE: prints every problem with FILE as Prometheus text exposition format 0.0.4
# (nothing when valid): HELP/TYPE syntax, one TYPE per family, sample syntax, each sample after
# its own family's TYPE (histograms: _bucket/_sum/_count), cumulative buckets ending in +Inf.
check_exposition() {
	awk '
	BEGIN { nm = "^[a-zA-Z_:][a-zA-Z0-9_:]*$" }
	/^# HELP / { if ($3 !~ nm) print "line " NR ": bad HELP name: " $0; next }
	/^# TYPE / {
		if (NF != 4 || $3 !~ nm || $4 !~ /^(counter|gauge|histogram|summary|untyped)$/) print "line " NR ": bad TYPE: " $0
		if ($3 in typed) print "line " NR ": TYPE twice for " $3
		typed[$3] = $4; cur = $3; last = -1; next
	}
	/^#/ { next }
	/^$/ { print "line " NR ": empty line"; next }
	{
		if ($0 !~ /^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*"(,[a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*")*\})? [-+]?([0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?|\+Inf|-Inf|NaN)$/) {
			print "line " NR ": bad sample: " $0; next
		}
		name = $0; sub(/[{ ].*/, "", name)
		ok = (name == cur)
		if (typed[cur] == "histogram") ok = (name == cur "_bucket" || name == cur "_sum" || name == cur "_count")
		if (!ok) print "line " NR ": sample " name " outside its family (" cur ")"
		if (name == cur "_bucket") {
			if ($NF + 0 < last) print "line " NR ": histogram buckets not cumulative"
			last = $NF + 0
			if ($0 ~ /le="\+Inf"/) inf[cur] = 1
		}
		n++
	}
	END {
		for (f in typed) if (typed[f] == "histogram" && !(f in inf)) print "histogram " f " has no +Inf bucket"
		if (n == 0) print "no samples"
	}' "$1"
}

# metric FILE SELECTOR: the value of the sample whose name{labels} is exactly SELECTOR.
metric() { awk -v s="$2" 'substr($0, 1, length(s) + 1) == s " " { print $NF; f = 1 } END { exit !f }' "$1"; }

# put_count FILE: PUT requests counted in a /metrics scrape (all status codes).
put_count() { awk '/^kv_http_requests_total\{method="PUT",/ { s += $NF } END { print s + 0 }' "$1"; }

domain_exists "$UK_NAME" && xl destroy "$UK_NAME" >/dev/null 2>&1
wait_until 30 domain_gone "$UK_NAME"

# ---------------------------------------------------------------- run A
HTTP_PORT=8080
ops_cfg "ip=10.0.0.2/24 gw=10.0.0.1 ip6=fd00::2/64 dns=10.0.0.1 port=8080 max_value=64K loglevel=info"
$IPROUTE -6 addr add fd00::1/64 dev xenbr0 nodad 2>/dev/null
$IPROUTE neigh flush dev xenbr0 2>/dev/null
echo 1 >/proc/sys/net/ipv4/conf/xenbr0/arp_accept
mark=$(cons_mark)

begin ops-create
t0=$(uptime_s)
if ! xl_create_logged "$UK_NAME" "$UK_CFG"; then
	fail ops-create "xl create failed: $(tail -n 5 /var/log/xen/create-$UK_NAME.log | tr '\n' ' ')"
	exit 1
fi
if wait_until 120 cons_new_has "$mark" 'net: announced 10\.0\.0\.2 '; then
	pass ops-create "the guest announced 10.0.0.2 after $(elapsed "$t0") s"
else
	fail ops-create "no 'net: announced 10.0.0.2' on the console within 120 s: $(cons_new "$mark" | tail -n 5 | tr '\n' ' ')"
	xl destroy "$UK_NAME" >/dev/null 2>&1
	exit 1
fi

# Nothing in dom0 has talked to 10.0.0.2 yet: a neighbour entry can only come from the guest's
# gratuitous ARP (arp_accept=1 lets Linux create entries from them).
begin ops-gratuitous-arp
if wait_until 10 sh -c "$IPROUTE neigh show 10.0.0.2 dev xenbr0 | grep -q 00:16:3e:00:00:02"; then
	pass ops-gratuitous-arp "dom0 learnt 10.0.0.2 -> $($IPROUTE neigh show 10.0.0.2 dev xenbr0) before sending it anything"
else
	fail ops-gratuitous-arp "dom0 has no neighbour entry for 10.0.0.2: '$($IPROUTE neigh show dev xenbr0 | tr '\n' ' ')'"
	rc=1
fi

begin ops-first-http
if wait_until 120 uk_answers; then
	pass ops-first-http "GET /stats on port 8080 answered $(elapsed "$t0") s after xl create"
else
	fail ops-first-http "no HTTP answer on port 8080 within 120 s"
	rc=1
fi

# ping_avg LOG: the average round trip from busybox ping's summary line.
ping_avg() { sed -n 's|.*min/avg/max = [0-9.]*/\([0-9.]*\)/.*|\1|p' "$1"; }

begin ops-ping
if ping -c 5 -W 3 "$GUEST_IP" >$W/ping.log 2>&1 && grep -q ' 0% packet loss' $W/ping.log; then
	pass ops-ping "$(tail -n 2 $W/ping.log | tr '\n' ' ')"
	figure uk_ping_avg_ms "$(ping_avg $W/ping.log)" ms
else
	fail ops-ping "$(tail -n 3 $W/ping.log | tr '\n' ' ')"
	rc=1
fi

begin ops-ping6
bad=
ping6 -c 5 -W 3 fd00::2 >$W/ping6.log 2>&1 && grep -q ' 0% packet loss' $W/ping6.log || bad="$bad fd00::2: $(tail -n 2 $W/ping6.log | tr '\n' ' ')"
ping6 -c 3 -W 3 -I xenbr0 $LL6 >$W/ping6ll.log 2>&1 && grep -q ' 0% packet loss' $W/ping6ll.log || bad="$bad $LL6: $(tail -n 2 $W/ping6ll.log | tr '\n' ' ')"
if [ -z "$bad" ]; then
	pass ops-ping6 "static: $(tail -n 1 $W/ping6.log); link-local $LL6: $(tail -n 1 $W/ping6ll.log); neighbour: $($IPROUTE -6 neigh show fd00::2 dev xenbr0)"
	figure uk_ping6_avg_ms "$(ping_avg $W/ping6.log)" ms
else
	fail ops-ping6 "$bad"
	rc=1
fi

begin ops-metrics
bad=
http_get /metrics $W/m1.txt || bad="$bad GET-/metrics-failed"
probs=$(check_exposition $W/m1.txt 2>&1 | head -n 5 | tr '\n' ';')
[ -z "$probs" ] || bad="$bad format:$probs"
for sel in kv_uptime_seconds kv_store_keys kv_memory_used_bytes kv_http_request_duration_seconds_count \
	'kv_device_rx_packets_total{device="vif0"}' 'kv_device_ring_tx_in_flight{device="vif0"}' \
	'kv_device_grants_in_use{device="xen"}' 'kv_device_event_channels_open{device="xen"}' \
	'kv_http_requests_total{method="GET",code="200"}'; do
	metric $W/m1.txt "$sel" >/dev/null || bad="$bad missing:$sel"
done
grep -q '^kv_device_reads_total{device="vbd' $W/m1.txt || bad="$bad missing:vbd-reads"
grep -q '^kv_info{.*ipv4="10.0.0.2/24"' $W/m1.txt || bad="$bad missing:info-ipv4"
random_file $W/small 100
code=$(http_put ops-small $W/small)
is_2xx "$code" || bad="$bad PUT=$code"
http_get /metrics $W/m2.txt || bad="$bad second-GET-failed"
p1=$(put_count $W/m1.txt)
p2=$(put_count $W/m2.txt)
[ "$p2" = $((p1 + 1)) ] || bad="$bad PUT-count-$p1-then-$p2"
http_get /stats $W/stats.json || bad="$bad GET-/stats-failed"
k=$(metric $W/m2.txt kv_store_keys)
grep -q "\"keys\":$k," $W/stats.json || bad="$bad /stats-keys-differ-from-kv_store_keys=$k"
grep -q "\"evtchn_abi\":\"$OPS_ABI\"" $W/stats.json || bad="$bad /stats-evtchn_abi-not-$OPS_ABI:$(grep -o '"evtchn_abi":"[^"]*"' $W/stats.json)"
if [ -z "$bad" ]; then
	pass ops-metrics "$(grep -c '^kv_' $W/m2.txt) samples in $(grep -c '^# TYPE' $W/m2.txt) families, valid exposition format; PUT count $p1 -> $p2; kv_store_keys $k = /stats keys; uptime $(metric $W/m2.txt kv_uptime_seconds) s; evtchn_abi $OPS_ABI (evtchn=$OPS_EVTCHN)"
else
	fail ops-metrics "$bad"
	dump_file ops-metrics $W/m1.txt
	rc=1
fi

begin ops-port
bad=
printf 'GET /stats HTTP/1.1\r\nConnection: close\r\n\r\n' | timeout 15 nc "$GUEST_IP" 80 >$W/p80.txt 2>&1
[ -s $W/p80.txt ] && grep -q '^HTTP/' $W/p80.txt && bad="$bad port-80-answered"
code=$(http_req GET /healthz)
[ "$code" = 200 ] || bad="$bad 8080:$code"
if [ -z "$bad" ]; then
	pass ops-port "port=8080 serves, port 80 does not ($(head -c 80 $W/p80.txt | tr '\n' ' '))"
else
	fail ops-port "$bad"
	rc=1
fi

begin ops-max-value
random_file $W/max 65536
random_file $W/over 65537
c1=$(http_put ops-max $W/max)
c2=$(http_put ops-over $W/over)
if is_2xx "$c1" && [ "$c2" = 413 ] && http_get /kv/ops-max $W/max.back && cmp -s $W/max $W/max.back; then
	pass ops-max-value "max_value=64K: 65536 B -> $c1 (read back equal), 65537 B -> $c2"
else
	fail ops-max-value "65536 B -> '$c1', 65537 B -> '$c2' (want 2xx and 413)"
	rc=1
fi

begin ops-healthz
if http_get /healthz $W/health && [ "$(cat $W/health)" = ok ]; then
	pass ops-healthz "GET /healthz: 200 ok"
else
	fail ops-healthz "GET /healthz: '$(cat $W/health 2>/dev/null)'"
	rc=1
fi

# The log lines of the requests above, with the uptime stamp, in xenconsoled's log.
begin ops-log-lines
bad=
log_re() { echo "^\[ *[0-9]+\.[0-9]{6}\] \[INFO http\] $1 in=[0-9]+ out=[0-9]+ us=[0-9]+"; }
wait_until 15 cons_new_has "$mark" "$(log_re 'PUT /kv/ops-over 413')" || bad="$bad no-413-line"
cons_new_has "$mark" "$(log_re 'PUT /kv/ops-max 20[14]')" || bad="$bad no-PUT-line"
cons_new_has "$mark" "$(log_re 'GET /metrics 200')" || bad="$bad no-metrics-line"
cons_new_has "$mark" 'config: port=8080' || bad="$bad no-config-port"
cons_new_has "$mark" 'config: max_value=65536 bytes' || bad="$bad no-config-max_value"
cons_new_has "$mark" 'config: ip6=fd00::2/64' || bad="$bad no-config-ip6"
n=$(cons_new "$mark" | grep -cE "$(log_re '[A-Z-]+ [^ ]+ [0-9]{3}')")
if [ -z "$bad" ]; then
	pass ops-log-lines "$n request lines, e.g. '$(cons_new "$mark" | grep -E "$(log_re 'GET /metrics 200')" | head -n 1)'"
else
	fail ops-log-lines "$bad; last lines: $(cons_new "$mark" | tail -n 5 | tr '\n' '|')"
	rc=1
fi

# The store's vbd detached while serving: /healthz goes 503 with the reason. (The whole cycle,
# back to 200 after `xl block-attach` with the data intact, is tests/harness/scenarios/hotplug.sh.)
begin ops-healthz-detach
vdev=$(xl block-list "$UK_NAME" 2>/dev/null | awk 'NR == 2 { print $1 }')
t0=$(uptime_s)
timeout 90 xl block-detach "$UK_NAME" "$vdev" >$W/detach.log 2>&1
drc=$?
hz503() { [ "$(HTTP_RESP_FILE=$W/hz.resp http_req GET /healthz)" = 503 ]; }
if wait_until 30 hz503; then
	pass ops-healthz-detach "xl block-detach $vdev (status $drc after $(elapsed "$t0") s); GET /healthz: 503 '$(tail -n 1 $W/hz.resp)'"
else
	fail ops-healthz-detach "after xl block-detach $vdev (status $drc: $(tail -n 2 $W/detach.log | tr '\n' ' ')): /healthz answered '$(head -n 1 $W/hz.resp 2>/dev/null)' '$(tail -n 1 $W/hz.resp 2>/dev/null)'"
	rc=1
fi

xl destroy "$UK_NAME" >/dev/null 2>&1
wait_until 30 domain_gone "$UK_NAME"

# ---------------------------------------------------------------- run B
HTTP_PORT=80
cat >$W/udhcpd.conf <<EOF
start 10.0.0.2
end 10.0.0.2
interface xenbr0
option subnet 255.255.255.0
option router 10.0.0.1
option dns 10.0.0.1
option lease 30
lease_file $W/udhcpd.leases
pidfile $W/udhcpd.pid
static_lease 00:16:3e:00:00:02 10.0.0.2
EOF
touch $W/udhcpd.leases
udhcpd -f $W/udhcpd.conf >$W/udhcpd.log 2>&1 &
UDHCPD=$!
ops_cfg "ip6=fd00::2/64 watchdog=10 debug_hang_after=60 loglevel=info"
mark=$(cons_mark)
if uk_start ops-dhcp-create; then
	begin ops-dhcp-renewal
	# Lease 30 s: smoltcp renews at T1 = 15 s; each ACK shows up as one more "acks".
	renewed() { uk_answers && grep -qE '"name":"dhcp","acks":([2-9]|[1-9][0-9])' /tmp/uk-stats.json; }
	if wait_until 45 renewed; then
		pass ops-dhcp-renewal "lease renewed: $(grep -oE '\{"name":"dhcp",[^}]*\}' /tmp/uk-stats.json | tr '\n' ' ') server $(grep -oE '"dhcp_server":"[^"]*"' /tmp/uk-stats.json)"
	else
		fail ops-dhcp-renewal "no renewal seen in /stats within 45 s: $(head -c 600 /tmp/uk-stats.json); udhcpd: $(tail -n 3 $W/udhcpd.log | tr '\n' ' ')"
		rc=1
	fi

	begin ops-watchdog
	bad=
	http_get /kv/ops-max $W/max.b && cmp -s $W/max $W/max.b || bad="$bad data-of-run-A-missing-before"
	cons_new_has "$mark" 'watchdog: armed' || bad="$bad not-armed"
	old=$(domid_of "$UK_NAME")
	restarted() { _d=$(domid_of "$UK_NAME") && [ "$_d" != "$old" ]; }
	t0=$(uptime_s)
	if ! wait_until 150 restarted; then
		bad="$bad domain-$old-not-restarted-in-150s($(xl list 2>&1 | tail -n +2 | tr '\n' ' '))"
	else
		tr=$(elapsed "$t0")
		new=$(domid_of "$UK_NAME")
		xl dmesg >$W/xl-dmesg.log 2>&1
		grep -q "Watchdog timer fired for domain $old\$" $W/xl-dmesg.log || bad="$bad no-watchdog-line-for-domain-$old-in-xl-dmesg"
		if wait_until 120 uk_answers; then
			ta=$(elapsed "$t0")
			http_get /kv/ops-max $W/max.c && cmp -s $W/max $W/max.c || bad="$bad data-lost-after-restart"
		else
			bad="$bad no-answer-after-restart"
		fi
	fi
	cons_new_has "$mark" 'debug_hang_after=60: hanging now' || bad="$bad no-hang-line"
	if [ -z "$bad" ]; then
		pass ops-watchdog "guest hung at 60 s uptime; Xen: '$(grep "Watchdog timer fired for domain $old" $W/xl-dmesg.log | tail -n 1)'; domain $old -> $new (xl on_watchdog=restart) $tr s after the wait began, serving the same 64 KiB value $ta s after"
		figure uk_watchdog_restart_to_http_s "$ta" s
	else
		fail ops-watchdog "$bad; devices: $(device_states "$UK_NAME" | tr '\n' ' '); console: $(cons_new "$mark" | grep -E 'watchdog|hang' | tail -n 4 | tr '\n' '|') last: $(cons_new "$mark" | tail -n 3 | tr '\n' '|')"
		rc=1
	fi
else
	rc=1
fi
xl destroy "$UK_NAME" >/dev/null 2>&1
wait_until 30 domain_gone "$UK_NAME"
kill "$UDHCPD" 2>/dev/null
exit $rc
