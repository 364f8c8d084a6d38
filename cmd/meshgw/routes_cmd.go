package main

import (
	"fmt"
	"io"
	"strings"
)

func init() {
	extraCommandList = append(extraCommandList,
		command{name: "routes", summary: "show the node's data-plane route table and upstream health", run: cmdRoutes,
			desc: "Show the route table the node's -proxy data plane uses (Host and path prefix → " +
				"service, and whether the prefix is stripped), its revision (equal on every node " +
				"that read the same definitions), and each http service's upstreams as the node " +
				"sees them: weight, in rotation or why not, the shared health verdict and its observers."})
}

// routeTable is GET /v1/routes.
type routeTable struct {
	Node     string `json:"node"`
	Cluster  string `json:"cluster"`
	Revision string `json:"revision"`
	Routes   []struct {
		Host    string `json:"host"`
		Prefix  string `json:"prefix"`
		Strip   bool   `json:"strip"`
		Service string `json:"service"`
	} `json:"routes"`
	Services []struct {
		Service   string `json:"service"`
		Upstreams []struct {
			URL        string `json:"url"`
			Weight     int    `json:"weight"`
			InRotation bool   `json:"in_rotation"`
			Why        string `json:"why"`
			Healthy    bool   `json:"healthy"`
			Breaker    string `json:"breaker"`
			Observers  []struct {
				Node    string `json:"node"`
				Healthy bool   `json:"healthy"`
			} `json:"observers"`
		} `json:"upstreams"`
	} `json:"services"`
}

func cmdRoutes(args []string, stdout, stderr io.Writer) error {
	c := newClientFlags("routes")
	if _, err := c.parse(args); err != nil {
		return err
	}
	var rt routeTable
	if _, err := c.do("GET", "/v1/routes", nil, nil, nil, &rt); err != nil {
		return err
	}
	if c.format == "json" {
		return printJSON(stdout, rt)
	}
	fmt.Fprintf(stdout, "node %s, cluster %s, route table revision %s\n", rt.Node, rt.Cluster, rt.Revision)
	rows := make([][]string, 0, len(rt.Routes))
	for _, r := range rt.Routes {
		rows = append(rows, []string{r.Host, r.Prefix, fmt.Sprint(r.Strip), r.Service})
	}
	if err := table(stdout, []string{"HOST", "PREFIX", "STRIP", "SERVICE"}, rows); err != nil {
		return err
	}
	fmt.Fprintln(stdout)
	rows = rows[:0]
	for _, s := range rt.Services {
		for _, u := range s.Upstreams {
			state := "in"
			if !u.InRotation {
				state = "out: " + u.Why
			}
			var obs []string
			for _, o := range u.Observers {
				v := "ok"
				if !o.Healthy {
					v = "fail"
				}
				obs = append(obs, o.Node+"="+v)
			}
			rows = append(rows, []string{s.Service, u.URL, fmt.Sprint(u.Weight), state, u.Breaker, roleDash(strings.Join(obs, ","))})
		}
	}
	return table(stdout, []string{"SERVICE", "UPSTREAM", "WEIGHT", "ROTATION", "BREAKER", "OBSERVERS"}, rows)
}
