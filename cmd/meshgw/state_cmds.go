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
		command{name: "services", summary: "services list | get NAME | put -f FILE | delete NAME",
			desc: "Manage the service definitions of a cluster (docs/SERVICES.md lists every field).",
			subs: []command{
				{name: "list", aliases: []string{"ls"}, summary: "list the services of a cluster", run: cmdServicesList,
					desc: "List the services defined in a cluster (default the node's own) with their " +
						"type, version, timeout, retries and command or upstream."},
				{name: "get", summary: "print one service definition", run: cmdServicesGet,
					args: []arg{{"NAME", "the service's name"}},
					desc: "Print the definition of service NAME, with its version, as JSON."},
				{name: "put", summary: "create or replace a service from a JSON file", run: cmdServicesPut,
					desc: "Create or replace a service from its JSON definition (the file's \"name\" " +
						"names it). With -cas the write only happens if the current version matches, " +
						"so two writers cannot overwrite each other unknowingly."},
				{name: "delete", aliases: []string{"rm"}, summary: "delete a service", run: cmdServicesDelete,
					args: []arg{{"NAME", "the service's name"}},
					desc: "Delete service NAME. Its execution records are kept until retention removes them."},
				{name: "history", summary: "list the kept revisions of a service definition", run: cmdServicesHistory,
					args: []arg{{"NAME", "the service's name"}},
					desc: "List the last 10 revisions of service NAME's definition, newest first, with when each " +
						"was written and which is current. A deleted service keeps its history."},
				{name: "revert", summary: "write an earlier revision of a service again", run: cmdServicesRevert,
					args: []arg{{"NAME", "the service's name"}, {"REVISION", "a revision number from services history"}},
					desc: "Write revision REVISION of service NAME's definition again, as a new write (and so a " +
						"new revision): the service runs with that definition from its next run."},
			}},
		command{name: "clusters", summary: "list the cluster IDs of the mesh", run: cmdClusters,
			desc: "List the clusters of the mesh with their member, alive and runner counts and " +
				"the leader of their Raft group."},
		command{name: "raft", summary: "raft status | raft recover", subs: []command{
			{name: "status", summary: "show the Raft groups this node knows", run: cmdRaftStatus,
				desc: "Show, for each Raft group the node knows, its shard, leader, term, applied " +
					"index, whether this node holds a replica, the election timeout and the voters."},
			{name: "recover", summary: "make a stopped agent the only voter of its group", run: raftRecover,
				desc: "Last resort after a permanent loss of quorum: with the agent stopped, make its " +
					"replica the only voter of its cluster's group, from its own data. Takes the " +
					"stopped agent's own flags (or -config / MESHGW_* env) so the data dir, Raft " +
					"address and TLS material are the agent's; asks for confirmation unless -yes."},
		}, desc: "Inspect and repair the Raft groups that hold each cluster's state."},
		command{name: "snapshot", summary: "snapshot save FILE | snapshot restore FILE", subs: []command{
			{name: "save", summary: "save a cluster's state to a file", run: cmdSnapshotSave,
				args: []arg{{"FILE", "where to write the snapshot (written whole, then renamed)"}},
				desc: "Save a consistent snapshot of a cluster's shared state (services, execution " +
					"records, tokens) to FILE."},
			{name: "restore", summary: "replace a cluster's state with a saved snapshot", run: cmdSnapshotRestore,
				args: []arg{{"FILE", "a file written by meshgw snapshot save; - for stdin"}},
				desc: "Replace the shared state of a cluster with the snapshot in FILE, through its " +
					"Raft group, so every replica applies it."},
		}, desc: "Back up and restore the shared state of a cluster."},
		command{name: "tls", summary: "tls ca create | tls cert create: node-to-node TLS material", subs: []command{
			{name: "ca", summary: "the cluster CA", subs: []command{
				{name: "create", summary: "create the cluster CA", run: cmdTLSCACreate,
					desc: "Create the CA that signs node certificates: ca.pem (give it to every node " +
						"with -ca-file) and ca-key.pem (keep it off the nodes) in -dir."},
			}, desc: "The certificate authority of node-to-node TLS."},
			{name: "cert", summary: "node certificates", subs: []command{
				{name: "create", summary: "create a node certificate signed by the CA", run: cmdTLSCertCreate,
					desc: "Create a certificate and key for node -node, signed by the CA in -dir, valid " +
						"for localhost, the loopback addresses and every -host."},
			}, desc: "Node certificates signed by the cluster CA."},
		}, desc: "Create the material of node-to-node mutual TLS (-ca-file, -cert-file, -key-file)."},
	)
}

func cmdServicesList(args []string, stdout, stderr io.Writer) error {
	c := newClientFlags("services list").withCluster()
	if _, err := c.parse(args); err != nil {
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
}

func cmdServicesGet(args []string, stdout, stderr io.Writer) error {
	c := newClientFlags("services get").withCluster()
	pos, err := c.parse(args, "NAME")
	if err != nil {
		return err
	}
	var svc map[string]any
	if _, err := c.do("GET", "/v1/services/"+url.PathEscape(pos[0]), nil, nil, nil, &svc); err != nil {
		return err
	}
	return printJSON(stdout, svc)
}

func cmdServicesPut(args []string, stdout, stderr io.Writer) error {
	c := newClientFlags("services put").withCluster()
	file := c.fs.String("f", "", "service definition file (JSON); - for stdin (required)")
	cas := c.fs.String("cas", "", "only write if the current version is this (0: only if new)")
	if _, err := c.parse(args); err != nil {
		return err
	}
	if *file == "" {
		return usageErr("-f FILE is required")
	}
	if *cas != "" {
		if _, err := strconv.ParseUint(*cas, 10, 64); err != nil {
			return usageErr("-cas %q: want a version number", *cas)
		}
	}
	data, err := readInput(*file)
	if err != nil {
		return err
	}
	var def struct {
		Name string `json:"name"`
	}
	if err := json.Unmarshal(data, &def); err != nil {
		return fmt.Errorf("service definition %s is not JSON: %w", *file, err)
	}
	if def.Name == "" {
		return fmt.Errorf("service definition %s: field \"name\" is missing or empty", *file)
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
}

func cmdServicesDelete(args []string, stdout, stderr io.Writer) error {
	c := newClientFlags("services delete").withCluster()
	cas := c.fs.String("cas", "", "only delete if the current version is this")
	pos, err := c.parse(args, "NAME")
	if err != nil {
		return err
	}
	q := url.Values{}
	if *cas != "" {
		if _, err := strconv.ParseUint(*cas, 10, 64); err != nil {
			return usageErr("-cas %q: want a version number", *cas)
		}
		q.Set("cas", *cas)
	}
	if _, err := c.do("DELETE", "/v1/services/"+url.PathEscape(pos[0]), q, nil, nil, nil); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "service %s deleted\n", pos[0])
	return nil
}

func readInput(file string) ([]byte, error) {
	var r io.Reader = os.Stdin
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return nil, err // *PathError names the file
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
	c := newClientFlags("clusters")
	if _, err := c.parse(args); err != nil {
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

func cmdRaftStatus(args []string, stdout, stderr io.Writer) error {
	c := newClientFlags("raft status")
	if _, err := c.parse(args); err != nil {
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
}

func cmdSnapshotSave(args []string, stdout, stderr io.Writer) error {
	c := newClientFlags("snapshot save").withCluster()
	pos, err := c.parse(args, "FILE")
	if err != nil {
		return err
	}
	file := pos[0]
	ctx, cancel := contextTimeout(c)
	defer cancel()
	resp, err := c.send(ctx, "GET", "/v1/snapshot", nil, nil, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return c.responseError(resp)
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

func cmdSnapshotRestore(args []string, stdout, stderr io.Writer) error {
	c := newClientFlags("snapshot restore").withCluster()
	pos, err := c.parse(args, "FILE")
	if err != nil {
		return err
	}
	data, err := readInput(pos[0])
	if err != nil {
		return err
	}
	if _, err := c.do("PUT", "/v1/snapshot", nil, bytes.NewReader(data), nil, nil); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "snapshot %s restored into cluster %s\n", pos[0], orDefault(c.cluster, "(node's own)"))
	return nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
