/*
 * tether-shim: the small parent of one container, and the way into a running one.
 *
 * Why a C program: every running container needs a parent that outlives the daemon (live
 * restore) and records the exit status, because Linux only tells a process's parent how it
 * ended.  A Python parent would cost ~10 MB per container; this one is static and stays well
 * under 1 MB.  tetherd prepares everything it can from the outside (network namespace with its
 * interfaces, the files to bind in) and execs this for the rest.
 *
 *   tether-shim run --sync FD --log PATH --exit PATH [--netns PATH] [--hostname NAME]
 *                   [--rootfs DIR [--overlay LOWER:UPPER:WORK]] [--bind SRC:DST]...
 *                   [--cwd DIR] [--env K=V]... -- CMD [ARG...]
 *   tether-shim exec --pid PID [--cwd DIR] [--env K=V]... [--tty] -- CMD [ARG...]
 *
 * run: new pid/mount/uts/ipc namespaces (+ the given netns), root filesystem, /proc, /dev,
 * bind mounts; the command's stdout/stderr are relayed into PATH as frames
 * (1 byte stream, 4 bytes length BE, 8 bytes nanosecond time BE, data); "ok PID\n" or
 * "err MESSAGE\n" goes to the sync fd once the command is executing (or failed to); the exit
 * status goes to the exit file (atomically) when the command's pid 1 ends.
 *
 * exec: joins the namespaces and root of PID, runs the command, exits with its status.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
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
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define MAX_LIST 256

extern char **environ;

struct opts {
    int sync_fd;
    const char *log, *exit_path, *netns, *hostname, *rootfs, *overlay, *cwd;
    const char *binds[MAX_LIST];
    int nbinds;
    char *envs[MAX_LIST + 1];
    int nenvs;
    pid_t pid;
    int tty;
    char **argv;
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

static void bind_file(const char *src, const char *dst) {
    struct stat st;
    if (stat(src, &st) != 0) fail(126, "bind %s: %s", src, strerror(errno));
    if (S_ISDIR(st.st_mode)) {
        mkdirs(dst, 0755);
    } else {
        char parent[4096];
        snprintf(parent, sizeof parent, "%s", dst);
        char *slash = strrchr(parent, '/');
        if (slash && slash != parent) {
            *slash = 0;
            mkdirs(parent, 0755);
        }
        touch(dst);
    }
    do_mount(src, dst, NULL, MS_BIND, NULL);
}

static void setup_dev(const char *root) {
    char path[4096], src[64];
    static const char *nodes[] = {"null", "zero", "full", "random", "urandom", "tty", NULL};
    snprintf(path, sizeof path, "%s/dev", root);
    mkdirs(path, 0755);
    do_mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_STRICTATIME, "mode=755,size=65536k");
    for (int i = 0; nodes[i]; i++) {
        snprintf(path, sizeof path, "%s/dev/%s", root, nodes[i]);
        snprintf(src, sizeof src, "/dev/%s", nodes[i]);
        touch(path);
        do_mount(src, path, NULL, MS_BIND, NULL);
    }
    snprintf(path, sizeof path, "%s/dev/pts", root);
    mkdirs(path, 0755);
    do_mount("devpts", path, "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620");
    snprintf(path, sizeof path, "%s/dev/ptmx", root);
    if (symlink("pts/ptmx", path) != 0 && errno != EEXIST) fail(126, "symlink ptmx: %s", strerror(errno));
    snprintf(path, sizeof path, "%s/dev/shm", root);
    mkdirs(path, 01777);
    do_mount("shm", path, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=65536k");
    static const char *links[][2] = {{"/proc/self/fd", "fd"}, {"/proc/self/fd/0", "stdin"},
                                     {"/proc/self/fd/1", "stdout"}, {"/proc/self/fd/2", "stderr"}};
    for (int i = 0; i < 4; i++) {
        snprintf(path, sizeof path, "%s/dev/%s", root, links[i][1]);
        if (symlink(links[i][0], path) != 0 && errno != EEXIST) {}
    }
}

/* The container's own view of the world; runs as pid 1 of the new pid namespace. */
static void container_child(struct opts *o, int out_w, int err_w) {
    if (o->netns) {
        int fd = open(o->netns, O_RDONLY | O_CLOEXEC);
        if (fd < 0 || setns(fd, CLONE_NEWNET) != 0) fail(126, "join network namespace %s: %s", o->netns, strerror(errno));
        close(fd);
    }
    if (unshare(CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC) != 0) fail(126, "unshare: %s", strerror(errno));
    /* Slave, not private: unmounts of sandbox files in the daemon's namespace reach us. */
    do_mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL);
    if (o->hostname && sethostname(o->hostname, strlen(o->hostname)) != 0)
        fail(126, "sethostname: %s", strerror(errno));

    char path[4096];
    const char *root = o->rootfs ? o->rootfs : "";
    if (o->rootfs) {
        if (o->overlay) {
            char lower[4096], upper[4096], work[4096], data[12400];
            if (sscanf(o->overlay, "%4095[^:]:%4095[^:]:%4095s", lower, upper, work) != 3)
                fail(126, "bad --overlay %s", o->overlay);
            snprintf(data, sizeof data, "lowerdir=%s,upperdir=%s,workdir=%s", lower, upper, work);
            do_mount("overlay", o->rootfs, "overlay", 0, data);
        } else {
            do_mount(o->rootfs, o->rootfs, NULL, MS_BIND | MS_REC, NULL);
        }
        static const char *dirs[] = {"proc", "sys", "etc", "tmp", NULL};
        for (int i = 0; dirs[i]; i++) {
            snprintf(path, sizeof path, "%s/%s", root, dirs[i]);
            mkdirs(path, strcmp(dirs[i], "tmp") == 0 ? 01777 : 0755);
        }
        setup_dev(root);
    }
    snprintf(path, sizeof path, "%s/proc", root);
    do_mount("proc", path, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    snprintf(path, sizeof path, "%s/sys", root);
    /* A fresh sysfs shows this network namespace's interfaces under /sys/class/net. */
    if (mount("sysfs", path, "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0 && o->rootfs)
        fail(126, "mount sysfs: %s", strerror(errno));
    for (int i = 0; i < o->nbinds; i++) {
        char src[4096], dst[4096];
        const char *colon = strchr(o->binds[i], ':');
        if (!colon) fail(126, "bad --bind %s", o->binds[i]);
        snprintf(src, sizeof src, "%.*s", (int)(colon - o->binds[i]), o->binds[i]);
        snprintf(dst, sizeof dst, "%s%s", root, colon + 1);
        bind_file(src, dst);
    }
    if (o->rootfs) {
        if (chdir(o->rootfs) != 0) fail(126, "chdir %s: %s", o->rootfs, strerror(errno));
        if (syscall(SYS_pivot_root, ".", ".") != 0) fail(126, "pivot_root: %s", strerror(errno));
        if (umount2(".", MNT_DETACH) != 0) fail(126, "umount old root: %s", strerror(errno));
        if (chdir("/") != 0) fail(126, "chdir /: %s", strerror(errno));
    }
    const char *cwd = o->cwd && *o->cwd ? o->cwd : "/";
    mkdirs(cwd, 0755); /* Docker creates a missing working directory */
    if (chdir(cwd) != 0) fail(126, "chdir %s: %s", cwd, strerror(errno));

    int null = open("/dev/null", O_RDONLY);
    if (null >= 0) { dup2(null, 0); if (null != 0) close(null); }
    dup2(out_w, 1);
    dup2(err_w, 2);
    if (out_w > 2) close(out_w);
    if (err_w > 2) close(err_w);
    default_signals();
    environ = o->envs;
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

static void log_frame(int log_fd, int stream, const char *data, size_t len) {
    unsigned char hdr[13];
    uint64_t t = now_ns();
    hdr[0] = (unsigned char)stream;
    for (int i = 0; i < 4; i++) hdr[1 + i] = (unsigned char)(len >> (24 - 8 * i));
    for (int i = 0; i < 8; i++) hdr[5 + i] = (unsigned char)(t >> (56 - 8 * i));
    char buf[13 + 65536];
    memcpy(buf, hdr, 13);
    memcpy(buf + 13, data, len);
    write_all(log_fd, buf, 13 + len);
}

static int cmd_run(struct opts *o) {
    int out[2], errp[2], status_pipe[2];
    signal(SIGHUP, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    signal(SIGQUIT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    setsid();
    int log_fd = open(o->log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (log_fd < 0) {
        dprintf(o->sync_fd, "err open log %s: %s\n", o->log, strerror(errno));
        return 1;
    }
    if (pipe2(out, O_CLOEXEC) || pipe2(errp, O_CLOEXEC) || pipe2(status_pipe, O_CLOEXEC)) {
        dprintf(o->sync_fd, "err pipe: %s\n", strerror(errno));
        return 1;
    }
    if (unshare(CLONE_NEWPID) != 0) {
        dprintf(o->sync_fd, "err unshare pid namespace: %s\n", strerror(errno));
        return 1;
    }
    pid_t child = fork();
    if (child < 0) {
        dprintf(o->sync_fd, "err fork: %s\n", strerror(errno));
        return 1;
    }
    if (child == 0) {
        close(out[0]);
        close(errp[0]);
        close(status_pipe[0]);
        close(o->sync_fd);
        close(log_fd);
        err_fd = status_pipe[1];
        container_child(o, out[1], errp[1]);
    }
    close(out[1]);
    close(errp[1]);
    close(status_pipe[1]);
    char msg[1100];
    ssize_t n = read(status_pipe[0], msg, sizeof msg - 1);
    close(status_pipe[0]);
    if (n > 0) {
        int st;
        msg[n] = 0;
        waitpid(child, &st, 0);
        dprintf(o->sync_fd, "err %s\n", msg);
        return 1;
    }
    dprintf(o->sync_fd, "ok %d\n", (int)child);
    close(o->sync_fd);

    struct pollfd fds[2] = {{out[0], POLLIN, 0}, {errp[0], POLLIN, 0}};
    int open_fds = 2;
    char buf[65536];
    while (open_fds > 0) {
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR) continue;
            break;
        }
        for (int i = 0; i < 2; i++) {
            if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            ssize_t r = read(fds[i].fd, buf, sizeof buf);
            if (r > 0) {
                log_frame(log_fd, i + 1, buf, (size_t)r);
            } else if (r == 0 || errno != EINTR) {
                close(fds[i].fd);
                fds[i].fd = -1;
                open_fds--;
            }
        }
    }
    int st = 0;
    while (waitpid(child, &st, 0) < 0 && errno == EINTR) {}
    int code = WIFEXITED(st) ? WEXITSTATUS(st) : WIFSIGNALED(st) ? 128 + WTERMSIG(st) : 255;
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", o->exit_path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd >= 0) {
        dprintf(fd, "%d %llu\n", code, (unsigned long long)now_ns());
        fsync(fd);
        close(fd);
        rename(tmp, o->exit_path);
    }
    return 0;
}

static pid_t exec_child = 0;

static void forward(int sig) {
    if (exec_child > 0) kill(exec_child, sig);
}

static int cmd_exec(struct opts *o) {
    static const char *kinds[] = {"ipc", "uts", "net", "pid", "mnt"};
    static const int flags[] = {CLONE_NEWIPC, CLONE_NEWUTS, CLONE_NEWNET, CLONE_NEWPID, CLONE_NEWNS};
    int fds[5];
    char path[64];
    for (int i = 0; i < 5; i++) {
        snprintf(path, sizeof path, "/proc/%d/ns/%s", (int)o->pid, kinds[i]);
        fds[i] = open(path, O_RDONLY | O_CLOEXEC);
        if (fds[i] < 0) fail(126, "container process %d: %s", (int)o->pid, strerror(errno));
    }
    snprintf(path, sizeof path, "/proc/%d/root", (int)o->pid);
    int root = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (root < 0) fail(126, "container root: %s", strerror(errno));
    for (int i = 0; i < 5; i++) {
        /* The network namespace of a --network host container is the daemon's own. */
        if (setns(fds[i], flags[i]) != 0 && errno != EINVAL)
            fail(126, "join %s namespace: %s", kinds[i], strerror(errno));
        close(fds[i]);
    }
    if (fchdir(root) != 0 || chroot(".") != 0) fail(126, "enter container root: %s", strerror(errno));
    close(root);
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

int main(int argc, char **argv) {
    struct opts o;
    memset(&o, 0, sizeof o);
    o.sync_fd = -1;
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
        if (i + 1 >= argc && strcmp(a, "--tty") != 0) {
            fprintf(stderr, "tether-shim: %s needs a value\n", a);
            return 2;
        }
        if (strcmp(a, "--sync") == 0) o.sync_fd = atoi(argv[++i]);
        else if (strcmp(a, "--log") == 0) o.log = argv[++i];
        else if (strcmp(a, "--exit") == 0) o.exit_path = argv[++i];
        else if (strcmp(a, "--netns") == 0) o.netns = argv[++i];
        else if (strcmp(a, "--hostname") == 0) o.hostname = argv[++i];
        else if (strcmp(a, "--rootfs") == 0) o.rootfs = argv[++i];
        else if (strcmp(a, "--overlay") == 0) o.overlay = argv[++i];
        else if (strcmp(a, "--cwd") == 0) o.cwd = argv[++i];
        else if (strcmp(a, "--pid") == 0) o.pid = (pid_t)atoi(argv[++i]);
        else if (strcmp(a, "--tty") == 0) o.tty = 1;
        else if (strcmp(a, "--bind") == 0 && o.nbinds < MAX_LIST) o.binds[o.nbinds++] = argv[++i];
        else if (strcmp(a, "--env") == 0 && o.nenvs < MAX_LIST) o.envs[o.nenvs++] = argv[++i];
        else {
            fprintf(stderr, "tether-shim: unknown option %s\n", a);
            return 2;
        }
    }
    o.envs[o.nenvs] = NULL;
    if (i >= argc) {
        fprintf(stderr, "tether-shim: no command\n");
        return 2;
    }
    o.argv = &argv[i];
    if (strcmp(mode, "run") == 0) {
        if (o.sync_fd < 0 || !o.log || !o.exit_path) {
            fprintf(stderr, "tether-shim run: --sync, --log and --exit are required\n");
            return 2;
        }
        return cmd_run(&o);
    }
    if (strcmp(mode, "exec") == 0) {
        if (o.pid <= 0) {
            fprintf(stderr, "tether-shim exec: --pid is required\n");
            return 2;
        }
        return cmd_exec(&o);
    }
    fprintf(stderr, "tether-shim: unknown mode %s\n", mode);
    return 2;
}
