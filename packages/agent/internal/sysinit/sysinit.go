// Package sysinit is what the agent does first when it is PID 1: there is no other init.
package sysinit

import (
	"log"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"
)

type mnt struct {
	src, target, fstype string
	flags               uintptr
	data                string
	mode                os.FileMode
}

var mounts = []mnt{
	{"proc", "/proc", "proc", syscall.MS_NOSUID | syscall.MS_NODEV | syscall.MS_NOEXEC, "", 0o555},
	{"sysfs", "/sys", "sysfs", syscall.MS_NOSUID | syscall.MS_NODEV | syscall.MS_NOEXEC, "", 0o555},
	{"devtmpfs", "/dev", "devtmpfs", syscall.MS_NOSUID, "mode=0755", 0o755},
	{"devpts", "/dev/pts", "devpts", syscall.MS_NOSUID | syscall.MS_NOEXEC, "mode=0620,gid=5,ptmxmode=0666", 0o755},
	{"tmpfs", "/dev/shm", "tmpfs", syscall.MS_NOSUID | syscall.MS_NODEV, "mode=1777", 0o1777},
	{"tmpfs", "/run", "tmpfs", syscall.MS_NOSUID | syscall.MS_NODEV, "mode=0755", 0o755},
	{"tmpfs", "/tmp", "tmpfs", syscall.MS_NOSUID | syscall.MS_NODEV, "mode=1777", 0o1777},
	{"cgroup2", "/sys/fs/cgroup", "cgroup2", syscall.MS_NOSUID | syscall.MS_NODEV | syscall.MS_NOEXEC, "", 0o555},
}

// Init mounts the pseudo filesystems, brings lo up and sets a default hostname. Errors are logged,
// never fatal: a half-set-up guest that answers the host is better than a kernel panic.
func Init(l *log.Logger) {
	for _, m := range mounts {
		_ = os.MkdirAll(m.target, m.mode)
		if err := syscall.Mount(m.src, m.target, m.fstype, m.flags, m.data); err != nil && err != syscall.EBUSY {
			l.Printf("mount %s: %v", m.target, err)
		}
	}
	for link, target := range map[string]string{
		"/dev/fd": "/proc/self/fd", "/dev/stdin": "/proc/self/fd/0", "/dev/stdout": "/proc/self/fd/1",
		"/dev/stderr": "/proc/self/fd/2", "/dev/core": "/proc/kcore",
	} {
		_ = os.Symlink(target, link)
	}
	if _, err := os.Stat("/dev/ptmx"); err != nil {
		_ = os.Symlink("pts/ptmx", "/dev/ptmx")
	}
	if err := IfUp("lo"); err != nil {
		l.Printf("lo up: %v", err)
	}
	if name, _ := os.Hostname(); name == "" || name == "(none)" || name == "localhost" {
		h := "sandbox"
		if b, err := os.ReadFile("/etc/hostname"); err == nil && len(b) > 0 {
			h = string(trimSpace(b))
		}
		_ = syscall.Sethostname([]byte(h))
	}
	syscall.Umask(0o022)
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == ' ') {
		b = b[:len(b)-1]
	}
	return b
}

const (
	siocgifflags = 0x8913
	siocsifflags = 0x8914
)

type ifreqFlags struct {
	Name  [16]byte
	Flags uint16
	_     [22]byte
}

// IfUp sets IFF_UP on an interface with the classic ioctl (no netlink needed for this).
func IfUp(name string) error {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	var req ifreqFlags
	copy(req.Name[:], name)
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), siocgifflags, uintptr(unsafe.Pointer(&req))); e != 0 {
		return e
	}
	req.Flags |= syscall.IFF_UP | syscall.IFF_RUNNING
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), siocsifflags, uintptr(unsafe.Pointer(&req))); e != 0 {
		return e
	}
	return nil
}

// Console is where PID 1 logs: the kernel console, which QEMU writes to console.log.
func Console() *os.File {
	f, err := os.OpenFile("/dev/console", os.O_WRONLY|syscall.O_NOCTTY, 0)
	if err != nil {
		return os.Stderr
	}
	return f
}

// ClockEventWarning explains a guest without timer interrupts (e.g. QEMU microvm with pic=off under
// TCG: "APIC timer disabled due to verification failure"): no timer ever fires there, so every sleep,
// the agent's included, hangs, and the agent answers hello and nothing else. Checked once at boot by
// watching the timer interrupt counters across a 20 ms busy wait (the TSC clock still runs), and
// reported in hello.
func ClockEventWarning() string {
	before, ok := timerInterrupts()
	if !ok {
		return ""
	}
	for t0 := time.Now(); time.Since(t0) < 20*time.Millisecond; {
	}
	after, _ := timerInterrupts()
	if after > before {
		return ""
	}
	return "no timer interrupts in 20 ms: sleeps never return in this guest; on QEMU microvm keep pit=on,pic=on"
}

// timerInterrupts sums the local APIC timer ("LOC") and legacy timer (IRQ 0) counts of /proc/interrupts.
func timerInterrupts() (uint64, bool) {
	b, err := os.ReadFile("/proc/interrupts")
	if err != nil {
		return 0, false
	}
	var sum uint64
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || (f[0] != "LOC:" && f[0] != "0:") {
			continue
		}
		for _, c := range f[1:] {
			n, err := strconv.ParseUint(c, 10, 64)
			if err != nil {
				break
			}
			sum += n
		}
	}
	return sum, true
}
