# The unikernel on the 2-level event-channel ABI (`evtchn=2l` on its command line), after the
# `unikernel` scenario ran it on FIFO (Xen 4.17 offers FIFO; evtchn=auto picks it): create on the
# same disk (the values stored under FIFO must still be there), /stats says "evtchn_abi":"2l",
# PUT/GET round trips and 8 concurrent clients, idle CPU, clean shutdown.
. /payload/lib.sh
GUEST_IP=$UNIKERNEL_IP
rc=0
W=/tmp/uk2l
mkdir -p $W
UK_CFG=$XL_CONFIG_DIR/unikernel-2l.cfg
UK_EXTRA="$UK_EXTRA evtchn=2l"
# The FIFO run's domain (same name) must be gone.
if domain_exists "$UK_NAME"; then
	xl destroy "$UK_NAME" >/dev/null 2>&1
fi
uk_prepare
if ! uk_start uk2l-create; then
	xl destroy "$UK_NAME" >/dev/null 2>&1
	exit 1
fi

begin uk2l-stats
if ! http_get /stats $W/stats.json; then
	fail uk2l-stats "GET /stats failed"
	rc=1
elif grep -q '"evtchn_abi":"2l"' $W/stats.json; then
	pass uk2l-stats "$(grep -o '"evtchn_abi":"[^"]*"' $W/stats.json) with evtchn=2l on the command line"
else
	fail uk2l-stats "expected \"evtchn_abi\":\"2l\": $(head -c 300 $W/stats.json | tr '\n' ' ')"
	rc=1
fi

begin uk2l-kv
bad=
n=0
for s in 1 4097 65536 1048576; do
	random_file $W/v$n "$s"
	code=$(http_put "l2-$n" $W/v$n)
	if ! is_2xx "$code"; then
		bad="$bad l2-$n(${s}B):PUT=$code"
	elif ! http_get "/kv/l2-$n" $W/g$n || ! cmp -s $W/v$n $W/g$n; then
		bad="$bad l2-$n(${s}B):GET"
	fi
	n=$((n + 1))
done
# A value stored by the FIFO run, if that run stored it.
if http_get /kv/rt-0 $W/old 2>/dev/null; then
	[ "$(wc -c <$W/old)" = 1 ] || bad="$bad rt-0-changed"
fi
i=0
while [ $i -lt 8 ]; do
	random_file $W/c$i 16384
	(
		code=$(http_put "l2c-$i" $W/c$i)
		if is_2xx "$code" && http_get "/kv/l2c-$i" $W/cg$i && cmp -s $W/c$i $W/cg$i; then
			echo ok >$W/cres$i
		else
			echo "PUT=$code" >$W/cres$i
		fi
	) &
	i=$((i + 1))
done
wait
ok=$(cat $W/cres* 2>/dev/null | grep -c '^ok$')
[ "$ok" = 8 ] || bad="$bad concurrent:$ok/8"
if [ -z "$bad" ]; then
	pass uk2l-kv "4 values (1 B..1 MiB) and 8 concurrent clients round-trip intact over 2-level event channels"
else
	fail uk2l-kv "$bad; $(uk_stats_brief)"
	rc=1
fi

begin uk2l-idle-cpu
IDLE=${UK_IDLE_SECONDS:-30}
c0=$(guest_cpu_s "$UK_NAME")
sleep "$IDLE"
c1=$(guest_cpu_s "$UK_NAME")
used=$(awk -v a="$c0" -v b="$c1" 'BEGIN { printf "%.2f", b - a }')
if awk -v u="$used" -v i="$IDLE" 'BEGIN { exit !(u < i / 10) }'; then
	pass uk2l-idle-cpu "guest used $used s of CPU over $IDLE s idle"
else
	fail uk2l-idle-cpu "guest used $used s of CPU over $IDLE s idle: it spins"
	rc=1
fi

begin uk2l-shutdown
t0=$(uptime_s)
if xl_shutdown_wait "$UK_NAME" 60; then
	pass uk2l-shutdown "domain gone $(elapsed "$t0") s after xl shutdown"
else
	fail uk2l-shutdown "domain not gone after xl shutdown -w (60 s) + 30 s"
	xl destroy "$UK_NAME" >/dev/null 2>&1
	rc=1
fi
exit $rc
