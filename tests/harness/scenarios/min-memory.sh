# Smallest `memory=` (MiB) with which the unikernel boots, answers HTTP and stores + returns a
# 1 MiB value (PUT/GET, sha256). Tries MEMORY_STEPS (default "4 6 8 12 16") in order, each with a
# fresh disk; reports the figure uk_min_memory_mib. The full scenario set at that size is
# `cargo xtask harness unikernel --memory N`.
. /payload/lib.sh
GUEST_IP=$UNIKERNEL_IP
W=/tmp/minmem
mkdir -p $W "$HARNESS_STATE" "$XL_CONFIG_DIR"
random_file $W/v 1048576
found=
for m in ${MEMORY_STEPS:-4 6 8 12 16}; do
	step=uk-memory-${m}mib
	disk=$HARNESS_STATE/minmem-$m.img
	make_disk "$disk" "${UNIKERNEL_DISK_MIB:-64}"
	install_cfg "/payload/xl/unikernel-$UK_TYPE.cfg" $W/cfg "$disk"
	sed "s/^memory = .*/memory = $m/; s/^name = .*/name = \"uk-mem-$m\"/" $W/cfg >"$XL_CONFIG_DIR/uk-mem-$m.cfg"
	begin "$step"
	if ! xl_create_logged "uk-mem-$m" "$XL_CONFIG_DIR/uk-mem-$m.cfg"; then
		echo "@@RESULT $step pass (info) xl create failed with memory=$m"
		continue
	fi
	ok=
	UK_WAIT_NAME=uk-mem-$m
	if wait_until "${UK_START_TIMEOUT:-120}" uk_answers_or_gone && uk_answers; then
		code=$(http_put big $W/v)
		if is_2xx "$code" && http_get /kv/big $W/g && [ "$(sha $W/v)" = "$(sha $W/g)" ]; then
			ok=1
		fi
	fi
	xl destroy "uk-mem-$m" >/dev/null 2>&1
	[ "${DISK_MODE:-loop}" = file ] || /usr/sbin/losetup -d "$(disk_target "$disk")" 2>/dev/null
	rm -f "$disk"
	if [ -n "$ok" ]; then
		# Informational steps: a too-small size is an expected outcome, not a failure.
		echo "@@RESULT $step pass serves and stores 1 MiB with memory=$m"
		found=$m
		break
	fi
	echo "@@RESULT $step pass (info) not serving with memory=$m"
done
begin uk-min-memory
if [ -n "$found" ]; then
	figure uk_min_memory_mib "$found" MiB
	pass uk-min-memory "smallest memory= that served: $found MiB"
else
	fail uk-min-memory "no size in '${MEMORY_STEPS:-4 6 8 12 16}' served"
	exit 1
fi
