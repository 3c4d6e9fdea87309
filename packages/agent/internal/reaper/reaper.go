// Package reaper owns every wait(2) in the process. As PID 1 the agent inherits orphans, and a
// plain wait4(-1) loop would steal the exit status of processes that exec channels are waiting for;
// so exactly one goroutine waits, and hands statuses to whoever registered the pid.
package reaper

import (
	"os"
	"os/signal"
	"sync"
	"syscall"
)

type Reaper struct {
	// spawn is held shared while a process is started and registered, and exclusively while reaping,
	// so a child that exits before its pid is registered is not mistaken for an orphan.
	spawn   sync.RWMutex
	mu      sync.Mutex
	waiters map[int]chan syscall.WaitStatus
	sig     chan os.Signal
	Orphans uint64
}

func New() *Reaper {
	r := &Reaper{waiters: map[int]chan syscall.WaitStatus{}, sig: make(chan os.Signal, 1)}
	signal.Notify(r.sig, syscall.SIGCHLD)
	go r.loop()
	return r
}

func (r *Reaper) loop() {
	for range r.sig {
		r.reap()
	}
}

func (r *Reaper) reap() {
	r.spawn.Lock()
	defer r.spawn.Unlock()
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			continue
		}
		if pid <= 0 || err != nil {
			return
		}
		r.mu.Lock()
		ch, ok := r.waiters[pid]
		delete(r.waiters, pid)
		if !ok {
			r.Orphans++
		}
		r.mu.Unlock()
		if ok {
			ch <- ws
		}
	}
}

// Start starts a process whose exit status is delivered on the returned channel (buffered, one value).
func (r *Reaper) Start(path string, argv []string, attr *os.ProcAttr) (int, <-chan syscall.WaitStatus, error) {
	r.spawn.RLock()
	defer r.spawn.RUnlock()
	p, err := os.StartProcess(path, argv, attr)
	if err != nil {
		return 0, nil, err
	}
	ch := make(chan syscall.WaitStatus, 1)
	r.mu.Lock()
	r.waiters[p.Pid] = ch
	r.mu.Unlock()
	pid := p.Pid
	_ = p.Release()
	return pid, ch, nil
}
