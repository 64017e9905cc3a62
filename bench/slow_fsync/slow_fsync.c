/* A slow-fsync "device" without root: LD_PRELOAD this library and every fsync(), fdatasync() and
 * sync_file_range() of the process sleeps SLOW_FSYNC_MS milliseconds (default 10) before doing the
 * real call — as an SD card or a dm-delay target would. Built by bench/slow_fsync/build (gcc). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>

static void delay(void) {
    const char *text = getenv("SLOW_FSYNC_MS");
    long ms = text ? atol(text) : 10;
    struct timespec pause = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&pause, &pause) != 0) {
    }
}

int fsync(int fd) {
    static int (*real)(int) = 0;
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    delay();
    return real(fd);
}

int fdatasync(int fd) {
    static int (*real)(int) = 0;
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    delay();
    return real(fd);
}
