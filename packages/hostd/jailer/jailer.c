/*
 * createos-jailer: puts one VMM process in its jail, then execs it (model: Firecracker's jailer).
 *
 *   createos-jailer ROOT PIDFILE UID GID [cg DIR | netns PATH | ro PATH | rw PATH | dev PATH]...
 *                   -- PROGRAM ARG...
 *
 * PROGRAM is looked up on PATH inside the jail (only /usr is there).
 *
 * 0. join each `cg` cgroup directory (write 0 to its cgroup.procs), so the VMM is born inside its limits:
 *    it never runs a moment outside them, and moving one thread now is cheaper than moving all of
 *    QEMU's later; then enter the `netns` network namespace (a /run/netns file). Both by the host's
 *    paths, which is why the jailer does them rather than `ip netns exec` (whose remounted /sys hides
 *    the cgroup hierarchies);
 * 1. new mount and pid namespaces; every mount made private, so nothing below leaks to the host;
 * 2. a small tmpfs at ROOT holding only the listed paths, each bind-mounted at its own absolute path
 *    (so the VMM's command line and the qcow2 backing chains need no rewriting): `ro` read-only, `rw`
 *    writable (the VM dir); `dev` device nodes recreated in a /dev of its own, owned by UID; /usr
 *    read-only for the VMM's binary and libraries;
 * 3. pivot_root into ROOT, the old root detached: the host's filesystem is gone from view;
 * 4. fork: the child is pid 1 of the new pid namespace; the parent writes its host-visible pid to PIDFILE
 *    and exits, so the VMM is nobody's child (it outlives the host daemon, which re-adopts it by pid);
 * 5. the child drops every capability from its bounding set, its groups, and becomes UID/GID (which
 *    clears its permitted and effective sets), sets no_new_privs, and execs PROGRAM.
 * The VMM then installs its own seccomp filter (QEMU's -sandbox). Exit status 0 means the jailed VMM
 * was started; anything else is a setup failure, reported on stderr.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static void die(const char *what, const char *arg) {
  fprintf(stderr, "createos-jailer: %s %s: %s\n", what, arg ? arg : "", strerror(errno));
  exit(111);
}

/* mkdir -p of `path` (absolute, inside the new root). */
static void mkdirs(char *path) {
  for (char *p = path + 1; *p; p++) {
    if (*p != '/') continue;
    *p = '\0';
    if (mkdir(path, 0755) != 0 && errno != EEXIST) die("mkdir", path);
    *p = '/';
  }
}

static void bind(const char *root, const char *src, int readonly) {
  char dst[4096];
  struct stat st;
  if (snprintf(dst, sizeof dst, "%s%s", root, src) >= (int)sizeof dst) die("path too long", src);
  if (stat(src, &st) != 0) die("stat", src);
  mkdirs(dst);
  if (S_ISDIR(st.st_mode)) {
    if (mkdir(dst, 0755) != 0 && errno != EEXIST) die("mkdir", dst);
  } else {
    int fd = open(dst, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
    if (fd < 0) die("create", dst);
    close(fd);
  }
  if (mount(src, dst, NULL, MS_BIND | MS_REC, NULL) != 0) die("bind", src);
  unsigned long flags = MS_BIND | MS_REMOUNT | MS_NOSUID | MS_NODEV | (readonly ? MS_RDONLY : 0);
  if (mount(NULL, dst, NULL, flags, NULL) != 0) die("remount", dst);
}

/* A device node of the host's, recreated in the jail's /dev and owned by the VMM's uid (mode 0600), so
 * it opens /dev/net/tun or /dev/kvm even where the host's nodes are root's alone (as Firecracker's jailer
 * does). */
static void device(const char *root, const char *src, uid_t uid, gid_t gid) {
  char dst[4096];
  struct stat st;
  if (strncmp(src, "/dev/", 5) != 0) {
    errno = EINVAL;
    die("not under /dev", src);
  }
  if (snprintf(dst, sizeof dst, "%s%s", root, src) >= (int)sizeof dst) die("path too long", src);
  if (stat(src, &st) != 0) die("stat", src);
  if (!S_ISCHR(st.st_mode)) {
    errno = EINVAL;
    die("not a character device", src);
  }
  mkdirs(dst);
  if (mknod(dst, S_IFCHR | 0600, st.st_rdev) != 0) die("mknod", dst);
  if (chown(dst, uid, gid) != 0) die("chown", dst);
}

int main(int argc, char **argv) {
  if (argc < 7) {
    fprintf(stderr, "usage: %s ROOT PIDFILE UID GID [cg|netns|ro|rw|dev PATH]... -- PROGRAM ARG...\n", argv[0]);
    return 2;
  }
  const char *root = argv[1], *pidfile = argv[2];
  uid_t uid = (uid_t)strtoul(argv[3], NULL, 10);
  gid_t gid = (gid_t)strtoul(argv[4], NULL, 10);
  if (uid == 0 || gid == 0) {
    fprintf(stderr, "createos-jailer: refusing uid/gid 0\n");
    return 2;
  }
  int i = 5;

  for (int k = i; k + 1 < argc && strcmp(argv[k], "--") != 0; k += 2) {
    if (strcmp(argv[k], "cg") != 0) continue;
    char procs[4096];
    if (snprintf(procs, sizeof procs, "%s/cgroup.procs", argv[k + 1]) >= (int)sizeof procs) die("path too long", argv[k + 1]);
    int fd = open(procs, O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write(fd, "0\n", 2) != 2 || close(fd) != 0) die("join cgroup", procs);
  }
  for (int k = i; k + 1 < argc && strcmp(argv[k], "--") != 0; k += 2) {
    if (strcmp(argv[k], "netns") != 0) continue;
    int fd = open(argv[k + 1], O_RDONLY | O_CLOEXEC);
    if (fd < 0 || setns(fd, CLONE_NEWNET) != 0 || close(fd) != 0) die("enter netns", argv[k + 1]);
  }

  if (unshare(CLONE_NEWNS | CLONE_NEWPID) != 0) die("unshare", NULL);
  if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) die("make-private", "/");
  if (mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755") != 0) die("tmpfs", root);
  bind(root, "/usr", 1);
  char devdir[4096];
  snprintf(devdir, sizeof devdir, "%s/dev", root);
  if (mkdir(devdir, 0755) != 0) die("mkdir", devdir);
  if (mount("tmpfs", devdir, "tmpfs", MS_NOSUID | MS_NOEXEC, "size=64k,mode=0755") != 0) die("tmpfs", devdir);
  for (; i + 1 < argc && strcmp(argv[i], "--") != 0; i += 2) {
    const char *kind = argv[i], *path = argv[i + 1];
    if (path[0] != '/') {
      errno = EINVAL;
      die("not an absolute path", path);
    }
    if (strcmp(kind, "cg") == 0 || strcmp(kind, "netns") == 0) continue; /* done above */
    if (strcmp(kind, "ro") == 0) bind(root, path, 1);
    else if (strcmp(kind, "rw") == 0) bind(root, path, 0);
    else if (strcmp(kind, "dev") == 0) device(root, path, uid, gid);
    else {
      errno = EINVAL;
      die("unknown kind", kind);
    }
  }
  if (i >= argc || strcmp(argv[i], "--") != 0 || i + 1 >= argc) {
    errno = EINVAL;
    die("missing -- PROGRAM", NULL);
  }
  char **prog = argv + i + 1;
  static const char *links[][2] = {{"usr/bin", "bin"}, {"usr/sbin", "sbin"}, {"usr/lib", "lib"}, {"usr/lib64", "lib64"}};
  for (size_t k = 0; k < sizeof links / sizeof links[0]; k++) {
    char at[4096];
    snprintf(at, sizeof at, "%s/%s", root, links[k][1]);
    if (symlink(links[k][0], at) != 0 && errno != EEXIST) die("symlink", at);
  }
  if (chdir(root) != 0) die("chdir", root);
  if (syscall(SYS_pivot_root, ".", ".") != 0) die("pivot_root", root);
  if (umount2(".", MNT_DETACH) != 0) die("umount old root", NULL);
  if (chdir("/") != 0) die("chdir", "/");
  /* The new root's own tmpfs: nothing more may be created in it. */
  if (mount(NULL, "/", NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL) != 0) die("remount ro", "/");

  pid_t child = fork();
  if (child < 0) die("fork", NULL);
  if (child > 0) {
    /* The parent stays in the host's pid namespace: `child` is the pid the host sees. PIDFILE is in the
     * VM dir, which is bind-mounted at its own path, so the path is the same inside the jail. */
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", pidfile);
    FILE *f = fopen(tmp, "w");
    if (!f || fprintf(f, "%d\n", (int)child) < 0 || fclose(f) != 0 || rename(tmp, pidfile) != 0) {
      kill(child, SIGKILL);
      die("pidfile", pidfile);
    }
    return 0;
  }

  for (int cap = 0; cap < 64; cap++) {
    if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL) die("drop capability", NULL);
  }
  if (setgroups(0, NULL) != 0) die("setgroups", NULL);
  if (setresgid(gid, gid, gid) != 0) die("setresgid", NULL);
  if (setresuid(uid, uid, uid) != 0) die("setresuid", NULL);
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) die("no_new_privs", NULL);
  /* PATH search inside the jail (/usr/bin), so argv[0] stays the bare name tools look for. */
  execvp(prog[0], prog);
  die("exec", prog[0]);
  return 111;
}
