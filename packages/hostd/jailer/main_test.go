package main

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseKinds(t *testing.T) {
	j, err := parse(strings.Fields("/r /v/pid 7 8 cg /c/cpu/v cg /c/memory/v netns /run/netns/n ro /k rw /v dev /dev/null -- qemu -S"))
	if err != nil {
		t.Fatal(err)
	}
	want := &job{root: "/r", pidfile: "/v/pid", uid: 7, gid: 8, cgroups: []string{"/c/cpu/v", "/c/memory/v"},
		netns: "/run/netns/n", ro: []string{"/k"}, rw: []string{"/v"}, dev: []string{"/dev/null"}, prog: []string{"qemu", "-S"}}
	if !reflect.DeepEqual(j, want) {
		t.Fatalf("got %+v, want %+v", j, want)
	}
}

func TestParseRefuses(t *testing.T) {
	for _, args := range []string{
		"/r /p 0 8 -- q",         // uid 0
		"/r /p 7 0 -- q",         // gid 0
		"/r /p x 8 -- q",         // not a number
		"/r /p 7 8 ro k -- q",    // relative path
		"/r /p 7 8 bind /k -- q", // unknown kind
		"/r /p 7 8 ro /k",        // no program
		"/r /p 7 8 --",           // empty program
	} {
		if _, err := parse(strings.Fields(args)); err == nil {
			t.Errorf("%q: accepted", args)
		}
	}
}
