# Classic PV paths of the unikernel that the HTTP scenarios do not reach, with the same image as
# unikernel-pv.sh (xl/unikernel-pv.cfg without devices):
# - pv-selftest: the boot self-tests (heap, frames, int3 through the PV trap table, SSE state
#   across a trap, SCHEDOP_block woken by VIRQ_TIMER), then SCHEDOP_shutdown(poweroff);
# - pv-page-fault: a read of an unmapped address reported through the trap table, with the fault
#   address Xen stores in vcpu_info (cr2), then SCHEDOP_shutdown(crash).
# Both keep the stopped domain (on_poweroff/on_crash = preserve) until the console shows the
# result, so no output is lost to the teardown.
. /payload/lib.sh
rc=0

# pv_run STEP NAME EXTRA PATTERN DETAIL: boots NAME with kernel command line EXTRA and waits for
# PATTERN (grep -E) on its console.
pv_run() {
	begin "$1"
	sed -e "s/^name = .*/name = \"$2\"/" -e "s|^extra = .*|extra = \"$3\"|" \
		-e '/^vif/d' -e '/^disk/d' -e 's/^on_crash = .*/on_crash = "preserve"/' \
		/payload/xl/unikernel-pv.cfg >"$XL_CONFIG_DIR/$2.cfg"
	echo 'on_poweroff = "preserve"' >>"$XL_CONFIG_DIR/$2.cfg"
	if ! xl_create_logged "$2" "$XL_CONFIG_DIR/$2.cfg"; then
		fail "$1" "xl create failed: $(tail -n 5 "/var/log/xen/create-$2.log" | tr '\n' ' ')"
		rc=1
		return
	fi
	if wait_until "${PV_BOOT_TIMEOUT:-90}" console_has "$2" "$4"; then
		pass "$1" "$5: $(grep -E "$4" "$(console_log "$2")" | head -n 1 | cut -c1-200)"
	else
		fail "$1" "no '$4' on the console within ${PV_BOOT_TIMEOUT:-90} s: $(tail -n 3 "$(console_log "$2")" | tr '\n' ' ' | cut -c1-400)"
		rc=1
	fi
	xl destroy "$2" >/dev/null 2>&1
}

pv_run pv-selftest uk-pv-selftest "selftest" "SELFTEST PASS" "self-tests passed as PV"
pv_run pv-page-fault uk-pv-fault "fault" \
	"CPU EXCEPTION 14: page fault.*cr2=0x100001000" "fault reported through the PV trap table"
exit $rc
