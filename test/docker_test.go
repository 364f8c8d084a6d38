package test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestDockerMesh builds the FROM scratch image, brings up the 3-node compose
// mesh, sees 3 alive members, docker-kills one and sees it failed.
func TestDockerMesh(t *testing.T) {
	if err := exec.Command("docker", "info").Run(); err != nil {
		t.Skip("no Docker engine answers (docker info failed): skipping the Docker deploy test")
	}
	compose := []string{"docker-compose"}
	if _, err := exec.LookPath("docker-compose"); err != nil {
		compose = []string{"docker", "compose"}
	}
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	image := fmt.Sprintf("meshgw-test:%d", time.Now().UnixNano())
	build := exec.Command("bash", filepath.Join(root, "deploy", "build.sh"))
	build.Env = append(os.Environ(), "IMAGE="+image, "MESHGW_BIN="+bin)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build image: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("docker", "rmi", "-f", image).Run() })

	project := fmt.Sprintf("meshgwtest%d", time.Now().UnixNano()%1e9)
	port := freePort(t)
	run := func(args ...string) (string, error) {
		full := append(append(append([]string{}, compose[1:]...), "-p", project, "-f", filepath.Join(root, "deploy", "docker-compose.yml")), args...)
		cmd := exec.Command(compose[0], full...)
		cmd.Env = append(os.Environ(), "MESHGW_IMAGE="+image, fmt.Sprintf("MESHGW_PORT=%d", port))
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := run("logs", "--tail", "30")
			t.Logf("compose logs:\n%s", out)
		}
		run("down", "-v", "--remove-orphans", "-t", "1")
	})
	if out, err := run("up", "-d"); err != nil {
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
	if out, err := run("kill", "node3"); err != nil {
		t.Fatalf("docker kill: %v\n%s", err, out)
	}
	start := time.Now()
	WaitMembers(t, 30*time.Second, []*Node{n}, map[string]string{"node3": "failed"})
	t.Logf("docker kill of node3 seen as failed by node1 after %s", time.Since(start).Round(100*time.Millisecond))
	// The surviving two keep the cluster's state writable.
	Eventually(t, 30*time.Second, put("after"))
}
