# High availability (issue 7 step 5), the unikernel and a Linux baseline (PVH) side by side. Under
# a continuous write load from dom0, `xl save -c` (checkpoint), `xl save` + `xl restore`, and
# `xl migrate` to localhost (ssh replaced by a local stand-in). After each operation every write
# acknowledged so far must read back intact; the longest gap between two acknowledged writes
# around each operation (the downtime a client sees) is a FIGURE, with the unikernel/Linux ratio.
# Both guests run at the same time and each operation is done on one, then on the other (see
# the bottom), so both meet the same dom0. Also a 1 MiB PUT in flight across a save/restore of the unikernel: acknowledged means stored,
# otherwise absent, never partial.
#
# Both guests also have a spare vbd (xl block-attach of a small blank disk before the operations,
# not used by the store or the CGI), so that xl has the same devices to tear down and set up in
# each operation for both (a vbd's hotplug scripts cost ~1 s of the downtime each here). After
# each operation it must be connected again: for the unikernel /stats lists it connected (its
# frontend went through the suspend with the others), for Linux its front and back state in
# xenstore are 4. At the end, after xl block-detach of the unikernel's store disk, the store
# adopts the spare and answers a PUT and GET on it.
#
# Load: the unikernel gets PUT /kv/ha-N; the Linux guest gets POST /cgi-bin/w?N, which writes the
# body into 4 KiB block N of its disk with fsync before answering (guest-init.sh). Each value is
# "ha-N\n" followed by the same random KiB, so every key can be checked.
#
# The client retries like an HA client does, so that the gap measures the guest's downtime rather
# than the client's TCP back-off: every attempt has a connect timeout (HA_CONNECT_S, default 2 s,
# busybox nc -w) and a whole-request timeout (HA_ATTEMPT_S, default 20 s); a failed attempt is
# retried with the same key and value (PUT and the block write are idempotent) after 0.2 s.
# Without this, a SYN or a request lost while the guest is away is retransmitted by dom0's kernel
# 1, 3, 7, 15, 31 s after the first try, which adds up to half the outage again to the gap.
#
# Save images go to a tmpfs of their own (dom0's root is small). Knobs: HA_LINUX=0 skips the Linux
# baseline, HA_BASELINE_S (load before each operation once a first write is acknowledged,
# default 5), HA_SETTLE_S (load after the first acknowledged write after each operation, default
# 4), HA_OPS (default "checkpoint save_restore migrate"), HA_LOAD_S (a window of load without any
# operation after the operations; with HA_OPS="" a control run), HA_ORDER ("uk linux" by default,
# or "linux uk"), HA_XL_VERBOSE and HA_XL_LOG_LINES (xl's own log of a migration, see migrate).
. /payload/lib.sh
rc=0
W=/tmp/ha
IMG=$HARNESS_STATE/ha-images
mkdir -p $W $IMG "$HARNESS_STATE" "$XL_CONFIG_DIR"
mountpoint -q $IMG || mount -t tmpfs -o size=200m tmpfs $IMG

# The ssh stand-in for xl migrate: xl runs `STANDIN localhost xl migrate-receive ...`.
STANDIN=$W/ssh-standin
printf '#!/bin/sh\nshift\nexec sh -c "$*"\n' >$STANDIN
chmod +x $STANDIN

# The common KiB is random hex text, so that a value is built by the shell alone (no process per
# key when the check of many keys builds the expected bytes).
BASE=$(head -c 512 /dev/urandom | od -An -v -tx1 | tr -d ' \n')
value_of() { printf '%s\n%s' "$1" "$BASE"; }

# attempt METHOD PATH FILE RESP_FILE -> status of one bounded HTTP attempt (empty on failure):
# lib.sh's http_req with the connect bounded by HA_CONNECT_S and the whole by HA_ATTEMPT_S.
attempt() {
	HTTP_RESP_FILE=$4 HTTP_TIMEOUT=${HA_ATTEMPT_S:-20} HTTP_CONNECT_S=${HA_CONNECT_S:-2} http_req "$1" "$2" "$3"
}

# ---- per-guest hooks (set by use_unikernel / use_linux) ----
# G: domain name; P: figure prefix; put KEY FILE -> status; check KEY WANT_FILE -> 0 if intact.
use_unikernel() {
	G=$UK_NAME P=uk GUEST_IP=$UNIKERNEL_IP
	put() { attempt PUT "/kv/$1" "$2" $W/lresp-uk; }
	check() { HTTP_TIMEOUT=30 http_get "/kv/$1" $W/got && cmp -s "$2" $W/got; }
	spare_connected() { spare_is connected; }
	spare_info() { vbds_listed; }
}
LX_NAME=ha-linux
LX_IP=10.0.0.4
LX_DISK=$HARNESS_STATE/ha-linux-disk.img
use_linux() {
	G=$LX_NAME P=linux GUEST_IP=$LX_IP
	put() { attempt POST "/cgi-bin/w?${1#ha-}" "$2" $W/lresp-linux; }
	check() {
		dd if=$LX_DISK bs=4096 skip="${1#ha-}" count=1 2>/dev/null | head -c "$(wc -c <"$2")" >$W/got
		cmp -s "$2" $W/got
	}
	spare_connected() { device_states "$G" | grep -q '^vbd/51728 front=4 back=4$'; }
	spare_info() { device_states "$G" | grep '^vbd/51728' || echo "no vbd/51728 in xenstore"; }
}

# load FIRST: PUTs ha-FIRST, ha-FIRST+1, ... back to back until $W/stop exists, each retried until
# acknowledged (see the top); one line per attempt appended to $W/acks-$P: "<uptime at answer>
# <key> <status>".
load() {
	n=$(($1 - 1))
	while [ ! -f $W/stop ]; do
		n=$((n + 1))
		value_of "ha-$n" >$W/lv-$P
		while :; do
			code=$(put "ha-$n" $W/lv-$P)
			echo "$(uptime_s) ha-$n ${code:-none}" >>$W/acks-$P
			is_2xx "$code" || [ -f $W/stop ] && break
			sleep 0.2
		done
	done
}

# start_load: a load window with the next free keys; returns once a first write of it was
# acknowledged (60 s at most), so that every operation has acknowledged writes before it.
start_load() {
	rm -f $W/stop
	_next=$(awk '{ sub(/^ha-/, "", $2); if ($2 + 0 > m) m = $2 + 0 } END { print m + 1 }' $W/acks-$P)
	_ts=$(uptime_s)
	load "$_next" &
	LOAD=$!
	wait_acks_after "$_ts"
}
stop_load() {
	touch $W/stop
	wait $LOAD
	rm -f $W/stop
}

# gap START END: the longest time between two consecutive acknowledged writes among those
# around [START, END] (from the last ack before START to the first ack after END), and the
# uptime of the acknowledgement that ended it: "<seconds> <uptime>".
gap() {
	awk -v s="$1" -v e="$2" '
		$3 ~ /^2/ { t[n++] = $1 }
		END {
			first = 0; last = n - 1
			for (i = 0; i < n; i++) { if (t[i] <= s) first = i; }
			for (i = n - 1; i >= 0; i--) { if (t[i] >= e) last = i; }
			m = 0; end = 0
			for (i = first; i < last; i++) { d = t[i + 1] - t[i]; if (d > m) { m = d; end = t[i + 1] } }
			printf "%.2f %.2f", m, end
		}' $W/acks-$P
}

# wait_acks_after T: waits (60 s at most) until the load has an acknowledged write after T.
acked_after() { [ "$(awk -v t="$1" '$3 ~ /^2/ && $1 > t { c++ } END { print c + 0 }' $W/acks-$P)" -gt 0 ]; }
wait_acks_after() { wait_until 60 acked_after "$1"; }

# console_lines N: the last N suspend/resume lines of the guest's consoles (a migrated domain
# logs as NAME--incoming first).
console_lines() {
	cat "$(console_log "$G")" "$(console_log "$G--incoming")" 2>/dev/null |
		grep -E 'suspend:|resume:' | tail -n "$1" | tr '\n' '|' | cut -c1-700
}

# op STEP OP_NAME CMD...: runs CMD under the load. FIGUREs ha_<P>_<OP_NAME>_max_gap_s (the
# downtime a client sees), _xl_s (the xl command), _guest_s: from the moment the domain runs again
# to the acknowledgement that ended the gap (the guest's own resume and its first answer, plus the
# client's next attempt), so that the toolstack's part (gap less guest part: xl with the domain
# paused or suspended) and the guest's part are told apart. The domain runs again: for `xl save
# -c` at the end of its stream (xl resumes the domain, then takes a while to exit), for `xl
# restore` when it returns, for `xl migrate` at its "Domain started" line (the command itself
# returns only after destroying the old domain). 0 when the guest answered before.
op() {
	_step=$1 _op=$2
	shift 2
	begin "$_step"
	_t0=$(uptime_s)
	# xl's own output with dom0 uptimes (its phases: suspend, stream, restore, unpause).
	{
		"$@"
		echo $? >$W/op-rc
	} 2>&1 | stamp >"/var/log/xen/$_step.log"
	if [ "$(cat $W/op-rc)" != 0 ]; then
		fail "$_step" "'$*' failed after $(elapsed "$_t0") s: $(tail -n 5 "/var/log/xen/$_step.log" | tr '\n' ' ')"
		diagnose
		rc=1
		return 1
	fi
	_t1=$(uptime_s)
	_d=$(elapsed "$_t0")
	if ! wait_acks_after "$_t1"; then
		fail "$_step" "'$*' took $_d s, but no write was acknowledged in the 60 s after it; last attempts: $(tail -n 4 $W/acks-$P | tr '\n' ' '); last answer: $(head -c 160 $W/lresp-$P 2>/dev/null | tr '\r\n' '  '); console: $(console_lines 6)"
		diagnose
		rc=1
		return 1
	fi
	sleep "${HA_SETTLE_S:-4}"
	set -- $(gap "$_t0" "$_t1")
	_g=$1 _end=$2
	_run=$(awk '/Domain started/ { print $1; exit }' "/var/log/xen/$_step.log")
	[ -z "$_run" ] && [ "$_op" = checkpoint ] &&
		_run=$(awk '/End of stream/ { t = $1 } END { print t }' "/var/log/xen/$_step.log")
	_run=${_run:-$_t1}
	_gp=$(awk -v e="$_end" -v r="$_run" 'BEGIN { d = e - r; printf "%.2f", (d > 0 ? d : 0) }')
	echo "$_op $_g $_gp" >>$W/gaps-$P
	# The first acknowledged write after xl returned.
	_a=$(awk -v t="$_t1" '$3 ~ /^2/ && $1 > t { printf "%.2f", $1 - t; exit }' $W/acks-$P)
	figure "ha_${P}_${_op}_max_gap_s" "$_g" s
	figure "ha_${P}_${_op}_guest_s" "$_gp" s
	figure "ha_${P}_${_op}_xl_s" "$_d" s
	figure "ha_${P}_${_op}_ack_after_xl_s" "${_a:-0}" s
	dump_file "xl-$_step" "/var/log/xen/$_step.log" "${HA_XL_LOG_LINES:-30}"
	pass "$_step" "'$_op' took $_d s; longest gap between acknowledged writes $_g s, of which $_gp s after the domain ran again; first ack ${_a:-?} s after xl returned; console: $(console_lines 5)"
}

# stamp: prefixes every line with dom0's uptime.
stamp() { while IFS= read -r _l; do echo "$(uptime_s) $_l"; done; }

checkpoint() {
	rm -f $IMG/ckpt.img
	xl save -c "$G" $IMG/ckpt.img
	_r=$?
	rm -f $IMG/ckpt.img
	return $_r
}

# save_restore [TIME_FILE]: xl save + xl restore; writes the uptime after xl save into TIME_FILE.
save_restore() {
	rm -f $IMG/save.img
	xl save "$G" $IMG/save.img || return 1
	[ -n "$1" ] && uptime_s >"$1"
	xl restore $IMG/save.img
	_r=$?
	rm -f $IMG/save.img
	return $_r
}

# HA_XL_VERBOSE=1: xl -vvv for the migration (libxl's debug log, its device steps with dom0
# uptimes; the receiving xl gets the same verbosity), with HA_XL_LOG_LINES lines of it shown.
migrate() {
	# shellcheck disable=SC2086
	xl ${HA_XL_VERBOSE:+-vvv} migrate -s $STANDIN "$G" localhost
}

# guest_ready: a fresh write log for the current guest (use_unikernel / use_linux).
guest_ready() {
	rm -f $W/stop $W/gaps-$P $W/out-$P
	: >$W/acks-$P
}

# run_op OP: one load window for the current guest (HA_BASELINE_S of load before OP,
# HA_SETTLE_S after the first acknowledged write after it), then the check that every write
# acknowledged so far, in this window and all before, reads back intact. A guest that had no
# write acknowledged before an operation is out ($W/out-P) and skips the rest.
run_op() {
	[ -f $W/out-$P ] && return 1
	_o=$1
	_s=ha-$P-$(echo $_o | tr _ -)
	if ! start_load; then
		stop_load
		begin "$_s"
		fail "$_s" "no write acknowledged in the 60 s before the operation: $(tail -n 3 $W/acks-$P | tr '\n' ' '); last answer: $(head -c 160 $W/lresp-$P 2>/dev/null | tr '\r\n' '  ')"
		rc=1
		touch $W/out-$P
		return 1
	fi
	sleep "${HA_BASELINE_S:-5}"
	[ -f $W/gaps-$P ] || figure "ha_${P}_baseline_max_gap_s" "$(gap 0 "$(uptime_s)" | cut -d' ' -f1)" s
	op "$_s" "$_o" "$_o"
	[ -f $W/spare-on-$P ] && check_spare "$_s-spare"
	stop_load
	verify_acked "$_s-acked-intact"
}

# control_run: with HA_LOAD_S, the same load for that long without any operation (with
# HA_OPS="" a control run).
control_run() {
	[ -n "${HA_LOAD_S:-}" ] && [ ! -f $W/out-$P ] || return 0
	start_load && sleep "$HA_LOAD_S"
	stop_load
	verify_acked "ha-$P-control-acked-intact"
}

# verify_acked STEP: every key acknowledged so far reads back intact (for the unikernel through
# GET /kv/KEY, for Linux from its disk's backing file in dom0). Failures name the key, and for the
# unikernel the GET status and length.
verify_acked() {
	begin "$1"
	_bad=
	_nbad=0
	_n=0
	_dead=0
	_keys=$(awk '$3 ~ /^2/ { print $2 }' $W/acks-$P)
	# The unikernel: one wget for all keys (GETs back to back, the values concatenated) against
	# the expected bytes; only on a mismatch one GET per key, to name the bad ones. A process per
	# key costs ~0.3 s in dom0 under TCG.
	if [ $P = uk ] && [ -n "$_keys" ]; then
		_urls=
		for k in $_keys; do
			value_of "$k"
			_urls="$_urls http://$GUEST_IP:$HTTP_PORT/kv/$k"
			_n=$((_n + 1))
		done >$W/want-all
		# shellcheck disable=SC2086
		if timeout $((30 + _n)) wget -q -O $W/got-all $_urls 2>/dev/null && cmp -s $W/want-all $W/got-all; then
			_keys=
		else
			_n=0
		fi
	fi
	for k in $_keys; do
		value_of "$k" >$W/want
		_n=$((_n + 1))
		if ! check "$k" $W/want; then
			_nbad=$((_nbad + 1))
			if [ $P = uk ]; then
				_c=$(HTTP_RESP_FILE=$W/vresp HTTP_TIMEOUT=30 http_req GET "/kv/$k")
				_bad="$_bad $k(GET=${_c:-none},$(wc -c <$W/vresp)B)"
				if [ -z "$_c" ]; then
					_dead=$((_dead + 1))
					if [ $_dead -ge 3 ]; then
						_bad="$_bad (guest stopped answering; rest not checked)"
						break
					fi
				fi
			else
				_bad="$_bad $k"
			fi
		else
			_dead=0
		fi
	done
	_failed=$(awk '$3 !~ /^2/ { printf " %s@%s=%s", $2, $1, $3 }' $W/acks-$P | cut -c1-300)
	if [ -z "$_bad" ] && [ "$_n" -gt 0 ]; then
		pass "$1" "all $_n acknowledged writes read back intact (unacknowledged attempts:${_failed:- none})"
	else
		fail "$1" "$_nbad of $_n acknowledged writes checked were not read back intact:$(echo "$_bad" | cut -c1-500)"
		diagnose
		rc=1
	fi
}

# diagnose: state of a guest that stopped answering: `xl list` (CPU seconds) around five samples
# of its vCPU registers (xenctx; map RIP with `nm` on the kernel ELF), Xen's domain and event
# channel dumps, and /stats if it still answers.
diagnose() {
	_d=$(domid_of "$G")
	_f=/var/log/xen/ha-diag-$P.log
	xl list >$_f 2>&1
	for _i in 1 2 3 4 5; do
		[ -n "$_d" ] && /usr/lib/xen-4.17/bin/xenctx -a "$_d" 0 >>$_f 2>&1
		sleep 0.5
	done
	xl list >>$_f 2>&1
	xl debug-keys q >/dev/null 2>&1
	xl debug-keys e >/dev/null 2>&1
	xl dmesg 2>/dev/null | tail -n 120 >>$_f
	HTTP_TIMEOUT=15 http_get /stats $W/diag-stats 2>/dev/null && head -c 1500 $W/diag-stats >>$_f
	dump_file "ha-diag-$P" $_f
}

# ---- the spare vbd (both guests) ----
# spare_is WHAT: the unikernel's /stats lists vbd 51728 (xvdb) as WHAT.
spare_is() { uk_answers && grep -q "\"vbds\":\"[^\"]*51728:$1" /tmp/uk-stats.json; }
spare_cons() { cat "$(console_log "$G")" "$(console_log "$G--incoming")" 2>/dev/null | grep 'vbd/51728' | tail -n "$1" | tr '\n' '|' | cut -c1-400; }
vbds_listed() { grep -o '"vbds":"[^"]*"' /tmp/uk-stats.json; }

# attach_spare STEP: xl block-attach of a blank 8 MiB disk as xvdb (vbd 51728); the guest has it
# connected (spare_connected) within 60 s.
attach_spare() {
	begin "$1"
	rm -f $W/spare-on-$P
	_spare=$HARNESS_STATE/ha-spare-$P.img
	rm -f "$_spare"
	make_disk "$_spare" 8
	_t0=$(uptime_s)
	if timeout 60 xl block-attach "$G" "format=raw,vdev=xvdb,access=rw,target=$(disk_target "$_spare")" >$W/spare-attach.log 2>&1 &&
		wait_until 60 spare_connected; then
		touch $W/spare-on-$P
		pass "$1" "vbd 51728 attached at run time, connected after $(elapsed "$_t0") s: $(spare_info)"
	else
		fail "$1" "spare vbd not connected after $(elapsed "$_t0") s ($(tail -n 2 $W/spare-attach.log | tr '\n' ' ')): $(spare_info); console: $(spare_cons 3)"
		rc=1
	fi
}

# check_spare STEP: after an operation, the spare is connected again (30 s at most).
check_spare() {
	begin "$1"
	_t0=$(uptime_s)
	if wait_until 30 spare_connected; then
		pass "$1" "$(spare_info) $(elapsed "$_t0") s after the check began; console: $(spare_cons 2)"
	else
		fail "$1" "spare vbd not connected 30 s after the operation: $(spare_info); console: $(spare_cons 4)"
		rc=1
	fi
}

# adopt_spare STEP: xl block-detach of the store's disk (xvda); the store adopts the spare (a
# blank disk: formatted) and stores and reads back a key on it.
adopt_spare() {
	begin "$1"
	_t0=$(uptime_s)
	value_of ha-adopt >$W/adopt
	if timeout 60 xl block-detach "$G" xvda >$W/store-detach.log 2>&1 &&
		wait_until 60 spare_is store &&
		is_2xx "$(put ha-adopt $W/adopt)" && check ha-adopt $W/adopt; then
		pass "$1" "the store's disk detached, the spare adopted and a PUT + GET on it done in $(elapsed "$_t0") s: $(vbds_listed); console: $(spare_cons 1)"
	else
		fail "$1" "after $(elapsed "$_t0") s ($(tail -n 2 $W/store-detach.log | tr '\n' ' ')): $(vbds_listed); console: $(spare_cons 3)"
		rc=1
	fi
}

# shutdown_guest STEP DETAIL: xl shutdown -w of the current guest (60 s at most), passed with
# DETAIL; a guest still there afterwards is destroyed and the step fails.
shutdown_guest() {
	begin "$1"
	if xl_shutdown_wait "$G" 60; then
		pass "$1" "$2"
	else
		fail "$1" "domain not gone after xl shutdown -w"
		xl destroy "$G" >/dev/null 2>&1
		rc=1
	fi
}

# ha_abort: a guest could not be created; the other one goes too, and the scenario ends.
ha_abort() {
	xl destroy "$UK_NAME" >/dev/null 2>&1
	xl destroy "$LX_NAME" >/dev/null 2>&1
	exit 1
}

# ---- the unikernel ----
# uk_up: the unikernel created, serving, with its spare vbd.
uk_up() {
	use_unikernel
	uk_prepare
	# A config of its own (the same disk) where the guest also logs to port 0xE9 (Xen's console, in
	# serial.log with host timestamps), leaving the shared one as it was for the later scenarios.
	sed 's/^extra = "\(.*\)"/extra = "\1 debugcon"/' "$UK_CFG" >"$XL_CONFIG_DIR/unikernel-ha.cfg"
	UK_CFG=$XL_CONFIG_DIR/unikernel-ha.cfg
	uk_start ha-uk-create || ha_abort
	guest_ready
	attach_spare ha-uk-spare-attach
}

# uk_down: after the operations: the write figures, a 1 MiB PUT across a save, the spare
# adopted as the store's disk, shutdown.
uk_down() {
	use_unikernel
	figure ha_uk_acked_writes "$(awk '$3 ~ /^2/ { c++ } END { print c + 0 }' $W/acks-uk)" writes
	figure ha_uk_failed_writes "$(awk '$3 !~ /^2/ { c++ } END { print c + 0 }' $W/acks-uk)" writes

	# A 1 MiB PUT in flight across xl save + xl restore (the guest suspends with half the body read).
	begin ha-uk-big-put-across-save
	random_file $W/big 1048576
	rm -f $W/bigres $W/saved-at
	# The client sends half the body, pauses 6 s, then the rest: `xl save` starts 2 s in, so the
	# request is half received when the guest suspends.
	(
		{
			printf 'PUT /kv/ha-big HTTP/1.1\r\nHost: %s\r\nContent-Length: 1048576\r\nConnection: close\r\n\r\n' "$GUEST_IP"
			head -c 524288 $W/big
			sleep 6
			tail -c +524289 $W/big
		} | timeout 180 nc "$GUEST_IP" "$HTTP_PORT" >$W/bigresp 2>/dev/null
		echo "$(uptime_s) $(head -n 1 $W/bigresp | awk '{ print $2 }')" >$W/bigres
	) &
	BIG=$!
	sleep 2
	if save_restore $W/saved-at >/var/log/xen/ha-big-save.log 2>&1; then
		wait $BIG
		read -r ta code <$W/bigres
		code=${code:-none}
		read -r tsaved <$W/saved-at
		when=$(awk -v a="$ta" -v s="$tsaved" 'BEGIN { if (a < s) print "before xl save returned (not in flight across the suspend)"; else print "after the restore: in flight across the suspend" }')
		# No stale file from an earlier read may count as a partial value.
		rm -f $W/got
		if check ha-big $W/big; then got=intact; elif [ -s $W/got ]; then got="$(wc -c <$W/got)-bytes"; else got=absent; fi
		if is_2xx "$code"; then
			if [ "$got" = intact ]; then
				pass ha-uk-big-put-across-save "PUT acknowledged ($code) $when; the value reads back intact (1 MiB, sha256 $(sha $W/got))"
			else
				fail ha-uk-big-put-across-save "PUT acknowledged ($code) $when but the value is $got"
				rc=1
			fi
		elif [ "$got" = absent ]; then
			pass ha-uk-big-put-across-save "PUT not acknowledged ($code, $when) and the key is absent"
		elif [ "$got" = intact ]; then
			pass ha-uk-big-put-across-save "PUT not acknowledged ($code, $when) but stored whole (not partial)"
		else
			fail ha-uk-big-put-across-save "PUT not acknowledged ($code) and a PARTIAL value ($got) is stored"
			rc=1
		fi
	else
		fail ha-uk-big-put-across-save "save/restore failed: $(tail -n 5 /var/log/xen/ha-big-save.log | tr '\n' ' ')"
		kill $BIG 2>/dev/null
		rc=1
	fi

	[ -f $W/spare-on-$P ] && check_spare ha-uk-big-put-across-save-spare && adopt_spare ha-uk-spare-adopted-after-restores

	shutdown_guest ha-uk-shutdown "clean xl shutdown after the HA operations"
}

# ---- the Linux baseline (Debian's 6.1 kernel as a PVH guest, the harness's guest initramfs) ----
# linux_up: the Linux guest created, serving and writing, with its spare vbd.
linux_up() {
	use_linux
	# PVH like the unikernel: a PV guest cannot be live-migrated here (log-dirty mode for PV needs
	# shadow paging, which Debian's Xen lacks: "Failed to enable logdirty: 95").
	linux_baseline_cfg "$LX_NAME" "$LX_IP" 00:16:3e:00:00:04 "$LX_DISK" 64 pvh
	begin ha-linux-create
	t0=$(uptime_s)
	guest_ready
	if linux_baseline_up "$LX_NAME" "$LX_IP" &&
		t1=$(uptime_s) && value_of ha-0 >$W/lv0 && is_2xx "$(HA_ATTEMPT_S=60 put ha-0 $W/lv0)"; then
		pass ha-linux-create "Linux PVH guest (Debian 6.1, memory 128 MiB) serving after $(elapsed "$t0") s; a first block write took $(elapsed "$t1") s"
	else
		# A guest initramfs without the CGI (built from an older guest-init.sh) answers 404.
		console_has "$LX_NAME" '@@GUEST-READY.*writer=/cgi-bin/w' || why="; its ready line has no writer=/cgi-bin/w: the guest initramfs predates the CGI (stale harness cache?)"
		fail ha-linux-create "Linux guest not serving (or not writing) after $(elapsed "$t0") s; last answer: $(head -c 160 $W/lresp-linux 2>/dev/null | tr '\r\n' '  ')${why:-}"
		ha_abort
	fi
	attach_spare ha-linux-spare-attach
}

# linux_down: shutdown, every acknowledged write checked once more, the write figures.
linux_down() {
	use_linux
	shutdown_guest ha-linux-shutdown "clean xl shutdown"
	verify_acked ha-linux-acked-writes-intact
	figure ha_linux_acked_writes "$(awk '$3 ~ /^2/ { c++ } END { print c + 0 }' $W/acks-linux)" writes
	figure ha_linux_failed_writes "$(awk '$3 !~ /^2/ { c++ } END { print c + 0 }' $W/acks-linux)" writes
}

# Both guests run side by side, and the operations alternate between them: each operation is
# done on one guest, then at once on the other (HA_ORDER: "uk linux", the default, or "linux
# uk"), so that both meet the same dom0 (xl's time in an operation drifts over a boot by more
# than the difference between the guests: with one guest's operations all before the other's,
# whichever went second lost). Only the guest under test has a load; the other idles.
# HA_LINUX=0: no Linux.
GUESTS=
for _guest in ${HA_ORDER:-uk linux}; do
	case $_guest in
	uk) GUESTS="$GUESTS uk" ;;
	linux) [ "${HA_LINUX:-1}" = 1 ] && GUESTS="$GUESTS linux" ;;
	*)
		begin ha-order
		fail ha-order "HA_ORDER names $_guest (uk or linux)"
		exit 1
		;;
	esac
done
use_guest() { if [ "$1" = uk ]; then use_unikernel; else use_linux; fi; }
for _guest in $GUESTS; do "${_guest}_up"; done
for _each_op in ${HA_OPS-checkpoint save_restore migrate}; do
	for _guest in $GUESTS; do
		use_guest "$_guest"
		run_op "$_each_op"
	done
done
for _guest in $GUESTS; do
	use_guest "$_guest"
	control_run
	"${_guest}_down"
done

# The ratios unikernel / Linux per operation (goal: at most 1): of the downtime, and of its
# guest part.
ratio() { awk -v u="$1" -v l="$2" 'BEGIN { printf "%.2f", (l > 0 ? u / l : 0) }'; }
for o in checkpoint save_restore migrate; do
	u=$(awk -v o=$o '$1 == o { print $2, $3 }' $W/gaps-uk)
	l=$(awk -v o=$o '$1 == o { print $2, $3 }' $W/gaps-linux)
	if [ -n "$u" ] && [ -n "$l" ]; then
		figure "ha_${o}_downtime_ratio_uk_to_linux" "$(ratio "${u% *}" "${l% *}")" x
		figure "ha_${o}_guest_part_ratio_uk_to_linux" "$(ratio "${u#* }" "${l#* }")" x
	fi
done
exit $rc
