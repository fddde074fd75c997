# Hot-plug of the store's vbd while serving (issue 7 step 3; issue 12's /healthz), the unikernel
# and a Linux PV baseline side by side, each under a continuous write load from dom0:
#  hotplug-vbd-detach  `xl block-detach` of the guest's disk: the unikernel's /healthz answers 503
#                      with the reason, PUT and GET answer 503 at once (no hang, no 500), /stats
#                      and /metrics answer 200;
#  hotplug-vbd-attach  `xl block-attach` of the same backing file: /healthz back to 200, every
#                      write acknowledged before the detach and after the attach reads back intact;
#  hotplug-vbd-new     a second vbd attached at run time is noticed (console line, listed in
#                      /stats `vbds`) and detached again;
#  hotplug-uk-vif-cycle  `xl network-detach` of the only vif and `xl network-attach` of one with
#                      the same MAC under a write load: writes acknowledged again, all intact;
#  hotplug-linux-*     the same vbd and vif cycles for the Linux PV guest (writes: POST
#                      /cgi-bin/w?N, 4 KiB block N of its xvda, fsync'd; checked in the backing
#                      file; its re-attached eth0 is configured again by guest-init's netwatch=1).
# FIGUREs: the longest gap between two acknowledged writes across the detach/attach cycle (the
# downtime a client sees, including the time the disk is away) for both; the same gap less the
# time the test holds the disk away (from `xl block-detach` returning to `xl block-attach` being
# run: the unikernel's part probes /healthz, PUT, GET, /stats and /metrics there, Linux's only
# sleeps 2 s), which is what the two guests and the toolstack spend, and its ratio
# unikernel/Linux; and the time from `xl block-attach` returning to the next acknowledged write.
# HOTPLUG_LINUX=0 leaves the Linux baseline out (it adds ~50 s: its guest is created in ~20-50 s
# under TCG).
. /payload/lib.sh
rc=0
W=/tmp/hotplug
mkdir -p $W "$HARNESS_STATE" "$XL_CONFIG_DIR"
random_file $W/base 256
value_of() { { echo "$1"; cat $W/base; }; }

# ---- per-guest hooks: G (domain), P (figure prefix), put KEY FILE -> status, check KEY FILE ----
use_unikernel() {
	G=$UK_NAME P=uk GUEST_IP=$UNIKERNEL_IP
	put() { HTTP_RESP_FILE=$W/lresp-uk HTTP_TIMEOUT=20 HTTP_CONNECT_S=2 http_put "$1" "$2"; }
	check() { HTTP_TIMEOUT=20 http_get "/kv/$1" $W/got && cmp -s "$2" $W/got; }
}
LX_NAME=hotplug-linux
LX_IP=10.0.0.5
LX_DISK=$HARNESS_STATE/hotplug-linux-disk.img
use_linux() {
	G=$LX_NAME P=linux GUEST_IP=$LX_IP
	put() { HTTP_RESP_FILE=$W/lresp-lx HTTP_TIMEOUT=20 HTTP_CONNECT_S=2 http_req POST "/cgi-bin/w?${1#hp-}" "$2"; }
	check() {
		dd if=$LX_DISK bs=4096 skip="${1#hp-}" count=1 2>/dev/null | head -c "$(wc -c <"$2")" >$W/got
		cmp -s "$2" $W/got
	}
}

# load: PUTs hp-1, hp-2, ... back to back until $W/stop exists; one line per request in
# $W/acks-$P: "<uptime at answer> <key> <status>". A refused write waits 0.2 s before the next.
# Each attempt gives up on a connect after 2 s (HTTP_CONNECT_S, as ha.sh's client), so the gaps
# measure the guest rather than dom0's SYN back-off.
load() {
	n=0
	: >$W/acks-$P
	while [ ! -f $W/stop ]; do
		n=$((n + 1))
		value_of "hp-$n" >$W/lv-$P
		code=$(put "hp-$n" $W/lv-$P)
		echo "$(uptime_s) hp-$n ${code:-none}" >>$W/acks-$P
		is_2xx "$code" || sleep 0.2
	done
}
start_load() { rm -f $W/stop; load & LOAD=$!; }
stop_load() { touch $W/stop; wait $LOAD; rm -f $W/stop; }

# max_gap: the longest time between two consecutive acknowledged writes of the load.
max_gap() { awk '$3 ~ /^2/ { if (n++) { d = $1 - t; if (d > m) m = d } t = $1 } END { printf "%.2f", m }' $W/acks-$P; }
acked_after() { [ "$(awk -v t="$1" '$3 ~ /^2/ && $1 > t { c++ } END { print c + 0 }' $W/acks-$P)" -gt 0 ]; }
# first_ack_after T: seconds from T to the first acknowledged write after it.
first_ack_after() { awk -v t="$1" '$3 ~ /^2/ && $1 > t { printf "%.2f", $1 - t; exit }' $W/acks-$P; }
# statuses_between A B: the answers of the load between uptimes A and B ("503:12 none:1").
statuses_between() { awk -v a="$1" -v b="$2" '$1 >= a && $1 <= b { c[$3]++ } END { for (s in c) printf "%s:%d ", s, c[s] }' $W/acks-$P; }

# verify_acked STEP: every acknowledged write reads back intact.
verify_acked() {
	_bad= _n=0
	for k in $(awk '$3 ~ /^2/ { print $2 }' $W/acks-$P); do
		value_of "$k" >$W/want
		_n=$((_n + 1))
		check "$k" $W/want || _bad="$_bad $k"
	done
	if [ -z "$_bad" ] && [ "$_n" -gt 0 ]; then
		echo "all $_n acknowledged writes intact"
		return 0
	fi
	echo "$(echo "$_bad" | wc -w) of $_n acknowledged writes not intact:$(echo "$_bad" | cut -c1-300)"
	return 1
}

# gap_less_hold GAP: GAP less the time between xl block-detach returning and xl block-attach
# being run (set by the test, not by the guest or the toolstack).
gap_less_hold() { awk -v g="$1" -v a="$T_DETACHED" -v b="$T_ATT" 'BEGIN { printf "%.2f", g - (b - a) }'; }

# vbd_vdev NAME: the first vbd's vdev number (xl block-list).
vbd_vdev() { xl block-list "$1" 2>/dev/null | awk 'NR == 2 { print $1 }'; }

# cycle DISK_FILE: detach the guest's first vbd under the load, hold it away for a moment, attach
# the same backing file again. Sets T_DET T_DETACHED T_ATT T_ATTACHED (uptimes) and the xl status.
cycle_detach() {
	_vdev=$(vbd_vdev "$G")
	T_DET=$(uptime_s)
	timeout 60 xl block-detach "$G" "$_vdev" >$W/detach-$P.log 2>&1
	DET_RC=$?
	T_DETACHED=$(uptime_s)
}
cycle_attach() {
	T_ATT=$(uptime_s)
	timeout 60 xl block-attach "$G" "format=raw,vdev=xvda,access=rw,target=$(disk_target "$1")" >$W/attach-$P.log 2>&1
	ATT_RC=$?
	T_ATTACHED=$(uptime_s)
}

cons() { cat "$(console_log "$G")" 2>/dev/null; }

# vif_cycle STEP MAC: under a fresh write load, `xl network-detach` of the guest's only vif (0),
# 2 s away, `xl network-attach` of a vif with the same MAC on xenbr0 (it gets id 0 again); a
# write must be acknowledged again within 60 s and every acknowledged write read back intact.
# FIGUREs hotplug_<P>_vif_cycle_max_gap_s and _gap_less_hold_s (less the 2 s the test holds the
# vif away); the ratio is printed by the second guest's cycle.
vif_cycle() {
	begin "$1"
	bad=
	start_load
	wait_until 30 acked_after 0 || bad="$bad no-write-acknowledged-before"
	T_DET=$(uptime_s)
	timeout 60 xl network-detach "$G" 0 >$W/vdetach-$P.log 2>&1 || bad="$bad network-detach-failed($(tail -n 2 $W/vdetach-$P.log | tr '\n' ' '))"
	T_DETACHED=$(uptime_s)
	sleep 2
	T_ATT=$(uptime_s)
	timeout 60 xl network-attach "$G" bridge=xenbr0 mac="$2" >$W/vattach-$P.log 2>&1 || bad="$bad network-attach-failed($(tail -n 2 $W/vattach-$P.log | tr '\n' ' '))"
	T_ATTACHED=$(uptime_s)
	wait_until 60 acked_after "$T_ATTACHED" || bad="$bad no-write-acknowledged-after-attach"
	sleep 2
	stop_load
	if ! v=$(verify_acked); then bad="$bad $v"; fi
	g=$(max_gap)
	gl=$(gap_less_hold "$g")
	if [ -z "$bad" ]; then
		pass "$1" "xl network-detach $(awk -v a="$T_DET" -v b="$T_DETACHED" 'BEGIN { printf "%.2f", b - a }') s, xl network-attach $(awk -v a="$T_ATT" -v b="$T_ATTACHED" 'BEGIN { printf "%.2f", b - a }') s; first acknowledged write $(first_ack_after "$T_ATTACHED") s after it returned; $v; longest gap $g s ($gl s less the hold); vifs now: $(xl network-list "$G" 2>/dev/null | awk 'NR > 1 { print $1 }' | tr '\n' ' ')"
		figure "hotplug_${P}_vif_cycle_max_gap_s" "$g" s
		figure "hotplug_${P}_vif_cycle_gap_less_hold_s" "$gl" s
		echo "$gl" >$W/vif-gap-$P
		if [ -f $W/vif-gap-uk ] && [ -f $W/vif-gap-linux ]; then
			figure hotplug_vif_cycle_gap_ratio_uk_to_linux "$(awk -v u="$(cat $W/vif-gap-uk)" -v l="$(cat $W/vif-gap-linux)" 'BEGIN { printf "%.2f", (l > 0 ? u / l : 0) }')" x
		fi
	else
		fail "$1" "$bad; last answers: $(tail -n 3 $W/acks-$P | tr '\n' ' '); devices: $(device_states "$G" | tr '\n' ' '); console: $(cons | grep -E 'vif|net' | tail -n 5 | tr '\n' '|' | cut -c1-600)"
		rc=1
	fi
}

# ---------------------------------------------------------------- the unikernel
use_unikernel
domain_exists "$UK_NAME" && xl destroy "$UK_NAME" >/dev/null 2>&1
wait_until 30 domain_gone "$UK_NAME"
uk_prepare
if ! uk_start hotplug-create; then
	xl destroy "$UK_NAME" >/dev/null 2>&1
	exit 1
fi
start_load
wait_until 30 acked_after 0

begin hotplug-vbd-detach
cycle_detach
hz() { HTTP_RESP_FILE=$W/hz.resp HTTP_TIMEOUT=10 http_req GET /healthz; }
hz503() { [ "$(hz)" = 503 ]; }
bad=
wait_until 30 hz503 || bad="$bad healthz-not-503('$(head -n 1 $W/hz.resp 2>/dev/null)')"
reason=$(tail -n 1 $W/hz.resp 2>/dev/null)
echo "$reason" | grep -q detached || bad="$bad healthz-reason('$reason')"
t_503=$(elapsed "$T_DET")
random_file $W/probe 100
t=$(uptime_s)
c_put=$(HTTP_RESP_FILE=$W/put.resp HTTP_TIMEOUT=15 http_put hp-probe $W/probe)
c_get=$(HTTP_RESP_FILE=$W/get.resp HTTP_TIMEOUT=15 http_req GET /kv/hp-1)
t_kv=$(elapsed "$t")
[ "$c_put" = 503 ] || bad="$bad PUT=${c_put:-none}"
[ "$c_get" = 503 ] || bad="$bad GET=${c_get:-none}"
grep -qi '^Retry-After: 1' $W/put.resp || bad="$bad no-Retry-After"
c_stats=$(HTTP_RESP_FILE=$W/st.resp HTTP_TIMEOUT=15 http_req GET /stats)
c_metrics=$(HTTP_RESP_FILE=$W/me.resp HTTP_TIMEOUT=15 http_req GET /metrics)
[ "$c_stats" = 200 ] || bad="$bad /stats=${c_stats:-none}"
[ "$c_metrics" = 200 ] || bad="$bad /metrics=${c_metrics:-none}"
cons | grep -q 'was detached; the store is unavailable' || bad="$bad no-console-line"
st=$(device_states "$G" | tr '\n' ' ')
echo "$st" | grep -q '^vbd/' && bad="$bad vbd-node-still-there($st)"
if [ -z "$bad" ] && [ "$DET_RC" = 0 ]; then
	pass hotplug-vbd-detach "xl block-detach returned $(awk -v a="$T_DET" -v b="$T_DETACHED" 'BEGIN { printf "%.2f", b - a }') s (status 0); /healthz 503 '$reason' ${t_503} s after it began; PUT $c_put and GET $c_get in $t_kv s (Retry-After: 1); /stats $c_stats, /metrics $c_metrics; devices now: ${st:-none}"
	figure hotplug_uk_detach_to_503_s "$t_503" s
else
	fail hotplug-vbd-detach "xl block-detach status $DET_RC ($(tail -n 2 $W/detach-$P.log | tr '\n' ' ')):$bad; console: $(cons | grep -E 'blkfront|vbd|xenbus' | tail -n 4 | tr '\n' '|')"
	rc=1
fi

begin hotplug-vbd-attach
sleep 2
cycle_attach "$UK_DISK"
hz200() { [ "$(hz)" = 200 ]; }
bad=
wait_until 60 hz200 || bad="$bad healthz-not-200('$(tail -n 1 $W/hz.resp 2>/dev/null)')"
t_200=$(elapsed "$T_ATT")
wait_until 30 acked_after "$T_ATTACHED" || bad="$bad no-write-acknowledged-after-attach"
sleep 2
stop_load
during=$(statuses_between "$T_DET" "$T_ATTACHED")
echo "$during" | grep -q '500' && bad="$bad 500-during-the-cycle($during)"
if ! v=$(verify_acked); then bad="$bad $v"; fi
g=$(max_gap)
back=$(first_ack_after "$T_ATTACHED")
if [ -z "$bad" ] && [ "$ATT_RC" = 0 ]; then
	pass hotplug-vbd-attach "xl block-attach took $(awk -v a="$T_ATT" -v b="$T_ATTACHED" 'BEGIN { printf "%.2f", b - a }') s; /healthz 200 ${t_200} s after it began; first acknowledged write ${back} s after it returned; $v; load answers while detached: $during; longest gap between acknowledged writes $g s; console: $(cons | grep -E 'vbd/|kv: store re-opened' | tail -n 3 | tr '\n' '|')"
	figure hotplug_uk_attach_to_200_s "$t_200" s
	figure hotplug_uk_attach_to_first_ack_s "$back" s
	figure hotplug_uk_vbd_cycle_max_gap_s "$g" s
	figure hotplug_uk_vbd_cycle_gap_less_hold_s "$(gap_less_hold "$g")" s
	gap_less_hold "$g" >$W/gap-uk
else
	fail hotplug-vbd-attach "xl block-attach status $ATT_RC ($(tail -n 2 $W/attach-$P.log | tr '\n' ' ')):$bad; console: $(cons | grep -E 'blkfront|vbd|kv:|xenbus' | tail -n 5 | tr '\n' '|')"
	rc=1
fi

begin hotplug-vbd-new
bad=
EXTRA=$HARNESS_STATE/hotplug-extra.img
make_disk "$EXTRA" 8
mark=$(cons | wc -c)
t=$(uptime_s)
timeout 60 xl block-attach "$G" "format=raw,vdev=xvdb,access=rw,target=$(disk_target "$EXTRA")" >$W/attach-new.log 2>&1 || bad="$bad xl-block-attach-failed($(tail -n 2 $W/attach-new.log | tr '\n' ' '))"
listed() { uk_answers && grep -q '"vbds":"[^"]*51728:connected' /tmp/uk-stats.json; }
wait_until 60 listed || bad="$bad not-listed-in-/stats($(grep -o '"vbds":"[^"]*"' /tmp/uk-stats.json))"
t_new=$(elapsed "$t")
cons | tail -c +$((mark + 1)) | grep -q 'vbd/51728: attached at run time' || bad="$bad no-console-line"
hz200 || bad="$bad healthz-$(hz)"
timeout 60 xl block-detach "$G" xvdb >$W/detach-new.log 2>&1 || bad="$bad xl-block-detach-failed"
removed() { cons | tail -c +$((mark + 1)) | grep -q 'vbd/51728: removed'; }
wait_until 30 removed || bad="$bad no-removed-line"
if [ -z "$bad" ]; then
	pass hotplug-vbd-new "vbd 51728 attached at run time: listed in /stats as $(grep -o '"vbds":"[^"]*"' /tmp/uk-stats.json) ${t_new} s after xl block-attach began; console: $(cons | tail -c +$((mark + 1)) | grep 'vbd/51728' | tr '\n' '|'); detached again; /healthz still 200"
else
	fail hotplug-vbd-new "$bad; console: $(cons | tail -c +$((mark + 1)) | grep -E 'vbd|blkfront' | tail -n 4 | tr '\n' '|')"
	rc=1
fi

vif_cycle hotplug-uk-vif-cycle 00:16:3e:00:00:02

begin hotplug-uk-shutdown
if xl_shutdown_wait "$UK_NAME" 60; then
	pass hotplug-uk-shutdown "clean xl shutdown after the hot-plug cycle; console: $(cons | grep 'shutdown: store disk' | tail -n 1)"
else
	fail hotplug-uk-shutdown "domain not gone after xl shutdown -w"
	xl destroy "$UK_NAME" >/dev/null 2>&1
	rc=1
fi

# ---------------------------------------------------------------- the Linux PV baseline
[ "${HOTPLUG_LINUX:-1}" = 1 ] || exit $rc
use_linux
linux_baseline_cfg "$LX_NAME" "$LX_IP" 00:16:3e:00:00:05 "$LX_DISK" 16 pv
# netwatch=1: the guest configures a re-attached eth0 again (guest-init.sh), as a network
# manager would.
sed -i 's/^extra = "\(.*\)"/extra = "\1 netwatch=1"/' "$XL_CONFIG_DIR/$LX_NAME.cfg"
begin hotplug-linux-create
t0=$(uptime_s)
if linux_baseline_up "$LX_NAME" "$LX_IP"; then
	pass hotplug-linux-create "Linux PV guest serving after $(elapsed "$t0") s"
else
	fail hotplug-linux-create "Linux guest not serving after $(elapsed "$t0") s"
	xl destroy "$LX_NAME" >/dev/null 2>&1
	exit 1
fi
start_load
wait_until 30 acked_after 0
begin hotplug-linux-vbd-cycle
bad=
cycle_detach
sleep 2
cycle_attach "$LX_DISK"
wait_until 60 acked_after "$T_ATTACHED" || bad="$bad no-write-acknowledged-after-attach"
sleep 2
stop_load
during=$(statuses_between "$T_DET" "$T_ATTACHED")
if ! v=$(verify_acked); then bad="$bad $v"; fi
g=$(max_gap)
back=$(first_ack_after "$T_ATTACHED")
if [ -z "$bad" ] && [ "$DET_RC" = 0 ] && [ "$ATT_RC" = 0 ]; then
	pass hotplug-linux-vbd-cycle "xl block-detach $(awk -v a="$T_DET" -v b="$T_DETACHED" 'BEGIN { printf "%.2f", b - a }') s, xl block-attach $(awk -v a="$T_ATT" -v b="$T_ATTACHED" 'BEGIN { printf "%.2f", b - a }') s; first acknowledged write ${back} s after it returned; $v; answers while detached: $during; longest gap $g s"
	figure hotplug_linux_attach_to_first_ack_s "$back" s
	figure hotplug_linux_vbd_cycle_max_gap_s "$g" s
	gl=$(gap_less_hold "$g")
	figure hotplug_linux_vbd_cycle_gap_less_hold_s "$gl" s
	[ -f $W/gap-uk ] && figure hotplug_vbd_cycle_gap_ratio_uk_to_linux "$(awk -v u="$(cat $W/gap-uk)" -v l="$gl" 'BEGIN { printf "%.2f", (l > 0 ? u / l : 0) }')" x
else
	fail hotplug-linux-vbd-cycle "detach status $DET_RC ($(tail -n 2 $W/detach-$P.log | tr '\n' ' ')), attach status $ATT_RC ($(tail -n 3 $W/attach-$P.log | tr '\n' ' ')):$bad; answers while detached: $during; block-list: $(xl block-list "$G" 2>&1 | tr '\n' ' '); devices: $(device_states "$G" | tr '\n' ' '); console: $(tail -n 6 "$(console_log "$G")" | tr '\n' '|' | cut -c1-600)"
	rc=1
fi
vif_cycle hotplug-linux-vif-cycle 00:16:3e:00:00:05
xl destroy "$LX_NAME" >/dev/null 2>&1
wait_until 30 domain_gone "$LX_NAME"
exit $rc
