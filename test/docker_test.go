package test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// composeCommand returns whichever Compose answers: docker-compose (v1, as
// Debian ships it) or the docker compose plugin (v2).
func composeCommand(ctx context.Context) ([]string, error) {
	for _, c := range [][]string{{"docker-compose"}, {"docker", "compose"}} {
		if err := exec.CommandContext(ctx, c[0], append(c[1:], "version")...).Run(); err == nil {
			return c, nil
		}
	}
	return nil, fmt.Errorf("neither docker-compose nor docker compose answers")
}

// staticBusybox reports why deploy/build.sh cannot put a static busybox in
// the image ("" when it can): it takes busybox from $PATH and refuses a
// dynamically linked one, as ldd tells.
func staticBusybox(ctx context.Context) string {
	path, err := exec.LookPath("busybox")
	if err != nil {
		return "no busybox on $PATH (Debian: apt-get install busybox-static; .ci/run installs it)"
	}
	if exec.CommandContext(ctx, "ldd", path).Run() == nil {
		return path + " is dynamically linked (Debian: apt-get install busybox-static)"
	}
	return ""
}

// dockerVoter is one voter of a group as /v1/status reports it, with the
// IDs and addresses a restart must keep.
type dockerVoter struct {
	ID   uint64 `json:"id"`
	Node string `json:"node"`
	Addr string `json:"addr"`
}

// dockerVoters returns node's view of its cluster's voters, once the group
// has a leader.
func dockerVoters(n *Node) ([]dockerVoter, error) {
	var st struct {
		Groups []struct {
			Cluster  string        `json:"cluster"`
			Leader   string        `json:"leader"`
			Replicas []dockerVoter `json:"replicas"`
		} `json:"groups"`
	}
	if _, err := n.Do("GET", "/v1/status", nil, &st); err != nil {
		return nil, err
	}
	for _, g := range st.Groups {
		if g.Cluster != "default" {
			continue
		}
		if g.Leader == "" {
			return nil, fmt.Errorf("the group of cluster default has no leader yet")
		}
		sort.Slice(g.Replicas, func(i, j int) bool { return g.Replicas[i].ID < g.Replicas[j].ID })
		return g.Replicas, nil
	}
	return nil, fmt.Errorf("%s hosts no replica of cluster default", n.Name)
}

// TestDockerMesh builds the FROM scratch image (a static busybox and the
// per-build dev TLS material in it), brings up the 3-node compose mesh with
// a fresh gossip key on a random /24 and sees 3 alive members. It runs the
// README's commands inside the image (a shell, the CLI, an exec service
// running busybox's cat), then `down` and `up` again: the service written
// before is there and the group has the same voters (IDs, names,
// addresses), because /data is a named volume. It docker-kills one node and
// sees it failed while the two survivors keep the state writable, and
// `down -v` removes the volumes.
func TestDockerMesh(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	infoCtx, infoCancel := context.WithTimeout(ctx, 30*time.Second)
	defer infoCancel()
	if err := exec.CommandContext(infoCtx, "docker", "info").Run(); err != nil {
		t.Skip("no Docker engine answers (docker info failed): skipping the Docker deploy test")
	}
	if why := staticBusybox(ctx); why != "" {
		t.Skip("deploy/build.sh needs a static busybox for the image: " + why + ": skipping the Docker deploy test")
	}
	compose, err := composeCommand(ctx)
	if err != nil {
		t.Fatal(err)
	}
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	suffix := fmt.Sprintf("%d%04d", time.Now().Unix()%1e6, rand.IntN(1e4))
	image := "meshgw-test:" + suffix
	// A /24 of its own, so concurrent runs (or a user's mesh) do not collide;
	// the image's node certificates name its addresses.
	subnet := fmt.Sprintf("172.28.%d", 16+rand.IntN(224))
	build := exec.CommandContext(ctx, "bash", filepath.Join(root, "deploy", "build.sh"))
	build.Env = append(os.Environ(), "IMAGE="+image, "MESHGW_BIN="+bin, "MESHGW_SUBNET="+subnet)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build image: %v\n%s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("docker", "rmi", "-f", image).Run() })

	key, stderr, code := CLI(t, "keygen")
	if code != 0 {
		t.Fatalf("keygen: %d %s", code, stderr)
	}
	project := "meshgwtest" + suffix
	port := freePort(t)
	env := append(os.Environ(), "MESHGW_IMAGE="+image, fmt.Sprintf("MESHGW_PORT=%d", port),
		"MESHGW_SUBNET="+subnet, "MESHGW_ENCRYPT="+strings.TrimSpace(key))
	run := func(ctx context.Context, args ...string) (string, error) {
		full := append(append(append([]string{}, compose[1:]...), "-p", project, "-f", filepath.Join(root, "deploy", "docker-compose.yml")), args...)
		cmd := exec.CommandContext(ctx, compose[0], full...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	volumes := func() []string {
		out, err := exec.CommandContext(ctx, "docker", "volume", "ls", "-q",
			"--filter", "label=com.docker.compose.project="+project).Output()
		if err != nil {
			t.Fatalf("docker volume ls: %v", err)
		}
		return strings.Fields(string(out))
	}
	// Registered after the image's cleanup, so it runs first: containers,
	// network and volumes go before the image, also when the test fails.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if t.Failed() {
			out, _ := run(ctx, "logs", "--tail", "30")
			t.Logf("compose logs:\n%s", out)
		}
		if out, err := run(ctx, "down", "-v", "--remove-orphans", "-t", "1"); err != nil {
			t.Errorf("compose down: %v\n%s", err, out)
		}
	})
	if out, err := run(ctx, "up", "-d"); err != nil {
		t.Fatalf("compose up: %v\n%s", err, out)
	}
	n := &Node{t: t, Name: "node1", HTTP: fmt.Sprintf("127.0.0.1:%d", port)}
	all := map[string]string{"node1": "alive", "node2": "alive", "node3": "alive"}
	WaitMembers(t, 60*time.Second, []*Node{n}, all)
	put := func(name string) func() error {
		return func() error {
			_, err := n.Do("PUT", "/v1/services/"+name, map[string]any{"name": name, "type": "http", "upstream": "http://127.0.0.1:1"}, nil)
			return err
		}
	}
	Eventually(t, 60*time.Second, put("before")) // the Raft group is formed
	// Node-to-node TLS comes from the CA and certificates baked in by build.sh.
	for _, name := range []string{"node1", "node2", "node3"} {
		out, err := run(ctx, "logs", "--no-color", name)
		if err != nil || !strings.Contains(out, `"tls":"files"`) {
			t.Errorf("%s does not use the baked TLS files: %v\n%s", name, err, out)
		}
	}

	// The README's commands inside the image, as written: docker-compose
	// is a shell function that adds this test's project name.
	block := readmeBlock(t, root, "the CLI and the quick start's examples run inside it")
	script := fmt.Sprintf("docker-compose() { command %s -p %s \"$@\"; }\n%s",
		strings.Join(compose, " "), project, block)
	sh := exec.CommandContext(ctx, "bash", "-e", "-o", "pipefail", "-c", script)
	sh.Dir = root
	sh.Env = env
	out, err := sh.CombinedOutput()
	if err != nil {
		t.Fatalf("README's commands inside the image: %v\n%s", err, out)
	}
	for _, want := range []string{"node3", "alive", `"msg":"hi"`, "echo"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("README's commands inside the image: output lacks %q:\n%s", want, out)
		}
	}

	// down then up: the volumes keep every node's /data.
	var before []dockerVoter
	Eventually(t, 30*time.Second, func() (err error) { before, err = dockerVoters(n); return err })
	if len(before) != 3 {
		t.Fatalf("voters before the restart: %+v", before)
	}
	start := time.Now()
	if out, err := run(ctx, "down", "-t", "20"); err != nil {
		t.Fatalf("compose down: %v\n%s", err, out)
	}
	if v := volumes(); len(v) != 3 {
		t.Fatalf("after down: volumes %v, want the 3 nodes' data volumes kept", v)
	}
	if out, err := run(ctx, "up", "-d"); err != nil {
		t.Fatalf("compose up again: %v\n%s", err, out)
	}
	WaitMembers(t, 60*time.Second, []*Node{n}, all)
	Eventually(t, 60*time.Second, func() error {
		var svc map[string]any
		if _, err := n.Do("GET", "/v1/services/before", nil, &svc); err != nil {
			return err
		}
		if svc["name"] != "before" {
			return fmt.Errorf("service before: %v", svc)
		}
		return nil
	})
	var after []dockerVoter
	Eventually(t, 30*time.Second, func() (err error) { after, err = dockerVoters(n); return err })
	if fmt.Sprint(before) != fmt.Sprint(after) {
		t.Errorf("voters changed across down/up:\nbefore %+v\nafter  %+v", before, after)
	}
	t.Logf("down then up: service and voters %+v kept, serving again after %s",
		after, time.Since(start).Round(100*time.Millisecond))

	out2, err := run(ctx, "ps", "-q", "node3")
	id := strings.TrimSpace(out2)
	if err != nil || id == "" {
		t.Fatalf("container of node3: %v %q", err, out2)
	}
	start = time.Now()
	if out, err := exec.CommandContext(ctx, "docker", "kill", id).CombinedOutput(); err != nil {
		t.Fatalf("docker kill: %v\n%s", err, out)
	}
	WaitMembers(t, 30*time.Second, []*Node{n}, map[string]string{"node3": "failed"})
	t.Logf("docker kill of node3 seen as failed by node1 after %s", time.Since(start).Round(100*time.Millisecond))
	// The surviving two keep the cluster's state writable.
	Eventually(t, 30*time.Second, put("after"))

	if out, err := run(ctx, "down", "-v", "-t", "1"); err != nil {
		t.Fatalf("compose down -v: %v\n%s", err, out)
	}
	if v := volumes(); len(v) != 0 {
		t.Errorf("after down -v: volumes %v left, want none", v)
	}
}
