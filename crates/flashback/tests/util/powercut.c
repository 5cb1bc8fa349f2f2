/*
 * Power-loss shim for tests/power_loss.rs (LD_PRELOAD into the capture agent).
 *
 * It records, for everything under $FLASHBACK_PL_ROOT, exactly what a power cut could not take
 * away: the content a file had when it was fsync'd or fdatasync'd, and the entries a directory
 * held when the directory itself was fsync'd. tests/util/powercut.rs replays that journal after
 * the agent is SIGKILLed and rebuilds the tree as it would be after the cut: every file with
 * its last synced content (empty if never synced), every directory with its last synced
 * listing (empty if never synced, so a file synced under a name never made durable is gone).
 *
 * Why content read at fsync time rather than intercepting write/pwrite/writev/ftruncate/mmap:
 * what is durable after fsync(fd) is by definition what the file holds then, however it got
 * there, so nothing written through a call we forgot to intercept can slip through. Only
 * creation (a new inode: open with O_CREAT of a missing name, mkdir) is intercepted, to tell a
 * reused inode number from its previous life. Why not FUSE: a FUSE layer must implement the
 * whole filesystem (and its own cache rules) and needs /dev/fuse and mount rights in every CI
 * container; this shim is ~300 lines, needs only gcc, and works on any filesystem.
 *
 * Journal ($FLASHBACK_PL_JOURNAL/journal), one line per event, written with one write(2) and
 * ending in " .\n" (a line cut short by the SIGKILL is ignored, as a sync that never returned):
 *   N <ino>                                 a new inode (file or directory) under the root
 *   F <ino> <size> <same> <blob_off> .      fsync: content = previous[0..same] ++ blob[blob_off..+size-same]
 *   D <ino> <n> <hexname>:<f|d|o>:<ino>... . fsync of a directory: its entries at that moment
 *   X <what> .                              a call the model cannot represent (sync, O_SYNC): the test fails
 * Blobs go to $FLASHBACK_PL_JOURNAL/blob before their F line.
 *
 * $FLASHBACK_PL_CRASH_AT = "fsync:N" or "dirsync:N": SIGKILL itself just before the N-th file
 * (or directory) sync under the root, so a test can land a cut inside a seal exactly.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

static int (*real_open)(const char *, int, ...);
static int (*real_open64)(const char *, int, ...);
static int (*real_openat)(int, const char *, int, ...);
static int (*real_openat64)(int, const char *, int, ...);
static int (*real_creat)(const char *, mode_t);
static int (*real_mkdir)(const char *, mode_t);
static int (*real_mkdirat)(int, const char *, mode_t);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static void (*real_sync)(void);
static int (*real_syncfs)(int);

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static char root[PATH_MAX];
static size_t root_len;
static int journal_fd = -1, blob_fd = -1;
static off_t blob_end;
static int crash_dir_at = -1, crash_file_at = -1, dir_syncs, file_syncs;

/* Last synced content per inode, to journal only what changed (the tail is synced every
 * 100 ms; copying it whole each time would grow the blob quadratically). */
struct shadow {
    ino_t ino;
    char *data;
    size_t len;
    struct shadow *next;
};
static struct shadow *shadows;

static void init(void) __attribute__((constructor));
static void init(void) {
    real_open = dlsym(RTLD_NEXT, "open");
    real_open64 = dlsym(RTLD_NEXT, "open64");
    real_openat = dlsym(RTLD_NEXT, "openat");
    real_openat64 = dlsym(RTLD_NEXT, "openat64");
    real_creat = dlsym(RTLD_NEXT, "creat");
    real_mkdir = dlsym(RTLD_NEXT, "mkdir");
    real_mkdirat = dlsym(RTLD_NEXT, "mkdirat");
    real_fsync = dlsym(RTLD_NEXT, "fsync");
    real_fdatasync = dlsym(RTLD_NEXT, "fdatasync");
    real_sync = dlsym(RTLD_NEXT, "sync");
    real_syncfs = dlsym(RTLD_NEXT, "syncfs");
    /* Children (a redis-server for compaction) must not inherit the shim. */
    unsetenv("LD_PRELOAD");
    const char *r = getenv("FLASHBACK_PL_ROOT"), *j = getenv("FLASHBACK_PL_JOURNAL");
    if (!r || !j || !realpath(r, root))
        return;
    root_len = strlen(root);
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/journal", j);
    journal_fd = real_open(p, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    snprintf(p, sizeof p, "%s/blob", j);
    blob_fd = real_open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    blob_end = blob_fd >= 0 ? lseek(blob_fd, 0, SEEK_END) : 0;
    if (journal_fd < 0 || blob_fd < 0) {
        fprintf(stderr, "powercut shim: cannot open its journal in %s\n", j);
        _exit(99);
    }
    const char *c = getenv("FLASHBACK_PL_CRASH_AT");
    if (c && !strncmp(c, "fsync:", 6))
        crash_file_at = atoi(c + 6);
    if (c && !strncmp(c, "dirsync:", 8))
        crash_dir_at = atoi(c + 8);
}

static int active(void) { return journal_fd >= 0; }

static int under_root(const char *path) {
    return !strncmp(path, root, root_len) && (path[root_len] == 0 || path[root_len] == '/');
}

static int fd_path(int fd, char *out) {
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, out, PATH_MAX - 1);
    if (n < 0)
        return -1;
    out[n] = 0;
    return 0;
}

static void emit(const char *line, size_t len) {
    size_t done = 0;
    while (done < len) {
        ssize_t n = write(journal_fd, line + done, len - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            fprintf(stderr, "powercut shim: journal write failed\n");
            _exit(99);
        }
        done += n;
    }
}

static void emitf(const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    emit(buf, (size_t)n);
}

static struct shadow *shadow_of(ino_t ino) {
    for (struct shadow *s = shadows; s; s = s->next)
        if (s->ino == ino)
            return s;
    struct shadow *s = calloc(1, sizeof *s);
    s->ino = ino;
    s->next = shadows;
    shadows = s;
    return s;
}

/* A new inode under the root: journal it and forget what an older inode of that number held. */
static void created(int fd) {
    char path[PATH_MAX];
    struct stat st;
    if (fd < 0 || fd_path(fd, path) || !under_root(path) || fstat(fd, &st))
        return;
    pthread_mutex_lock(&lock);
    struct shadow *s = shadow_of(st.st_ino);
    free(s->data);
    s->data = NULL;
    s->len = 0;
    emitf("N %lu .\n", (unsigned long)st.st_ino);
    pthread_mutex_unlock(&lock);
}

static int open_common(int dirfd, const char *path, int flags, mode_t mode, int at, int big) {
    int existed = 1;
    struct stat st;
    if (active() && (flags & O_CREAT))
        existed = fstatat(dirfd, path, &st, 0) == 0;
    int fd;
    if (at)
        fd = (big ? real_openat64 : real_openat)(dirfd, path, flags, mode);
    else
        fd = (big ? real_open64 : real_open)(path, flags, mode);
    if (active() && fd >= 0) {
        if (!existed)
            created(fd);
        if (flags & (O_SYNC | O_DSYNC)) {
            char p[PATH_MAX];
            if (!fd_path(fd, p) && under_root(p))
                emitf("X O_SYNC-open .\n");
        }
    }
    return fd;
}

#define MODE_ARG                                                                                   \
    mode_t mode = 0;                                                                               \
    if ((flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE) {                                                        \
        va_list ap;                                                                                \
        va_start(ap, flags);                                                                       \
        mode = va_arg(ap, int);                                                                    \
        va_end(ap);                                                                                \
    }

int open(const char *path, int flags, ...) {
    MODE_ARG
    return open_common(AT_FDCWD, path, flags, mode, 0, 0);
}
int open64(const char *path, int flags, ...) {
    MODE_ARG
    return open_common(AT_FDCWD, path, flags, mode, 0, 1);
}
int openat(int dirfd, const char *path, int flags, ...) {
    MODE_ARG
    return open_common(dirfd, path, flags, mode, 1, 0);
}
int openat64(int dirfd, const char *path, int flags, ...) {
    MODE_ARG
    return open_common(dirfd, path, flags, mode, 1, 1);
}
int creat(const char *path, mode_t mode) {
    return open_common(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC, mode, 0, 0);
}

static void dir_created(int dirfd, const char *path) {
    int fd = real_openat(dirfd, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
    if (fd >= 0) {
        created(fd);
        close(fd);
    }
}

int mkdir(const char *path, mode_t mode) {
    int rc = real_mkdir(path, mode);
    if (rc == 0 && active())
        dir_created(AT_FDCWD, path);
    return rc;
}
int mkdirat(int dirfd, const char *path, mode_t mode) {
    int rc = real_mkdirat(dirfd, path, mode);
    if (rc == 0 && active())
        dir_created(dirfd, path);
    return rc;
}

static void maybe_crash(int *count, int at) {
    if (at > 0 && ++*count == at)
        kill(getpid(), SIGKILL);
}

static void sync_file(int fd, ino_t ino, off_t size) {
    /* The agent's fd may be write-only: read through a fresh read-only open of the same file. */
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    int rfd = real_open(link, O_RDONLY | O_CLOEXEC, 0);
    char *data = malloc(size ? (size_t)size : 1);
    off_t got = 0;
    while (rfd >= 0 && got < size) {
        ssize_t n = pread(rfd, data + got, (size_t)(size - got), got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += n;
    }
    if (rfd >= 0)
        close(rfd);
    if (got != size) {
        emitf("X short-read-of-synced-file .\n");
        free(data);
        return;
    }
    struct shadow *s = shadow_of(ino);
    size_t same = 0;
    while (same < s->len && same < (size_t)got && s->data[same] == data[same])
        same++;
    size_t rest = (size_t)got - same;
    off_t at = blob_end;
    size_t done = 0;
    while (done < rest) {
        ssize_t n = pwrite(blob_fd, data + same + done, rest - done, at + (off_t)done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            fprintf(stderr, "powercut shim: blob write failed\n");
            _exit(99);
        }
        done += n;
    }
    blob_end += (off_t)rest;
    emitf("F %lu %ld %zu %ld .\n", (unsigned long)ino, (long)got, same, (long)at);
    free(s->data);
    s->data = data;
    s->len = (size_t)got;
}

static void sync_dir(const char *path, ino_t ino) {
    DIR *d = opendir(path);
    if (!d) {
        emitf("X unreadable-dir .\n");
        return;
    }
    size_t cap = 4096, len = 0;
    char *line = malloc(cap);
    struct dirent *e;
    int n = 0;
    char *entries = malloc(cap);
    size_t elen = 0, ecap = cap;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        struct stat st;
        if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW))
            continue;
        char kind = S_ISDIR(st.st_mode) ? 'd' : S_ISREG(st.st_mode) ? 'f' : 'o';
        size_t nl = strlen(e->d_name);
        if (elen + 2 * nl + 64 > ecap) {
            ecap = 2 * (elen + 2 * nl + 64);
            entries = realloc(entries, ecap);
        }
        entries[elen++] = ' ';
        for (size_t i = 0; i < nl; i++)
            elen += sprintf(entries + elen, "%02x", (unsigned char)e->d_name[i]);
        elen += sprintf(entries + elen, ":%c:%lu", kind, (unsigned long)st.st_ino);
        n++;
    }
    closedir(d);
    if (cap < elen + 64)
        line = realloc(line, elen + 64);
    len = sprintf(line, "D %lu %d", (unsigned long)ino, n);
    memcpy(line + len, entries, elen);
    len += elen;
    memcpy(line + len, " .\n", 3);
    len += 3;
    emit(line, len);
    free(line);
    free(entries);
}

static void on_sync(int fd) {
    char path[PATH_MAX];
    struct stat st;
    if (!active() || fd_path(fd, path) || !under_root(path) || fstat(fd, &st))
        return;
    pthread_mutex_lock(&lock);
    if (S_ISDIR(st.st_mode)) {
        maybe_crash(&dir_syncs, crash_dir_at);
        sync_dir(path, st.st_ino);
    } else if (S_ISREG(st.st_mode)) {
        maybe_crash(&file_syncs, crash_file_at);
        sync_file(fd, st.st_ino, st.st_size);
    }
    pthread_mutex_unlock(&lock);
}

int fsync(int fd) {
    on_sync(fd);
    return real_fsync(fd);
}
int fdatasync(int fd) {
    on_sync(fd);
    return real_fdatasync(fd);
}
void sync(void) {
    if (active())
        emitf("X sync .\n");
    real_sync();
}
int syncfs(int fd) {
    if (active())
        emitf("X syncfs .\n");
    return real_syncfs(fd);
}
