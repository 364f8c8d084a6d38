package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

func init() {
	extraCommandList = append(extraCommandList,
		command{"services", "services list|get NAME|put -f FILE|delete NAME", cmdServices},
		command{"clusters", "list the cluster IDs of the mesh", cmdClusters},
		command{"raft", "raft status | raft recover (see meshgw raft -h)", cmdRaft},
		command{"snapshot", "snapshot save FILE | snapshot restore FILE", cmdSnapshot},
		command{"tls", "tls ca create | tls cert create: node-to-node TLS material", cmdTLS},
	)
}

func usageErr(format string, args ...any) error {
	return &exitError{code: 2, err: fmt.Errorf(format, args...)}
}

func cmdServices(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageErr("usage: meshgw services list|get NAME|put -f FILE|delete NAME [flags]")
	}
	sub, args := args[0], args[1:]
	c := newClientFlags("services "+sub, stderr).withCluster()
	switch sub {
	case "list", "ls":
		if err := c.parse(args); err != nil {
			return err
		}
		var svcs []map[string]any
		if _, err := c.do("GET", "/v1/services", nil, nil, nil, &svcs); err != nil {
			return err
		}
		if c.format == "json" {
			return printJSON(stdout, svcs)
		}
		rows := make([][]string, 0, len(svcs))
		for _, s := range svcs {
			target := ""
			if cmd, ok := s["command"].([]any); ok {
				parts := make([]string, len(cmd))
				for i, p := range cmd {
					parts[i] = fmt.Sprint(p)
				}
				target = strings.Join(parts, " ")
			} else if u, ok := s["upstream"].(string); ok {
				target = u
			}
			if len(target) > 48 {
				target = target[:45] + "..."
			}
			rows = append(rows, []string{str(s["name"]), str(s["type"]), str(s["version"]), str(s["timeout"]), str(s["retries"]), target})
		}
		return table(stdout, []string{"NAME", "TYPE", "VERSION", "TIMEOUT", "RETRIES", "COMMAND/UPSTREAM"}, rows)
	case "get":
		name, rest := firstArg(args)
		if err := c.parse(rest); err != nil {
			return err
		}
		if name == "" {
			return usageErr("usage: meshgw services get NAME")
		}
		var svc map[string]any
		if _, err := c.do("GET", "/v1/services/"+url.PathEscape(name), nil, nil, nil, &svc); err != nil {
			return err
		}
		return printJSON(stdout, svc)
	case "put":
		file := c.fs.String("f", "", "service definition file (JSON); - for stdin")
		cas := c.fs.String("cas", "", "only write if the current version is this (0: only if new)")
		if err := c.parse(args); err != nil {
			return err
		}
		if *file == "" {
			return usageErr("usage: meshgw services put -f FILE")
		}
		data, err := readInput(*file)
		if err != nil {
			return err
		}
		var def struct {
			Name string `json:"name"`
		}
		if err := json.Unmarshal(data, &def); err != nil {
			return fmt.Errorf("%s: %w", *file, err)
		}
		if def.Name == "" {
			return fmt.Errorf("%s: the definition has no \"name\"", *file)
		}
		q := url.Values{}
		if *cas != "" {
			q.Set("cas", *cas)
		}
		var out map[string]any
		if _, err := c.do("PUT", "/v1/services/"+url.PathEscape(def.Name), q, bytes.NewReader(data), nil, &out); err != nil {
			return err
		}
		if c.format == "json" {
			return printJSON(stdout, out)
		}
		fmt.Fprintf(stdout, "service %s written, version %v\n", def.Name, out["version"])
		return nil
	case "delete", "rm":
		name, rest := firstArg(args)
		cas := c.fs.String("cas", "", "only delete if the current version is this")
		if err := c.parse(rest); err != nil {
			return err
		}
		if name == "" {
			return usageErr("usage: meshgw services delete NAME")
		}
		q := url.Values{}
		if *cas != "" {
			q.Set("cas", *cas)
		}
		if _, err := c.do("DELETE", "/v1/services/"+url.PathEscape(name), q, nil, nil, nil); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "service %s deleted\n", name)
		return nil
	}
	return usageErr("unknown services subcommand %q (list, get, put, delete)", sub)
}

// firstArg splits off a leading positional argument, so both
// "get NAME -flag" and "get -flag NAME" work.
func firstArg(args []string) (string, []string) {
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		return args[0], args[1:]
	}
	if n := len(args); n > 0 && !strings.HasPrefix(args[n-1], "-") {
		// flags first, name last: only when the previous arg is not a flag expecting a value
		if n == 1 || !strings.HasPrefix(args[n-2], "-") || strings.Contains(args[n-2], "=") {
			return args[n-1], args[:n-1]
		}
	}
	return "", args
}

func readInput(file string) ([]byte, error) {
	var r io.Reader = os.Stdin
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	data, err := io.ReadAll(io.LimitReader(r, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", file, err)
	}
	return data, nil
}

func str(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	default:
		return fmt.Sprint(x)
	}
}

func cmdClusters(args []string, stdout, stderr io.Writer) error {
	c := newClientFlags("clusters", stderr)
	if err := c.parse(args); err != nil {
		return err
	}
	var cs []map[string]any
	if _, err := c.do("GET", "/v1/clusters", nil, nil, nil, &cs); err != nil {
		return err
	}
	if c.format == "json" {
		return printJSON(stdout, cs)
	}
	rows := make([][]string, 0, len(cs))
	for _, x := range cs {
		rows = append(rows, []string{str(x["id"]), str(x["members"]), str(x["alive"]), str(x["runners"]), str(x["leader"])})
	}
	return table(stdout, []string{"CLUSTER", "MEMBERS", "ALIVE", "RUNNERS", "RAFT LEADER"}, rows)
}

type groupStatus struct {
	Cluster      string `json:"cluster"`
	ShardID      uint64 `json:"shard_id"`
	Leader       string `json:"leader"`
	Term         uint64 `json:"term"`
	AppliedIndex uint64 `json:"applied_index"`
	Local        bool   `json:"local"`
	ElectionMs   int64  `json:"election_timeout_ms"`
	Replicas     []struct {
		ID   uint64 `json:"id"`
		Node string `json:"node"`
		Addr string `json:"addr"`
	} `json:"replicas"`
}

func cmdRaft(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageErr("usage: meshgw raft status | meshgw raft recover -cluster ID -data-dir DIR")
	}
	switch args[0] {
	case "status":
		c := newClientFlags("raft status", stderr)
		if err := c.parse(args[1:]); err != nil {
			return err
		}
		var st struct {
			Node   string        `json:"node"`
			Groups []groupStatus `json:"groups"`
		}
		if _, err := c.do("GET", "/v1/status", nil, nil, nil, &st); err != nil {
			return err
		}
		if c.format == "json" {
			return printJSON(stdout, st.Groups)
		}
		rows := [][]string{}
		for _, g := range st.Groups {
			var reps []string
			for _, r := range g.Replicas {
				n := r.Node
				if n == "" {
					n = r.Addr
				}
				reps = append(reps, n)
			}
			sort.Strings(reps)
			election := "-"
			if g.ElectionMs > 0 {
				election = (time.Duration(g.ElectionMs) * time.Millisecond).String()
			}
			rows = append(rows, []string{g.Cluster, strconv.FormatUint(g.ShardID, 16), g.Leader, strconv.FormatUint(g.Term, 10),
				strconv.FormatUint(g.AppliedIndex, 10), strconv.FormatBool(g.Local), election, strings.Join(reps, ",")})
		}
		return table(stdout, []string{"CLUSTER", "SHARD", "LEADER", "TERM", "APPLIED", "LOCAL", "ELECTION", "VOTERS"}, rows)
	case "recover":
		return raftRecover(args[1:], stdout, stderr)
	}
	return usageErr("unknown raft subcommand %q (status, recover)", args[0])
}

func cmdSnapshot(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "save" && args[0] != "restore") {
		return usageErr("usage: meshgw snapshot save FILE | meshgw snapshot restore FILE [-cluster ID]")
	}
	sub := args[0]
	file, rest := firstArg(args[1:])
	c := newClientFlags("snapshot "+sub, stderr).withCluster()
	if err := c.parse(rest); err != nil {
		return err
	}
	if file == "" {
		return usageErr("usage: meshgw snapshot %s FILE", sub)
	}
	if sub == "save" {
		ctx, cancel := contextTimeout(c)
		defer cancel()
		resp, err := c.send(ctx, "GET", "/v1/snapshot", nil, nil, nil)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			return responseError(resp)
		}
		tmp := file + ".part"
		f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
		if err != nil {
			return err
		}
		n, err := io.Copy(f, resp.Body)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(tmp)
			return fmt.Errorf("write %s: %w", file, err)
		}
		if err := os.Rename(tmp, file); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "snapshot of cluster %s saved to %s (%d bytes)\n", orDefault(c.cluster, "(node's own)"), file, n)
		return nil
	}
	data, err := readInput(file)
	if err != nil {
		return err
	}
	if _, err := c.do("PUT", "/v1/snapshot", nil, bytes.NewReader(data), nil, nil); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "snapshot %s restored into cluster %s\n", file, orDefault(c.cluster, "(node's own)"))
	return nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
