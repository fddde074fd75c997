# Unikernel scenarios (issue 4 item 3): the HTTP key-value store on netfront + blkfront.
# PUT/GET of random values 1 B..1 MiB compared byte for byte (cmp), bad requests, 16 concurrent
# clients, 256 connections at once (opt-in), persistence across xl destroy/create, xenstore states, idle CPU, clean xl shutdown.
# EVTCHN=2l|fifo|auto: the event-channel ABI asked for on the kernel command line (`evtchn=`;
# unset: the kernel's default, auto); uk-stats checks the ABI /stats reports: 2-level for `2l`,
# FIFO otherwise (Xen 4.17 offers FIFO), or UK_EXPECT_EVTCHN when set.
. /payload/lib.sh
GUEST_IP=$UNIKERNEL_IP
rc=0
W=/tmp/uk
mkdir -p $W

# The PV pass's own ABI (unikernel-pv.sh; PV_EVTCHN, e.g. 2l beside a PVH pass on the default).
if [ "$UK_TYPE" = pv ] && [ -n "${PV_EVTCHN:-}" ]; then
	EVTCHN=$PV_EVTCHN
fi
case "${EVTCHN:-}" in
'') ;;
2l | fifo | auto) UK_EXTRA="$UK_EXTRA evtchn=$EVTCHN" ;;
*)
	echo "unikernel.sh: EVTCHN=$EVTCHN: expected 2l, fifo or auto" >&2
	exit 1
	;;
esac
if [ "${EVTCHN:-}" = 2l ]; then
	want_abi=${UK_EXPECT_EVTCHN:-2l}
else
	want_abi=${UK_EXPECT_EVTCHN:-fifo}
fi

# A config of its own per ABI asked for (uk_prepare writes it once per boot).
UK_CFG=$XL_CONFIG_DIR/unikernel-$UK_TYPE${EVTCHN:+-$EVTCHN}.cfg
uk_prepare
if ! uk_start uk-create; then
	xl destroy "$UK_NAME" >/dev/null 2>&1
	exit 1
fi

check_states uk-xenstore-connected "$UK_NAME" || rc=1

begin uk-stats
if ! http_get /stats $W/stats.json || ! grep -q '{' $W/stats.json; then
	fail uk-stats "GET /stats gave no JSON"
	rc=1
elif ! grep -q "\"evtchn_abi\":\"$want_abi\"" $W/stats.json; then
	fail uk-stats "expected \"evtchn_abi\":\"$want_abi\": $(head -c 300 $W/stats.json | tr '\n' ' ')"
	rc=1
elif ! grep -q "\"boot\":\"$UK_TYPE\"" $W/stats.json; then
	fail uk-stats "expected \"boot\":\"$UK_TYPE\": $(head -c 300 $W/stats.json | tr '\n' ' ')"
	rc=1
else
	pass uk-stats "$(head -c 300 $W/stats.json | tr '\n' ' ')"
fi

# PUT/GET round trips: fixed edge sizes plus random ones (UK_RANDOM_SIZES of them, 1 B..1 MiB),
# each value random bytes.
begin uk-kv-roundtrip
sizes="1 100 4095 4096 4097 65536 1048576 $(awk -v n="${UK_RANDOM_SIZES:-3}" 'BEGIN { srand(); for (i = 0; i < n; i++) printf "%d ", 1 + int(rand() * 1048576) }')"
bad=
n=0
bytes=0
t0=$(uptime_s)
for s in $sizes; do
	random_file $W/v$n "$s"
	code=$(http_put "rt-$n" $W/v$n)
	if ! is_2xx "$code"; then
		bad="$bad rt-$n(${s}B):PUT=$code"
	elif ! http_get "/kv/rt-$n" $W/g$n; then
		bad="$bad rt-$n(${s}B):GET-failed"
	elif ! cmp -s $W/v$n $W/g$n; then
		bad="$bad rt-$n(${s}B):checksum($(wc -c <$W/g$n)B-back)"
	fi
	bytes=$((bytes + s))
	n=$((n + 1))
done
secs=$(elapsed "$t0")
if [ -z "$bad" ]; then
	pass uk-kv-roundtrip "$n values, $bytes bytes up and back in $secs s, all equal (cmp; sha256 of the 1 MiB one both ways $(sha $W/g6)) (sizes: $sizes)"
	figure uk_roundtrip_kib_per_s "$(awk -v b=$bytes -v s=$secs 'BEGIN { printf "%.1f", 2 * b / 1024 / (s > 0 ? s : 1) }')" KiB/s
else
	fail uk-kv-roundtrip "$bad; $(uk_stats_brief)"
	# Xen's event-channel ('e') and domain/vCPU ('q') dumps go to the Xen log the harness keeps.
	xl debug-keys e >/dev/null 2>&1
	xl debug-keys q >/dev/null 2>&1
	rc=1
fi

begin uk-kv-list-delete
bad=
http_get /kv/ $W/list || bad="$bad GET-/kv/-failed"
grep -q 'rt-0' $W/list 2>/dev/null || bad="$bad rt-0-not-listed"
code=$(http_req DELETE /kv/rt-1)
is_2xx "$code" || bad="$bad DELETE=$code"
code=$(http_req GET /kv/rt-1)
[ "$code" = 404 ] || bad="$bad GET-after-DELETE=$code"
code=$(http_req GET /kv/never-stored)
[ "$code" = 404 ] || bad="$bad GET-missing=$code"
if [ -z "$bad" ]; then
	pass uk-kv-list-delete "list has the keys, DELETE then GET gives 404"
else
	fail uk-kv-list-delete "$bad; $(uk_stats_brief)"
	rc=1
fi

begin uk-bad-requests
bad=
code=$(printf 'GARBAGE\r\n\r\n' | timeout 30 nc "$GUEST_IP" "$HTTP_PORT" | head -n 1 | awk '{ print $2 }')
case "$code" in 4??) ;; *) bad="$bad garbage=$code" ;; esac
code=$(printf 'PUT /kv/x HTTP/1.1\r\nHost: a\r\nContent-Length: 999999999999\r\n\r\n' | timeout 30 nc "$GUEST_IP" "$HTTP_PORT" | head -n 1 | awk '{ print $2 }')
case "$code" in 4??) ;; *) bad="$bad huge-length=$code" ;; esac
uk_answers || bad="$bad not-alive-after"
if [ -z "$bad" ]; then
	pass uk-bad-requests "malformed and oversized requests got 4xx, service still answers"
else
	fail uk-bad-requests "$bad; $(uk_stats_brief)"
	rc=1
fi

# 16 concurrent clients, each PUTs and GETs its own 16 KiB value (values made beforehand, so
# that the clients overlap as much as dom0 allows).
begin uk-concurrent
CLIENTS=${UK_CLIENTS:-16}
i=0
while [ $i -lt "$CLIENTS" ]; do
	random_file $W/c$i 16384
	i=$((i + 1))
done
t0=$(uptime_s)
i=0
while [ $i -lt "$CLIENTS" ]; do
	(
		code=$(http_put "c-$i" $W/c$i)
		if is_2xx "$code" && http_get "/kv/c-$i" $W/cg$i && cmp -s $W/c$i $W/cg$i; then
			echo ok >$W/cres$i
		else
			echo "PUT=$code" >$W/cres$i
		fi
	) &
	i=$((i + 1))
done
wait
ok=$(cat $W/cres* 2>/dev/null | grep -c '^ok$')
if [ "$ok" = "$CLIENTS" ]; then
	pass uk-concurrent "$CLIENTS clients, all values back intact in $(elapsed "$t0") s"
else
	fail uk-concurrent "$ok of $CLIENTS clients ok: $(cat $W/cres* 2>/dev/null | grep -v '^ok$' | sort | uniq -c | tr '\n' ' '); $(uk_stats_brief)"
	rc=1
fi

# 256 connections open at once (issue 10 §2). dom0 starts a busybox nc a few per second under
# TCG, slower than the server's deadlines (a request head within 10 s of the connect, 30 s idle
# keep-alive), so each client is kept busy like a real keep-alive client: nc reads its requests
# from its own FIFO (opened read-write, so nc starts at once); after starting client i dom0
# sends `GET /healthz` to client i-2 and refreshes clients i-64, i-128 and i-192 the same way. Once all
# are started, /stats must report them all open at once ("active", which counts the /stats
# query too); then every client gets a last request with `Connection: close`. Every client must
# have been answered 200, with no connection timed out or evicted by the server (/stats before and
# after). First 11 s pass so that the sockets closed before leave TIME_WAIT (smoltcp: 10 s).
# Opt-in (`--env UK_CONNS=256`): under a loaded host dom0 starts clients too slowly (0.2-0.55 s
# each) to keep all of them inside the server's deadlines, so by default the step is skipped.
if [ -n "${UK_CONNS:-}" ]; then
begin uk-conns-256
N=$UK_CONNS
stat_of() { http_get /stats $W/cs.json && grep -o "\"$1\":[0-9]*" $W/cs.json | cut -d: -f2; }
ev0=$(stat_of evictions)
to0=$(stat_of timeouts)
rm -f $W/cf* $W/cn*
i=0
while [ $i -lt "$N" ]; do
	mkfifo $W/cf$i
	i=$((i + 1))
done
ka() { printf 'GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n' 1<>$W/cf$1; }
sleep 11
t0=$(uptime_s)
i=0
while [ $i -lt "$N" ]; do
	timeout 600 nc "$GUEST_IP" "$HTTP_PORT" <>$W/cf$i >$W/cn$i 2>/dev/null &
	# A FIFO drops what is written while only the writer has it open: the first request goes
	# to the client started two rounds ago, whose nc has opened its FIFO by now.
	[ $i -ge 2 ] && ka $((i - 2))
	for back in 64 128 192; do
		[ $i -ge $back ] && ka $((i - back))
	done
	i=$((i + 1))
done
sleep 1
ka $((N - 2))
ka $((N - 1))
sleep 2
spawned=$(elapsed "$t0")
active=$(stat_of active)
i=0
while [ $i -lt "$N" ]; do
	printf 'GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n' 1<>$W/cf$i
	i=$((i + 1))
done
wait
done_s=$(elapsed "$t0")
ev1=$(stat_of evictions)
to1=$(stat_of timeouts)
ok=0
for f in $W/cn*; do
	grep -q '^HTTP/1.1 200' "$f" && ok=$((ok + 1))
done
answers=$(cat $W/cn* 2>/dev/null | grep -c '^HTTP/1.1 200')
figure uk_conns_open_at_once "$((${active:-1} - 1))" connections
if [ "$ok" = "$N" ] && [ "${active:-0}" -gt "$N" ] && [ -n "$ev0" ] && [ "$ev0" = "$ev1" ] && [ "$to0" = "$to1" ]; then
	pass uk-conns-256 "$N keep-alive connections open at once (guest: $active active incl. the /stats query; clients started over $spawned s), $answers answers 200, all clients done by $done_s s, no timeout or eviction"
else
	fail uk-conns-256 "$ok of $N clients answered 200 ($answers answers); guest saw $active active after $spawned s; evictions $ev0 -> $ev1, timeouts $to0 -> $to1; $(uk_stats_brief)"
	rc=1
fi
rm -f $W/cf*
fi

# Persistence: the values must survive xl destroy + xl create on the same disk.
begin uk-persistence-put
random_file $W/p1 1048576
random_file $W/p2 777
c1=$(http_put persist-1 $W/p1)
c2=$(http_put persist-2 $W/p2)
if is_2xx "$c1" && is_2xx "$c2"; then
	pass uk-persistence-put "stored 1 MiB and 777 B"
else
	fail uk-persistence-put "PUT gave '$c1' (1 MiB) '$c2' (777 B); $(uk_stats_brief)"
	rc=1
fi
xl destroy "$UK_NAME" >/var/log/xen/destroy-$UK_NAME.log 2>&1
wait_until 30 domain_gone "$UK_NAME"
if uk_start uk-recreate; then
	begin uk-persistence
	bad=
	http_get /kv/persist-1 $W/pg1 && cmp -s $W/p1 $W/pg1 || bad="$bad persist-1"
	http_get /kv/persist-2 $W/pg2 && cmp -s $W/p2 $W/pg2 || bad="$bad persist-2"
	http_get /kv/rt-0 $W/pg3 && cmp -s $W/v0 $W/pg3 || bad="$bad rt-0"
	if [ -z "$bad" ]; then
		pass uk-persistence "values intact after xl destroy + xl create"
	else
		fail uk-persistence "lost or changed:$bad"
		rc=1
	fi
else
	rc=1
fi

if domain_exists "$UK_NAME"; then
	begin uk-idle-cpu
	IDLE=${UK_IDLE_SECONDS:-30}
	c0=$(guest_cpu_s "$UK_NAME")
	sleep "$IDLE"
	c1=$(guest_cpu_s "$UK_NAME")
	used=$(awk -v a="$c0" -v b="$c1" 'BEGIN { printf "%.2f", b - a }')
	figure uk_idle_cpu_s_per_${IDLE}s "$used" s
	if awk -v u="$used" -v i="$IDLE" 'BEGIN { exit !(u < i / 10) }'; then
		pass uk-idle-cpu "guest used $used s of CPU over $IDLE s idle (xl list: $c0 -> $c1)"
	else
		xen_dump_vcpus
		fail uk-idle-cpu "guest used $used s of CPU over $IDLE s idle: it spins"
		rc=1
	fi

	begin uk-shutdown
	t0=$(uptime_s)
	if xl_shutdown_wait "$UK_NAME" 60; then
		pass uk-shutdown "domain gone $(elapsed "$t0") s after xl shutdown"
	else
		fail uk-shutdown "domain not gone after xl shutdown -w (60 s) + 30 s"
		xl destroy "$UK_NAME" >/dev/null 2>&1
		rc=1
	fi
fi
exit $rc
