# High availability of the unikernel (issue 7 step 5): under a continuous write load from dom0,
# `xl save -c` (checkpoint), `xl save` + `xl restore`, and `xl migrate` to localhost (ssh replaced
# by a local stand-in). After each operation every acknowledged write must read back intact; the
# longest gap between two acknowledged writes around each operation (the downtime a client sees)
# is a FIGURE. Also a 1 MiB PUT in flight across a save/restore: acknowledged means stored,
# otherwise absent, never partial.
#
# Save images go to a tmpfs of their own (dom0's root is small). Knobs: HA_BASELINE_S (seconds of
# load before the first operation, default 5), HA_SETTLE_S (load after each operation, default 4).
. /payload/lib.sh
GUEST_IP=$UNIKERNEL_IP
rc=0
W=/tmp/ha
IMG=$HARNESS_STATE/ha-images
mkdir -p $W $IMG
mountpoint -q $IMG || mount -t tmpfs -o size=160m tmpfs $IMG

# The ssh stand-in for xl migrate: xl runs `STANDIN localhost xl migrate-receive ...`.
STANDIN=$W/ssh-standin
printf '#!/bin/sh\nshift\nexec sh -c "$*"\n' >$STANDIN
chmod +x $STANDIN

# A 1 KiB random base; the value of key K is "K\n" followed by the base (checkable per key).
random_file $W/base 1024
value_of() { { echo "$1"; cat $W/base; }; }

uk_prepare
if ! uk_start ha-create; then
	xl destroy "$UK_NAME" >/dev/null 2>&1
	exit 1
fi

# load: PUTs ha-1, ha-2, ... back to back until $W/stop exists; one line per PUT in $W/acks:
# "<uptime at answer> <key> <status>".
load() {
	n=0
	: >$W/acks
	while [ ! -f $W/stop ]; do
		n=$((n + 1))
		value_of "ha-$n" >$W/lv
		code=$(HTTP_RESP_FILE=$W/lresp HTTP_TIMEOUT=60 http_put "ha-$n" $W/lv)
		echo "$(uptime_s) ha-$n ${code:-none}" >>$W/acks
	done
}

# gap START END: the longest time between two consecutive acknowledged writes among those
# around [START, END] (from the last ack before START to the first ack after END).
gap() {
	awk -v s="$1" -v e="$2" '
		$3 ~ /^2/ { t[n++] = $1 }
		END {
			first = 0; last = n - 1
			for (i = 0; i < n; i++) { if (t[i] <= s) first = i; }
			for (i = n - 1; i >= 0; i--) { if (t[i] >= e) last = i; }
			m = 0
			for (i = first; i < last; i++) { d = t[i + 1] - t[i]; if (d > m) m = d }
			printf "%.2f", m
		}' $W/acks
}

# acks_after T: number of acknowledged writes after uptime T.
acks_after() { awk -v t="$1" '$3 ~ /^2/ && $1 > t { c++ } END { print c + 0 }' $W/acks; }

# wait_acks_after T: waits (60 s at most) until the load has an acknowledged write after T.
wait_acks_after() {
	_t=$1
	wait_until 60 sh -c "[ \$(awk -v t=$_t '\$3 ~ /^2/ && \$1 > t { c++ } END { print c + 0 }' $W/acks) -gt 0 ]"
}

# verify_acked STEP: every acknowledged key reads back equal to its value.
verify_acked() {
	_bad=
	_n=0
	for k in $(awk '$3 ~ /^2/ { print $2 }' $W/acks); do
		value_of "$k" >$W/want
		if ! HTTP_TIMEOUT=30 http_get "/kv/$k" $W/got; then
			_bad="$_bad $k:missing"
		elif ! cmp -s $W/want $W/got; then
			_bad="$_bad $k:changed"
		fi
		_n=$((_n + 1))
	done
	if [ -z "$_bad" ]; then
		pass "$1" "all $_n acknowledged writes read back intact"
	else
		fail "$1" "$(echo "$_bad" | wc -w) of $_n acknowledged writes lost or changed:$(echo "$_bad" | cut -c1-400); $(uk_stats_brief)"
		rc=1
	fi
}

resume_lines() { grep -E 'suspend:|resume:' "$(console_log "$UK_NAME")" 2>/dev/null | tail -n "$1" | tr '\n' '|' | cut -c1-600; }

rm -f $W/stop
load &
LOAD=$!
sleep "${HA_BASELINE_S:-5}"
t=$(uptime_s)
figure ha_uk_baseline_max_gap_s "$(gap 0 "$t")" s

# op STEP FIGURE CMD...: runs CMD under the load, reports the gap as FIGURE.
op() {
	_step=$1 _fig=$2
	shift 2
	begin "$_step"
	_t0=$(uptime_s)
	if ! "$@" >"/var/log/xen/$_step.log" 2>&1; then
		fail "$_step" "'$*' failed after $(elapsed "$_t0") s: $(tail -n 5 "/var/log/xen/$_step.log" | tr '\n' ' ')"
		rc=1
		return 1
	fi
	_t1=$(uptime_s)
	_d=$(elapsed "$_t0")
	if ! wait_acks_after "$_t1"; then
		fail "$_step" "'$*' took $_d s, but no write was acknowledged in the 60 s after it; $(uk_stats_brief); console: $(resume_lines 6)"
		rc=1
		return 1
	fi
	sleep "${HA_SETTLE_S:-4}"
	_g=$(gap "$_t0" "$_t1")
	figure "$_fig" "$_g" s
	pass "$_step" "'$*' took $_d s; longest gap between acknowledged writes $_g s; console: $(resume_lines 4)"
}

save_restore() {
	rm -f $IMG/save.img
	xl save "$UK_NAME" $IMG/save.img && xl restore $IMG/save.img
	_r=$?
	rm -f $IMG/save.img
	return $_r
}

checkpoint() {
	rm -f $IMG/ckpt.img
	xl save -c "$UK_NAME" $IMG/ckpt.img
	_r=$?
	rm -f $IMG/ckpt.img
	return $_r
}

op ha-checkpoint ha_uk_checkpoint_max_gap_s checkpoint
op ha-save-restore ha_uk_save_restore_max_gap_s save_restore
op ha-migrate ha_uk_migrate_max_gap_s xl migrate -s $STANDIN "$UK_NAME" localhost

touch $W/stop
wait $LOAD
begin ha-acked-writes-intact
verify_acked ha-acked-writes-intact
total=$(awk '$3 ~ /^2/ { c++ } END { print c + 0 }' $W/acks)
failed=$(awk '$3 !~ /^2/ { c++ } END { print c + 0 }' $W/acks)
figure ha_uk_acked_writes "$total" writes
figure ha_uk_failed_writes "$failed" writes

# A 1 MiB PUT in flight across xl save + xl restore.
begin ha-big-put-across-save
random_file $W/big 1048576
(
	code=$(HTTP_RESP_FILE=$W/bigresp HTTP_TIMEOUT=120 http_put ha-big $W/big)
	echo "$(uptime_s) ${code:-none}" >$W/bigres
) &
BIG=$!
sleep 0.3
ts=$(uptime_s)
if save_restore >/var/log/xen/ha-big-save.log 2>&1; then
	te=$(uptime_s)
	wait $BIG
	read -r ta code <$W/bigres
	when=$(awk -v a="$ta" -v s="$ts" -v e="$te" 'BEGIN { if (a < s) print "before the save"; else if (a <= e) print "during save/restore"; else print "after the restore" }')
	if HTTP_TIMEOUT=60 http_get /kv/ha-big $W/bigback; then got=present; else got=absent; fi
	if is_2xx "$code"; then
		if [ $got = present ] && cmp -s $W/big $W/bigback; then
			pass ha-big-put-across-save "PUT acknowledged ($code) $when; the value reads back intact (1 MiB, sha256 $(sha $W/bigback))"
		else
			fail ha-big-put-across-save "PUT acknowledged ($code) $when but the value is $got/$(wc -c <$W/bigback 2>/dev/null) bytes"
			rc=1
		fi
	elif [ $got = absent ]; then
		pass ha-big-put-across-save "PUT not acknowledged ($code, $when) and the key is absent"
	elif cmp -s $W/big $W/bigback; then
		pass ha-big-put-across-save "PUT not acknowledged ($code, $when) but stored whole (not partial)"
	else
		fail ha-big-put-across-save "PUT not acknowledged ($code) and a PARTIAL value of $(wc -c <$W/bigback) bytes is stored"
		rc=1
	fi
else
	fail ha-big-put-across-save "save/restore failed: $(tail -n 5 /var/log/xen/ha-big-save.log | tr '\n' ' ')"
	kill $BIG 2>/dev/null
	rc=1
fi

begin ha-shutdown
if xl_shutdown_wait "$UK_NAME" 60; then
	pass ha-shutdown "clean xl shutdown after the HA operations"
else
	fail ha-shutdown "domain not gone after xl shutdown -w"
	xl destroy "$UK_NAME" >/dev/null 2>&1
	rc=1
fi
exit $rc
