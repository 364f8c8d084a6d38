package main

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// roleStatus is one entry of GET /v1/roles.
type roleStatus struct {
	Cluster  string     `json:"cluster"`
	Role     string     `json:"role"`
	Active   string     `json:"active"`
	Standbys []string   `json:"standbys"`
	Since    *time.Time `json:"since"`
	Fence    uint64     `json:"fence"`
	State    string     `json:"state"`
	Leader   string     `json:"leader,omitempty"`
	Term     uint64     `json:"term,omitempty"`
}

// cmdRoles shows the singleton roles of a cluster: which node runs each,
// since when, under which fence, and who stands by.
func cmdRoles(args []string, stdout, stderr io.Writer) error {
	c := newClientFlags("roles").withCluster()
	if _, err := c.parse(args); err != nil {
		return err
	}
	var rs []roleStatus
	if _, err := c.do("GET", "/v1/roles", nil, nil, nil, &rs); err != nil {
		return err
	}
	if c.format == "json" {
		return printJSON(stdout, rs)
	}
	rows := make([][]string, 0, len(rs))
	for _, r := range rs {
		active, since, fence := roleDash(r.Active), "-", "-"
		if r.Since != nil {
			since = r.Since.UTC().Format(time.RFC3339)
		}
		if r.Fence != 0 {
			fence = fmt.Sprint(r.Fence)
		}
		rows = append(rows, []string{r.Cluster, r.Role, r.State, active, fence, since,
			roleDash(strings.Join(r.Standbys, ","))})
	}
	return table(stdout, []string{"CLUSTER", "ROLE", "STATE", "ACTIVE", "FENCE", "SINCE", "STANDBYS"}, rows)
}

func roleDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
