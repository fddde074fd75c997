#!/bin/busybox sh
# /sbin/poweroff of the Linux PV guest: the kernel runs it on `xl shutdown` (orderly_poweroff).
echo "@@GUEST-POWEROFF"
exec /bin/busybox poweroff -f
