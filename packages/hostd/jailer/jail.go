package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
)

const verdictFd = 3

// What package syscall does not name: prctl(2)'s option (linux/prctl.h) and setns(2)'s number on x86-64.
const (
	prSetNoNewPrivs = 38
	sysSetns        = 308
)

// fail reports a setup error to the launcher over the verdict pipe and exits.
func fail(format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	if _, err := syscall.Write(verdictFd, []byte(msg)); err != nil {
		fmt.Fprintln(os.Stderr, "createos-jailer:", msg)
	}
	os.Exit(111)
}

// Stage 2: pid 1 of fresh mount and pid namespaces, still root. Never returns.
func jail(j *job) {
	// The verdict pipe must close when PROGRAM starts: that EOF is the launcher's "it ran".
	syscall.CloseOnExec(verdictFd)
	if err := syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
		fail("make-private /: %v", err)
	}
	if err := syscall.Mount("tmpfs", j.root, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, "size=1m,mode=0755"); err != nil {
		fail("tmpfs %s: %v", j.root, err)
	}
	bind(j.root, "/usr", true)
	devDir := j.root + "/dev"
	if err := os.Mkdir(devDir, 0o755); err != nil {
		fail("%v", err)
	}
	if err := syscall.Mount("tmpfs", devDir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NOEXEC, "size=64k,mode=0755"); err != nil {
		fail("tmpfs %s: %v", devDir, err)
	}
	for _, p := range j.ro {
		bind(j.root, p, true)
	}
	for _, p := range j.rw {
		bind(j.root, p, false)
	}
	for _, p := range j.dev {
		device(j.root, p, j.uid, j.gid)
	}
	for _, l := range [][2]string{{"usr/bin", "bin"}, {"usr/sbin", "sbin"}, {"usr/lib", "lib"}, {"usr/lib64", "lib64"}} {
		if err := os.Symlink(l[0], filepath.Join(j.root, l[1])); err != nil && !os.IsExist(err) {
			fail("%v", err)
		}
	}
	if err := syscall.Chdir(j.root); err != nil {
		fail("chdir %s: %v", j.root, err)
	}
	if err := syscall.PivotRoot(".", "."); err != nil {
		fail("pivot_root %s: %v", j.root, err)
	}
	if err := syscall.Unmount(".", syscall.MNT_DETACH); err != nil {
		fail("umount old root: %v", err)
	}
	if err := syscall.Chdir("/"); err != nil {
		fail("chdir /: %v", err)
	}
	// The new root's own tmpfs: nothing more may be created in it.
	ro := uintptr(syscall.MS_REMOUNT | syscall.MS_BIND | syscall.MS_RDONLY | syscall.MS_NOSUID | syscall.MS_NODEV)
	if err := syscall.Mount("", "/", "", ro, ""); err != nil {
		fail("remount / read-only: %v", err)
	}
	prog, err := exec.LookPath(j.prog[0]) // PATH search inside the jail (/usr/bin)
	if err != nil {
		fail("%v", err)
	}
	dropPrivileges(j.uid, j.gid)
	// argv[0] stays the bare name tools look for.
	err = syscall.Exec(prog, j.prog, os.Environ())
	fail("exec %s: %v", prog, err)
}

func dropPrivileges(uid, gid int) {
	// The bounding set is per thread; init() locked this goroutine to the thread that will exec.
	for c := 0; c < 64; c++ {
		if _, _, e := syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_CAPBSET_DROP, uintptr(c), 0); e != 0 && e != syscall.EINVAL {
			fail("drop capability %d: %v", c, e)
		}
	}
	// These three apply to every thread of the process (Go's all-threads syscalls).
	if err := syscall.Setgroups([]int{}); err != nil {
		fail("setgroups: %v", err)
	}
	if err := syscall.Setresgid(gid, gid, gid); err != nil {
		fail("setresgid: %v", err)
	}
	if err := syscall.Setresuid(uid, uid, uid); err != nil {
		fail("setresuid: %v", err)
	}
	if _, _, e := syscall.RawSyscall(syscall.SYS_PRCTL, prSetNoNewPrivs, 1, 0); e != 0 {
		fail("no_new_privs: %v", e)
	}
}

// bind mounts src at root+src, read-only or not, with nosuid and nodev.
func bind(root, src string, readonly bool) {
	dst := root + src
	st, err := os.Stat(src)
	if err != nil {
		fail("%v", err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		fail("%v", err)
	}
	if st.IsDir() {
		if err := os.Mkdir(dst, 0o755); err != nil && !os.IsExist(err) {
			fail("%v", err)
		}
	} else {
		f, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			fail("%v", err)
		}
		f.Close()
	}
	if err := syscall.Mount(src, dst, "", syscall.MS_BIND|syscall.MS_REC, ""); err != nil {
		fail("bind %s: %v", src, err)
	}
	flags := uintptr(syscall.MS_BIND | syscall.MS_REMOUNT | syscall.MS_NOSUID | syscall.MS_NODEV)
	if readonly {
		flags |= syscall.MS_RDONLY
	}
	if err := syscall.Mount("", dst, "", flags, ""); err != nil {
		fail("remount %s: %v", dst, err)
	}
}

// device recreates a host character device in the jail's /dev, owned by the VMM's uid (mode 0600), so it
// opens /dev/net/tun or /dev/kvm even where the host's nodes are root's alone (as Firecracker's jailer does).
func device(root, src string, uid, gid int) {
	if len(src) < 6 || src[:5] != "/dev/" {
		fail("not under /dev: %s", src)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(src, &st); err != nil {
		fail("stat %s: %v", src, err)
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFCHR {
		fail("not a character device: %s", src)
	}
	dst := root + src
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		fail("%v", err)
	}
	if err := syscall.Mknod(dst, syscall.S_IFCHR|0o600, int(st.Rdev)); err != nil {
		fail("mknod %s: %v", dst, err)
	}
	if err := syscall.Chown(dst, uid, gid); err != nil {
		fail("chown %s: %v", dst, err)
	}
}
