package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func build(t *testing.T, args []string, env map[string]string, files map[string]string) (Runtime, error) {
	t.Helper()
	b := &Builder{
		Args: args,
		Env:  func(k string) string { return env[k] },
		ReadFile: func(p string) ([]byte, error) {
			if s, ok := files[p]; ok {
				return []byte(s), nil
			}
			return nil, os.ErrNotExist
		},
	}
	return b.Build()
}

func TestPrecedenceDefaultsFileEnvFlags(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{"c.json": `{"cluster":"fromfile","node":"n1","log-level":"debug","join":["10.0.0.1:7946","10.0.0.2:7946"],"tag":{"zone":"a"},"data-dir":"` + dir + `"}`}
	env := map[string]string{"MESHGW_CONFIG": "c.json", "MESHGW_CLUSTER": "fromenv", "MESHGW_BOOTSTRAP_EXPECT": "5"}
	r, err := build(t, []string{"-cluster", "fromflag", "-join", "10.0.0.9:7946", "-join", "10.0.0.8:7946"}, env, files)
	if err != nil {
		t.Fatal(err)
	}
	if r.Cluster != "fromflag" {
		t.Errorf("cluster = %q, flag should win", r.Cluster)
	}
	if r.BootstrapExpect != 5 {
		t.Errorf("bootstrap-expect = %d, env should apply", r.BootstrapExpect)
	}
	if r.LogLevel != "debug" || r.NodeName != "n1" {
		t.Errorf("file values lost: %+v", r)
	}
	if strings.Join(r.Join, ",") != "10.0.0.9:7946,10.0.0.8:7946" {
		t.Errorf("join = %v: flags replace the file's list and accumulate", r.Join)
	}
	if r.Tags["zone"] != "a" {
		t.Errorf("tags = %v", r.Tags)
	}
	if r.HTTPAddr != "127.0.0.1:7480" {
		t.Errorf("http default = %q, want loopback", r.HTTPAddr)
	}
	if !r.IsSet("cluster") || r.IsSet("rpc") {
		t.Errorf("IsSet wrong")
	}
}

func TestDevDefaults(t *testing.T) {
	r, err := build(t, []string{"-dev"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(r.DataDir)
	if !r.TempDataDir() || r.BootstrapExpect != 1 || !strings.HasPrefix(r.BindAddr, "127.0.0.1:") {
		t.Fatalf("dev defaults not applied: %+v", r)
	}
	r2, err := build(t, []string{"-dev", "-bind", "127.0.0.1:9000", "-data-dir", t.TempDir()}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r2.BindAddr != "127.0.0.1:9000" || r2.TempDataDir() {
		t.Fatalf("explicit values must survive -dev: %+v", r2)
	}
}

func TestValidationNamesTheField(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		args  []string
		field string
	}{
		{[]string{"-node", "bad name"}, "node"},
		{[]string{"-bind", "nope"}, "bind"},
		{[]string{"-roles", "gateway,chef"}, "roles"},
		{[]string{"-cluster", ""}, "cluster"},
		{[]string{"-log-format", "xml"}, "log-format"},
		{[]string{"-gossip-profile", "fast"}, "gossip-profile"},
		{[]string{"-ca-file", "x"}, "ca-file"},
		{[]string{"-raft-voters", "2"}, "raft-voters"},
		{[]string{"-raft-rtt", "0s"}, "raft-rtt"},
		{[]string{"-raft-rtt", "5s"}, "raft-rtt"},
		{[]string{"-raft-rtt", "1500us"}, "raft-rtt"},
		{[]string{"-rpc", "0.0.0.0:7946"}, "rpc"},
		{[]string{"-tag", "bad key=1"}, "tag"},
		{[]string{"-proxy", "nope"}, "proxy"},
		{[]string{"-proxy", "127.0.0.1:7480"}, "proxy"}, // the API's port
		{[]string{"-proxy", "0.0.0.0:7948"}, "proxy"},   // Raft's
		{[]string{"-retention-bytes", "1048576"}, "retention-bytes"},
		{[]string{"-dns", "nope"}, "dns"},
		{[]string{"-dns", "127.0.0.1:7947"}, "dns"}, // the RPC's UDP port
		{[]string{"-dns", "0.0.0.0:7480"}, "dns"},   // the API's TCP port
		{[]string{"-cache-size", "1024"}, "cache-size"},
		{[]string{"-throttle-lease", "1s"}, "throttle-lease"},
		{[]string{"-throttle-lease", "25h"}, "throttle-lease"},
	}
	for _, c := range cases {
		_, err := build(t, append(c.args, "-data-dir", dir, "-node", "ok"), nil, nil)
		if c.args[0] == "-node" {
			_, err = build(t, append([]string{"-data-dir", dir}, c.args...), nil, nil)
		}
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != c.field {
			t.Errorf("%v: err = %v, want a FieldError on %q", c.args, err, c.field)
		}
	}
}

func TestRaftRTTFollowsTheGossipProfile(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		args []string
		env  map[string]string
		want time.Duration
	}{
		{nil, nil, 20 * time.Millisecond},
		{[]string{"-gossip-profile", "wan"}, nil, 100 * time.Millisecond},
		{nil, map[string]string{"MESHGW_GOSSIP_PROFILE": "wan"}, 100 * time.Millisecond},
		{[]string{"-gossip-profile", "wan", "-raft-rtt", "250ms"}, nil, 250 * time.Millisecond},
		{[]string{"-raft-rtt", "30ms"}, nil, 30 * time.Millisecond},
		{[]string{"-dev"}, nil, 20 * time.Millisecond},
	}
	for _, c := range cases {
		r, err := build(t, append([]string{"-data-dir", dir, "-node", "n1"}, c.args...), c.env, nil)
		if err != nil {
			t.Fatalf("%v: %v", c.args, err)
		}
		if r.RaftRTT != c.want {
			t.Errorf("%v %v: raft-rtt = %s, want %s", c.args, c.env, r.RaftRTT, c.want)
		}
	}
}

func TestBadValuesAndUnknowns(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{"-bootstrap-expect", "three"},
		{"-autopilot-dead-after", "soon"},
		{"-no-such-flag"},
		{"-tag", "novalue"},
		{"stray"},
	} {
		if _, err := build(t, append([]string{"-data-dir", dir}, args...), nil, nil); err == nil {
			t.Errorf("%v: want an error", args)
		}
	}
	if _, err := build(t, []string{"-data-dir", dir}, map[string]string{"MESHGW_BOOTSTRAP_EXPECT": "x"}, nil); err == nil || !strings.Contains(err.Error(), "MESHGW_BOOTSTRAP_EXPECT") {
		t.Errorf("env error should name the variable: %v", err)
	}
	files := map[string]string{"bad.json": `{"nope": 1}`, "broken.json": `{`}
	for f := range files {
		if _, err := build(t, []string{"-config", f, "-data-dir", dir}, nil, files); err == nil {
			t.Errorf("%s: want an error", f)
		}
	}
}

func TestIdentityKeptAcrossRestarts(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "d")
	id, err := EnsureIdentity(dir, "alpha")
	if err != nil {
		t.Fatal(err)
	}
	again, err := EnsureIdentity(dir, "alpha")
	if err != nil || again.ID != id.ID {
		t.Fatalf("identity changed across restarts: %v %v", again, err)
	}
	if _, err := EnsureIdentity(dir, "beta"); err == nil {
		t.Fatal("a data dir of another node must be refused")
	}
	r, err := build(t, []string{"-data-dir", dir}, nil, nil)
	if err != nil || r.NodeName != "alpha" {
		t.Fatalf("node name should come from the data dir: %q %v", r.NodeName, err)
	}
}
