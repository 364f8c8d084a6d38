package main

import (
	"fmt"
	"io"
	"net/url"
	"sort"
	"strings"
	"time"
)

func init() {
	extraCommandList = append(extraCommandList,
		command{name: "throttles", summary: "show the usage of services' limits and max_in_flight across the cluster",
			run: cmdThrottles,
			desc: "Show, from the cluster's active throttle manager (any node asks it), the current " +
				"window of every limit of every service (or of -service): per key, what was granted " +
				"to the nodes, what they reported admitted, what is held back for the fallback shares " +
				"of nodes not committed to the window (RESERVED: their lease may run; RECLAIMED: their " +
				"lease is over, or they left, so the others spend it), and what remains; then each " +
				"max_in_flight with the slots the nodes hold; then each node's share and lease."})
}

type throttleUsage struct {
	Manager string `json:"manager"`
	Fence   uint64 `json:"fence"`
	Limits  []struct {
		Service   string    `json:"service"`
		Limit     int       `json:"limit"`
		Rate      int64     `json:"rate"`
		Per       string    `json:"per"`
		By        string    `json:"by"`
		Burst     int64     `json:"burst"`
		Key       string    `json:"key"`
		Window    time.Time `json:"window_start"`
		Granted   int64     `json:"granted"`
		Used      int64     `json:"used"`
		Reserved  int64     `json:"reserved"`
		Reclaimed int64     `json:"reclaimed"`
		Remaining int64     `json:"remaining"`
	} `json:"limits"`
	Slots []struct {
		Service  string         `json:"service"`
		Max      int            `json:"max_in_flight"`
		Held     int            `json:"held"`
		InFlight int            `json:"in_flight"`
		Nodes    map[string]int `json:"nodes"`
	} `json:"slots"`
	Lease string `json:"lease"`
	Nodes []struct {
		Node      string    `json:"node"`
		N         int       `json:"n"`
		State     string    `json:"state"`
		Left      bool      `json:"left"`
		Heard     time.Time `json:"heard"`
		ReclaimAt time.Time `json:"reclaim_at"`
	} `json:"nodes"`
}

func cmdThrottles(args []string, stdout, stderr io.Writer) error {
	c := newClientFlags("throttles").withCluster()
	service := c.fs.String("service", "", "only this service")
	if _, err := c.parse(args); err != nil {
		return err
	}
	q := url.Values{}
	if *service != "" {
		q.Set("service", *service)
	}
	var u throttleUsage
	if _, err := c.do("GET", "/v1/throttles", q, nil, nil, &u); err != nil {
		return err
	}
	if c.format == "json" {
		return printJSON(stdout, u)
	}
	fmt.Fprintf(stdout, "manager %s (fence %d)\n", u.Manager, u.Fence)
	rows := make([][]string, 0, len(u.Limits))
	for _, l := range u.Limits {
		key := l.Key
		if key == "" {
			key = "-"
		}
		rows = append(rows, []string{l.Service, fmt.Sprint(l.Limit), fmt.Sprintf("%d/%s+%d", l.Rate, l.Per, l.Burst), l.By, key,
			l.Window.UTC().Format(time.RFC3339), fmt.Sprint(l.Granted), fmt.Sprint(l.Used), fmt.Sprint(l.Reserved),
			fmt.Sprint(l.Reclaimed), fmt.Sprint(l.Remaining)})
	}
	if err := table(stdout, []string{"SERVICE", "LIMIT", "RATE", "BY", "KEY", "WINDOW", "GRANTED", "USED", "RESERVED",
		"RECLAIMED", "REMAINING"}, rows); err != nil {
		return err
	}
	if err := printShares(stdout, u); err != nil {
		return err
	}
	if len(u.Slots) == 0 {
		return nil
	}
	rows = rows[:0]
	for _, s := range u.Slots {
		var nodes []string
		for n, h := range s.Nodes {
			nodes = append(nodes, fmt.Sprintf("%s=%d", n, h))
		}
		sort.Strings(nodes)
		rows = append(rows, []string{s.Service, fmt.Sprint(s.Max), fmt.Sprint(s.Held), fmt.Sprint(s.InFlight), strings.Join(nodes, ",")})
	}
	fmt.Fprintln(stdout)
	return table(stdout, []string{"SERVICE", "MAX_IN_FLIGHT", "HELD", "IN_FLIGHT", "NODES"}, rows)
}

// printShares prints each roster node's fallback share and lease.
func printShares(w io.Writer, u throttleUsage) error {
	if len(u.Nodes) == 0 {
		return nil
	}
	rows := make([][]string, 0, len(u.Nodes))
	stamp := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.UTC().Format(time.RFC3339)
	}
	for _, n := range u.Nodes {
		share, state := "-", n.State
		if n.N > 0 {
			share = fmt.Sprintf("1/%d", n.N)
		}
		if n.Left {
			state += " (left)"
		}
		rows = append(rows, []string{n.Node, share, state, stamp(n.Heard), stamp(n.ReclaimAt)})
	}
	fmt.Fprintf(w, "\nfallback shares (lease %s)\n", u.Lease)
	return table(w, []string{"NODE", "SHARE", "STATE", "HEARD", "RECLAIM_AT"}, rows)
}
