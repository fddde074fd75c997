# Watchdog restart, the unikernel and a Linux PV baseline side by side (issue 7 steps 4 and 5).
# Both guests arm Xen's watchdog with a 10 s timeout and feed it: the unikernel with
# `watchdog=10` (its main loop feeds it), Linux with xen_wdt and busybox's watchdog daemon
# (guest-init.sh `wdt=10`). At an uptime of 20 s each hangs: the unikernel stops in a loop
# (`debug_hang_after=20`, a command-line option, unreachable from the network), Linux stops its
# watchdog daemon and its httpd (`hang_after=20`). Xen's watchdog fires and xl
# (on_watchdog="restart") restarts the domain, which must serve again, the unikernel with the
# value it stored before the hang.
#
# A probe in dom0 asks each guest for a page every 0.2 s (connect timeout 1 s, 3 s in all) and
# records every answer. FIGUREs: watchdog_<uk|linux>_gap_s (the longest time between two answers
# across the restart: what a client sees, from the hang to serving again: the 10 s timeout, xl's
# restart and the boot), watchdog_<...>_restart_to_http_s (from the new domain id being seen to
# the first answer) and watchdog_gap_ratio_uk_to_linux. WATCHDOG_LINUX=0 leaves Linux out.
. /payload/lib.sh
rc=0
W=/tmp/watchdog
mkdir -p $W "$HARNESS_STATE" "$XL_CONFIG_DIR"
HANG_AFTER=20
TIMEOUT_S=10

# probe IP PORT PATH FILE: until $W/stop exists, "<uptime> <status>" per attempt into FILE.
probe() {
	: >"$4"
	while [ ! -f $W/stop ]; do
		_c=$(printf 'GET %s HTTP/1.0\r\nHost: %s\r\n\r\n' "$3" "$1" |
			timeout 3 nc -w 1 "$1" "$2" 2>/dev/null | head -n 1 | awk '{ print $2 }')
		echo "$(uptime_s) ${_c:-none}" >>"$4"
		sleep 0.2
	done
}

# longest_gap FILE: the longest time between two consecutive 2xx answers, and the uptime of the
# answer that ended it: "<seconds> <uptime>".
longest_gap() {
	awk '$2 ~ /^2/ { if (n++) { d = $1 - t; if (d > m) { m = d; e = $1 } } t = $1 }
		END { printf "%.2f %.2f", m, e }' "$1"
}

# cycle STEP NAME IP PORT PATH: the domain NAME (created, serving) hangs by itself; waits for
# Xen's watchdog and xl's restart, then for an answer from the new domain. Sets GAP and
# RESTART_TO_HTTP; BAD holds what went wrong.
cycle() {
	_step=$1 _name=$2 _ip=$3 _port=$4 _path=$5
	BAD=
	rm -f $W/stop
	probe "$_ip" "$_port" "$_path" $W/probe-$_step &
	_probe=$!
	_old=$(domid_of "$_name")
	restarted() { _d=$(domid_of "$_name") && [ "$_d" != "$_old" ]; }
	answered_after() { awk -v t="$1" '$2 ~ /^2/ && $1 > t { f = 1 } END { exit !f }' $W/probe-$_step; }
	if wait_until $((HANG_AFTER + TIMEOUT_S + 90)) restarted; then
		_tr=$(uptime_s)
		_new=$(domid_of "$_name")
		wait_until 120 answered_after "$_tr" || BAD="$BAD no-answer-from-domain-$_new-in-120s"
		xl dmesg >$W/xl-dmesg.log 2>&1
		grep -q "Watchdog timer fired for domain $_old\$" $W/xl-dmesg.log || BAD="$BAD no-watchdog-line-for-domain-$_old"
	else
		BAD="$BAD domain-$_old-not-restarted($(xl list 2>&1 | tail -n +2 | tr '\n' ' '))"
	fi
	touch $W/stop
	wait $_probe
	set -- $(longest_gap $W/probe-$_step)
	GAP=$1
	RESTART_TO_HTTP=$(awk -v t="${_tr:-0}" '$2 ~ /^2/ && $1 > t { printf "%.2f", $1 - t; exit }' $W/probe-$_step)
	WHO="domain $_old -> ${_new:-?}"
}

# ---- the unikernel ----
GUEST_IP=$UNIKERNEL_IP
UK_CFG=$XL_CONFIG_DIR/unikernel-watchdog.cfg
UK_DISK=$HARNESS_STATE/unikernel-watchdog-disk.img
rm -f "$UK_DISK"
make_disk "$UK_DISK" 16
install_cfg /payload/xl/unikernel-ops.cfg "$UK_CFG.in" "$UK_DISK"
sed "s|@EXTRA@|ip=$UNIKERNEL_IP/24 gw=$DOM0_IP watchdog=$TIMEOUT_S debug_hang_after=$HANG_AFTER|" "$UK_CFG.in" >"$UK_CFG"
domain_exists "$UK_NAME" && xl destroy "$UK_NAME" >/dev/null 2>&1
if uk_start watchdog-uk-create; then
	random_file $W/value 4096
	begin watchdog-uk-restart
	if [ "$(HTTP_RESP_FILE=$W/put.resp HTTP_TIMEOUT=15 http_put wd-value $W/value)" != 201 ]; then
		fail watchdog-uk-restart "PUT before the hang not acknowledged: $(head -n 1 $W/put.resp)"
		rc=1
	else
		cycle uk "$UK_NAME" "$UNIKERNEL_IP" "$HTTP_PORT" /healthz
		HTTP_TIMEOUT=15 http_get /kv/wd-value $W/value.after && cmp -s $W/value $W/value.after || BAD="$BAD value-lost"
		if [ -z "$BAD" ]; then
			pass watchdog-uk-restart "$WHO (Xen: watchdog fired); longest gap between answers $GAP s, first answer $RESTART_TO_HTTP s after the new domain appeared; the value stored before the hang is served"
			figure watchdog_uk_gap_s "$GAP" s
			figure watchdog_uk_restart_to_http_s "$RESTART_TO_HTTP" s
			echo "$GAP" >$W/gap-uk
		else
			fail watchdog-uk-restart "$BAD; $WHO; console: $(grep -E 'watchdog|hang' "$(console_log "$UK_NAME")" | tail -n 4 | tr '\n' '|')"
			rc=1
		fi
	fi
else
	rc=1
fi
xl destroy "$UK_NAME" >/dev/null 2>&1
wait_until 30 domain_gone "$UK_NAME"

# ---- the Linux baseline ----
[ "${WATCHDOG_LINUX:-1}" = 1 ] || exit $rc
LX_NAME=watchdog-linux
LX_IP=10.0.0.7
LX_DISK=$HARNESS_STATE/watchdog-linux-disk.img
linux_baseline_cfg "$LX_NAME" "$LX_IP" 00:16:3e:00:00:07 "$LX_DISK" 16 pvh
sed -i "s/^extra = \"\\(.*\\)\"/extra = \"\\1 wdt=$TIMEOUT_S hang_after=$HANG_AFTER\"/" "$XL_CONFIG_DIR/$LX_NAME.cfg"
echo 'on_watchdog = "restart"' >>"$XL_CONFIG_DIR/$LX_NAME.cfg"
begin watchdog-linux-create
t0=$(uptime_s)
if linux_baseline_up "$LX_NAME" "$LX_IP" && console_has "$LX_NAME" '@@GUEST-WATCHDOG armed'; then
	pass watchdog-linux-create "Linux PVH guest serving, watchdog armed, after $(elapsed "$t0") s"
	begin watchdog-linux-restart
	cycle linux "$LX_NAME" "$LX_IP" 80 /
	if [ -z "$BAD" ]; then
		pass watchdog-linux-restart "$WHO (Xen: watchdog fired); longest gap between answers $GAP s, first answer $RESTART_TO_HTTP s after the new domain appeared"
		figure watchdog_linux_gap_s "$GAP" s
		figure watchdog_linux_restart_to_http_s "$RESTART_TO_HTTP" s
		[ -f $W/gap-uk ] && figure watchdog_gap_ratio_uk_to_linux "$(awk -v u="$(cat $W/gap-uk)" -v l="$GAP" 'BEGIN { printf "%.2f", (l > 0 ? u / l : 0) }')" x
	else
		fail watchdog-linux-restart "$BAD; $WHO; console: $(grep -E '@@GUEST' "$(console_log "$LX_NAME")" | tail -n 4 | tr '\n' '|')"
		rc=1
	fi
else
	fail watchdog-linux-create "Linux guest not serving with its watchdog armed after $(elapsed "$t0") s: $(grep -E '@@GUEST' "$(console_log "$LX_NAME")" | tail -n 3 | tr '\n' '|')"
	rc=1
fi
xl destroy "$LX_NAME" >/dev/null 2>&1
wait_until 30 domain_gone "$LX_NAME"
exit $rc
