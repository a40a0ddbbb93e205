/*
 * tether-shim: the small parent of one container, and the way into a running one.
 *
 * Why a C program: every running container needs a parent that outlives the daemon (live
 * restore) and records the exit status, because Linux only tells a process's parent how it
 * ended.  A Python parent would cost ~10 MB per container; this one is static and stays well
 * under 1 MB.  tetherd prepares everything it can from the outside (network namespace with its
 * interfaces, the files to bind in) and execs this for the rest.
 *
 *   tether-shim run --sync FD --log PATH [--log-max-size BYTES --log-max-file N] --exit PATH
 *                   [--netns PATH] [--hostname NAME]
 *                   --rootfs DIR [--overlay LOWER[:LOWER...]:UPPER:WORK | --root-tmpfs]
 *                   [--ro-bind SRC:DST]... [--symlink TARGET:DST]... [--cow-bind SRC:DST:SCRATCH]...
 *                   [--bind SRC:DST]... [--hide PATH]... [--mask PATH]... [--readonly PATH]...
 *                   [--sys-rw] [--cgroup DIR [--all-devices]] [CONFINEMENT] [--cwd DIR]
 *                   [--volume ro|rw:DST:SRC]... [--tmpfs DST:OPTIONS]... [--read-only]
 *                   [--shm-size BYTES] [--stdin] [--tty [--tty-size RxC]]
 *                   [--attach-fd FD] [--attach-listen FD] [--env-fd FD] -- CMD [ARG...]
 *   tether-shim exec --pid PID [--pid-start TICKS] [--cgroup DIR] [CONFINEMENT] [--cwd DIR]
 *                    [--env-fd FD] [--tty] -- CMD [ARG...]
 *
 *   CONFINEMENT: [--caps HEXMASK] [--no-new-privs] [--seccomp BPF_FILE [--seccomp-flags N]]
 *                [--user USER[:GROUP]] [--group-add GROUP]...
 *
 * Without --log (--log-driver none) the output goes only to attached clients.  --stdin: the
 * command's stdin is a pipe the shim holds (docker run -i), fed by attach clients; --tty: a
 * pseudo-terminal instead (docker run -t); the attach protocol is described at attach_loop.
 *
 * The command's environment comes through the inherited descriptor FD (a memfd tetherd
 * wrote), never as arguments: a command line is anyone's to read (/proc/PID/cmdline, ps) for
 * as long as the process runs, and `-e` is where secrets go.  The block is K=V entries each
 * ended by a NUL byte (as in /proc/PID/environ); it is read and FD closed before anything
 * else, so neither the container nor an exec inherits it.  Without --env-fd the command gets
 * an empty environment.  The command and its arguments stay on the command line, as Docker's
 * do in the host's `ps`.
 *
 * run: new pid/mount/uts/ipc namespaces (+ the given netns), root filesystem, /proc, /sys,
 * a minimal /dev, bind mounts, Docker's masked and read-only paths, then the confinement;
 * the command's stdout/stderr are relayed into PATH as frames
 * (1 byte stream, 4 bytes length BE, 8 bytes nanosecond time BE, data); "ok PID\n" or
 * "err MESSAGE\n" goes to the sync fd once the command is executing (or failed to); the exit
 * status goes to the exit file (atomically) when the command's pid 1 ends.
 *
 * exec: joins the namespaces and root of PID, applies the same confinement as the container
 * (tetherd passes the container's), runs the command, exits with its status.
 *
 * The root filesystem: an image's overlayfs (--overlay), or for the built-in host image a
 * fresh tmpfs (--root-tmpfs) holding read-only binds of the host's program and library
 * trees (--ro-bind, --symlink) and a copy-on-write view of its /etc whose secrets are
 * removed (--cow-bind, --hide).  The container's own files (--bind) are mounted after
 * pivot_root, through descriptors opened before it, so that nothing an image contains (a
 * symlink at /etc/hosts, say) can make the shim create or mount anything on the host.
 *
 * Confinement (see confine()): the capability bounding set is cut to HEXMASK, effective and
 * permitted become HEXMASK, inheritable and ambient are cleared; no_new_privs when asked; a
 * seccomp filter (raw struct sock_filter array, compiled by tetherd with libseccomp).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>
#include <grp.h>

#ifndef SYS_mount_setattr
#define SYS_mount_setattr 442
#endif
#ifndef AT_RECURSIVE
#define AT_RECURSIVE 0x8000
#endif
#ifndef PR_CAP_AMBIENT
#define PR_CAP_AMBIENT 47
#define PR_CAP_AMBIENT_CLEAR_ALL 4
#endif
#define ATTR_RDONLY 0x1 /* MOUNT_ATTR_RDONLY */

struct mount_attr_arg { /* struct mount_attr of <linux/mount.h>, which old headers lack */
    uint64_t attr_set, attr_clr, propagation, userns_fd;
};

extern char **environ;

struct list { /* grows as needed: Docker sets no limit on MaskedPaths and the like */
    const char **items;
    int n, cap;
};

struct opts {
    int sync_fd;
    const char *log, *exit_path, *netns, *hostname, *rootfs, *overlay, *cwd;
    unsigned long long log_max_size; /* --log-max-size BYTES (0: one file, never rotated) */
    int log_max_file;                /* --log-max-file N */
    struct list binds, ro_binds, symlinks, cow_binds, hides, masks, readonly;
    int root_tmpfs, sys_rw;
    const char *cgroup; /* the container's cgroup (cgroup2 directory) */
    int all_devices;    /* --privileged: no device filter */
    char **envs; /* NULL-terminated, from --env-fd */
    pid_t pid;
    unsigned long long pid_start; /* exec: the start time of pid (field 22 of its stat) */
    int tty;
    char **argv;
    /* run: stdin and the attach protocol (see attach_loop) */
    int stdin_open;    /* --stdin: the command's stdin is a pipe the shim holds */
    int attach_fd;     /* --attach-fd: a connected client from the start (-1: none) */
    int listen_fd;     /* --attach-listen: a listening socket for later clients (-1: none) */
    unsigned short rows, cols; /* --tty-size ROWSxCOLS */
    struct list volumes; /* --volume ro|rw[,PROPAGATION]:DST:SRC */
    struct list tmpfs;   /* --tmpfs DST:OPTIONS */
    int readonly_root;   /* --read-only */
    unsigned long long shm_size; /* --shm-size BYTES */
    /* --user USER[:GROUP] and --group-add G, resolved in the container's /etc */
    const char *user;
    struct list group_add;
    int have_user;
    uid_t uid;
    gid_t gid;
    gid_t *groups;
    int ngroups;
    const char *home;
    /* confinement */
    int have_caps, no_new_privs;
    uint64_t caps;
    const char *seccomp_path;
    unsigned int seccomp_flags;
    struct sock_filter *filter;
    unsigned short filter_len;
};

static int err_fd = -1; /* where a failing child reports before exiting */

static void fail(int code, const char *fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0) n = 0;
    if (n > (int)sizeof buf - 1) n = sizeof buf - 1;
    if (err_fd >= 0) {
        if (write(err_fd, buf, n) < 0) {}
    } else {
        buf[n++] = '\n';
        if (write(2, buf, n) < 0) {}
    }
    _exit(code);
}

static void mkdirs(const char *path, mode_t mode) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p == '/') {
            *p = 0;
            mkdir(tmp, 0755);
            *p = '/';
        }
    }
    mkdir(tmp, mode);
}

static void touch(const char *path) {
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0) close(fd);
}

/* The shim ignores terminal and stop signals for itself; dispositions set to SIG_IGN survive
 * execve, and a shell cannot even trap a signal ignored on entry, so reset them all. */
static void default_signals(void) {
    sigset_t none;
    for (int sig = 1; sig < NSIG; sig++) signal(sig, SIG_DFL);
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
}

static void do_mount(const char *src, const char *dst, const char *type, unsigned long flags,
                     const char *data) {
    if (mount(src, dst, type, flags, data) != 0)
        fail(126, "mount %s on %s: %s", type ? type : src, dst, strerror(errno));
}

/* --overlay LOWER[:LOWER...]:UPPER:WORK: an image's layers, top first, under the container's
 * copy-on-write upper directory.  mount(2) takes its options in one page, which a few dozen
 * layers' paths fill; past that the layers go in one at a time through the new mount API
 * (fsconfig "lowerdir+", Linux 6.8), which has no length limit (overlayfs's own is 500). */
static void mount_overlay(const char *spec, const char *root) {
    size_t n = strlen(spec);
    char *buf = malloc(n + 1);
    if (!buf) fail(126, "overlay: out of memory");
    memcpy(buf, spec, n + 1);
    char *work = strrchr(buf, ':');
    if (!work) fail(126, "bad --overlay %s", spec);
    *work++ = 0;
    char *upper = strrchr(buf, ':');
    if (!upper) fail(126, "bad --overlay %s", spec);
    *upper++ = 0;
    if (!*buf || !*upper || !*work) fail(126, "bad --overlay %s", spec);
    size_t need = n + 40;
    if (need <= 4096) {
        char data[4096];
        snprintf(data, sizeof data, "lowerdir=%s,upperdir=%s,workdir=%s", buf, upper, work);
        do_mount("overlay", root, "overlay", 0, data);
        free(buf);
        return;
    }
    int fs = fsopen("overlay", FSOPEN_CLOEXEC);
    if (fs < 0) fail(126, "fsopen overlay: %s", strerror(errno));
    for (char *l = buf, *next; l; l = next) {
        next = strchr(l, ':');
        if (next) *next++ = 0;
        if (fsconfig(fs, FSCONFIG_SET_STRING, "lowerdir+", l, 0) != 0)
            fail(126, "overlay layer %s: %s", l, strerror(errno));
    }
    if (fsconfig(fs, FSCONFIG_SET_STRING, "upperdir", upper, 0) != 0 ||
        fsconfig(fs, FSCONFIG_SET_STRING, "workdir", work, 0) != 0 ||
        fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) != 0)
        fail(126, "mount overlay on %s: %s", root, strerror(errno));
    int mnt = fsmount(fs, FSMOUNT_CLOEXEC, 0);
    if (mnt < 0 || move_mount(mnt, "", AT_FDCWD, root, MOVE_MOUNT_F_EMPTY_PATH) != 0)
        fail(126, "mount overlay on %s: %s", root, strerror(errno));
    close(mnt);
    close(fs);
    free(buf);
}

/* "A:B[:C]" -> parts (in buf); paths tetherd passes never contain a colon. */
static void split(const char *arg, const char *opt, char *parts[], int n, char *buf, size_t size) {
    snprintf(buf, size, "%s", arg);
    char *p = buf;
    for (int i = 0; i < n; i++) {
        parts[i] = p;
        if (i == n - 1) break;
        char *colon = strchr(p, ':');
        if (!colon) fail(126, "bad %s %s", opt, arg);
        *colon = 0;
        p = colon + 1;
    }
}

/* Make a mount read-only (with its submounts when recursive), keeping its other flags. */
static int set_readonly(const char *path, int recursive) {
    struct mount_attr_arg attr = {ATTR_RDONLY, 0, 0, 0};
    if (syscall(SYS_mount_setattr, AT_FDCWD, path, recursive ? AT_RECURSIVE : 0, &attr, sizeof attr) == 0)
        return 0;
    if (errno != ENOSYS) return -1;
    /* Kernels before 5.12: a remount, which must restate the flags it keeps. */
    struct statvfs sv;
    if (statvfs(path, &sv) != 0) return -1;
    unsigned long flags = MS_BIND | MS_REMOUNT | MS_RDONLY;
    if (sv.f_flag & ST_NOSUID) flags |= MS_NOSUID;
    if (sv.f_flag & ST_NODEV) flags |= MS_NODEV;
    if (sv.f_flag & ST_NOEXEC) flags |= MS_NOEXEC;
    return mount(NULL, path, NULL, flags, NULL);
}

/* A directory the root must have for a mount of ours: an image's symlink there would send
 * the mount somewhere else, so it is refused. */
static void root_dir(const char *root, const char *name, mode_t mode) {
    char path[4096];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", root, name);
    if (lstat(path, &st) == 0) {
        if (!S_ISDIR(st.st_mode)) fail(126, "the image's /%s is not a directory", name);
        return;
    }
    mkdirs(path, mode);
}

/* runc's default devices, made with mknod (not bound from the host's /dev: a bind would let
 * the container's chmod/chown reach the host's own nodes). */
static void setup_dev(const char *root, unsigned long long shm_size) {
    static const struct { const char *name; unsigned int major, minor; } nodes[] = {
        {"null", 1, 3}, {"zero", 1, 5}, {"full", 1, 7}, {"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0}};
    char path[4096];
    root_dir(root, "dev", 0755);
    snprintf(path, sizeof path, "%s/dev", root);
    do_mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_STRICTATIME, "mode=755,size=65536k");
    for (size_t i = 0; i < sizeof nodes / sizeof nodes[0]; i++) {
        snprintf(path, sizeof path, "%s/dev/%s", root, nodes[i].name);
        if (mknod(path, S_IFCHR | 0666, makedev(nodes[i].major, nodes[i].minor)) != 0 || chmod(path, 0666) != 0)
            fail(126, "mknod %s: %s", path, strerror(errno));
    }
    snprintf(path, sizeof path, "%s/dev/pts", root);
    mkdirs(path, 0755);
    do_mount("devpts", path, "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5");
    snprintf(path, sizeof path, "%s/dev/shm", root);
    mkdirs(path, 01777);
    char shm_opts[64];
    snprintf(shm_opts, sizeof shm_opts, "mode=1777,size=%llu", shm_size ? shm_size : 65536ull * 1024);
    do_mount("shm", path, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, shm_opts);
    snprintf(path, sizeof path, "%s/dev/mqueue", root);
    mkdirs(path, 0755);
    do_mount("mqueue", path, "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    static const char *links[][2] = {{"pts/ptmx", "ptmx"}, {"/proc/self/fd", "fd"}, {"/proc/self/fd/0", "stdin"},
                                     {"/proc/self/fd/1", "stdout"}, {"/proc/self/fd/2", "stderr"},
                                     {"/proc/kcore", "core"}};
    size_t nlinks = sizeof links / sizeof links[0];
    if (access("/proc/kcore", F_OK) != 0) nlinks--; /* as runc: /dev/core only if there is a kcore */
    for (size_t i = 0; i < nlinks; i++) {
        snprintf(path, sizeof path, "%s/dev/%s", root, links[i][1]);
        if (symlink(links[i][0], path) != 0) fail(126, "symlink %s: %s", path, strerror(errno));
    }
}

/* The built-in host image's root: the host's program and library trees, read-only. */
static void setup_host_view(struct opts *o, const char *root) {
    char buf[8192], path[4096], data[16700];
    char *p[3];
    for (int i = 0; i < o->ro_binds.n; i++) {
        split(o->ro_binds.items[i], "--ro-bind", p, 2, buf, sizeof buf);
        snprintf(path, sizeof path, "%s%s", root, p[1]);
        mkdirs(path, 0755);
        do_mount(p[0], path, NULL, MS_BIND | MS_REC, NULL);
        if (set_readonly(path, 1) != 0) fail(126, "read-only %s: %s", path, strerror(errno));
    }
    for (int i = 0; i < o->symlinks.n; i++) {
        split(o->symlinks.items[i], "--symlink", p, 2, buf, sizeof buf);
        snprintf(path, sizeof path, "%s%s", root, p[1]);
        if (symlink(p[0], path) != 0) fail(126, "symlink %s: %s", path, strerror(errno));
    }
    /* Copy-on-write views: an overlay whose upper layer is a tmpfs of the container's mount
     * namespace only, so what the container changes or removes never reaches the host. */
    for (int i = 0; i < o->cow_binds.n; i++) {
        char upper[4200], work[4200];
        split(o->cow_binds.items[i], "--cow-bind", p, 3, buf, sizeof buf);
        do_mount("tmpfs", p[2], "tmpfs", MS_NOSUID | MS_NODEV, "mode=700");
        snprintf(upper, sizeof upper, "%s/upper", p[2]);
        snprintf(work, sizeof work, "%s/work", p[2]);
        mkdirs(upper, 0755);
        mkdirs(work, 0700);
        snprintf(path, sizeof path, "%s%s", root, p[1]);
        mkdirs(path, 0755);
        snprintf(data, sizeof data, "lowerdir=%s,upperdir=%s,workdir=%s", p[0], upper, work);
        do_mount("overlay", path, "overlay", MS_NOSUID, data);
    }
}

/* A volume's FLAGS (ro|rw[,PROPAGATION]): read-only or not, and the propagation the bind
 * gets once made (0: none given; the volume keeps what the bind brought). */
static unsigned long vol_flags(char *flags, int *readonly) {
    unsigned long prop = 0;
    *readonly = 0;
    for (char *w = strtok(flags, ","); w; w = strtok(NULL, ",")) {
        if (strcmp(w, "ro") == 0) *readonly = 1;
        else if (strcmp(w, "rw") == 0) *readonly = 0;
        else if (strcmp(w, "private") == 0) prop = MS_PRIVATE;
        else if (strcmp(w, "rprivate") == 0) prop = MS_PRIVATE | MS_REC;
        else if (strcmp(w, "slave") == 0) prop = MS_SLAVE;
        else if (strcmp(w, "rslave") == 0) prop = MS_SLAVE | MS_REC;
        else if (strcmp(w, "shared") == 0) prop = MS_SHARED;
        else if (strcmp(w, "rshared") == 0) prop = MS_SHARED | MS_REC;
        else fail(126, "bad --volume flag %s", w);
    }
    return prop;
}

/* A shared bind must be a peer of its source's mount on the host: the container's copy of
 * the host's mounts then stays in their peer groups (not made slaves), and what the shim
 * mounts before pivot_root must not propagate back.  Everything it mounts is under the
 * root, so the mount the root directory is on is made private (runc's
 * rootfsParentMountPrivate): found by walking up until MS_PRIVATE takes (EINVAL: not a
 * mount point). */
static void root_parent_private(const char *root) {
    char path[4096];
    snprintf(path, sizeof path, "%s", root);
    for (;;) {
        char *slash = strrchr(path, '/');
        if (!slash) fail(126, "no mount holds %s", root);
        if (slash == path) slash[1] = 0;
        else *slash = 0;
        if (mount(NULL, path, NULL, MS_PRIVATE, NULL) == 0) return;
        if (errno != EINVAL) fail(126, "make %s private: %s", path, strerror(errno));
        if (strcmp(path, "/") == 0) fail(126, "no mount holds %s", root);
    }
}

/* After pivot_root: the container's own files (hosts, resolv.conf, hostname), from
 * descriptors opened on the host side before it.  A symlink an image put there is replaced,
 * and every path resolves inside the container's root, whatever the image holds. */
static void bind_fd_opts(int fd, const char *dst, int recursive, int readonly) {
    struct stat st, src;
    char parent[4096], from[64];
    if (fstat(fd, &src) != 0) fail(126, "bind %s: %s", dst, strerror(errno));
    if (lstat(dst, &st) == 0 && S_ISLNK(st.st_mode) && unlink(dst) != 0)
        fail(126, "replace the symlink %s: %s", dst, strerror(errno));
    if (S_ISDIR(src.st_mode)) {
        mkdirs(dst, 0755);
    } else {
        snprintf(parent, sizeof parent, "%s", dst);
        char *slash = strrchr(parent, '/');
        if (slash && slash != parent) {
            *slash = 0;
            mkdirs(parent, 0755);
        }
        touch(dst);
    }
    snprintf(from, sizeof from, "/proc/self/fd/%d", fd);
    do_mount(from, dst, NULL, MS_BIND | (recursive ? MS_REC : 0), NULL);
    if (readonly && set_readonly(dst, recursive) != 0) fail(126, "read-only %s: %s", dst, strerror(errno));
}

static void bind_fd(int fd, const char *dst) { bind_fd_opts(fd, dst, 0, 0); }

/* runc's maskPath: /dev/null over a file, an empty read-only tmpfs over a directory. */
static void mask_path(const char *path) {
    struct stat st;
    if (lstat(path, &st) != 0) {
        if (errno == ENOENT) return;
        fail(126, "mask %s: %s", path, strerror(errno));
    }
    if (S_ISDIR(st.st_mode))
        do_mount("tmpfs", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=755");
    else
        do_mount("/dev/null", path, NULL, MS_BIND, NULL);
}

/* A secret of the host's /etc: gone from the copy-on-write view (a whiteout in its upper
 * layer), or masked where it cannot be removed. */
static void hide_path(const char *path) {
    struct stat st;
    if (lstat(path, &st) != 0) {
        if (errno == ENOENT) return;
        fail(126, "hide %s: %s", path, strerror(errno));
    }
    if (S_ISDIR(st.st_mode) || unlink(path) != 0) mask_path(path);
}

/* runc's readonlyPath: a bind of the path onto itself, made read-only (not its submounts). */
static void readonly_path(const char *path) {
    if (mount(path, path, NULL, MS_BIND | MS_REC, NULL) != 0) {
        if (errno == ENOENT) return;
        fail(126, "bind %s read-only: %s", path, strerror(errno));
    }
    if (set_readonly(path, 0) != 0) fail(126, "read-only %s: %s", path, strerror(errno));
}


/* --- -u/--user and --group-add, as runc resolves them (libcontainer/user): in the
 * container's own /etc/passwd and /etc/group, read after pivot_root (or, for exec, after
 * entering its root), so a user the image defines (or the container added) is found. --- */

static int all_digits(const char *s) {
    if (!*s) return 0;
    for (; *s; s++)
        if (*s < '0' || *s > '9') return 0;
    return 1;
}

/* The fields of one line of a colon-separated file (passwd: 7, group: 4), in place. */
static int fields(char *line, char *f[], int n) {
    int k = 0;
    f[k++] = line;
    for (char *p = line; *p && k < n; p++) {
        if (*p == ':') {
            *p = 0;
            f[k++] = p + 1;
        }
    }
    char *nl = strchr(f[k - 1], '\n');
    if (nl) *nl = 0;
    return k;
}

/* Look a group up by name or number; 1 when found (gid set). */
static int find_group(const char *spec, gid_t *gid) {
    FILE *f = fopen("/etc/group", "re");
    char line[4096], *g[4];
    int found = 0;
    while (f && fgets(line, sizeof line, f)) {
        if (line[0] == '#' || fields(line, g, 4) < 3) continue;
        if (strcmp(g[0], spec) == 0 || (all_digits(spec) && strcmp(g[2], spec) == 0)) {
            *gid = (gid_t)strtoul(g[2], NULL, 10);
            found = 1;
            break;
        }
    }
    if (f) fclose(f);
    if (!found && all_digits(spec)) {
        *gid = (gid_t)strtoul(spec, NULL, 10);
        found = 1;
    }
    return found;
}

static void add_group(struct opts *o, gid_t gid) {
    for (int i = 0; i < o->ngroups; i++)
        if (o->groups[i] == gid) return;
    gid_t *more = realloc(o->groups, ((size_t)o->ngroups + 1) * sizeof *more);
    if (!more) fail(126, "groups: out of memory");
    o->groups = more;
    o->groups[o->ngroups++] = gid;
}

static void resolve_user(struct opts *o) {
    static char user[256], group[256], home[1024];
    const char *spec = o->user ? o->user : "";
    const char *colon = strchr(spec, ':');
    snprintf(user, sizeof user, "%.*s", colon ? (int)(colon - spec) : (int)strlen(spec), spec);
    snprintf(group, sizeof group, "%s", colon ? colon + 1 : "");
    o->uid = 0;
    o->gid = 0;
    snprintf(home, sizeof home, "/");
    int found = 0;
    char name[256] = "";
    FILE *f = fopen("/etc/passwd", "re");
    char line[4096], *pw[7];
    int nf = 0;
    while (f && *user && fgets(line, sizeof line, f)) {
        if (line[0] == '#' || (nf = fields(line, pw, 7)) < 4) continue;
        if (strcmp(pw[0], user) == 0 || (all_digits(user) && strcmp(pw[2], user) == 0)) {
            o->uid = (uid_t)strtoul(pw[2], NULL, 10);
            o->gid = (gid_t)strtoul(pw[3], NULL, 10);
            if (nf >= 6 && *pw[5]) snprintf(home, sizeof home, "%s", pw[5]);
            snprintf(name, sizeof name, "%s", pw[0]);
            found = 1;
            break;
        }
    }
    if (f) fclose(f);
    if (!found && *user) {
        if (!all_digits(user)) fail(126, "unable to find user %s: no matching entries in passwd file", user);
        o->uid = (uid_t)strtoul(user, NULL, 10);
    }
    if (*group) {
        if (!find_group(group, &o->gid))
            fail(126, "unable to find group %s: no matching entries in group file", group);
    } else if (found) {
        /* The supplementary groups that list the user by name. */
        FILE *g = fopen("/etc/group", "re");
        char *gr[4];
        while (g && fgets(line, sizeof line, g)) {
            if (line[0] == '#' || fields(line, gr, 4) < 4) continue;
            for (char *m = strtok(gr[3], ","); m; m = strtok(NULL, ","))
                if (strcmp(m, name) == 0) add_group(o, (gid_t)strtoul(gr[2], NULL, 10));
        }
        if (g) fclose(g);
    }
    for (int i = 0; i < o->group_add.n; i++) {
        gid_t gid;
        if (!find_group(o->group_add.items[i], &gid))
            fail(126, "Unable to find group %s: no matching entries in group file", o->group_add.items[i]);
        add_group(o, gid);
    }
    o->home = home;
    o->have_user = 1;
}

/* HOME from the user's passwd entry when the environment has none (as Docker sets it). */
static void set_home(struct opts *o) {
    int n = 0;
    for (; o->envs[n]; n++)
        if (strncmp(o->envs[n], "HOME=", 5) == 0) return;
    char **more = malloc(((size_t)n + 2) * sizeof *more);
    char *entry = malloc(strlen(o->home ? o->home : "/") + 6);
    if (!more || !entry) fail(126, "environment: out of memory");
    memcpy(more, o->envs, (size_t)n * sizeof *more);
    sprintf(entry, "HOME=%s", o->home ? o->home : "/");
    more[n] = entry;
    more[n + 1] = NULL;
    o->envs = more;
}

/* Become the user: groups first (they need CAP_SETGID), the uid last.  PR_SET_KEEPCAPS
 * keeps the permitted set across setuid so capset can still give the container its set;
 * execve then clears a non-root user's sets (no file capabilities), as with runc. */
static void switch_user(struct opts *o) {
    if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0) fail(126, "keepcaps: %s", strerror(errno));
    if (setgroups((size_t)o->ngroups, o->groups) != 0) fail(126, "setgroups: %s", strerror(errno));
    if (setresgid(o->gid, o->gid, o->gid) != 0) fail(126, "setgid %u: %s", (unsigned)o->gid, strerror(errno));
    if (setresuid(o->uid, o->uid, o->uid) != 0) fail(126, "setuid %u: %s", (unsigned)o->uid, strerror(errno));
    if (prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) != 0) fail(126, "keepcaps: %s", strerror(errno));
}

/* The capability sets: bounding cut to `keep`, effective = permitted = keep, inheritable and
 * ambient empty (as Docker since 20.10.14: an inheritable set would let a file capability
 * hand a non-root user more than the container was given). */
static void drop_bounding(uint64_t keep) {
    for (int cap = 0; cap < 64; cap++) {
        int r = prctl(PR_CAPBSET_READ, cap, 0, 0, 0);
        if (r < 0) break; /* EINVAL: past the last capability this kernel knows */
        if (r == 1 && !(keep >> cap & 1) && prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0)
            fail(126, "drop capability %d from the bounding set: %s", cap, strerror(errno));
    }
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL)
        fail(126, "clear the ambient capabilities: %s", strerror(errno));
}

static void apply_caps(uint64_t keep) {
    struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];
    memset(data, 0, sizeof data);
    if (syscall(SYS_capget, &hdr, data) != 0) fail(126, "capget: %s", strerror(errno));
    keep &= (uint64_t)data[0].permitted | (uint64_t)data[1].permitted << 32;
    for (int i = 0; i < 2; i++) {
        data[i].effective = data[i].permitted = (uint32_t)(keep >> (32 * i));
        data[i].inheritable = 0;
    }
    if (syscall(SYS_capset, &hdr, data) != 0) fail(126, "capset: %s", strerror(errno));
}

static void load_filter(struct opts *o) {
    struct sock_fprog prog = {o->filter_len, o->filter};
    long r = o->seccomp_flags
                 ? syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, o->seccomp_flags, &prog)
                 : prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0);
    if (r != 0) fail(126, "load the seccomp filter: %s", strerror(errno));
}

/*
 * Confinement, the last step before execve, in runc's order (standard_init_linux.go and
 * finalizeNamespace), which matters:
 *   1. no_new_privs, if asked for.
 *   2. Without no_new_privs the kernel lets only a holder of CAP_SYS_ADMIN load a seccomp
 *      filter, so it is loaded now, while the shim still has every capability.  From then on
 *      the shim's own syscalls are filtered too: what follows uses only prctl, capget,
 *      capset and execve, which Docker's profile allows (a custom profile that forbids them
 *      makes the start fail, as it does with runc).
 *   3. Capabilities: the bounding set first (PR_CAPBSET_DROP needs CAP_SETPCAP, which the
 *      capset may take away), then the ambient set, then the user (-u: groups, gid, uid),
 *      then capset.
 *   4. With no_new_privs the filter needs no privilege and is loaded last, so that it has to
 *      allow as little as possible of the shim's own work: only execve follows.
 * execve then gives root the bounding set as its permitted and effective sets.
 */
static void confine(struct opts *o) {
    if (o->no_new_privs && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        fail(126, "no_new_privs: %s", strerror(errno));
    if (o->filter && !o->no_new_privs) load_filter(o);
    if (o->have_caps) drop_bounding(o->caps);
    if (o->have_user) switch_user(o);
    if (o->have_caps) apply_caps(o->caps);
    if (o->filter && o->no_new_privs) load_filter(o);
}

/* The compiled filter, read while the shim still sees the host's files; NULL or a message. */
static const char *read_filter(struct opts *o) {
    static char msg[512];
    struct stat st;
    int fd = open(o->seccomp_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) != 0) {
        snprintf(msg, sizeof msg, "seccomp filter %s: %s", o->seccomp_path, strerror(errno));
        return msg;
    }
    size_t size = (size_t)st.st_size;
    if (size == 0 || size % sizeof(struct sock_filter) || size / sizeof(struct sock_filter) > BPF_MAXINSNS) {
        close(fd);
        snprintf(msg, sizeof msg, "seccomp filter %s: not a BPF program", o->seccomp_path);
        return msg;
    }
    o->filter = malloc(size);
    size_t got = 0;
    while (o->filter && got < size) {
        ssize_t n = read(fd, (char *)o->filter + got, size - got);
        if (n <= 0) break;
        got += (size_t)n;
    }
    close(fd);
    if (!o->filter || got != size) {
        snprintf(msg, sizeof msg, "seccomp filter %s: short read", o->seccomp_path);
        return msg;
    }
    o->filter_len = (unsigned short)(size / sizeof(struct sock_filter));
    return NULL;
}

/* The environment block from --env-fd (see the top of this file) into o->envs; FD is closed. */
static const char *read_env(struct opts *o, int fd) {
    static char msg[256];
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap + 1); /* + 1: room for a NUL the last entry may lack */
    int err = 0;
    /* A memfd's offset is where tetherd's writes left it; a pipe has none (ESPIPE). */
    if (lseek(fd, 0, SEEK_SET) < 0 && errno != ESPIPE) err = errno;
    while (buf && !err) {
        if (len == cap) {
            char *bigger = realloc(buf, cap * 2 + 1);
            if (!bigger) {
                err = ENOMEM;
                break;
            }
            buf = bigger;
            cap *= 2;
        }
        ssize_t n = read(fd, buf + len, cap - len);
        if (n > 0) len += (size_t)n;
        else if (n == 0) break;
        else if (errno != EINTR) err = errno;
    }
    close(fd);
    if (err) {
        snprintf(msg, sizeof msg, "environment: %s", strerror(err));
        return msg;
    }
    if (len > 0 && buf[len - 1] != 0) buf[len++] = 0;
    size_t count = 0;
    for (size_t i = 0; i < len; i++) count += buf[i] == 0;
    o->envs = malloc((count + 1) * sizeof *o->envs);
    if (!buf || !o->envs) return "environment: out of memory";
    size_t k = 0;
    for (size_t i = 0; i < len; i += strlen(buf + i) + 1) o->envs[k++] = buf + i;
    o->envs[k] = NULL;
    return NULL;
}

/*
 * Devices: Docker's device cgroup, on cgroup2.  A container's root has CAP_MKNOD (Docker's
 * default set) and its root, /dev and /tmp are writable, so it can make any device node; what
 * stops it from opening the host's disk or /dev/kmsg through one is the device controller,
 * which on cgroup2 is a BPF_PROG_TYPE_CGROUP_DEVICE program attached to the container's cgroup
 * (runc's devicefilter).  The rules are runc's default allow-list (what Docker's containers
 * get): mknod of any char or block device, and read/write/mknod of null, zero, full, random,
 * urandom, tty, the console, ptmx, the pts and net/tun; every other open of a device node is
 * refused with EPERM.  The program is attached before the container's pid 1 joins the cgroup;
 * every exec joins it too, so nothing in the container runs outside it.
 */
struct dev_rule {
    int type; /* BPF_DEVCG_DEV_CHAR or BPF_DEVCG_DEV_BLOCK */
    int major, minor; /* -1: any */
    int access; /* BPF_DEVCG_ACC_* */
};

#define ACC_RWM (BPF_DEVCG_ACC_READ | BPF_DEVCG_ACC_WRITE | BPF_DEVCG_ACC_MKNOD)
static const struct dev_rule default_devices[] = {
    {BPF_DEVCG_DEV_CHAR, -1, -1, BPF_DEVCG_ACC_MKNOD},
    {BPF_DEVCG_DEV_BLOCK, -1, -1, BPF_DEVCG_ACC_MKNOD},
    {BPF_DEVCG_DEV_CHAR, 1, 3, ACC_RWM},    /* null */
    {BPF_DEVCG_DEV_CHAR, 1, 8, ACC_RWM},    /* random */
    {BPF_DEVCG_DEV_CHAR, 1, 7, ACC_RWM},    /* full */
    {BPF_DEVCG_DEV_CHAR, 5, 0, ACC_RWM},    /* tty */
    {BPF_DEVCG_DEV_CHAR, 1, 5, ACC_RWM},    /* zero */
    {BPF_DEVCG_DEV_CHAR, 1, 9, ACC_RWM},    /* urandom */
    {BPF_DEVCG_DEV_CHAR, 5, 1, ACC_RWM},    /* console */
    {BPF_DEVCG_DEV_CHAR, 136, -1, ACC_RWM}, /* pts/N */
    {BPF_DEVCG_DEV_CHAR, 5, 2, ACC_RWM},    /* ptmx */
    {BPF_DEVCG_DEV_CHAR, 10, 200, ACC_RWM}, /* net/tun */
};

struct prog {
    struct bpf_insn insns[8 * (sizeof default_devices / sizeof default_devices[0]) + 16];
    int n;
};

static void insn(struct prog *p, uint8_t code, uint8_t dst, uint8_t src, int16_t off, int32_t imm) {
    struct bpf_insn *i = &p->insns[p->n++];
    memset(i, 0, sizeof *i);
    i->code = code;
    i->dst_reg = dst;
    i->src_reg = src;
    i->off = off;
    i->imm = imm;
}

/* r1 = struct bpf_cgroup_dev_ctx {u32 access_type (access << 16 | type); u32 major, minor}.
 * Each rule: if type, access, major and minor all match, return 1 (allow); else 0. */
static void device_program(struct prog *p) {
    p->n = 0;
    insn(p, BPF_LDX | BPF_MEM | BPF_W, 2, 1, 0, 0);     /* r2 = access_type */
    insn(p, BPF_ALU64 | BPF_MOV | BPF_X, 3, 2, 0, 0);   /* r3 = r2 & 0xffff: type */
    insn(p, BPF_ALU64 | BPF_AND | BPF_K, 3, 0, 0, 0xffff);
    insn(p, BPF_ALU64 | BPF_MOV | BPF_X, 4, 2, 0, 0);   /* r4 = r2 >> 16: access */
    insn(p, BPF_ALU64 | BPF_RSH | BPF_K, 4, 0, 0, 16);
    insn(p, BPF_LDX | BPF_MEM | BPF_W, 5, 1, 4, 0);     /* r5 = major */
    insn(p, BPF_LDX | BPF_MEM | BPF_W, 6, 1, 8, 0);     /* r6 = minor */
    for (size_t r = 0; r < sizeof default_devices / sizeof default_devices[0]; r++) {
        const struct dev_rule *d = &default_devices[r];
        int jumps[4], nj = 0;
        jumps[nj++] = p->n;
        insn(p, BPF_JMP | BPF_JNE | BPF_K, 3, 0, 0, d->type);
        insn(p, BPF_ALU64 | BPF_MOV | BPF_X, 0, 4, 0, 0); /* access outside the rule's? */
        insn(p, BPF_ALU64 | BPF_AND | BPF_K, 0, 0, 0, ~d->access & 0xffff);
        jumps[nj++] = p->n;
        insn(p, BPF_JMP | BPF_JNE | BPF_K, 0, 0, 0, 0);
        if (d->major >= 0) {
            jumps[nj++] = p->n;
            insn(p, BPF_JMP | BPF_JNE | BPF_K, 5, 0, 0, d->major);
        }
        if (d->minor >= 0) {
            jumps[nj++] = p->n;
            insn(p, BPF_JMP | BPF_JNE | BPF_K, 6, 0, 0, d->minor);
        }
        insn(p, BPF_ALU64 | BPF_MOV | BPF_K, 0, 0, 0, 1);
        insn(p, BPF_JMP | BPF_EXIT, 0, 0, 0, 0);
        for (int j = 0; j < nj; j++) p->insns[jumps[j]].off = (int16_t)(p->n - jumps[j] - 1);
    }
    insn(p, BPF_ALU64 | BPF_MOV | BPF_K, 0, 0, 0, 0);
    insn(p, BPF_JMP | BPF_EXIT, 0, 0, 0, 0);
}

/* The container has ended: its cgroup goes once the last of its processes has (the kernel
 * takes a moment to let go of a pid namespace's processes; tetherd tries again later). */
static void remove_cgroup(const char *dir) {
    for (int i = 0; i < 100; i++) {
        if (rmdir(dir) == 0 || errno != EBUSY) return;
        usleep(10000);
    }
}

/* Make the container's cgroup (a leftover of an earlier run of the same container, empty by
 * now or soon, is made again: it may hold an older program) and attach the device filter. */
static const char *make_cgroup(struct opts *o) {
    static char msg[8192];
    char parent[4096];
    snprintf(parent, sizeof parent, "%s", o->cgroup);
    char *slash = strrchr(parent, '/');
    if (slash && slash != parent) {
        *slash = 0;
        mkdir(parent, 0755);
    }
    remove_cgroup(o->cgroup); /* an earlier run's: empty, or about to be */
    if (mkdir(o->cgroup, 0755) != 0) {
        snprintf(msg, sizeof msg, "cgroup %s: %s", o->cgroup,
                 errno == EEXIST ? "still holds processes of an earlier run" : strerror(errno));
        return msg;
    }
    if (o->all_devices) return NULL;
    static struct prog p;
    device_program(&p);
    union bpf_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.prog_type = BPF_PROG_TYPE_CGROUP_DEVICE;
    attr.insns = (uint64_t)(uintptr_t)p.insns;
    attr.insn_cnt = (uint32_t)p.n;
    attr.license = (uint64_t)(uintptr_t) "Apache";
    int prog = (int)syscall(SYS_bpf, BPF_PROG_LOAD, &attr, sizeof attr);
    if (prog < 0) {
        snprintf(msg, sizeof msg, "device cgroup: load the filter: %s", strerror(errno));
        return msg;
    }
    int dir = open(o->cgroup, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0) {
        close(prog);
        snprintf(msg, sizeof msg, "cgroup %s: %s", o->cgroup, strerror(errno));
        return msg;
    }
    memset(&attr, 0, sizeof attr);
    attr.target_fd = (uint32_t)dir;
    attr.attach_bpf_fd = (uint32_t)prog;
    attr.attach_type = BPF_CGROUP_DEVICE;
    attr.attach_flags = BPF_F_ALLOW_MULTI; /* as runc: programs of parent cgroups still apply */
    int r = (int)syscall(SYS_bpf, BPF_PROG_ATTACH, &attr, sizeof attr);
    int err = errno;
    close(dir);
    close(prog); /* the attachment holds the program now */
    if (r != 0) {
        snprintf(msg, sizeof msg, "device cgroup: attach the filter to %s: %s", o->cgroup, strerror(err));
        return msg;
    }
    return NULL;
}

/* Move the calling process into the container's cgroup (its children follow it). */
static const char *join_cgroup(const char *dir) {
    static char msg[4200];
    char path[4200];
    snprintf(path, sizeof path, "%s/cgroup.procs", dir);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write(fd, "0", 1) != 1) {
        snprintf(msg, sizeof msg, "join cgroup %s: %s", dir, strerror(errno));
        if (fd >= 0) close(fd);
        return msg;
    }
    close(fd);
    return NULL;
}

#ifndef SYS_close_range
#define SYS_close_range 436
#endif
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

/* Nothing but 0, 1 and 2 may reach the container's command or an exec: whatever else tetherd
 * (or a library in it) left open without close-on-exec would be the container's, such as
 * libnftables' netlink socket to the host's nftables, which a container with NET_ADMIN could
 * use to rewrite the host's firewall.  Every descriptor from 3 up becomes close-on-exec (not
 * closed: the shim still uses the ones it was given, the sync fd, until it execs or exits);
 * what the shim opens itself is O_CLOEXEC.  Kernels before 5.11 lack the flag: one by one. */
static const char *cloexec_from(int lowest) {
    static char msg[128];
    if (syscall(SYS_close_range, (unsigned int)lowest, ~0U, CLOSE_RANGE_CLOEXEC) == 0) return NULL;
    DIR *d = opendir("/proc/self/fd");
    if (!d) {
        snprintf(msg, sizeof msg, "list descriptors: %s", strerror(errno));
        return msg;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        int fd = atoi(e->d_name);
        if (fd >= lowest && fd != dirfd(d) && fcntl(fd, F_SETFD, FD_CLOEXEC) != 0 && errno != EBADF) {
            snprintf(msg, sizeof msg, "close-on-exec %d: %s", fd, strerror(errno));
            closedir(d);
            return msg;
        }
    }
    closedir(d);
    return NULL;
}

/* The container's view of the world; runs as pid 1 of the new pid namespace. */
/* -t: a pseudo-terminal of the container's own devpts (so `tty` names /dev/pts/0 inside),
 * made after pivot_root; its master goes to the shim over `console` (as runc's console
 * socket), its slave becomes the controlling terminal and stdin/stdout/stderr. */
static void setup_tty(struct opts *o, int console) {
    int master = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (master < 0) fail(126, "open /dev/ptmx: %s", strerror(errno));
    int unlock = 0;
    if (ioctl(master, TIOCSPTLCK, &unlock) != 0) fail(126, "unlockpt: %s", strerror(errno));
    unsigned int n = 0;
    if (ioctl(master, TIOCGPTN, &n) != 0) fail(126, "ptsname: %s", strerror(errno));
    int slave = ioctl(master, TIOCGPTPEER, O_RDWR | O_NOCTTY);
    if (slave < 0) fail(126, "open the pty: %s", strerror(errno));
    if (o->rows && o->cols) {
        struct winsize ws = {o->rows, o->cols, 0, 0};
        ioctl(master, TIOCSWINSZ, &ws);
    }
    char pts[64];
    snprintf(pts, sizeof pts, "/dev/pts/%u", n);
    touch("/dev/console");
    mount(pts, "/dev/console", NULL, MS_BIND, NULL); /* as runc; not fatal */
    char byte = 0;
    struct iovec iov = {&byte, 1};
    union { struct cmsghdr h; char buf[CMSG_SPACE(sizeof(int))]; } u;
    memset(&u, 0, sizeof u);
    struct msghdr msg = {0};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = u.buf;
    msg.msg_controllen = sizeof u.buf;
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &master, sizeof(int));
    if (sendmsg(console, &msg, 0) != 1) fail(126, "hand over the pty: %s", strerror(errno));
    close(master);
    close(console);
    if (setsid() < 0) fail(126, "setsid: %s", strerror(errno));
    if (ioctl(slave, TIOCSCTTY, 0) != 0) fail(126, "controlling terminal: %s", strerror(errno));
    for (int i = 0; i < 3; i++)
        if (dup2(slave, i) < 0) fail(126, "dup2 the pty: %s", strerror(errno));
    if (slave > 2) close(slave);
}

static void container_child(struct opts *o, int out_w, int err_w, int in_r, int console) {
    if (o->cgroup) {
        const char *bad = join_cgroup(o->cgroup);
        if (bad) fail(126, "%s", bad);
    }
    if (o->netns) {
        int fd = open(o->netns, O_RDONLY | O_CLOEXEC);
        if (fd < 0 || setns(fd, CLONE_NEWNET) != 0) fail(126, "join network namespace %s: %s", o->netns, strerror(errno));
        close(fd);
    }
    if (unshare(CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC) != 0) fail(126, "unshare: %s", strerror(errno));
    int shared = 0; /* a volume with shared propagation: see root_parent_private */
    for (int i = 0; i < o->volumes.n; i++) {
        char buf[8192], *p[3];
        int ro;
        split(o->volumes.items[i], "--volume", p, 3, buf, sizeof buf);
        if (vol_flags(p[0], &ro) & MS_SHARED) shared = 1;
    }
    if (shared) {
        root_parent_private(o->rootfs);
    } else {
        /* Slave, not private: unmounts of sandbox files in the daemon's namespace reach us. */
        do_mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL);
    }
    if (o->hostname && sethostname(o->hostname, strlen(o->hostname)) != 0)
        fail(126, "sethostname: %s", strerror(errno));

    char path[4096];
    const char *root = o->rootfs;
    if (o->overlay) {
        mount_overlay(o->overlay, root);
    } else if (o->root_tmpfs) {
        do_mount("tmpfs", root, "tmpfs", 0, "mode=755");
        setup_host_view(o, root);
    } else {
        do_mount(root, root, NULL, MS_BIND | MS_REC, NULL);
    }
    root_dir(root, "proc", 0755);
    root_dir(root, "sys", 0755);
    root_dir(root, "etc", 0755);
    root_dir(root, "tmp", 01777);
    setup_dev(root, o->shm_size);
    snprintf(path, sizeof path, "%s/proc", root);
    do_mount("proc", path, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    /* A fresh sysfs shows this network namespace's interfaces under /sys/class/net;
     * read-only as in Docker, but for --privileged. */
    snprintf(path, sizeof path, "%s/sys", root);
    do_mount("sysfs", path, "sysfs", (o->sys_rw ? 0 : MS_RDONLY) | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);

    int *bind_fds = calloc((size_t)o->binds.n + 1, sizeof *bind_fds);
    const char **bind_dst = calloc((size_t)o->binds.n + 1, sizeof *bind_dst);
    if (!bind_fds || !bind_dst) fail(126, "bind: out of memory");
    for (int i = 0; i < o->binds.n; i++) {
        char buf[8192], *p[2];
        split(o->binds.items[i], "--bind", p, 2, buf, sizeof buf);
        bind_fds[i] = open(p[0], O_PATH | O_CLOEXEC);
        if (bind_fds[i] < 0) fail(126, "bind %s: %s", p[0], strerror(errno));
        bind_dst[i] = o->binds.items[i] + strlen(p[0]) + 1;
    }
    /* Volumes (-v, --mount): FLAGS:DST:SRC, the source opened now, on the host's side. */
    int *vol_fds = calloc((size_t)o->volumes.n + 1, sizeof *vol_fds);
    int *vol_ro = calloc((size_t)o->volumes.n + 1, sizeof *vol_ro);
    unsigned long *vol_prop = calloc((size_t)o->volumes.n + 1, sizeof *vol_prop);
    char **vol_dst = calloc((size_t)o->volumes.n + 1, sizeof *vol_dst);
    if (!vol_fds || !vol_ro || !vol_prop || !vol_dst) fail(126, "volumes: out of memory");
    for (int i = 0; i < o->volumes.n; i++) {
        char buf[8192], *p[3];
        split(o->volumes.items[i], "--volume", p, 3, buf, sizeof buf);
        vol_prop[i] = vol_flags(p[0], &vol_ro[i]);
        /* In a shared root, what has no propagation of its own is made what it would have
         * been otherwise: a slave of the host's mount. */
        if (shared && !vol_prop[i]) vol_prop[i] = MS_SLAVE | MS_REC;
        vol_dst[i] = strdup(p[1]);
        vol_fds[i] = open(p[2], O_PATH | O_CLOEXEC);
        if (vol_fds[i] < 0 || !vol_dst[i]) fail(126, "error while creating mount source path '%s': %s", p[2], strerror(errno));
    }
    /* In a shared root, what the shim bound into the new root from the host (the host
     * image's views) becomes a slave, as it would have been; the volumes, bound after
     * pivot_root from the old root's mounts (still peers of the host's), keep the
     * propagation they are given. */
    if (shared) do_mount(NULL, root, NULL, MS_REC | MS_SLAVE, NULL);
    int old_root = shared ? open("/", O_DIRECTORY | O_RDONLY | O_CLOEXEC) : -1;
    if (shared && old_root < 0) fail(126, "open /: %s", strerror(errno));
    if (chdir(root) != 0) fail(126, "chdir %s: %s", root, strerror(errno));
    if (syscall(SYS_pivot_root, ".", ".") != 0) fail(126, "pivot_root: %s", strerror(errno));
    /* From here every absolute path is the container's.  The old root is still stacked on
     * the working directory: the binds come first, because the kernel binds only from
     * mounts of this namespace, which its files stop being once it is detached. */
    for (int i = 0; i < o->volumes.n; i++) {
        bind_fd_opts(vol_fds[i], vol_dst[i], 1, vol_ro[i]);
        close(vol_fds[i]);
        /* -v/--mount's propagation (rprivate for binds unless given), as runc applies a
         * mount's propagation flags once it is bound. */
        if (vol_prop[i]) do_mount(NULL, vol_dst[i], NULL, vol_prop[i], NULL);
    }
    for (int i = 0; i < o->binds.n; i++) {
        bind_fd(bind_fds[i], bind_dst[i]);
        close(bind_fds[i]);
        if (shared) do_mount(NULL, bind_dst[i], NULL, MS_SLAVE, NULL);
    }
    /* The old root's mounts are peers of the host's in a shared root: made slaves first, or
     * detaching them would unmount their peers on the host too (runc does the same).  From
     * a descriptor of it: "." is the new root below it, whose binds keep their propagation. */
    if (shared) {
        if (fchdir(old_root) != 0) fail(126, "fchdir old root: %s", strerror(errno));
        close(old_root);
        do_mount(NULL, ".", NULL, MS_REC | MS_SLAVE, NULL);
    }
    if (umount2(".", MNT_DETACH) != 0) fail(126, "umount old root: %s", strerror(errno));
    if (chdir("/") != 0) fail(126, "chdir /: %s", strerror(errno));
    /* --tmpfs DST:OPTIONS, Docker's defaults (noexec, nosuid, nodev) unless the options say
     * otherwise; flag words become mount flags, the rest goes to tmpfs. */
    for (int i = 0; i < o->tmpfs.n; i++) {
        char buf[8192], *p[2], data[4096] = "";
        split(o->tmpfs.items[i], "--tmpfs", p, 2, buf, sizeof buf);
        unsigned long flags = MS_NOSUID | MS_NODEV | MS_NOEXEC;
        for (char *w = strtok(p[1], ","); w; w = strtok(NULL, ",")) {
            if (strcmp(w, "exec") == 0) flags &= ~(unsigned long)MS_NOEXEC;
            else if (strcmp(w, "suid") == 0) flags &= ~(unsigned long)MS_NOSUID;
            else if (strcmp(w, "dev") == 0) flags &= ~(unsigned long)MS_NODEV;
            else if (strcmp(w, "noexec") == 0) flags |= MS_NOEXEC;
            else if (strcmp(w, "nosuid") == 0) flags |= MS_NOSUID;
            else if (strcmp(w, "nodev") == 0) flags |= MS_NODEV;
            else if (strcmp(w, "ro") == 0) flags |= MS_RDONLY;
            else if (strcmp(w, "rw") == 0) flags &= ~(unsigned long)MS_RDONLY;
            else {
                if (*data) strncat(data, ",", sizeof data - strlen(data) - 1);
                strncat(data, w, sizeof data - strlen(data) - 1);
            }
        }
        struct stat st;
        if (lstat(p[0], &st) == 0 && S_ISLNK(st.st_mode)) unlink(p[0]);
        mkdirs(p[0], 0755);
        do_mount("tmpfs", p[0], "tmpfs", flags, *data ? data : NULL);
    }
    /* --read-only: the root filesystem only; volumes, tmpfs, /dev, /proc and the container's
     * own files stay as they are (their mount points were made above). */
    if (o->readonly_root && set_readonly("/", 0) != 0) fail(126, "read-only root: %s", strerror(errno));
    for (int i = 0; i < o->hides.n; i++) hide_path(o->hides.items[i]);
    for (int i = 0; i < o->masks.n; i++) mask_path(o->masks.items[i]);
    for (int i = 0; i < o->readonly.n; i++) readonly_path(o->readonly.items[i]);

    const char *cwd = o->cwd && *o->cwd ? o->cwd : "/";
    mkdirs(cwd, 0755); /* Docker creates a missing working directory */
    if (chdir(cwd) != 0) fail(126, "chdir %s: %s", cwd, strerror(errno));

    if (o->user || o->group_add.n) {
        resolve_user(o);
        set_home(o);
    }
    if (o->tty) {
        setup_tty(o, console);
    } else {
        if (in_r >= 0) {
            dup2(in_r, 0);
            if (in_r != 0) close(in_r);
        } else {
            int null = open("/dev/null", O_RDONLY);
            if (null >= 0) { dup2(null, 0); if (null != 0) close(null); }
        }
        dup2(out_w, 1);
        dup2(err_w, 2);
        if (out_w > 2) close(out_w);
        if (err_w > 2) close(err_w);
    }
    default_signals();
    environ = o->envs;
    confine(o);
    execvp(o->argv[0], o->argv);
    if (errno == ENOENT)
        fail(127, "exec: \"%s\": executable file not found in $PATH", o->argv[0]);
    fail(126, "exec: \"%s\": %s", o->argv[0], strerror(errno));
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void write_all(int fd, const void *buf, size_t len) {
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR) continue;
            return;
        }
        p += n;
        len -= (size_t)n;
    }
}

/*
 * The attach protocol (tetherd <-> shim, on --attach-fd and on connections accepted from
 * --attach-listen): a client sends frames of 1 byte type, 4 bytes length (big-endian) and
 * the payload: 'i' data for the command's stdin, 'c' close its stdin, 'r' resize the
 * terminal (rows and columns, 2 bytes each).  The shim sends every client the command's
 * output as it writes it to the log (the log's frames: stream, length, time, data), from the
 * moment the client connected, and closes the connection once the output has ended (the
 * container's pid 1 and everything that held its stdout are gone): a client that read to
 * EOF has all of it, which is what `run --rm` needs before the container is removed.
 *
 * Nothing is dropped: while a client cannot take more, the shim stops reading the
 * container's output (the pipe fills and the container waits, as with Docker's attach); a
 * client that closes or errs is dropped.  The same holds for stdin the other way.
 */
#define MAX_CLIENTS 32

struct client {
    int fd;
    unsigned char in[5 + 65536];
    size_t in_len;
    char *out; /* what a write could not take yet */
    size_t out_len, out_off;
};

static struct client clients[MAX_CLIENTS];
static int nclients = 0;

static void drop_client(int i) {
    close(clients[i].fd);
    free(clients[i].out);
    clients[i] = clients[--nclients];
}

static void add_client(int fd) {
    if (nclients == MAX_CLIENTS) {
        close(fd);
        return;
    }
    int fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    memset(&clients[nclients], 0, sizeof clients[nclients]);
    clients[nclients++].fd = fd;
}

/* Send to one client; the rest is kept. 0, or -1 when the client is gone. */
static int client_send(struct client *c, const char *data, size_t len) {
    size_t off = 0;
    while (off < len) {
        ssize_t n = send(c->fd, data + off, len - off, MSG_NOSIGNAL);
        if (n > 0) {
            off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        return -1;
    }
    if (off < len) {
        c->out = malloc(len - off);
        if (!c->out) return -1;
        memcpy(c->out, data + off, len - off);
        c->out_len = len - off;
        c->out_off = 0;
    }
    return 0;
}

static int client_flush(struct client *c) {
    while (c->out && c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n > 0) {
            c->out_off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
        return -1;
    }
    free(c->out);
    c->out = NULL;
    c->out_len = c->out_off = 0;
    return 0;
}

/*
 * The log, rotated as dockerd's json-file driver rotates it (--log-opt max-size, max-file):
 * once the file has reached max_size, the next frame goes to a new file; with max_file > 1
 * the full one becomes PATH.1 (PATH.1 becomes PATH.2, ..., the oldest dropped), with
 * max_file 1 it is emptied.  Readers (tetherd) read PATH.N ... PATH.1 then PATH.
 */
static struct {
    int fd;
    const char *path;
    unsigned long long size, max_size; /* max_size 0: never rotated */
    int max_file;
} lg = {-1, NULL, 0, 0, 1};

static void log_rotate(void) {
    if (lg.max_file <= 1) {
        if (ftruncate(lg.fd, 0) == 0) lg.size = 0;
        return;
    }
    char from[4200], to[4200];
    for (int i = lg.max_file - 1; i >= 1; i--) {
        if (i == 1) snprintf(from, sizeof from, "%s", lg.path);
        else snprintf(from, sizeof from, "%s.%d", lg.path, i - 1);
        snprintf(to, sizeof to, "%s.%d", lg.path, i);
        if (rename(from, to) != 0 && errno != ENOENT) return; /* keep writing where we were */
    }
    int fd = open(lg.path, O_WRONLY | O_APPEND | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return;
    close(lg.fd);
    lg.fd = fd;
    lg.size = 0;
}

static void output(int stream, const char *data, size_t len) {
    unsigned char hdr[13];
    uint64_t t = now_ns();
    hdr[0] = (unsigned char)stream;
    for (int i = 0; i < 4; i++) hdr[1 + i] = (unsigned char)(len >> (24 - 8 * i));
    for (int i = 0; i < 8; i++) hdr[5 + i] = (unsigned char)(t >> (56 - 8 * i));
    static char buf[13 + 65536];
    memcpy(buf, hdr, 13);
    memcpy(buf + 13, data, len);
    if (lg.fd >= 0) {
        if (lg.max_size && lg.size >= lg.max_size) log_rotate();
        write_all(lg.fd, buf, 13 + len);
        lg.size += 13 + len;
    }
    for (int i = 0; i < nclients;) {
        if (client_send(&clients[i], buf, 13 + len) != 0) drop_client(i);
        else i++;
    }
}

struct stdin_state {
    int fd;      /* the pipe's write end, or the pty master; -1 once closed */
    int is_pty;
    char *pending;
    size_t len, off;
};

/* Handle the whole frames a client sent; returns -1 to drop the client. */
static int client_frames(struct client *c, struct stdin_state *in) {
    for (;;) {
        if (c->in_len < 5) return 0;
        uint32_t len = (uint32_t)c->in[1] << 24 | (uint32_t)c->in[2] << 16 | (uint32_t)c->in[3] << 8 | c->in[4];
        if (len > 65536) return -1;
        if (c->in_len < 5 + len) return 0;
        unsigned char type = c->in[0];
        const unsigned char *payload = c->in + 5;
        if (type == 'i' && in->fd >= 0 && len > 0) {
            /* Compact first: a realloc to the smaller size before the move would cut off
             * the unwritten tail that still sits past `off` (a short last frame after a
             * long one lost the end of `run -i`'s input). */
            if (in->off) {
                memmove(in->pending, in->pending + in->off, in->len - in->off);
                in->len -= in->off;
                in->off = 0;
            }
            char *more = realloc(in->pending, in->len + len);
            if (!more) return -1;
            memcpy(more + in->len, payload, len);
            in->len += len;
            in->pending = more;
        } else if (type == 'c' && in->fd >= 0 && !in->is_pty) {
            if (in->len == in->off) {
                close(in->fd);
                in->fd = -1;
            } else {
                in->is_pty = -1; /* close once what is pending has gone */
            }
        } else if (type == 'r' && len == 4 && in->is_pty == 1 && in->fd >= 0) {
            struct winsize ws = {(unsigned short)(payload[0] << 8 | payload[1]),
                                 (unsigned short)(payload[2] << 8 | payload[3]), 0, 0};
            ioctl(in->fd, TIOCSWINSZ, &ws);
        }
        memmove(c->in, c->in + 5 + len, c->in_len - 5 - len);
        c->in_len -= 5 + len;
    }
}

static void stdin_write(struct stdin_state *in) {
    while (in->fd >= 0 && in->off < in->len) {
        ssize_t n = write(in->fd, in->pending + in->off, in->len - in->off);
        if (n > 0) {
            in->off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) return;
        /* The container closed its stdin (or ended): what is left goes nowhere. */
        in->off = in->len;
        if (!in->is_pty || in->is_pty == -1) {
            close(in->fd);
            in->fd = -1;
        }
    }
    if (in->off == in->len) {
        in->off = in->len = 0;
        if (in->is_pty == -1 && in->fd >= 0) {
            close(in->fd);
            in->fd = -1;
        }
    }
}

/* Receive the pty master the container's pid 1 hands over (setup_tty); -1 if it failed. */
static int receive_master(int sock) {
    char byte;
    struct iovec iov = {&byte, 1};
    union { struct cmsghdr h; char buf[CMSG_SPACE(sizeof(int))]; } u;
    struct msghdr msg = {0};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = u.buf;
    msg.msg_controllen = sizeof u.buf;
    if (recvmsg(sock, &msg, MSG_CMSG_CLOEXEC) != 1) return -1;
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    if (!c || c->cmsg_type != SCM_RIGHTS) return -1;
    int fd;
    memcpy(&fd, CMSG_DATA(c), sizeof fd);
    return fd;
}

static void attach_loop(struct opts *o, int src[2], int nsrc, struct stdin_state *in) {
    static char buf[65536];
    int open_srcs = nsrc;
    for (int i = 0; i < nsrc; i++) fcntl(src[i], F_SETFL, fcntl(src[i], F_GETFL) | O_NONBLOCK);
    if (in->fd >= 0) fcntl(in->fd, F_SETFL, fcntl(in->fd, F_GETFL) | O_NONBLOCK);
    if (o->listen_fd >= 0) fcntl(o->listen_fd, F_SETFL, fcntl(o->listen_fd, F_GETFL) | O_NONBLOCK);
    while (open_srcs > 0) {
        struct pollfd fds[4 + MAX_CLIENTS];
        int n = 0, blocked = 0;
        for (int i = 0; i < nclients; i++) blocked |= clients[i].out != NULL;
        int src_at = n;
        for (int i = 0; i < nsrc; i++) fds[n++] = (struct pollfd){blocked ? -1 : src[i], POLLIN, 0};
        int listen_at = n;
        fds[n++] = (struct pollfd){o->listen_fd, POLLIN, 0};
        int stdin_at = n;
        fds[n++] = (struct pollfd){in->fd >= 0 && in->off < in->len ? in->fd : -1, POLLOUT, 0};
        int clients_at = n;
        int stdin_full = in->len - in->off > 1 << 20;
        for (int i = 0; i < nclients; i++)
            fds[n++] = (struct pollfd){clients[i].fd, (short)((stdin_full ? 0 : POLLIN) | (clients[i].out ? POLLOUT : 0)), 0};
        if (poll(fds, (nfds_t)n, -1) < 0) {
            if (errno == EINTR) continue;
            break;
        }
        for (int i = 0; i < nsrc; i++) {
            struct pollfd *p = &fds[src_at + i];
            if (p->fd < 0 || !(p->revents & (POLLIN | POLLHUP | POLLERR))) continue;
            ssize_t r = read(src[i], buf, sizeof buf);
            if (r > 0) {
                output(o->tty ? 1 : i + 1, buf, (size_t)r);
            } else if (r == 0 || (errno != EINTR && errno != EAGAIN)) {
                /* EOF, or EIO from a pty master once the last slave has closed. */
                src[i] = -1;
                open_srcs--;
            }
        }
        if (fds[listen_at].fd >= 0 && (fds[listen_at].revents & POLLIN)) {
            int fd = accept4(o->listen_fd, NULL, NULL, SOCK_CLOEXEC);
            if (fd >= 0) add_client(fd);
        }
        if (fds[stdin_at].fd >= 0 && fds[stdin_at].revents) stdin_write(in);
        /* Clients: fds[clients_at + k] was clients[k] when polled; dropping one moves the
         * last into its place, so they are handled from the end. */
        int polled = n - clients_at;
        for (int k = polled - 1; k >= 0; k--) {
            struct pollfd *p = &fds[clients_at + k];
            struct client *c = &clients[k];
            int bad = 0;
            if (p->revents & POLLOUT) bad = client_flush(c) != 0;
            if (!bad && (p->revents & (POLLIN | POLLHUP | POLLERR))) {
                ssize_t r = read(c->fd, c->in + c->in_len, sizeof c->in - c->in_len);
                if (r > 0) {
                    c->in_len += (size_t)r;
                    bad = client_frames(c, in) != 0;
                } else if (r == 0 || (errno != EINTR && errno != EAGAIN)) {
                    bad = 1;
                }
            }
            if (bad) drop_client(k);
        }
        if (in->fd >= 0 && in->off < in->len) stdin_write(in);
    }
    /* The output has ended: what clients still lack goes out (bounded), then EOF. */
    for (int i = 0; i < nclients; i++) {
        struct client *c = &clients[i];
        for (int tries = 0; c->out && tries < 500; tries++) {
            if (client_flush(c) != 0) break;
            if (c->out) {
                struct pollfd p = {c->fd, POLLOUT, 0};
                poll(&p, 1, 10);
            }
        }
        close(c->fd);
        free(c->out);
    }
    nclients = 0;
}

static int cmd_run(struct opts *o) {
    int out[2], errp[2], status_pipe[2], inp[2] = {-1, -1}, console[2] = {-1, -1};
    signal(SIGHUP, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    signal(SIGQUIT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    setsid();
    int log_fd = -1;
    if (o->log && *o->log) { /* --log-driver none: no --log */
        log_fd = open(o->log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
        if (log_fd < 0) {
            dprintf(o->sync_fd, "err open log %s: %s\n", o->log, strerror(errno));
            return 1;
        }
    }
    if (pipe2(out, O_CLOEXEC) || pipe2(errp, O_CLOEXEC) || pipe2(status_pipe, O_CLOEXEC) ||
        (o->stdin_open && !o->tty && pipe2(inp, O_CLOEXEC)) ||
        (o->tty && socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, console))) {
        dprintf(o->sync_fd, "err pipe: %s\n", strerror(errno));
        return 1;
    }
    if (o->cgroup) {
        const char *bad = make_cgroup(o);
        if (bad) {
            dprintf(o->sync_fd, "err %s\n", bad);
            return 1;
        }
    }
    if (unshare(CLONE_NEWPID) != 0) {
        dprintf(o->sync_fd, "err unshare pid namespace: %s\n", strerror(errno));
        return 1;
    }
    pid_t child = fork();
    if (child < 0) {
        if (o->cgroup) remove_cgroup(o->cgroup);
        dprintf(o->sync_fd, "err fork: %s\n", strerror(errno));
        return 1;
    }
    if (child == 0) {
        close(out[0]);
        close(errp[0]);
        close(status_pipe[0]);
        close(o->sync_fd);
        if (log_fd >= 0) close(log_fd);
        if (inp[1] >= 0) close(inp[1]);
        if (console[0] >= 0) close(console[0]);
        if (o->attach_fd >= 0) close(o->attach_fd);
        if (o->listen_fd >= 0) close(o->listen_fd);
        err_fd = status_pipe[1];
        container_child(o, out[1], errp[1], inp[0], console[1]);
    }
    close(out[1]);
    close(errp[1]);
    close(status_pipe[1]);
    if (inp[0] >= 0) close(inp[0]);
    if (console[1] >= 0) close(console[1]);
    int master = -1;
    if (o->tty) {
        master = receive_master(console[0]); /* -1: the child failed before; its message follows */
        close(console[0]);
    }
    char msg[1100];
    ssize_t n = read(status_pipe[0], msg, sizeof msg - 1);
    close(status_pipe[0]);
    if (n > 0 || (o->tty && master < 0)) {
        int st;
        msg[n > 0 ? n : 0] = 0;
        waitpid(child, &st, 0);
        if (o->cgroup) remove_cgroup(o->cgroup);
        dprintf(o->sync_fd, "err %s\n", n > 0 ? msg : "the container's terminal was not set up");
        return 1;
    }
    dprintf(o->sync_fd, "ok %d\n", (int)child);
    close(o->sync_fd);

    struct stdin_state in = {-1, 0, NULL, 0, 0};
    int src[2], nsrc;
    if (o->tty) {
        close(out[0]);
        close(errp[0]);
        src[0] = master;
        nsrc = 1;
        in.fd = master;
        in.is_pty = 1;
    } else {
        src[0] = out[0];
        src[1] = errp[0];
        nsrc = 2;
        in.fd = inp[1];
    }
    if (o->attach_fd >= 0) add_client(o->attach_fd);
    lg.fd = log_fd;
    lg.path = o->log;
    lg.max_size = o->log_max_size;
    lg.max_file = o->log_max_file > 0 ? o->log_max_file : 1;
    if (log_fd >= 0) {
        struct stat st;
        if (fstat(log_fd, &st) == 0) lg.size = (unsigned long long)st.st_size;
    }
    attach_loop(o, src, nsrc, &in);
    if (in.fd >= 0 && !o->tty) close(in.fd);
    if (master >= 0) close(master);
    if (o->listen_fd >= 0) close(o->listen_fd);
    int st = 0;
    while (waitpid(child, &st, 0) < 0 && errno == EINTR) {}
    int code = WIFEXITED(st) ? WEXITSTATUS(st) : WIFSIGNALED(st) ? 128 + WTERMSIG(st) : 255;
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", o->exit_path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd >= 0) {
        dprintf(fd, "%d %llu\n", code, (unsigned long long)now_ns());
        fsync(fd);
        close(fd);
        rename(tmp, o->exit_path);
    }
    if (o->cgroup) remove_cgroup(o->cgroup);
    return 0;
}

static pid_t exec_child = 0;

static void forward(int sig) {
    if (exec_child > 0) kill(exec_child, sig);
}

static int cmd_exec(struct opts *o) {
    /* Not dumpable: while this process (and the child it forks into the container's pid
     * namespace) still runs the shim's code, the container's processes cannot open its
     * /proc/PID/exe or memory (the runc CVE-2019-5736 path).  execve resets it. */
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) fail(126, "prctl: %s", strerror(errno));
    static const char *kinds[] = {"ipc", "uts", "net", "pid", "mnt"};
    static const int flags[] = {CLONE_NEWIPC, CLONE_NEWUTS, CLONE_NEWNET, CLONE_NEWPID, CLONE_NEWNS};
    int fds[5];
    char path[64];
    /* The container's pid 1 is named by its pid, which the kernel hands to another process
     * once it has ended.  A descriptor of /proc/PID stays with the process it was opened for
     * (lookups under it fail once that one is gone, whoever gets the number next), so the
     * start time read through it tells whether it is still the container's (--pid-start:
     * field 22 of its stat, as tetherd recorded it), and the namespaces and root are then
     * opened through the same descriptor. */
    snprintf(path, sizeof path, "/proc/%d", (int)o->pid);
    int proc = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (proc < 0) fail(126, "container process %d: %s", (int)o->pid, strerror(errno));
    if (o->pid_start) {
        char stat[1024];
        unsigned long long start = 0;
        int fd = openat(proc, "stat", O_RDONLY | O_CLOEXEC);
        ssize_t n = fd >= 0 ? read(fd, stat, sizeof stat - 1) : -1;
        if (fd >= 0) close(fd);
        char *p = n > 0 ? (stat[n] = 0, strrchr(stat, ')')) : NULL;
        for (int field = 2; p && field < 22; field++) p = strchr(p + 1, ' ');
        if (p) start = strtoull(p + 1, NULL, 10);
        if (start != o->pid_start)
            fail(126, "container process %d has ended (the pid now belongs to another process): the container is not running", (int)o->pid);
    }
    for (int i = 0; i < 5; i++) {
        snprintf(path, sizeof path, "ns/%s", kinds[i]);
        fds[i] = openat(proc, path, O_RDONLY | O_CLOEXEC);
        if (fds[i] < 0) fail(126, "container process %d: %s", (int)o->pid, strerror(errno));
    }
    int root = openat(proc, "root", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (root < 0) fail(126, "container root: %s", strerror(errno));
    close(proc);
    /* Into the container's cgroup, so that its device filter applies to the exec too. */
    if (o->cgroup) {
        const char *bad = join_cgroup(o->cgroup);
        if (bad) fail(126, "%s", bad);
    }
    for (int i = 0; i < 5; i++) {
        /* The network namespace of a --network host container is the daemon's own, which may
         * refuse a join with EINVAL; nothing excuses a failed join of any other namespace, or
         * the exec would run in the host's. */
        if (setns(fds[i], flags[i]) != 0 && !(errno == EINVAL && flags[i] == CLONE_NEWNET))
            fail(126, "join %s namespace: %s", kinds[i], strerror(errno));
        close(fds[i]);
    }
    if (fchdir(root) != 0 || chroot(".") != 0) fail(126, "enter container root: %s", strerror(errno));
    close(root);
    if (o->user || o->group_add.n) {
        resolve_user(o);
        set_home(o);
    }
    exec_child = fork();
    if (exec_child < 0) fail(126, "fork: %s", strerror(errno));
    if (exec_child == 0) {
        if (o->tty) {
            setsid();
            ioctl(0, TIOCSCTTY, 0);
        }
        const char *cwd = o->cwd && *o->cwd ? o->cwd : "/";
        if (chdir(cwd) != 0) fail(126, "chdir %s: %s", cwd, strerror(errno));
        default_signals();
        environ = o->envs;
        confine(o); /* the container's own confinement: tetherd passes the same settings */
        execvp(o->argv[0], o->argv);
        if (errno == ENOENT)
            fail(127, "OCI runtime exec failed: exec failed: unable to start container process: exec: \"%s\": executable file not found in $PATH: unknown", o->argv[0]);
        fail(126, "OCI runtime exec failed: exec failed: unable to start container process: exec: \"%s\": %s: unknown", o->argv[0], strerror(errno));
    }
    signal(SIGINT, forward);
    signal(SIGTERM, forward);
    signal(SIGHUP, forward);
    signal(SIGQUIT, forward);
    signal(SIGWINCH, forward);
    int st = 0;
    while (waitpid(exec_child, &st, 0) < 0 && errno == EINTR) {}
    return WIFEXITED(st) ? WEXITSTATUS(st) : WIFSIGNALED(st) ? 128 + WTERMSIG(st) : 255;
}

static int push(struct list *l, const char *item) {
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 16;
        const char **bigger = realloc(l->items, (size_t)cap * sizeof *bigger);
        if (!bigger) return -1;
        l->items = bigger;
        l->cap = cap;
    }
    l->items[l->n++] = item;
    return 0;
}

int main(int argc, char **argv) {
    static char *no_env[] = {NULL};
    struct opts o;
    memset(&o, 0, sizeof o);
    o.sync_fd = -1;
    o.attach_fd = -1;
    o.listen_fd = -1;
    o.envs = no_env;
    int env_fd = -1;
    if (argc < 2) {
        fprintf(stderr, "usage: tether-shim run|exec [options] -- CMD [ARG...]\n");
        return 2;
    }
    const char *mode = argv[1];
    int i = 2;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) {
            i++;
            break;
        }
        int ok = 0;
        if (strcmp(a, "--tty") == 0) o.tty = ok = 1;
        else if (strcmp(a, "--root-tmpfs") == 0) o.root_tmpfs = ok = 1;
        else if (strcmp(a, "--sys-rw") == 0) o.sys_rw = ok = 1;
        else if (strcmp(a, "--no-new-privs") == 0) o.no_new_privs = ok = 1;
        else if (strcmp(a, "--all-devices") == 0) o.all_devices = ok = 1;
        else if (strcmp(a, "--stdin") == 0) o.stdin_open = ok = 1;
        else if (strcmp(a, "--read-only") == 0) o.readonly_root = ok = 1;
        if (ok) continue;
        if (i + 1 >= argc) {
            fprintf(stderr, "tether-shim: %s needs a value\n", a);
            return 2;
        }
        const char *v = argv[++i];
        int full = 0;
        if (strcmp(a, "--sync") == 0) o.sync_fd = atoi(v);
        else if (strcmp(a, "--log") == 0) o.log = v;
        else if (strcmp(a, "--log-max-size") == 0) o.log_max_size = strtoull(v, NULL, 10);
        else if (strcmp(a, "--log-max-file") == 0) o.log_max_file = atoi(v);
        else if (strcmp(a, "--exit") == 0) o.exit_path = v;
        else if (strcmp(a, "--netns") == 0) o.netns = v;
        else if (strcmp(a, "--hostname") == 0) o.hostname = v;
        else if (strcmp(a, "--rootfs") == 0) o.rootfs = v;
        else if (strcmp(a, "--overlay") == 0) o.overlay = v;
        else if (strcmp(a, "--cwd") == 0) o.cwd = v;
        else if (strcmp(a, "--cgroup") == 0) o.cgroup = v;
        else if (strcmp(a, "--pid") == 0) o.pid = (pid_t)atoi(v);
        else if (strcmp(a, "--pid-start") == 0) o.pid_start = strtoull(v, NULL, 10);
        else if (strcmp(a, "--env-fd") == 0) env_fd = atoi(v);
        else if (strcmp(a, "--caps") == 0) { o.caps = strtoull(v, NULL, 16); o.have_caps = 1; }
        else if (strcmp(a, "--seccomp") == 0) o.seccomp_path = v;
        else if (strcmp(a, "--seccomp-flags") == 0) o.seccomp_flags = (unsigned int)strtoul(v, NULL, 10);
        else if (strcmp(a, "--bind") == 0) full = push(&o.binds, v);
        else if (strcmp(a, "--ro-bind") == 0) full = push(&o.ro_binds, v);
        else if (strcmp(a, "--symlink") == 0) full = push(&o.symlinks, v);
        else if (strcmp(a, "--cow-bind") == 0) full = push(&o.cow_binds, v);
        else if (strcmp(a, "--hide") == 0) full = push(&o.hides, v);
        else if (strcmp(a, "--mask") == 0) full = push(&o.masks, v);
        else if (strcmp(a, "--readonly") == 0) full = push(&o.readonly, v);
        else if (strcmp(a, "--volume") == 0) full = push(&o.volumes, v);
        else if (strcmp(a, "--tmpfs") == 0) full = push(&o.tmpfs, v);
        else if (strcmp(a, "--shm-size") == 0) o.shm_size = strtoull(v, NULL, 10);
        else if (strcmp(a, "--group-add") == 0) full = push(&o.group_add, v);
        else if (strcmp(a, "--user") == 0) o.user = v;
        else if (strcmp(a, "--attach-fd") == 0) o.attach_fd = atoi(v);
        else if (strcmp(a, "--attach-listen") == 0) o.listen_fd = atoi(v);
        else if (strcmp(a, "--tty-size") == 0) {
            unsigned r = 0, c = 0;
            if (sscanf(v, "%ux%u", &r, &c) == 2) { o.rows = (unsigned short)r; o.cols = (unsigned short)c; }
        }
        else {
            fprintf(stderr, "tether-shim: unknown option %s\n", a);
            return 2;
        }
        if (full) {
            fprintf(stderr, "tether-shim: %s: out of memory\n", a);
            return 2;
        }
    }
    if (i >= argc) {
        fprintf(stderr, "tether-shim: no command\n");
        return 2;
    }
    o.argv = &argv[i];
    const char *bad = env_fd >= 0 ? read_env(&o, env_fd) : NULL;
    if (!bad) bad = cloexec_from(3);
    if (!bad && o.seccomp_path) bad = read_filter(&o);
    if (strcmp(mode, "run") == 0) {
        if (o.sync_fd < 0 || !o.exit_path || !o.rootfs) {
            fprintf(stderr, "tether-shim run: --sync, --exit and --rootfs are required\n");
            return 2;
        }
        if (bad) {
            dprintf(o.sync_fd, "err %s\n", bad);
            return 1;
        }
        return cmd_run(&o);
    }
    if (strcmp(mode, "exec") == 0) {
        if (o.pid <= 0) {
            fprintf(stderr, "tether-shim exec: --pid is required\n");
            return 2;
        }
        if (bad) fail(126, "%s", bad);
        return cmd_exec(&o);
    }
    fprintf(stderr, "tether-shim: unknown mode %s\n", mode);
    return 2;
}
