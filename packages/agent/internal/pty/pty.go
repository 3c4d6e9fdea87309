// Package pty allocates pseudo-terminals with the standard library only.
package pty

import (
	"fmt"
	"os"
	"syscall"
	"unsafe"
)

// Linux ioctl numbers (asm-generic, identical on amd64 and arm64).
const (
	tiocsptlck = 0x40045431
	tiocgptn   = 0x80045430
	tiocswinsz = 0x5414
	tiocgpgrp  = 0x540F
)

type winsize struct{ Row, Col, X, Y uint16 }

func ioctl(f *os.File, req uintptr, arg unsafe.Pointer) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var errno syscall.Errno
	// SyscallConn keeps the fd non-blocking; f.Fd() would switch it to blocking mode.
	if cerr := rc.Control(func(fd uintptr) {
		_, _, errno = syscall.Syscall(syscall.SYS_IOCTL, fd, req, uintptr(arg))
	}); cerr != nil {
		return cerr
	}
	if errno != 0 {
		return errno
	}
	return nil
}

// Open returns the master and the slave of a new PTY.
func Open() (master, slave *os.File, err error) {
	master, err = os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	var unlock int32
	if err = ioctl(master, tiocsptlck, unsafe.Pointer(&unlock)); err != nil {
		master.Close()
		return nil, nil, fmt.Errorf("TIOCSPTLCK: %w", err)
	}
	var n uint32
	if err = ioctl(master, tiocgptn, unsafe.Pointer(&n)); err != nil {
		master.Close()
		return nil, nil, fmt.Errorf("TIOCGPTN: %w", err)
	}
	slave, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY|syscall.O_CLOEXEC, 0)
	if err != nil {
		master.Close()
		return nil, nil, err
	}
	return master, slave, nil
}

func Resize(f *os.File, rows, cols uint16) error {
	ws := winsize{Row: rows, Col: cols}
	return ioctl(f, tiocswinsz, unsafe.Pointer(&ws))
}

// ForegroundPgrp is the process group that terminal signals go to.
func ForegroundPgrp(f *os.File) (int, error) {
	var pgrp int32
	if err := ioctl(f, tiocgpgrp, unsafe.Pointer(&pgrp)); err != nil {
		return 0, err
	}
	return int(pgrp), nil
}
