// createos-jailer puts one VMM process in its jail, then execs it (model: Firecracker's jailer).
//
//	createos-jailer ROOT PIDFILE UID GID [cg DIR | netns PATH | ro PATH | rw PATH | dev PATH]... -- PROGRAM ARG...
//
// PROGRAM is looked up on PATH inside the jail (only /usr is there). One static binary (standard library
// only, like the guest agent) in two stages, because a Go program cannot fork without exec:
//
// The launcher (stage 1, what the host daemon runs, as root):
//  0. joins each `cg` cgroup directory (writes 0 to its cgroup.procs), so the VMM is born inside its
//     limits and never runs a moment outside them; enters the `netns` network namespace (a /run/netns
//     file) on its locked OS thread. Both by the host's paths, which is why the jailer does them rather
//     than `ip netns exec` (whose remounted /sys hides the cgroup hierarchies);
//  1. re-executes itself from that thread into new mount and pid namespaces (clone flags), so the child
//     is pid 1 of its pid namespace and inherits the thread's network namespace;
//  2. waits on a pipe for the child's verdict: EOF with nothing written means the child's setup passed
//     and its exec of PROGRAM happened (the pipe is close-on-exec); then it writes the child's
//     host-visible pid to PIDFILE and exits 0, so the VMM is nobody's child (it outlives the host daemon,
//     which re-adopts it by pid). Anything the child wrote is its setup error: exit 111.
//
// The jail (stage 2, pid 1 of the new namespaces, still root):
//  3. makes every mount private, so nothing below leaks to the host; mounts a small tmpfs at ROOT holding
//     only the listed paths, each bind-mounted at its own absolute path (so the VMM's command line and the
//     qcow2 backing chains need no rewriting): `ro` read-only, `rw` writable (the VM dir); `dev` device
//     nodes recreated in a /dev of its own, owned by UID; /usr read-only for the VMM's binary and libraries;
//  4. pivot_root into ROOT, the old root detached: the host's filesystem is gone from view;
//  5. drops every capability from its bounding set (per thread: on the thread that execs), its groups,
//     becomes UID/GID on every thread (which clears the permitted and effective sets), sets
//     no_new_privs, and execs PROGRAM. The VMM then installs its own seccomp filter (QEMU's -sandbox).
package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"syscall"
)

const stageEnv = "CREATEOS_JAILER_STAGE"

// Kept on the main OS thread from the start: namespaces, the bounding set and no_new_privs are per
// thread, and the thread that sets them must be the one that clones or execs.
func init() { runtime.LockOSThread() }

type job struct {
	root, pidfile string
	uid, gid      int
	cgroups       []string
	netns         string
	ro, rw, dev   []string
	prog          []string
}

func die(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "createos-jailer: "+format+"\n", a...)
	os.Exit(111)
}

func parse(args []string) (*job, error) {
	if len(args) < 6 {
		return nil, fmt.Errorf("usage: createos-jailer ROOT PIDFILE UID GID [cg|netns|ro|rw|dev PATH]... -- PROGRAM ARG...")
	}
	j := &job{root: args[0], pidfile: args[1]}
	var err error
	if j.uid, err = strconv.Atoi(args[2]); err != nil || j.uid <= 0 {
		return nil, fmt.Errorf("refusing uid %q: want a positive integer", args[2])
	}
	if j.gid, err = strconv.Atoi(args[3]); err != nil || j.gid <= 0 {
		return nil, fmt.Errorf("refusing gid %q: want a positive integer", args[3])
	}
	i := 4
	for ; i+1 < len(args) && args[i] != "--"; i += 2 {
		kind, path := args[i], args[i+1]
		if len(path) == 0 || path[0] != '/' {
			return nil, fmt.Errorf("not an absolute path: %q", path)
		}
		switch kind {
		case "cg":
			j.cgroups = append(j.cgroups, path)
		case "netns":
			j.netns = path
		case "ro":
			j.ro = append(j.ro, path)
		case "rw":
			j.rw = append(j.rw, path)
		case "dev":
			j.dev = append(j.dev, path)
		default:
			return nil, fmt.Errorf("unknown kind %q", kind)
		}
	}
	if i >= len(args) || args[i] != "--" || i+1 >= len(args) {
		return nil, fmt.Errorf("missing -- PROGRAM")
	}
	j.prog = args[i+1:]
	return j, nil
}

func main() {
	j, err := parse(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "createos-jailer:", err)
		os.Exit(2)
	}
	if os.Getenv(stageEnv) == "jail" {
		os.Unsetenv(stageEnv)
		jail(j) // execs PROGRAM or exits
	}
	launch(j)
}

func launch(j *job) {
	for _, cg := range j.cgroups {
		if err := os.WriteFile(cg+"/cgroup.procs", []byte("0\n"), 0); err != nil {
			die("join cgroup %s: %v", cg, err)
		}
	}
	if j.netns != "" {
		f, err := os.Open(j.netns)
		if err != nil {
			die("enter netns %s: %v", j.netns, err)
		}
		if _, _, e := syscall.RawSyscall(sysSetns, f.Fd(), syscall.CLONE_NEWNET, 0); e != 0 {
			die("enter netns %s: %v", j.netns, e)
		}
		f.Close()
	}
	verdictR, verdictW, err := os.Pipe()
	if err != nil {
		die("pipe: %v", err)
	}
	cmd := exec.Command("/proc/self/exe", os.Args[1:]...)
	cmd.Args[0] = os.Args[0]
	cmd.Env = append(os.Environ(), stageEnv+"=jail")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.ExtraFiles = []*os.File{verdictW} // fd 3 in the child
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWPID}
	if err := cmd.Start(); err != nil {
		die("start the jail: %v", err)
	}
	verdictW.Close()
	buf := make([]byte, 4096)
	n, _ := verdictR.Read(buf)
	if n > 0 {
		fmt.Fprintf(os.Stderr, "createos-jailer: %s\n", buf[:n])
		os.Exit(111)
	}
	// The pidfile is in the VM dir, bind-mounted at its own path, so the path is the same inside the jail.
	// The VM dir is QEMU's, and QEMU runs by now: the temp file is created new (O_EXCL, no link
	// followed; the host daemon removed any stale one before the launch), never written through a link
	// QEMU put at its name to a host file.
	tmp := j.pidfile + ".tmp"
	if err := writeNew(tmp, []byte(strconv.Itoa(cmd.Process.Pid)+"\n")); err != nil {
		cmd.Process.Kill()
		die("pidfile %s: %v", j.pidfile, err)
	}
	if err := os.Rename(tmp, j.pidfile); err != nil {
		cmd.Process.Kill()
		die("pidfile %s: %v", j.pidfile, err)
	}
	// Not waited for: the VMM outlives us and is re-parented; the host daemon tracks it by pid.
	os.Exit(0)
}

// writeNew writes data to a file it creates (O_EXCL|O_NOFOLLOW: an existing name, a link included, fails).
func writeNew(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
