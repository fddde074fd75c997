# Shell library for dom0 scenario scripts (busybox sh). Sourced by /init and every scenario.
#
# Reporting protocol, one line each on the console (parsed by xtask/src/harness.rs):
#   @@BEGIN <name>                      a scenario step starts
#   @@RESULT <name> pass|fail <detail>  it ended
#   @@FIGURE <key> <value> <unit>       a measured figure
#   @@OUT <text>                        text for the user (shown by `cargo xtask demo`)
#   @@LOG-BEGIN <name> / @@LOG-END <name>   a log file dump (shown on failure)
#   @@DONE <status>                     everything finished, exit status of the scenarios

[ -f /payload/env.sh ] && . /payload/env.sh
: "${DOM0_IP:=10.0.0.1}"
: "${HARNESS_STATE:=/var/lib/xen-rs}"
XL_CONFIG_DIR=${XL_CONFIG_DIR:-/etc/xen}
CONSOLE_LOG_DIR=${CONSOLE_LOG_DIR:-/var/log/xen/console}

# Seconds since dom0 boot, with centiseconds.
uptime_s() { cut -d' ' -f1 /proc/uptime; }

# elapsed START: seconds since START (a value of uptime_s), two decimals.
elapsed() { awk -v a="$1" -v b="$(uptime_s)" 'BEGIN { printf "%.2f", b - a }'; }

# STEP_PREFIX / FIGURE_PREFIX name a second pass of a scenario in the same boot apart (e.g. the
# unikernel scenarios booted as PV: pv-uk-create, pv_uk_create_xl_create_s).
begin() { echo "@@BEGIN ${STEP_PREFIX}$1"; }
pass() { n=$1; shift; echo "@@RESULT ${STEP_PREFIX}$n pass $*"; }
fail() { n=$1; shift; echo "@@RESULT ${STEP_PREFIX}$n fail $*"; }
figure() { echo "@@FIGURE ${FIGURE_PREFIX}$1 $2 $3"; }
say() { echo "@@OUT $*"; }

# dump_file NAME FILE [TAIL_LINES]: send a log file to the host between markers.
dump_file() {
	[ -f "$2" ] || return 0
	echo "@@LOG-BEGIN $1"
	if [ -n "$3" ]; then tail -n "$3" "$2"; else cat "$2"; fi | sed 's/^/@@| /'
	echo "@@LOG-END $1"
}

# harness_dump_logs [consoles]: guest consoles, and unless "consoles" is given also the
# Xen, dom0 and xl logs (the console is slow: a full dump takes a while under TCG).
harness_dump_logs() {
	if [ "$1" = consoles ]; then
		for f in "$CONSOLE_LOG_DIR"/guest-*.log; do
			[ -f "$f" ] && dump_file "console-$(basename "$f" .log | sed 's/^guest-//')" "$f" 100
		done
		return 0
	fi
	xl dmesg >/tmp/xen-dmesg.log 2>&1
	dump_file xen-dmesg /tmp/xen-dmesg.log 150
	dmesg >/tmp/dom0-dmesg.log 2>&1
	dump_file dom0-dmesg /tmp/dom0-dmesg.log 100
	for f in /var/log/xen/*.log; do
		[ -f "$f" ] && dump_file "xen-$(basename "$f" .log)" "$f" 100
	done
	for f in "$CONSOLE_LOG_DIR"/guest-*.log; do
		[ -f "$f" ] && dump_file "console-$(basename "$f" .log | sed 's/^guest-//')" "$f" 300
	done
}

poweroff_now() {
	sync
	echo o >/proc/sysrq-trigger
	sleep 60
}

# wait_until TIMEOUT_S CMD...: polls CMD every 0.5 s until it succeeds or TIMEOUT_S passes.
wait_until() {
	_deadline=$(awk -v a="$(uptime_s)" -v t="$1" 'BEGIN { printf "%.2f", a + t }')
	shift
	while :; do
		"$@" && return 0
		awk -v a="$(uptime_s)" -v d="$_deadline" 'BEGIN { exit !(a >= d) }' && return 1
		sleep 0.5
	done
}

console_log() { echo "$CONSOLE_LOG_DIR/guest-$1.log"; }

# console_has NAME PATTERN: the guest's console log contains PATTERN (grep -E).
console_has() { grep -qE "$2" "$(console_log "$1")" 2>/dev/null; }

# domid_of NAME: the domain id, from xenstore: `xenstore-list` plus one multi-key `xenstore-read`
# (xenstore-ls walks whole trees node by node, which is slow under TCG).
domid_of() {
	_ids=$(xenstore-list /local/domain 2>/dev/null) || return 1
	_paths=
	for _i in $_ids; do _paths="$_paths /local/domain/$_i/name"; done
	# shellcheck disable=SC2086
	xenstore-read $_paths 2>/dev/null | awk -v n="$1" -v ids="$_ids" '
		BEGIN { split(ids, id, /[ \n]+/) }
		$0 == n { print id[NR]; f = 1; exit }
		END { exit !f }'
}

domain_exists() { domid_of "$1" >/dev/null; }
domain_gone() { ! domain_exists "$1"; }

# device_states NAME: prints "<type>/<devid> front=<state> back=<state>" for every vif and vbd
# (five processes whatever the number of devices).
device_states() {
	_d=$(domid_of "$1") || return 1
	_keys=
	_devs=
	for _t in vif vbd; do
		for _i in $(xenstore-list "/local/domain/$_d/device/$_t" 2>/dev/null); do
			_keys="$_keys /local/domain/$_d/device/$_t/$_i/state /local/domain/$_d/device/$_t/$_i/backend"
			_devs="$_devs $_t/$_i"
		done
	done
	[ -n "$_devs" ] || return 0
	# shellcheck disable=SC2086
	_vals=$(xenstore-read $_keys 2>/dev/null)
	_bkeys=$(echo "$_vals" | awk 'NR % 2 == 0 { print $0 "/state" }')
	# shellcheck disable=SC2086
	_bvals=$(xenstore-read $_bkeys 2>/dev/null)
	echo "$_devs" | tr ' ' '\n' | grep . | awk -v v="$_vals" -v b="$_bvals" '
		BEGIN { nv = split(v, fv, "\n"); nb = split(b, bv, "\n") }
		{ print $0 " front=" fv[2 * NR - 1] " back=" bv[NR] }'
}

# all_connected NAME: at least one vif and one vbd, and every front and back state is 4 (Connected).
all_connected() {
	_s=$(device_states "$1") || return 1
	echo "$_s" | grep -q '^vif/' || return 1
	echo "$_s" | grep -q '^vbd/' || return 1
	! echo "$_s" | grep -qvE 'front=4 back=4$'
}

# check_states STEP NAME: reports the xenstore states as a scenario result.
check_states() {
	begin "$1"
	_t=$(uptime_s)
	while :; do
		_st=$(device_states "$2")
		_ok=1
		echo "$_st" | grep -q '^vif/' || _ok=
		echo "$_st" | grep -q '^vbd/' || _ok=
		echo "$_st" | grep -qvE 'front=4 back=4$' && _ok=
		[ -n "$_ok" ] && break
		awk -v a="$(uptime_s)" -v t="$_t" 'BEGIN { exit !(a - t > 30) }' && break
		sleep 1
	done
	if [ -n "$_ok" ]; then
		pass "$1" "$(echo "$_st" | tr '\n' ' ')"
	else
		fail "$1" "not all Connected (4) after 30 s: $(echo "$_st" | tr '\n' ' ')"
		return 1
	fi
}

# guest_cpu_s NAME: the domain's CPU time in seconds from `xl list`.
guest_cpu_s() { xl list "$1" 2>/dev/null | awk 'NR == 2 { print $6 }'; }

# make_disk FILE MIB: a zero-filled sparse raw image (kept if it exists).
make_disk() {
	mkdir -p "$(dirname "$1")"
	[ -f "$1" ] || truncate -s "${2}M" "$1"
}

# disk_target FILE: the disk target for xl configs. DISK_MODE=loop (default): a loop device
# attached here, kept across xl destroy/create (Debian's block hotplug script then takes its short
# "phy" path; its "file" path forks a lot, which under TCG can hit libxl's 40 s hotplug timeout).
# DISK_MODE=file: the file itself (the block script runs losetup).
disk_target() {
	if [ "${DISK_MODE:-loop}" = file ]; then
		echo "$1"
		return
	fi
	_dev=$(/usr/sbin/losetup -j "$1" | cut -d: -f1 | head -n 1)
	[ -n "$_dev" ] || _dev=$(/usr/sbin/losetup -f --show "$1")
	echo "$_dev"
}

# install_cfg TEMPLATE DEST DISK_FILE: the xl config with @DISK@ filled in.
install_cfg() {
	sed "s|@DISK@|$(disk_target "$3")|" "$1" >"$2"
}

# linux_baseline_cfg NAME IP MAC DISK_FILE DISK_MIB TYPE: a Linux baseline guest's xl config in
# $XL_CONFIG_DIR/NAME.cfg, from xl/linux-pv.cfg with its own name, address, MAC and domain type
# (pv or pvh), on a fresh blank disk of DISK_MIB MiB.
linux_baseline_cfg() {
	rm -f "$4"
	make_disk "$4" "$5"
	install_cfg /payload/xl/linux-pv.cfg "/tmp/lx-$1.cfg" "$4"
	sed "s/^name = .*/name = \"$1\"/; s/^type = .*/type = \"$6\"/; s/ip=10.0.0.3/ip=$2/; s/00:16:3e:00:00:03/$3/" \
		"/tmp/lx-$1.cfg" >"$XL_CONFIG_DIR/$1.cfg"
}

# linux_baseline_up NAME IP: xl create of that config; true once the guest printed its ready line
# (120 s at most) and its httpd answers (30 s at most).
linux_baseline_up() {
	xl_create_logged "$1" "$XL_CONFIG_DIR/$1.cfg" &&
		wait_until 120 console_has "$1" '@@GUEST-READY' &&
		wait_until 30 sh -c "timeout 5 wget -q -O /dev/null http://$2/"
}

# xl_create_logged NAME CONFIG: xl create with its output in /var/log/xen/create-NAME.log.
xl_create_logged() {
	xl -v create "$2" >"/var/log/xen/create-$1.log" 2>&1
}

# xl_shutdown_wait NAME TIMEOUT_S: clean shutdown (xl shutdown -w), then checks the domain is gone.
xl_shutdown_wait() {
	timeout "$2" xl shutdown -w "$1" >"/var/log/xen/shutdown-$1.log" 2>&1 || return 1
	# -w returns once the guest has shut down; xl's per-domain daemon then destroys it.
	wait_until 30 domain_gone "$1"
}

# ---- HTTP client helpers (busybox nc / wget) ----

# http_req METHOD URL_PATH [BODY_FILE] -> prints the status code. Uses GUEST_IP and HTTP_PORT.
# The whole raw response (headers + body) goes to $HTTP_RESP_FILE if set (callers usually run
# http_req in $(...), so they name the file), else to a file per shell and path. HTTP_TIMEOUT
# bounds the whole request (120 s); HTTP_CONNECT_S, if set, the connect (busybox nc -w), so that
# a client that retries is not left waiting for dom0's SYN back-off (1, 3, 7 s...).
HTTP_PORT=${HTTP_PORT:-80}
http_req() {
	_m=$1 _p=$2 _f=$3
	HTTP_RESP=${HTTP_RESP_FILE:-/tmp/http.resp.$$.$(echo "$_p" | tr -c 'a-zA-Z0-9' '_')}
	if [ -n "$_f" ]; then
		_len=$(wc -c <"$_f")
		{ printf '%s %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %s\r\nConnection: close\r\n\r\n' \
			"$_m" "$_p" "$GUEST_IP" "$_len"; cat "$_f"; } |
			timeout "${HTTP_TIMEOUT:-120}" nc ${HTTP_CONNECT_S:+-w "$HTTP_CONNECT_S"} "$GUEST_IP" "$HTTP_PORT" >"$HTTP_RESP" 2>/dev/null
	else
		printf '%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$_m" "$_p" "$GUEST_IP" |
			timeout "${HTTP_TIMEOUT:-120}" nc ${HTTP_CONNECT_S:+-w "$HTTP_CONNECT_S"} "$GUEST_IP" "$HTTP_PORT" >"$HTTP_RESP" 2>/dev/null
	fi
	head -n 1 "$HTTP_RESP" | awk '{ print $2 }'
}

# http_get URL_PATH OUT_FILE: GET with busybox wget; fails on non-2xx.
http_get() {
	timeout "${HTTP_TIMEOUT:-120}" wget -q -O "$2" "http://$GUEST_IP:$HTTP_PORT$1"
}

# http_put KEY FILE -> prints the status code of PUT /kv/KEY.
http_put() { http_req PUT "/kv/$1" "$2"; }

# sha FILE -> sha256 of FILE.
sha() { sha256sum "$1" | cut -d' ' -f1; }

# random_file FILE BYTES
random_file() { head -c "$2" /dev/urandom >"$1"; }

# is_2xx CODE
is_2xx() { case "$1" in 2??) return 0 ;; *) return 1 ;; esac; }

# ---- The unikernel guest ----
# UK_TYPE: the domain type, pv or pvh (the same image boots both ways): UK_TYPE set by a
# scenario (unikernel-pv.sh), else UNIKERNEL_TYPE (`cargo xtask harness --type`), else pvh.
UK_TYPE=${UK_TYPE:-${UNIKERNEL_TYPE:-pvh}}
UK_NAME=unikernel
UK_CFG=$XL_CONFIG_DIR/unikernel-$UK_TYPE.cfg
UK_DISK=$HARNESS_STATE/unikernel-$UK_TYPE-disk.img

# xen_dump_vcpus [NAME]: the unikernel's (or NAME's) vCPU registers, three samples 0.2 s apart
# and the top of the stack (xenctx; -k 0: our kernel lives low), into /var/log/xen/xenctx-NAME.log,
# which a failing run dumps: where a hung or spinning
# guest is (map RIP with the unstripped kernel ELF).
xen_dump_vcpus() {
	_n=${1:-$UK_NAME}
	_d=$(domid_of "$_n") || return 0
	for _i in 1 2 3; do
		/usr/lib/xen-4.17/bin/xenctx -a -k 0 -S -t -l 8 "$_d" >>"/var/log/xen/xenctx-$_n.log" 2>&1
		sleep 0.2
	done
}

# uk_prepare: the xl config in /etc/xen and the disk image (kept across destroy/create).
# $UK_EXTRA (e.g. `--env UK_EXTRA=evtchn=2l`) is appended to the kernel command line (`extra`).
uk_prepare() {
	mkdir -p "$HARNESS_STATE" "$XL_CONFIG_DIR"
	make_disk "$UK_DISK" "${UNIKERNEL_DISK_MIB:-64}"
	if [ ! -f "$UK_CFG" ]; then
		install_cfg "/payload/xl/unikernel-$UK_TYPE.cfg" "$UK_CFG" "$UK_DISK"
		if [ -n "$UK_EXTRA" ]; then
			sed -i "s|^extra = \"\(.*\)\"|extra = \"\1 $UK_EXTRA\"|" "$UK_CFG"
		fi
	fi
}

# uk_answers: the unikernel answers GET /stats with a 2xx.
uk_answers() { GUEST_IP=$UNIKERNEL_IP HTTP_TIMEOUT=15 http_get /stats /tmp/uk-stats.json 2>/dev/null; }

# uk_stats_brief: GET /stats for failure details (the guest's own counters).
uk_stats_brief() {
	if GUEST_IP=$UNIKERNEL_IP HTTP_TIMEOUT=15 http_get /stats /tmp/uk-stats-brief.json 2>/dev/null; then
		echo "stats: $(head -c 700 /tmp/uk-stats-brief.json | tr '\n' ' ')"
	else
		echo "stats: no answer to GET /stats"
	fi
}

# uk_answers_or_gone: the unikernel answers, or domain $UK_WAIT_NAME no longer exists (crashed:
# on_crash = "destroy"), so that waits end early.
uk_answers_or_gone() { uk_answers || domain_gone "$UK_WAIT_NAME"; }

# uk_start STEP: xl create, then waits for the first HTTP answer; reports STEP and figures.
uk_start() {
	begin "$1"
	_t0=$(uptime_s)
	if ! xl_create_logged "$UK_NAME" "$UK_CFG"; then
		fail "$1" "xl create failed: $(tail -n 5 /var/log/xen/create-$UK_NAME.log | tr '\n' ' ')"
		return 1
	fi
	_tc=$(elapsed "$_t0")
	UK_WAIT_NAME=$UK_NAME
	if wait_until "${UK_START_TIMEOUT:-120}" uk_answers_or_gone && uk_answers; then
		_ta=$(elapsed "$_t0")
		pass "$1" "xl create returned after $_tc s, first HTTP answer after $_ta s"
		figure "$(echo "$1" | tr - _)_xl_create_s" "$_tc" s
		figure "$(echo "$1" | tr - _)_to_first_http_s" "$_ta" s
	else
		if domain_gone "$UK_NAME"; then
			fail "$1" "the domain died before answering HTTP (xl create took $_tc s; see its console)"
		else
			xen_dump_vcpus
			fail "$1" "no HTTP answer from $UNIKERNEL_IP within ${UK_START_TIMEOUT:-120} s (xl create took $_tc s)"
		fi
		return 1
	fi
}
