/* Drives the callback flavour of the C ABI: built by tests/platform_sim.rs into a shared object
 * (gcc, against the generated xenblk.h and libxenblk.so) and called with a platform table whose
 * callbacks run on the simulated Xen. Returns 0 when every check passed. */
#include <stdio.h>
#include <string.h>
#include "xenblk.h"

#define CHECK(cond, ...) do { if (!(cond)) { printf("FAIL %s:%d: ", __FILE__, __LINE__); printf(__VA_ARGS__); printf(" [%s]\n", xenblk_last_error()); return 1; } } while (0)

int xenblk_test_drive(const XenblkPlatform *platform, const char *vbd) {
    XenblkPlatform incomplete = *platform;
    XenblkDevice *d = NULL;
    incomplete.wait = NULL;
    CHECK(xenblk_open_platform(&incomplete, vbd, 0, &d) == XENBLK_EINVAL, "incomplete table accepted");
    incomplete = *platform;
    incomplete.now_ns = NULL;
    CHECK(xenblk_open_platform(&incomplete, vbd, 0, &d) == XENBLK_EINVAL, "table without a clock accepted");
    CHECK(xenblk_open_platform(platform, "4242", 0, &d) == XENBLK_ENOENT, "unknown vbd");

    int rc = xenblk_open_platform(platform, vbd, 5000, &d);
    CHECK(rc == XENBLK_OK && d != NULL, "open_platform: %s", xenblk_strerror(rc));
    XenblkInfo info;
    CHECK(xenblk_get_info(d, &info) == XENBLK_OK, "get_info");
    CHECK(info.block_size == 512 && info.blocks == 2048, "info %u %llu", info.block_size, (unsigned long long)info.blocks);

    static unsigned char data[64 * 1024], back[64 * 1024];
    for (size_t i = 0; i < sizeof data; i++) data[i] = (unsigned char)(i * 31 + 7);
    CHECK(xenblk_write(d, 100, data, sizeof data) == XENBLK_OK, "write");
    CHECK(xenblk_flush(d) == XENBLK_OK, "flush");
    CHECK(xenblk_read(d, 100, back, sizeof back) == XENBLK_OK, "read");
    CHECK(memcmp(data, back, sizeof data) == 0, "read back differs");
    CHECK(xenblk_read(d, 2048, back, 512) == XENBLK_EINVAL, "read past the end");
    CHECK(xenblk_write(d, 0, data, 100) == XENBLK_EINVAL, "partial block");
    rc = xenblk_discard(d, 0, 8);
    CHECK(rc == XENBLK_ENOTSUP, "discard without feature-discard: %d", rc);
    CHECK(xenblk_close(d) == XENBLK_OK, "close");
    printf("ok: platform flavour wrote, flushed, read back %zu bytes\n", sizeof data);
    return 0;
}
