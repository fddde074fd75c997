/* xenblk-demo VBD LBA FILE: through the C ABI, attaches to vbd VBD, writes FILE (whole blocks)
 * at block LBA, flushes, reads it back and compares, discards the last block, detaches.
 * Prints what it did; exit status 0 on success. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "xenblk.h"

static int fail(const char *what, int rc) {
    fprintf(stderr, "xenblk-demo: %s: %s (%s)\n", what, xenblk_strerror(rc), xenblk_last_error());
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: xenblk-demo VBD LBA FILE\n");
        return 2;
    }
    unsigned long long lba = strtoull(argv[2], NULL, 0);
    FILE *f = fopen(argv[3], "rb");
    if (!f) { perror(argv[3]); return 2; }
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    rewind(f);
    unsigned char *data = malloc(len > 0 ? len : 1), *back = malloc(len > 0 ? len : 1);
    if (!data || !back || len <= 0 || fread(data, 1, len, f) != (size_t)len) { fprintf(stderr, "cannot read %s\n", argv[3]); return 2; }
    fclose(f);

    XenblkDevice *d = NULL;
    int rc = xenblk_open(argv[1], 60000, &d);
    if (rc) return fail("open", rc);
    XenblkInfo info;
    if ((rc = xenblk_get_info(d, &info))) return fail("get_info", rc);
    printf("blocks %llu block_size %u read_only %u discard %u flush %u queues %u\n",
           (unsigned long long)info.blocks, info.block_size, info.read_only, info.discard, info.flush, info.queues);
    if (len % info.block_size) { fprintf(stderr, "FILE is not whole blocks\n"); xenblk_close(d); return 2; }
    /* A length that is not whole blocks is refused, nothing is written. */
    if (xenblk_write(d, lba, data, info.block_size - 1) != XENBLK_EINVAL) { fprintf(stderr, "partial block accepted\n"); return 1; }
    if ((rc = xenblk_write(d, lba, data, len))) return fail("write", rc);
    if ((rc = xenblk_flush(d))) return fail("flush", rc);
    if ((rc = xenblk_read(d, lba, back, len))) return fail("read", rc);
    if (memcmp(data, back, len)) { fprintf(stderr, "read back differs\n"); return 1; }
    printf("wrote, flushed and read back %ld bytes at block %llu: equal\n", len, lba);
    if (info.discard) {
        if ((rc = xenblk_discard(d, lba + len / info.block_size, 8))) return fail("discard", rc);
        printf("discarded 8 blocks after the data\n");
    }
    /* Out of range: an error code, not a crash. */
    rc = xenblk_read(d, info.blocks, back, info.block_size);
    if (rc != XENBLK_EINVAL) { fprintf(stderr, "read past the end gave %d\n", rc); return 1; }
    printf("read past the end: %s\n", xenblk_strerror(rc));
    if ((rc = xenblk_close(d))) return fail("close", rc);
    printf("closed\n");
    free(data);
    free(back);
    return 0;
}
