# `cargo xtask bench --xen` (xtask/src/bench_xen.rs): the unikernel and the Linux PV baseline
# side by side, same memory=, vcpus=1, one vif on xenbr0 and two raw vbds (xvda, xvdb) each, every
# figure taken by the same dom0-side tool for both guests (/payload/bench/xbench, built static on the
# host from tests/harness/tools/xbench). Figures: `@@FIGURE bench_<uk|linux>_<figure> VALUE UNIT`,
# one line per repetition; the host takes the median and the spread.
#
# Variables: BENCH_RUNS (3), BENCH_MEMORY (128), BENCH_IDLE (30 s), BENCH_MINMEM (1: search the
# smallest memory= of each), BENCH_BULK (1048576 B), BENCH_LAT_N (200), BENCH_RPS_CONNS (8),
# BENCH_RPS_SECS (5), BENCH_START_TIMEOUT (300 s), BENCH_MINMEM_TIMEOUT (180 s per size),
# BENCH_PARTS (all | minmem: only the smallest-memory search), BENCH_UK_CMDLINE (more unikernel
# command line, e.g. loglevel=warn), BENCH_UK_STEPS / BENCH_LINUX_STEPS (the memory= sizes tried, MiB), BENCH_BLK_TIMEOUT (600 s).
. /payload/lib.sh
B=/payload/bench
XB=$B/xbench
W=/tmp/bench
RUNS=${BENCH_RUNS:-3}
MEM=${BENCH_MEMORY:-128}
BULK=${BENCH_BULK:-1048576}
START_TIMEOUT=${BENCH_START_TIMEOUT:-300}
rc=0
# Work files and the guests' disk images on a tmpfs of their own: dom0's root is small, and in
# `cargo xtask test` the earlier scenarios have filled part of it (a full root made the loop
# devices' writes fail: the guests' disk benchmarks hung on I/O errors). Peak use: the Linux
# initramfs (~64 MiB) and one guest's two sparse 64 MiB disks with ~34 MiB written.
mkdir -p $W "$HARNESS_STATE" "$XL_CONFIG_DIR"
grep -q " $W tmpfs " /proc/mounts || mount -t tmpfs -o size=192m tmpfs $W

# The Linux guest's initramfs plus xbench and its hook, as ONE gzip stream of the two cpio
# archives (both padded to 512 bytes by GNU cpio): libxc inflates a gzip ramdisk itself and trusts
# the size in the last member's trailer, so concatenated gzip members fail to inflate.
{ gzip -dc /boot/guest-initrd.img && gzip -dc $B/guest-extra.cpio.gz; } | gzip -6 >$W/linux-initrd.img

# Loop counters are named _run: lib.sh's functions (domid_of, device_states) use _i as a global.

# Per guest: address, HTTP port and path of the first answer, key-value port.
UK_IP=$UNIKERNEL_IP
LX_IP=${LINUX_GUEST_IP:-10.0.0.3}
ip_of() { if [ "$1" = uk ]; then echo "$UK_IP"; else echo "$LX_IP"; fi; }
answer_path() { if [ "$1" = uk ]; then echo /stats; else echo /; fi; }
kv_port() { if [ "$1" = uk ]; then echo 80; else echo 8080; fi; }

# val KEY "k=v k=v": the value of KEY in xbench's output.
val() { echo "$2" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
fadd() { awk -v a="$1" -v b="$2" -v c="${3:-0}" 'BEGIN { printf "%.3f", a + b + c }'; }

# mkcfg GUEST NAME MEMORY EXTRA: writes $XL_CONFIG_DIR/NAME.cfg with fresh disks.
mkcfg() {
	_a=$W/$2-a.img
	_b=$W/$2-b.img
	make_disk "$_a" 64
	make_disk "$_b" 64
	_disks="\"format=raw,vdev=xvda,access=rw,target=$(disk_target "$_a")\", \"format=raw,vdev=xvdb,access=rw,target=$(disk_target "$_b")\""
	if [ "$1" = uk ]; then
		cat >"$XL_CONFIG_DIR/$2.cfg" <<-EOF
			name = "$2"
			type = "pvh"
			kernel = "$B/unikernel.elf"
			extra = "ip=$UK_IP/24 gw=$DOM0_IP ${BENCH_UK_CMDLINE:-} $4"
			memory = $3
			vcpus = 1
			vif = [ "bridge=xenbr0,mac=00:16:3e:00:00:02" ]
			disk = [ $_disks ]
			on_crash = "destroy"
		EOF
	else
		cat >"$XL_CONFIG_DIR/$2.cfg" <<-EOF
			name = "$2"
			type = "pv"
			kernel = "/boot/guest-vmlinux"
			ramdisk = "$W/linux-initrd.img"
			extra = "console=hvc0 quiet ip=$LX_IP/24 gw=$DOM0_IP $4"
			memory = $3
			vcpus = 1
			vif = [ "bridge=xenbr0,mac=00:16:3e:00:00:03" ]
			disk = [ $_disks ]
			on_crash = "destroy"
		EOF
	fi
}

# hotplug_idle: no xen hotplug script (block, vif-bridge) is running in dom0.
hotplug_idle() { ! ps -o args 2>/dev/null | grep -q '[/]etc/xen/scripts/'; }

# create_retry NAME [-p]: xl create (paused with -p), up to CREATE_TRIES (5) tries when a hotplug
# script failed. Under heavy load the block hotplug script can hit libxl's 40 s timeout (libxl then
# kills it and the create fails): each failure is shown (@@OUT, with the last lines of xl's log) and counted in the figure
# bench_diag_create_retries; before the next try the domain is destroyed and the retry waits (at
# most 60 s) until the failed try's hotplug scripts have finished. CREATE_S: the seconds of the
# try that succeeded.
CREATE_RETRIES=0
create_retry() {
	_try=1
	while :; do
		_tc0=$(uptime_s)
		if xl -v create $2 "$XL_CONFIG_DIR/$1.cfg" >"/var/log/xen/create-$1.log" 2>&1; then
			CREATE_S=$(elapsed "$_tc0")
			return 0
		fi
		# The cause, without libxl's cleanup messages (destroying the half-built domain).
		_why=$(grep -iE 'error|fail|timeout' "/var/log/xen/create-$1.log" | grep -viE 'destroy|non-existant' | tail -n 3 | tr '\n' ' ')
		say "bench: xl create $1 failed (try $_try of ${CREATE_TRIES:-5}, $(elapsed "$_tc0") s; load $(cut -d' ' -f1-3 /proc/loadavg)): $_why"
		# Only a hotplug script's failure (killed at libxl's timeout) is worth another try; a
		# create that fails for another reason (e.g. too little memory= in the smallest-memory
		# search) fails the same way again.
		# (xl -v also logs every hotplug script it starts: only its error lines count.)
		grep -iE 'error' "/var/log/xen/create-$1.log" | grep -qiE 'timeout|hotplug|/etc/xen/scripts/' || return 1
		[ "$_try" -ge "${CREATE_TRIES:-5}" ] && return 1
		xl destroy "$1" >/dev/null 2>&1
		wait_until 30 domain_gone "$1"
		wait_until 60 hotplug_idle
		CREATE_RETRIES=$((CREATE_RETRIES + 1))
		_try=$((_try + 1))
	done
}

# ready_lines NAME: how many "serving" lines the guest's console shows so far (the unikernel's
# "net: ready, serving", the Linux guest's "@@BENCH-READY" from tests/harness/tools/guest-hook.sh).
ready_pattern() { if [ "$1" = uk ]; then echo 'net: ready, serving'; else echo '@@BENCH-READY'; fi; }
ready_lines() {
	_c=$(grep -c "$(ready_pattern "$1")" "$(console_log "$2")" 2>/dev/null)
	echo "${_c:-0}"
}
# ready_after GUEST NAME N: the guest has printed more than N serving lines.
ready_after() { [ "$(ready_lines "$1" "$2")" -gt "$3" ]; }
# ready_s GUEST NAME: the guest's own uptime (its clock, seconds since its kernel started) on its
# last serving line: the unikernel's console timestamp, Linux's /proc/uptime.
ready_s() {
	tr -d '\r' <"$(console_log "$2")" | grep "$(ready_pattern "$1")" | tail -n 1 |
		sed -n -e 's/^\[ *\([0-9.]*\)\].*/\1/p' -e 's/^@@BENCH-READY \([0-9.]*\).*/\1/p'
}

# boot_timeline NAME: from the unikernel's console, its last boot: "A B" = milliseconds from
# its "devices in xenstore" line to its last vbd connected, and to "net: ready, serving".
boot_timeline() {
	tr -d '\r' <"$(console_log "$1")" | awk '
		function ts(l) { sub(/^\[ */, "", l); sub(/\].*/, "", l); return l + 0 }
		/xen: grant table up/ { d = ""; v = ""; r = "" }
		/xen: devices in xenstore/ { d = ts($0) }
		/blkfront vbd\/[0-9]+: connected in/ { v = ts($0) }
		/net: ready, serving/ { r = ts($0) }
		END { if (d != "" && v != "" && r != "") printf "%d %d", (v - d) * 1000, (r - d) * 1000 }'
}

# drop NAME: destroys the domain and releases its disks.
drop() {
	xl destroy "$1" >/dev/null 2>&1
	wait_until 30 domain_gone "$1"
	for _f in "$W/$1-a.img" "$W/$1-b.img"; do
		[ "${DISK_MODE:-loop}" = file ] || /usr/sbin/losetup -d "$(disk_target "$_f")" 2>/dev/null
		rm -f "$_f"
	done
}

# boot_cycles GUEST: RUNS times xl create -p, xl unpause to the first HTTP answer, xl shutdown.
boot_cycles() {
	_g=$1
	_n=bench-$_g
	begin "bench-$_g-boot"
	mkcfg "$_g" "$_n" "$MEM" ""
	_run=0
	_res=
	while [ $_run -lt "$RUNS" ]; do
		if ! create_retry "$_n" -p; then
			fail "bench-$_g-boot" "xl create -p failed ${CREATE_TRIES:-5} times: $(tail -n 3 "/var/log/xen/create-$_n.log" | tr '\n' ' ')"
			drop "$_n"
			return 1
		fi
		_tc=$CREATE_S
		_r0=$(ready_lines "$_g" "$_n")
		if ! _o=$($XB first-answer "$(ip_of "$_g")" 80 "$(answer_path "$_g")" "$START_TIMEOUT" -- xl unpause "$_n"); then
			fail "bench-$_g-boot" "no HTTP answer within $START_TIMEOUT s of xl unpause"
			drop "$_n"
			return 1
		fi
		_start=$(val after_cmd_s "$_o")
		figure "bench_${_g}_boot_start_to_answer_s" "$_start" s
		# The guest's own clock when it started serving (its console line may reach dom0's
		# console log just after the answer).
		if wait_until 20 ready_after "$_g" "$_n" "$_r0"; then
			figure "bench_${_g}_boot_guest_ready_s" "$(ready_s "$_g" "$_n")" s
		fi
		if [ "$_g" = uk ]; then
			# Diagnostic (not in the table): from the device listing to the vbds connected and
			# to serving, on the unikernel's clock.
			_tl=$(boot_timeline "$_n")
			[ -n "$_tl" ] && figure bench_uk_diag_devices_to_vbds_ms "${_tl% *}" ms &&
				figure bench_uk_diag_devices_to_ready_ms "${_tl#* }" ms
		fi
		# The try that succeeded (a failed try's time is in its @@OUT line).
		figure "bench_${_g}_boot_xl_create_s" "$_tc" s
		figure "bench_${_g}_boot_create_to_answer_s" "$(fadd "$_tc" "$(val cmd_s "$_o")" "$_start")" s
		_t1=$(uptime_s)
		if ! xl_shutdown_wait "$_n" 120; then
			fail "bench-$_g-boot" "not gone after xl shutdown -w"
			drop "$_n"
			return 1
		fi
		_sd=$(elapsed "$_t1")
		figure "bench_${_g}_shutdown_s" "$_sd" s
		_res="$_res [create -p ${_tc} s, unpause->answer ${_start} s, shutdown ${_sd} s]"
		_run=$((_run + 1))
	done
	drop "$_n"
	pass "bench-$_g-boot" "$RUNS cycles:$_res"
}

# blk_done_or_gone: the raw-disk benchmark of domain $BLK_NAME finished, or the domain is gone.
blk_done_or_gone() { console_has "$BLK_NAME" '@@BENCH-BLK-DONE' || domain_gone "$BLK_NAME"; }

# bench_boot GUEST: one boot with bench=blk:RUNS (the raw-disk figures on the console), then the
# network figures, dom0-visible memory, idle CPU.
bench_boot() {
	_g=$1
	_n=bench-$_g-io
	_ip=$(ip_of "$_g")
	_port=$(kv_port "$_g")
	begin "bench-$_g-blk"
	mkcfg "$_g" "$_n" "$MEM" "bench=blk:$RUNS"
	if ! create_retry "$_n"; then
		fail "bench-$_g-blk" "xl create failed: $(tail -n 3 "/var/log/xen/create-$_n.log" | tr '\n' ' ')"
		drop "$_n"
		return 1
	fi
	_log=$(console_log "$_n")
	BLK_NAME=$_n
	if ! wait_until "${BENCH_BLK_TIMEOUT:-600}" blk_done_or_gone || ! console_has "$_n" '@@BENCH-BLK-DONE'; then
		if domain_gone "$_n"; then _why="the domain died"; else _why="no @@BENCH-BLK-DONE within ${BENCH_BLK_TIMEOUT:-600} s"; fi
		fail "bench-$_g-blk" "$_why; console: $(tail -n 4 "$_log" | tr '\n' ' ')"
		drop "$_n"
		return 1
	fi
	tr -d '\r' <"$_log" | sed -n 's/.*@@BENCH-BLK \([a-z0-9_]*\) \([0-9.]*\) \(.*\)$/\1 \2 \3/p' >$W/blk-$_g
	while read -r _k _v _u; do
		figure "bench_${_g}_blk_$_k" "$_v" "$(echo "$_u" | tr -d ' ')"
	done <$W/blk-$_g
	if grep -q '@@BENCH-BLK-ERROR' "$_log" || [ ! -s $W/blk-$_g ]; then
		fail "bench-$_g-blk" "$(grep -o '@@BENCH-BLK-ERROR.*' "$_log" | head -n 2 | tr '\n' ' ')"
		rc=1
	else
		pass "bench-$_g-blk" "$(tr '\n' ';' <$W/blk-$_g)"
	fi

	begin "bench-$_g-net"
	if ! $XB first-answer "$_ip" "$_port" /kv/none "$START_TIMEOUT" -- true >/dev/null; then
		fail "bench-$_g-net" "no HTTP answer on port $_port"
		drop "$_n"
		return 1
	fi
	_bad=
	_run=0
	_res=
	while [ $_run -lt "$RUNS" ]; do
		if _o=$($XB put "$_ip" "$_port" "/kv/bulk$_run" "$BULK" 2>&1); then
			figure "bench_${_g}_net_put_mbps" "$(val mbps "$_o")" MB/s
		else _bad="$_bad put:$_o"; fi
		if _o2=$($XB get "$_ip" "$_port" "/kv/bulk$_run" "$BULK" 2>&1); then
			figure "bench_${_g}_net_get_mbps" "$(val mbps "$_o2")" MB/s
		else _bad="$_bad get:$_o2"; fi
		_res="$_res [put $(val mbps "$_o") get $(val mbps "$_o2") MB/s]"
		_run=$((_run + 1))
	done
	$XB put "$_ip" "$_port" /kv/small 64 >/dev/null 2>&1 || _bad="$_bad put-small"
	_run=0
	while [ $_run -lt "$RUNS" ]; do
		_l0=$(wc -l <"$_log")
		if _o=$($XB lat "$_ip" "$_port" /kv/small "${BENCH_LAT_N:-200}" 2>&1); then
			figure "bench_${_g}_lat_p50_us" "$(val p50_us "$_o")" us
			figure "bench_${_g}_lat_p99_us" "$(val p99_us "$_o")" us
		else _bad="$_bad lat:$_o"; fi
		if [ "$_g" = uk ]; then
			# Diagnostic (not in the table): the unikernel's own time per request of that loop
			# (`us=` of its log line: request parsed to answer queued), median; the rest of the
			# p50 is the network path between dom0 and the guest and the guest's wake-ups.
			_srv=$(tail -n +"$((_l0 + 1))" "$_log" | tr -d '\r' | sed -n 's/.*GET \/kv\/small 200 .* us=\([0-9]*\).*/\1/p' |
				sort -n | awk '{ v[NR] = $1 } END { if (NR > 0) print v[int((NR + 1) / 2)] }')
			[ -n "$_srv" ] && figure bench_uk_diag_lat_server_p50_us "$_srv" us
		fi
		if [ "$_g" = uk ] && _o3=$($XB lat "$_ip" 80 /healthz "${BENCH_LAT_N:-200}" 2>&1); then
			# Diagnostic (not in the table): the same keep-alive loop on a page that reads no disk.
			figure bench_uk_diag_healthz_p50_us "$(val p50_us "$_o3")" us
		fi
		if _o2=$($XB rps "$_ip" "$_port" /kv/small "${BENCH_RPS_CONNS:-8}" "${BENCH_RPS_SECS:-5}" 2>&1); then
			figure "bench_${_g}_rps" "$(val rps "$_o2")" req/s
		else _bad="$_bad rps:$_o2"; fi
		_res="$_res [$_o; $_o2]"
		_run=$((_run + 1))
	done
	if [ -z "$_bad" ]; then
		pass "bench-$_g-net" "$_res"
	else
		fail "bench-$_g-net" "$_bad"
		rc=1
	fi

	begin "bench-$_g-idle"
	figure "bench_${_g}_mem_xl_list_mib" "$(xl list "$_n" | awk 'NR == 2 { print $3 }')" MiB
	_c0=$(guest_cpu_s "$_n")
	sleep "${BENCH_IDLE:-30}"
	_c1=$(guest_cpu_s "$_n")
	_used=$(awk -v a="$_c0" -v b="$_c1" 'BEGIN { printf "%.2f", b - a }')
	figure "bench_${_g}_idle_cpu_s" "$_used" s
	pass "bench-$_g-idle" "$_used s of CPU over ${BENCH_IDLE:-30} s idle"
	drop "$_n"
}

# serves GUEST NAME: answers HTTP, stores and returns 1 MiB -- or the domain is gone.
serves_1mib() {
	$XB put "$(ip_of "$1")" "$(kv_port "$1")" /kv/mm 1048576 >/dev/null 2>&1 &&
		$XB get "$(ip_of "$1")" "$(kv_port "$1")" /kv/mm 1048576 >/dev/null 2>&1
}
answers_or_gone() {
	$XB first-answer "$(ip_of "$1")" 80 "$(answer_path "$1")" 2 -- true >/dev/null 2>&1 || domain_gone "$2"
}

# min_memory GUEST STEPS: the smallest memory= of STEPS with which GUEST answers and serves 1 MiB.
min_memory() {
	begin "bench-$1-min-memory"
	_found=
	for _m in $2; do
		_n=bench-$1-m$_m
		mkcfg "$1" "$_n" "$_m" ""
		if create_retry "$_n" &&
			wait_until "${BENCH_MINMEM_TIMEOUT:-180}" answers_or_gone "$1" "$_n" && ! domain_gone "$_n" && serves_1mib "$1"; then
			_found=$_m
		fi
		drop "$_n"
		[ -n "$_found" ] && break
	done
	if [ -n "$_found" ]; then
		figure "bench_${1}_min_memory_mib" "$_found" MiB
		pass "bench-$1-min-memory" "serves with memory=$_found (tried: $2)"
	else
		fail "bench-$1-min-memory" "no size of '$2' served"
		rc=1
	fi
}

# finish: gives the tmpfs back (every guest was dropped, so no loop device holds a file).
finish() {
	rm -rf "${W:?}"/*
	umount $W 2>/dev/null
	exit $rc
}

if [ "${BENCH_PARTS:-all}" = minmem ]; then
	min_memory uk "${BENCH_UK_STEPS:-4 6 8 16 32}" || rc=1
	min_memory linux "${BENCH_LINUX_STEPS:-32 48 64 96 128}" || rc=1
	finish
fi

begin bench-image
figure bench_uk_image_kib "$(awk -v b="$(stat -c %s $B/unikernel.elf)" 'BEGIN { printf "%.1f", b / 1024 }')" KiB
figure bench_linux_image_kib "$(awk -v a="$(stat -c %s /boot/guest-vmlinux)" -v b="$(stat -c %s /boot/guest-initrd.img)" 'BEGIN { printf "%.1f", (a + b) / 1024 }')" KiB
pass bench-image "unikernel ELF (stripped) vs Linux vmlinux + initramfs, as booted"

for g in uk linux; do
	boot_cycles $g || rc=1
	bench_boot $g || rc=1
done
# Failed xl creates retried (libxl's hotplug timeout under load; each one is an @@OUT line).
figure bench_diag_create_retries "$CREATE_RETRIES" "retried xl creates"
if [ "${BENCH_MINMEM:-1}" = 1 ]; then
	min_memory uk "${BENCH_UK_STEPS:-4 6 8 16 32}" || rc=1
	min_memory linux "${BENCH_LINUX_STEPS:-32 48 64 96 128}" || rc=1
fi
finish
