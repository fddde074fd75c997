/* Drives the network functions of the callback flavour: built by tests/platform_sim.rs into a
 * shared object (gcc, against the generated xenblk.h and libxenblk.so) and called with a platform
 * table whose callbacks run on the simulated Xen, whose netback answers ARP requests for
 * 10.0.0.1. Returns 0 when every check passed. */
#include <stdio.h>
#include <string.h>
#include "xenblk.h"

#define CHECK(cond, ...) do { if (!(cond)) { printf("FAIL %s:%d: ", __FILE__, __LINE__); printf(__VA_ARGS__); printf(" [%s]\n", xenblk_last_error()); return 1; } } while (0)

/* An ARP request "who has 10.0.0.1, tell 10.0.0.2" from `mac`. */
static size_t arp_request(unsigned char *f, const unsigned char mac[6]) {
    static const unsigned char tail[] = {0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1};
    memset(f, 0xff, 6);
    memcpy(f + 6, mac, 6);
    memcpy(f + 12, tail, sizeof tail);
    memcpy(f + 22, mac, 6);
    f[28] = 10; f[29] = 0; f[30] = 0; f[31] = 2;
    memset(f + 32, 0, 6);
    f[38] = 10; f[39] = 0; f[40] = 0; f[41] = 1;
    memset(f + 42, 0, 18); /* padded to the 60-byte minimum */
    return 60;
}

int xennet_test_drive(const XenblkPlatform *platform, const char *vif) {
    XenblkPlatform incomplete = *platform;
    XennetDevice *d = NULL;
    incomplete.store_watch = NULL;
    CHECK(xennet_open_platform(&incomplete, vif, 0, &d) == XENNET_EINVAL, "incomplete table accepted");
    CHECK(xennet_open_platform(platform, "4242", 2000, &d) == XENNET_ENOENT, "unknown vif");
    CHECK(d == NULL, "handle set on failure");

    int rc = xennet_open_platform(platform, vif, 5000, &d);
    CHECK(rc == XENNET_OK && d != NULL, "open_platform: %s", xennet_strerror(rc));
    XennetInfo info;
    CHECK(xennet_get_info(d, &info) == XENNET_OK, "get_info");
    static const unsigned char want_mac[6] = {0x00, 0x16, 0x3e, 0x12, 0x34, 0x56};
    CHECK(memcmp(info.mac, want_mac, 6) == 0, "mac");
    CHECK(info.mtu == 1500 && info.max_frame == 1514 && info.queues == 1, "info mtu %u max_frame %u queues %u", info.mtu, info.max_frame, info.queues);

    unsigned char frame[2048], small[16];
    size_t len = 0;
    memset(frame, 0, sizeof frame);
    /* Nothing sent yet, nothing arrives: a timeout, not a hang. */
    rc = xennet_recv(d, frame, sizeof frame, &len, 50);
    CHECK(rc == XENNET_ETIMEDOUT, "recv on a quiet vif: %d", rc);
    /* Frames the device cannot send are refused. */
    CHECK(xennet_send(d, frame, 10) == XENNET_EMSGSIZE, "runt frame accepted");
    CHECK(xennet_send(d, frame, info.max_frame + 1) == XENNET_EMSGSIZE, "oversized frame accepted");

    size_t n = arp_request(frame, info.mac);
    CHECK(xennet_send(d, frame, n) == XENNET_OK, "send");
    /* The reply, first into a buffer too small: its length is reported and it is kept. */
    rc = xennet_recv(d, small, sizeof small, &len, 5000);
    CHECK(rc == XENNET_EMSGSIZE && len >= 42, "recv into a small buffer: %d len %zu", rc, len);
    memset(frame, 0, sizeof frame);
    CHECK(xennet_recv(d, frame, sizeof frame, &len, 0) == XENNET_OK, "recv the kept frame");
    CHECK(len >= 42 && frame[12] == 0x08 && frame[13] == 0x06 && frame[21] == 2, "not an ARP reply");
    CHECK(memcmp(frame, info.mac, 6) == 0 && memcmp(frame + 32, info.mac, 6) == 0, "reply not to us");
    CHECK(frame[28] == 10 && frame[29] == 0 && frame[30] == 0 && frame[31] == 1, "reply from another address");
    printf("ok: 10.0.0.1 is at %02x:%02x:%02x:%02x:%02x:%02x\n", frame[22], frame[23], frame[24], frame[25], frame[26], frame[27]);
    CHECK(xennet_close(d) == XENNET_OK, "close");
    return 0;
}
