/* Host test of the C ABI (no Xen here): error codes, messages, NULL handling, and the clear
 * error when /dev/xen is absent. Exit status 0 when every check passed. */
#include <stdio.h>
#include <string.h>
#include "xenblk.h"

static int failures;
#define CHECK(cond, ...) do { if (!(cond)) { failures++; printf("FAIL %s:%d: ", __FILE__, __LINE__); printf(__VA_ARGS__); printf("\n"); } } while (0)

int main(void) {
    for (int c = XENBLK_OK; c >= XENBLK_EPANIC; c--) {
        const char *s = xenblk_strerror(c);
        CHECK(s != NULL && strlen(s) > 0, "strerror(%d) empty", c);
        CHECK(strcmp(s, "unknown error code") != 0, "strerror(%d) unknown", c);
    }
    CHECK(strcmp(xenblk_strerror(-1000), "unknown error code") == 0, "strerror(-1000)");

    XenblkDevice *d = (XenblkDevice *)0x1;
    CHECK(xenblk_open(NULL, 0, &d) == XENBLK_EINVAL, "open(NULL)");
    CHECK(d == (XenblkDevice *)0x1, "open(NULL) wrote *out");
    CHECK(xenblk_open("51728", 0, NULL) == XENBLK_EINVAL, "open(out NULL)");
    CHECK(strstr(xenblk_last_error(), "null") != NULL, "last_error after EINVAL: %s", xenblk_last_error());

    int rc = xenblk_open("51728", 500, &d);
    CHECK(rc == XENBLK_ENODEV, "open without /dev/xen: %d (%s)", rc, xenblk_strerror(rc));
    CHECK(d == (XenblkDevice *)0x1, "a failed open wrote *out");
    CHECK(strstr(xenblk_last_error(), "/dev/xen/xenbus") != NULL, "last_error: %s", xenblk_last_error());

    unsigned char buf[512];
    XenblkInfo info;
    CHECK(xenblk_read(NULL, 0, buf, sizeof buf) == XENBLK_EINVAL, "read(NULL)");
    CHECK(xenblk_write(NULL, 0, buf, sizeof buf) == XENBLK_EINVAL, "write(NULL)");
    CHECK(xenblk_get_info(NULL, &info) == XENBLK_EINVAL, "get_info(NULL)");
    CHECK(xenblk_flush(NULL) == XENBLK_EINVAL, "flush(NULL)");
    CHECK(xenblk_discard(NULL, 0, 8) == XENBLK_EINVAL, "discard(NULL)");
    CHECK(xenblk_close(NULL) == XENBLK_OK, "close(NULL)");

    printf("%s: %d failure(s)\n", failures ? "FAILED" : "ok", failures);
    return failures != 0;
}
