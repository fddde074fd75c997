# Sourced by the Linux baseline guest's /init (tests/harness/guest-init.sh) when present: added to
# its initramfs by `cargo xtask bench --xen` together with /bin/xbench.
# With `bench=blk[:RUNS]` on the kernel command line: the O_DIRECT benchmark on /dev/xvdb first
# (`@@BENCH-BLK ...` lines on hvc0, as the unikernel's bench mode prints them). Then the in-memory
# HTTP key-value server on port 8080, in the background; last, `@@BENCH-READY <uptime>`.
bench_runs=
for kv in $(cat /proc/cmdline); do
	case "$kv" in
	bench=blk) bench_runs=3 ;;
	bench=blk:*) bench_runs=${kv#bench=blk:} ;;
	esac
done
if [ -n "$bench_runs" ]; then
	n=0
	while [ ! -b /dev/xvdb ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
	if ! /bin/xbench blk /dev/xvdb 32 "$bench_runs" 3; then
		echo "@@BENCH-BLK-ERROR xbench blk /dev/xvdb failed"
		echo "@@BENCH-BLK-DONE"
	fi
fi
/bin/xbench serve 8080 &
# The guest's own clock when it starts serving (busybox httpd starts right after this hook):
# `cargo xtask bench --xen` reads it as the Linux side of "boot: guest's own clock at serving".
echo "@@BENCH-READY $(cut -d' ' -f1 /proc/uptime)"
