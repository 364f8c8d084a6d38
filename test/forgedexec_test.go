package test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshgw/meshgw/transport"
	"github.com/meshgw/meshgw/transport/tlsutil"
)

// A gateway-only node of another cluster, with a valid certificate of the
// mesh, that calls a runner's dispatch.exec directly with a command of its
// own under a defined service's name runs nothing; the runner runs only
// what its own cluster's state defines, and a client's run of that service
// forwarded by the same node still works.
func TestForgedExecFromAnotherClusterRunsNothing(t *testing.T) {
	n1, gw, forger := foreignGateway(t)
	putService(t, n1, map[string]any{"name": "legit", "type": "exec", "command": []string{"echo", "legit"}})
	marker := filepath.Join(t.TempDir(), "owned")
	forge := func(req map[string]any) error {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s, err := forger.Stream(ctx, n1.RPC, "dispatch.exec")
		if err != nil {
			return err
		}
		defer s.Close()
		b, _ := json.Marshal(req)
		if err := s.Send(b); err != nil {
			return err
		}
		if err := s.CloseSend(); err != nil {
			return err
		}
		for {
			f, err := s.Recv()
			if err != nil {
				return err
			}
			if len(f) > 0 && f[0] == 'r' { // a result: something ran
				return nil
			}
		}
	}
	for name, req := range map[string]map[string]any{
		"own command": {"id": "f1", "attempt": 1, "service": "legit", "cluster": "default",
			"command": []string{"touch", marker}, "timeout_ms": 10000},
		"older caller's request": {"id": "f2", "attempt": 1, "service": "legit",
			"command": []string{"touch", marker}, "timeout_ms": 10000},
		"its own cluster": {"id": "f3", "attempt": 1, "service": "legit", "cluster": "other",
			"command": []string{"echo", "legit"}, "timeout_ms": 10000},
	} {
		err := forge(req)
		var re *transport.RemoteError
		if !errors.As(err, &re) || re.Code != "refused" {
			t.Errorf("%s: %v, want code refused", name, err)
		}
	}
	if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a forged command ran on n1: %v", err)
	}
	log, _ := os.ReadFile(n1.LogPath)
	if !strings.Contains(string(log), "refused an execution this runner's cluster does not define") {
		t.Error("n1 did not log the refusals")
	}

	// A client's run through g-other, for cluster default, still runs.
	var r runResult
	Eventually(t, 20*time.Second, func() error {
		_, err := gw.Do("POST", "/v1/services/legit/run?cluster=default", map[string]any{}, &r)
		return err
	})
	if r.Status != "succeeded" || r.Stdout != "legit\n" || r.Runner != "n1" {
		t.Fatalf("run through g-other: %+v", r)
	}
}

// foreignGateway starts a one-node cluster n1 and a gateway-only node gw
// (g-other) of another cluster joined to it, and returns them and a
// transport holding g-other's own certificate: the RPC layer admits its
// calls as the live member g-other's, as a compromised peer's would be.
func foreignGateway(t *testing.T) (n1, gw *Node, forger *transport.Transport) {
	t.Helper()
	c := StartCluster(t, 1, Options{BootstrapExpect: 1})
	n1 = c.Nodes[0]
	gw = c.NewNode(t, "g-other", "-gossip-profile", "local", "-cluster", "other", "-roles", "gateway",
		"-bootstrap-expect", "0", "-join", n1.Gossip)
	gw.Start()
	WaitMembers(t, 20*time.Second, []*Node{n1, gw}, map[string]string{"n1": "alive", "g-other": "alive"})
	cert, key := tlsutil.CertFileNames("g-other")
	conf, err := tlsutil.LoadFiles(filepath.Join(c.CA.Dir, tlsutil.CAFile), filepath.Join(c.CA.Dir, cert),
		filepath.Join(c.CA.Dir, key))
	if err != nil {
		t.Fatal(err)
	}
	return n1, gw, rpcClient(t, conf)
}
