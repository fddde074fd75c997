/* xennet-demo VIF MY_IP PEER_IP PORT SEND_FILE RECV_FILE PINGS
 *
 * Drives the network frontend through the C ABI (Linux flavour: /dev/xen) with raw Ethernet
 * frames, against a real peer stack (the harness runs it in dom0 against dom0's own kernel):
 *   1. ARP: asks who has PEER_IP; prints "PEER_IP is-at MAC" from the reply.
 *   2. ICMP: three echo requests with 1024-byte pseudo-random payloads (each resent after 2 s, at
 *      most 3 times); every reply must come from PEER_IP with valid IPv4 and ICMP checksums, the
 *      same id and sequence, and the same payload.
 *   3. TCP: a minimal client (one segment in flight, retransmission after 1 s) connects to
 *      PEER_IP:PORT, sends SEND_FILE, saves every byte the peer sends until its FIN in RECV_FILE,
 *      then closes (FIN, waits for its ACK).
 *   4. Prints "serving", then answers ARP requests and ICMP echo requests for MY_IP until it has
 *      answered PINGS echo requests (at most 60 s). With PINGS 0 it skips this.
 * Throughout, ARP requests and echo requests for MY_IP are answered. Detaches at the end.
 * Exit status 0 when every step succeeded; 1 on a failed check; 2 on bad usage. */
#define _DEFAULT_SOURCE
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "xenblk.h"

#define FRAME_CAP 2048
#define ETH 14
#define ICMP_PAYLOAD 1024
#define TCP_MSS 1460
#define RECV_MAX (1u << 20)

struct net {
    XennetDevice *d;
    unsigned char mac[6], peer_mac[6];
    uint32_t me, peer; /* network byte order */
    uint16_t ip_id;
    unsigned answered; /* echo requests for us answered */
    unsigned skipped;  /* frames nobody wanted */
};

/* The frame handed to a step: its IPv4 payload (l4, l4len) and addresses when it is IPv4. */
struct rx {
    unsigned char f[FRAME_CAP];
    size_t len;
    unsigned char proto;
    uint32_t src, dst;
    unsigned char *l4;
    size_t l4len;
};

static int failed(const char *what, int rc) {
    fprintf(stderr, "xennet-demo: %s: %s (%s)\n", what, xennet_strerror(rc), xenblk_last_error());
    return -1;
}

static int check_failed(const char *what) {
    fprintf(stderr, "xennet-demo: %s\n", what);
    return -1;
}

static int64_t now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static uint16_t get16(const unsigned char *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t get32(const unsigned char *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }
static void put16(unsigned char *p, uint16_t v) { p[0] = v >> 8; p[1] = v & 0xff; }
static void put32(unsigned char *p, uint32_t v) { put16(p, v >> 16); put16(p + 2, v & 0xffff); }

/* Internet checksum (RFC 1071) of `len` bytes added to `sum`, not yet folded. */
static uint32_t sum16(const unsigned char *p, size_t len, uint32_t sum) {
    size_t i;
    for (i = 0; i + 1 < len; i += 2) sum += get16(p + i);
    if (len & 1) sum += (uint32_t)p[len - 1] << 8;
    return sum;
}

static uint16_t fold(uint32_t sum) {
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)~sum;
}

/* The TCP/UDP pseudo-header sum. */
static uint32_t pseudo(uint32_t src, uint32_t dst, unsigned char proto, size_t len) {
    unsigned char h[12];
    memcpy(h, &src, 4);
    memcpy(h + 4, &dst, 4);
    h[8] = 0;
    h[9] = proto;
    put16(h + 10, (uint16_t)len);
    return sum16(h, 12, 0);
}

static void print_mac(const char *prefix, const unsigned char *m) {
    printf("%s%02x:%02x:%02x:%02x:%02x:%02x\n", prefix, m[0], m[1], m[2], m[3], m[4], m[5]);
}

static int send_frame(struct net *n, unsigned char *f, size_t len) {
    if (len < 60) {
        memset(f + len, 0, 60 - len);
        len = 60;
    }
    int rc = xennet_send(n->d, f, len);
    return rc ? failed("send", rc) : 0;
}

/* Sends the IPv4 packet whose `l4len`-byte payload is already at f + 34, to `dst` at `dst_mac`. */
static int send_ip(struct net *n, unsigned char *f, const unsigned char *dst_mac, uint32_t dst, unsigned char proto,
                   size_t l4len) {
    unsigned char *ip = f + ETH;
    memcpy(f, dst_mac, 6);
    memcpy(f + 6, n->mac, 6);
    put16(f + 12, 0x0800);
    ip[0] = 0x45;
    ip[1] = 0;
    put16(ip + 2, (uint16_t)(20 + l4len));
    put16(ip + 4, n->ip_id++);
    put16(ip + 6, 0x4000); /* don't fragment */
    ip[8] = 64;
    ip[9] = proto;
    put16(ip + 10, 0);
    memcpy(ip + 12, &n->me, 4);
    memcpy(ip + 16, &dst, 4);
    put16(ip + 10, fold(sum16(ip, 20, 0)));
    return send_frame(n, f, ETH + 20 + l4len);
}

static size_t arp_frame(unsigned char *f, const unsigned char *dst_mac, unsigned op, const unsigned char *sha,
                        uint32_t spa, const unsigned char *tha, uint32_t tpa) {
    static const unsigned char head[] = {0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4};
    memcpy(f, dst_mac, 6);
    memcpy(f + 6, sha, 6);
    memcpy(f + 12, head, sizeof head);
    put16(f + 20, (uint16_t)op);
    memcpy(f + 22, sha, 6);
    memcpy(f + 28, &spa, 4);
    memcpy(f + 32, tha, 6);
    memcpy(f + 38, &tpa, 4);
    return 42;
}

/* Parses an IPv4 frame into r (checks version, lengths, header checksum; no fragments). */
static int parse_ip(struct rx *r) {
    r->l4 = NULL;
    if (r->len < ETH + 20 || get16(r->f + 12) != 0x0800) return 0;
    unsigned char *ip = r->f + ETH;
    size_t ihl = (size_t)(ip[0] & 15) * 4, total = get16(ip + 2);
    if ((ip[0] >> 4) != 4 || ihl < 20 || total < ihl || total > r->len - ETH) return 0;
    if (fold(sum16(ip, ihl, 0)) != 0) return 0;
    if (get16(ip + 6) & 0x3fff) return 0; /* a fragment */
    r->proto = ip[9];
    memcpy(&r->src, ip + 12, 4);
    memcpy(&r->dst, ip + 16, 4);
    r->l4 = ip + ihl;
    r->l4len = total - ihl;
    return 1;
}

/* Answers what is addressed to us and no step waits for: ARP requests for our address and ICMP
 * echo requests to us. Returns 1 when it consumed the frame. */
static int answer(struct net *n, struct rx *r) {
    unsigned char out[FRAME_CAP];
    if (r->len >= 42 && get16(r->f + 12) == 0x0806 && get16(r->f + 20) == 1 && memcmp(r->f + 38, &n->me, 4) == 0) {
        uint32_t spa;
        memcpy(&spa, r->f + 28, 4);
        size_t len = arp_frame(out, r->f + 22, 2, n->mac, n->me, r->f + 22, spa);
        send_frame(n, out, len);
        return 1;
    }
    if (r->l4 && r->proto == 1 && r->dst == n->me && r->l4len >= 8 && r->l4[0] == 8 &&
        fold(sum16(r->l4, r->l4len, 0)) == 0 && r->l4len <= FRAME_CAP - ETH - 20) {
        unsigned char *icmp = out + ETH + 20;
        memcpy(icmp, r->l4, r->l4len);
        icmp[0] = 0; /* echo reply */
        put16(icmp + 2, 0);
        put16(icmp + 2, fold(sum16(icmp, r->l4len, 0)));
        if (send_ip(n, out, r->f + 6, r->src, 1, r->l4len) == 0) n->answered++;
        return 1;
    }
    return 0;
}

/* Waits until `deadline` (ms, monotonic) for a frame no responder consumed: 1 with it in r, 0 at
 * the deadline, -1 on an error. */
static int next_frame(struct net *n, struct rx *r, int64_t deadline) {
    for (;;) {
        int64_t left = deadline - now_ms();
        if (left <= 0) return 0;
        int rc = xennet_recv(n->d, r->f, sizeof r->f, &r->len, (uint32_t)(left > 1000 ? 1000 : left));
        if (rc == XENNET_ETIMEDOUT) continue;
        if (rc) return failed("recv", rc);
        parse_ip(r);
        if (!answer(n, r)) return 1;
    }
}

static int arp_peer(struct net *n, const char *peer_name) {
    static const unsigned char bcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, zero[6] = {0};
    unsigned char f[FRAME_CAP];
    struct rx r;
    for (int attempt = 0; attempt < 20; attempt++) {
        if (send_frame(n, f, arp_frame(f, bcast, 1, n->mac, n->me, zero, n->peer))) return -1;
        int64_t deadline = now_ms() + 1000;
        int got;
        while ((got = next_frame(n, &r, deadline)) == 1) {
            if (r.len >= 42 && get16(r.f + 12) == 0x0806 && get16(r.f + 20) == 2 && memcmp(r.f + 28, &n->peer, 4) == 0 &&
                memcmp(r.f + 32, n->mac, 6) == 0) {
                memcpy(n->peer_mac, r.f + 22, 6);
                printf("%s ", peer_name);
                print_mac("is-at ", n->peer_mac);
                return 0;
            }
            n->skipped++;
        }
        if (got < 0) return -1;
    }
    return check_failed("no ARP reply in 20 s");
}

static uint32_t rng_state;
static unsigned char rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 17;
    rng_state ^= rng_state << 5;
    return (unsigned char)rng_state;
}

/* Three echo requests to the peer; each reply is checked in full. */
static int ping_peer(struct net *n) {
    enum { COUNT = 3 };
    const uint16_t ident = 0x5842;
    unsigned char f[FRAME_CAP], payload[ICMP_PAYLOAD];
    struct rx r;
    int64_t rtt_total = 0;
    unsigned sent = 0;
    for (uint16_t seq = 1; seq <= COUNT; seq++) {
        unsigned char *icmp = f + ETH + 20;
        for (size_t i = 0; i < sizeof payload; i++) payload[i] = rnd();
        icmp[0] = 8;
        icmp[1] = 0;
        put16(icmp + 2, 0);
        put16(icmp + 4, ident);
        put16(icmp + 6, seq);
        memcpy(icmp + 8, payload, sizeof payload);
        put16(icmp + 2, fold(sum16(icmp, 8 + sizeof payload, 0)));
        int got = 0, ok = 0;
        int64_t t0 = 0;
        for (int attempt = 0; attempt < 3 && !ok && got >= 0; attempt++) { /* resent after 2 s */
            t0 = now_ms();
            sent++;
            if (send_ip(n, f, n->peer_mac, n->peer, 1, 8 + sizeof payload)) return -1;
            while (!ok && (got = next_frame(n, &r, t0 + 2000)) == 1) {
                if (!r.l4 || r.proto != 1 || r.src != n->peer || r.dst != n->me || r.l4len < 8 || r.l4[0] != 0 ||
                    get16(r.l4 + 4) != ident || get16(r.l4 + 6) != seq) {
                    n->skipped++;
                    continue;
                }
                if (fold(sum16(r.l4, r.l4len, 0)) != 0) return check_failed("an echo reply with a bad ICMP checksum");
                if (r.l4len != 8 + sizeof payload || memcmp(r.l4 + 8, payload, sizeof payload) != 0)
                    return check_failed("an echo reply whose payload differs from the request's");
                ok = 1;
            }
        }
        if (got < 0) return -1;
        if (!ok) {
            fprintf(stderr, "xennet-demo: no echo reply to sequence %u in 3 tries of 2 s\n", seq);
            return -1;
        }
        rtt_total += now_ms() - t0;
    }
    printf("icmp: %d of %d echo replies (%u requests sent), %d-byte payloads equal, checksums valid, avg rtt %.1f ms\n",
           COUNT, COUNT, sent, ICMP_PAYLOAD, (double)rtt_total / COUNT);
    return 0;
}

/* A TCP connection of the minimal client: one segment of ours in flight at a time. */
struct tcp {
    uint16_t lport, rport;
    uint32_t iss, snd_una, snd_nxt, rcv_nxt;
};

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_PSH 0x08
#define TCP_ACK 0x10

static int tcp_send(struct net *n, const struct tcp *t, uint32_t seq, unsigned flags, const unsigned char *data,
                    size_t len) {
    unsigned char f[FRAME_CAP];
    unsigned char *h = f + ETH + 20;
    size_t hl = (flags & TCP_SYN) ? 24 : 20;
    put16(h, t->lport);
    put16(h + 2, t->rport);
    put32(h + 4, seq);
    put32(h + 8, (flags & TCP_ACK) ? t->rcv_nxt : 0);
    h[12] = (unsigned char)((hl / 4) << 4);
    h[13] = (unsigned char)flags;
    put16(h + 14, 65535);
    put16(h + 16, 0);
    put16(h + 18, 0);
    if (flags & TCP_SYN) { /* MSS option */
        h[20] = 2;
        h[21] = 4;
        put16(h + 22, TCP_MSS);
    }
    if (len) memcpy(h + hl, data, len);
    put16(h + 16, fold(sum16(h, hl + len, pseudo(n->me, n->peer, 6, hl + len))));
    return send_ip(n, f, n->peer_mac, n->peer, 6, hl + len);
}

/* A segment of this connection from the peer (checksum verified), or NULL. */
static unsigned char *tcp_segment(const struct net *n, const struct tcp *t, struct rx *r, size_t *hl) {
    if (!r->l4 || r->proto != 6 || r->src != n->peer || r->dst != n->me || r->l4len < 20) return NULL;
    unsigned char *h = r->l4;
    if (get16(h) != t->rport || get16(h + 2) != t->lport) return NULL;
    *hl = (size_t)(h[12] >> 4) * 4;
    if (*hl < 20 || *hl > r->l4len) return NULL;
    if (fold(sum16(h, r->l4len, pseudo(r->src, r->dst, 6, r->l4len))) != 0) return NULL;
    return h;
}

/* Connects to the peer's `port`, sends `out` (`out_len` bytes), receives into `in` (at most
 * RECV_MAX) until the peer's FIN, then closes. */
static int tcp_exchange(struct net *n, uint16_t port, const unsigned char *out, size_t out_len, unsigned char *in,
                        size_t *in_len) {
    struct tcp t = {.lport = (uint16_t)(40000 + getpid() % 20000), .rport = port};
    struct rx r;
    size_t hl;
    unsigned retransmits = 0, segments_in = 0;
    t.iss = 0x58000000u ^ (uint32_t)now_ms();
    *in_len = 0;

    /* Handshake. */
    int connected = 0;
    for (int attempt = 0; attempt < 10 && !connected; attempt++) {
        if (tcp_send(n, &t, t.iss, TCP_SYN, NULL, 0)) return -1;
        int64_t deadline = now_ms() + 1000;
        int got;
        while (!connected && (got = next_frame(n, &r, deadline)) == 1) {
            unsigned char *h = tcp_segment(n, &t, &r, &hl);
            if (!h) {
                n->skipped++;
                continue;
            }
            if (h[13] & TCP_RST) return check_failed("tcp: connection refused (RST)");
            if ((h[13] & (TCP_SYN | TCP_ACK)) == (TCP_SYN | TCP_ACK) && get32(h + 8) == t.iss + 1) {
                t.rcv_nxt = get32(h + 4) + 1;
                connected = 1;
            }
        }
        if (got < 0) return -1;
    }
    if (!connected) return check_failed("tcp: no SYN-ACK in 10 s");
    t.snd_una = t.snd_nxt = t.iss + 1;
    if (tcp_send(n, &t, t.snd_nxt, TCP_ACK, NULL, 0)) return -1;

    /* Data both ways, then our FIN once the peer's came and all of ours is acknowledged. */
    const uint32_t data_end = t.iss + 1 + (uint32_t)out_len;
    int peer_fin = 0, fin_sent = 0;
    int64_t give_up = now_ms() + 60000, rto = 0;
    for (;;) {
        if (t.snd_una == t.snd_nxt) { /* nothing in flight: send the next thing */
            if (fin_sent) {
                break; /* our FIN is acknowledged */
            } else if (t.snd_nxt != data_end) {
                size_t off = t.snd_nxt - (t.iss + 1), len = out_len - off;
                if (len > TCP_MSS) len = TCP_MSS;
                if (tcp_send(n, &t, t.snd_nxt, TCP_ACK | TCP_PSH, out + off, len)) return -1;
                t.snd_nxt += (uint32_t)len;
                rto = now_ms() + 1000;
            } else if (peer_fin && !fin_sent) {
                if (tcp_send(n, &t, t.snd_nxt, TCP_FIN | TCP_ACK, NULL, 0)) return -1;
                t.snd_nxt++;
                fin_sent = 1;
                rto = now_ms() + 1000;
            }
        }
        if (now_ms() > give_up) return check_failed("tcp: the exchange did not finish within 60 s");
        int64_t until = t.snd_una != t.snd_nxt ? rto : give_up;
        int got = next_frame(n, &r, until);
        if (got < 0) return -1;
        if (got == 0) { /* retransmit what is in flight */
            if (t.snd_una == t.snd_nxt) continue;
            retransmits++;
            if (fin_sent && t.snd_una == data_end) {
                if (tcp_send(n, &t, t.snd_una, TCP_FIN | TCP_ACK, NULL, 0)) return -1;
            } else {
                size_t off = t.snd_una - (t.iss + 1), len = t.snd_nxt - t.snd_una;
                if (tcp_send(n, &t, t.snd_una, TCP_ACK | TCP_PSH, out + off, len)) return -1;
            }
            rto = now_ms() + 1000;
            continue;
        }
        unsigned char *h = tcp_segment(n, &t, &r, &hl);
        if (!h) {
            n->skipped++;
            continue;
        }
        unsigned flags = h[13];
        if (flags & TCP_RST) return check_failed("tcp: the peer reset the connection");
        if (flags & TCP_ACK) {
            uint32_t ack = get32(h + 8);
            /* acknowledges something in flight: snd_una < ack <= snd_nxt (modulo 2^32) */
            if ((int32_t)(ack - t.snd_una) > 0 && (int32_t)(ack - t.snd_nxt) <= 0) t.snd_una = ack;
        }
        size_t plen = r.l4len - hl;
        uint32_t seq = get32(h + 4);
        int must_ack = (flags & TCP_SYN) != 0; /* a repeated SYN-ACK: our ACK was lost */
        if (plen > 0) {
            must_ack = 1;
            /* In order, or a retransmission overlapping what we have: take the new tail. A
             * segment beyond rcv_nxt is dropped (the peer retransmits it). */
            uint32_t skip = t.rcv_nxt - seq;
            if ((int32_t)skip >= 0 && skip < plen) {
                size_t take = plen - skip;
                if (*in_len + take > RECV_MAX) return check_failed("tcp: the peer sent more than 1 MiB");
                memcpy(in + *in_len, h + hl + skip, take);
                *in_len += take;
                t.rcv_nxt += (uint32_t)take;
                segments_in++;
            }
        }
        if ((flags & TCP_FIN) && !peer_fin && seq + (uint32_t)plen == t.rcv_nxt) {
            t.rcv_nxt++;
            peer_fin = 1;
            must_ack = 1;
        } else if (flags & TCP_FIN) {
            must_ack = 1; /* a repeated FIN: our ACK was lost */
        }
        if (must_ack && tcp_send(n, &t, t.snd_nxt, TCP_ACK, NULL, 0)) return -1;
    }
    printf("tcp: port %u: sent %zu bytes, received %zu bytes in %u segment(s), both FINs acknowledged, "
           "%u retransmission(s)\n",
           port, out_len, *in_len, segments_in, retransmits);
    return 0;
}

/* Answers ARP and echo requests until `pings` echo requests were answered or 60 s passed. */
static int serve(struct net *n, unsigned pings, const char *me_name) {
    struct rx r;
    unsigned before = n->answered;
    int64_t deadline = now_ms() + 60000;
    printf("serving: answering ARP and ICMP echo requests for %s\n", me_name);
    fflush(stdout);
    while (n->answered - before < pings) {
        int got = next_frame(n, &r, deadline);
        if (got < 0) return -1;
        if (got == 0) break;
        n->skipped++;
    }
    printf("answered %u echo request(s) for %s\n", n->answered - before, me_name);
    if (n->answered - before < pings) return check_failed("fewer echo requests than expected within 60 s");
    return 0;
}

static unsigned char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    unsigned char *buf = malloc(RECV_MAX);
    if (!f || !buf) {
        perror(path);
        if (f) fclose(f);
        free(buf);
        return NULL;
    }
    *len = fread(buf, 1, RECV_MAX, f);
    int bad = ferror(f) || !feof(f);
    fclose(f);
    if (bad) {
        fprintf(stderr, "%s: unreadable or longer than 1 MiB\n", path);
        free(buf);
        return NULL;
    }
    return buf;
}

int main(int argc, char **argv) {
    struct net n = {0};
    struct in_addr me, peer;
    char *end = NULL;
    long port = argc == 8 ? strtol(argv[4], &end, 10) : 0;
    long pings = argc == 8 ? strtol(argv[7], NULL, 10) : -1;
    if (argc != 8 || !inet_aton(argv[2], &me) || !inet_aton(argv[3], &peer) || !end || *end || port < 1 ||
        port > 65535 || pings < 0 || pings > 100) {
        fprintf(stderr, "usage: xennet-demo VIF MY_IP PEER_IP PORT SEND_FILE RECV_FILE PINGS\n");
        return 2;
    }
    size_t out_len = 0, in_len = 0;
    unsigned char *out = read_file(argv[5], &out_len), *in = malloc(RECV_MAX);
    if (!out || !in) return 2;
    n.me = me.s_addr;
    n.peer = peer.s_addr;
    n.ip_id = (uint16_t)getpid();
    rng_state = (uint32_t)now_ms() | 1;

    int rc = xennet_open(argv[1], 60000, &n.d);
    if (rc) {
        failed("open", rc);
        return 1;
    }
    XennetInfo info;
    if ((rc = xennet_get_info(n.d, &info))) {
        failed("get_info", rc);
        xennet_close(n.d);
        return 1;
    }
    memcpy(n.mac, info.mac, 6);
    printf("mtu %u queues %u max_frame %u ", info.mtu, info.queues, info.max_frame);
    print_mac("mac ", n.mac);
    /* A frame longer than the device takes is refused with an error code, nothing is sent. */
    unsigned char big[FRAME_CAP] = {0};
    if (info.max_frame + 1 <= sizeof big && (rc = xennet_send(n.d, big, info.max_frame + 1)) != XENNET_EMSGSIZE) {
        fprintf(stderr, "xennet-demo: an oversized frame gave %d, not XENNET_EMSGSIZE\n", rc);
        xennet_close(n.d);
        return 1;
    }

    int status = 0;
    if (arp_peer(&n, argv[3]) || ping_peer(&n) || tcp_exchange(&n, (uint16_t)port, out, out_len, in, &in_len) ||
        serve(&n, (unsigned)pings, argv[2]))
        status = 1;
    if (status == 0) {
        FILE *f = fopen(argv[6], "wb");
        if (!f || fwrite(in, 1, in_len, f) != in_len || fclose(f)) {
            perror(argv[6]);
            status = 1;
        }
    }
    printf("skipped %u other frame(s)\n", n.skipped);
    if ((rc = xennet_close(n.d))) {
        failed("close", rc);
        status = 1;
    } else {
        printf("closed\n");
    }
    free(out);
    free(in);
    return status;
}
