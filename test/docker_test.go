package test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
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

// TestDockerMesh builds the FROM scratch image (with its per-build dev TLS
// material), brings up the 3-node compose mesh with a fresh gossip key on a
// random /24, sees 3 alive members, docker-kills one and
// sees it failed, and checks the two survivors keep the state writable.
func TestDockerMesh(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	infoCtx, infoCancel := context.WithTimeout(ctx, 30*time.Second)
	defer infoCancel()
	if err := exec.CommandContext(infoCtx, "docker", "info").Run(); err != nil {
		t.Skip("no Docker engine answers (docker info failed): skipping the Docker deploy test")
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
	run := func(ctx context.Context, args ...string) (string, error) {
		full := append(append(append([]string{}, compose[1:]...), "-p", project, "-f", filepath.Join(root, "deploy", "docker-compose.yml")), args...)
		cmd := exec.CommandContext(ctx, compose[0], full...)
		cmd.Env = append(os.Environ(), "MESHGW_IMAGE="+image, fmt.Sprintf("MESHGW_PORT=%d", port),
			"MESHGW_SUBNET="+subnet, "MESHGW_ENCRYPT="+strings.TrimSpace(key))
		out, err := cmd.CombinedOutput()
		return string(out), err
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
	WaitMembers(t, 60*time.Second, []*Node{n}, map[string]string{"node1": "alive", "node2": "alive", "node3": "alive"})
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

	out, err := run(ctx, "ps", "-q", "node3")
	id := strings.TrimSpace(out)
	if err != nil || id == "" {
		t.Fatalf("container of node3: %v %q", err, out)
	}
	start := time.Now()
	if out, err := exec.CommandContext(ctx, "docker", "kill", id).CombinedOutput(); err != nil {
		t.Fatalf("docker kill: %v\n%s", err, out)
	}
	WaitMembers(t, 30*time.Second, []*Node{n}, map[string]string{"node3": "failed"})
	t.Logf("docker kill of node3 seen as failed by node1 after %s", time.Since(start).Round(100*time.Millisecond))
	// The surviving two keep the cluster's state writable.
	Eventually(t, 30*time.Second, put("after"))
}
