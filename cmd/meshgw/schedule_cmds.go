package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"time"
)

func init() {
	extraCommandList = append(extraCommandList,
		command{name: "schedules", summary: "schedules list | get NAME | put -f FILE | delete NAME",
			desc: "Manage the schedules of the node's cluster: runs of an exec service at the ticks of a " +
				"cron expression (docs/SCHEDULES.md). The cluster's scheduler role fires each tick once.",
			subs: []command{
				{name: "list", aliases: []string{"ls"}, summary: "list the schedules with their next and last firing", run: cmdSchedulesList,
					desc: "List the schedules with their service, cron expression, overlap policy, the next tick, " +
						"the last tick fired and its execution, and the ticks skipped and missed."},
				{name: "get", summary: "print one schedule with its state", run: cmdSchedulesGet,
					args: []arg{{"NAME", "the schedule's name"}},
					desc: "Print schedule NAME as JSON: its definition, version, next tick and firing state."},
				{name: "put", summary: "create or replace a schedule from a JSON file", run: cmdSchedulesPut,
					desc: "Create or replace a schedule from its JSON definition (the file's \"name\" names it): " +
						"{\"name\", \"service\", \"cron\", \"input\", \"overlap\": \"allow\"|\"forbid\", \"timezone\"}. " +
						"With -cas the write only happens if the current version matches."},
				{name: "delete", aliases: []string{"rm"}, summary: "delete a schedule", run: cmdSchedulesDelete,
					args: []arg{{"NAME", "the schedule's name"}},
					desc: "Delete schedule NAME and its firing state. Executions it started are kept."},
			}},
	)
}

func cmdSchedulesList(args []string, stdout, stderr io.Writer) error {
	c := newClientFlags("schedules list")
	if _, err := c.parse(args); err != nil {
		return err
	}
	var ss []struct {
		Name          string    `json:"name"`
		Service       string    `json:"service"`
		Cron          string    `json:"cron"`
		Overlap       string    `json:"overlap"`
		Timezone      string    `json:"timezone"`
		Next          time.Time `json:"next"`
		LastFired     time.Time `json:"last_fired"`
		LastExecution string    `json:"last_execution"`
		State         *struct {
			Skipped uint64 `json:"skipped"`
			Missed  uint64 `json:"missed"`
		} `json:"state"`
	}
	var raw json.RawMessage
	if _, err := c.do("GET", "/v1/schedules", nil, nil, nil, &raw); err != nil {
		return err
	}
	if c.format == "json" {
		var v any
		if err := json.Unmarshal(raw, &v); err != nil {
			return err
		}
		return printJSON(stdout, v)
	}
	if err := json.Unmarshal(raw, &ss); err != nil {
		return fmt.Errorf("decode schedules: %w", err)
	}
	ts := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.UTC().Format(time.RFC3339)
	}
	rows := make([][]string, 0, len(ss))
	for _, s := range ss {
		skipped, missed := "0", "0"
		if s.State != nil {
			skipped, missed = strconv.FormatUint(s.State.Skipped, 10), strconv.FormatUint(s.State.Missed, 10)
		}
		cron := s.Cron
		if s.Timezone != "" {
			cron += " (" + s.Timezone + ")"
		}
		rows = append(rows, []string{s.Name, s.Service, cron, s.Overlap, ts(s.Next), ts(s.LastFired),
			orDefault(s.LastExecution, "-"), skipped, missed})
	}
	return table(stdout, []string{"NAME", "SERVICE", "CRON", "OVERLAP", "NEXT", "LAST", "LAST EXECUTION", "SKIPPED", "MISSED"}, rows)
}

func cmdSchedulesGet(args []string, stdout, stderr io.Writer) error {
	c := newClientFlags("schedules get")
	pos, err := c.parse(args, "NAME")
	if err != nil {
		return err
	}
	var s map[string]any
	if _, err := c.do("GET", "/v1/schedules/"+url.PathEscape(pos[0]), nil, nil, nil, &s); err != nil {
		return err
	}
	return printJSON(stdout, s)
}

func cmdSchedulesPut(args []string, stdout, stderr io.Writer) error {
	c := newClientFlags("schedules put")
	file := c.fs.String("f", "", "schedule definition file (JSON); - for stdin (required)")
	cas := c.fs.String("cas", "", "only write if the current version is this (0: only if new)")
	if _, err := c.parse(args); err != nil {
		return err
	}
	if *file == "" {
		return usageErr("-f FILE is required")
	}
	q := url.Values{}
	if *cas != "" {
		if _, err := strconv.ParseUint(*cas, 10, 64); err != nil {
			return usageErr("-cas %q: want a version number", *cas)
		}
		q.Set("cas", *cas)
	}
	data, err := readInput(*file)
	if err != nil {
		return err
	}
	var def struct {
		Name string `json:"name"`
	}
	if err := json.Unmarshal(data, &def); err != nil {
		return fmt.Errorf("schedule definition %s is not JSON: %w", *file, err)
	}
	if def.Name == "" {
		return fmt.Errorf("schedule definition %s: field \"name\" is missing or empty", *file)
	}
	var out map[string]any
	if _, err := c.do("PUT", "/v1/schedules/"+url.PathEscape(def.Name), q, bytes.NewReader(data), nil, &out); err != nil {
		return err
	}
	if c.format == "json" {
		return printJSON(stdout, out)
	}
	fmt.Fprintf(stdout, "schedule %s written, version %v\n", def.Name, out["version"])
	return nil
}

func cmdSchedulesDelete(args []string, stdout, stderr io.Writer) error {
	c := newClientFlags("schedules delete")
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
	if _, err := c.do("DELETE", "/v1/schedules/"+url.PathEscape(pos[0]), q, nil, nil, nil); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "schedule %s deleted\n", pos[0])
	return nil
}
