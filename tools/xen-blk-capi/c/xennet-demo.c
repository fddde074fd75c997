/* xennet-demo VIF MY_IP PEER_IP: through the C ABI (Linux flavour), attaches to vif VIF, sends an
 * ARP request "who has PEER_IP, tell MY_IP" and waits (at most 20 s, over several receives with a
 * timeout) for the reply, skipping other frames; prints "is-at MAC" and detaches.
 * Exit status 0 when the reply came. */
#define _DEFAULT_SOURCE
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include "xenblk.h"

static int fail(const char *what, int rc) {
    fprintf(stderr, "xennet-demo: %s: %s (%s)\n", what, xennet_strerror(rc), xenblk_last_error());
    return 1;
}

int main(int argc, char **argv) {
    struct in_addr me, peer;
    if (argc != 4 || !inet_aton(argv[2], &me) || !inet_aton(argv[3], &peer)) {
        fprintf(stderr, "usage: xennet-demo VIF MY_IP PEER_IP\n");
        return 2;
    }
    XennetDevice *d = NULL;
    int rc = xennet_open(argv[1], 60000, &d);
    if (rc) return fail("open", rc);
    XennetInfo info;
    if ((rc = xennet_get_info(d, &info))) return fail("get_info", rc);
    printf("mac %02x:%02x:%02x:%02x:%02x:%02x mtu %u queues %u max_frame %u\n", info.mac[0], info.mac[1],
           info.mac[2], info.mac[3], info.mac[4], info.mac[5], info.mtu, info.queues, info.max_frame);

    unsigned char f[2048];
    static const unsigned char arp_head[] = {0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1};
    memset(f, 0, 60);
    memset(f, 0xff, 6);
    memcpy(f + 6, info.mac, 6);
    memcpy(f + 12, arp_head, sizeof arp_head);
    memcpy(f + 22, info.mac, 6);
    memcpy(f + 28, &me.s_addr, 4);
    memcpy(f + 38, &peer.s_addr, 4);
    if ((rc = xennet_send(d, f, 60))) return fail("send", rc);
    printf("sent an ARP request for %s\n", argv[3]);

    int skipped = 0, found = 0;
    for (int i = 0; i < 20 && !found; i++) {
        size_t len = 0;
        rc = xennet_recv(d, f, sizeof f, &len, 1000);
        if (rc == XENNET_ETIMEDOUT) continue;
        if (rc) return fail("recv", rc);
        if (len >= 42 && f[12] == 0x08 && f[13] == 0x06 && f[21] == 2 && memcmp(f + 28, &peer.s_addr, 4) == 0 &&
            memcmp(f + 32, info.mac, 6) == 0) {
            printf("%s is-at %02x:%02x:%02x:%02x:%02x:%02x\n", argv[3], f[22], f[23], f[24], f[25], f[26], f[27]);
            found = 1;
        } else {
            skipped++;
        }
    }
    printf("skipped %d other frame(s)\n", skipped);
    if ((rc = xennet_close(d))) return fail("close", rc);
    printf("closed\n");
    if (!found) {
        fprintf(stderr, "xennet-demo: no ARP reply from %s\n", argv[3]);
        return 1;
    }
    return 0;
}
