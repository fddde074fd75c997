# The unikernel scenarios (unikernel.sh) once more in the same boot, with the same image booted as a
# classic PV guest (xl type = "pv", tests/harness/xl/unikernel-pv.cfg): steps are named pv-uk-*,
# figures pv_uk_*. Its own disk image and xl config, so it does not see the PVH pass's data.
# `--env PV_EVTCHN=2l|fifo|auto` gives this pass an event-channel ABI apart from the PVH pass's
# EVTCHN (`cargo xtask test` runs PVH on the default, FIFO, and PV on 2-level in one boot).
export UK_TYPE=pv STEP_PREFIX=pv- FIGURE_PREFIX=pv_
exec sh /payload/scenarios/unikernel.sh
