package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"strconv"
)

func init() {
	extraCommandList = append(extraCommandList,
		command{name: "repositories", aliases: []string{"repos"}, summary: "repositories list | get NAME | put -f FILE | delete NAME",
			desc: "Manage the Git repositories services take their scripts from (docs/SERVICES.md, \"Services from Git\").",
			subs: []command{
				{name: "list", aliases: []string{"ls"}, summary: "list the repositories of a cluster", run: cmdReposList,
					desc: "List the repositories defined in a cluster (default the node's own) with their URL, ref and poll interval."},
				{name: "get", summary: "print one repository definition", run: cmdReposGet,
					args: []arg{{"NAME", "the repository's name"}},
					desc: "Print the definition of repository NAME, with its version, as JSON."},
				{name: "put", summary: "create or replace a repository from a JSON file", run: cmdReposPut,
					desc: "Create or replace a repository from its JSON definition " +
						"({\"name\", \"url\", \"ref\", \"credentials\": {\"secret\": NAME}, \"poll\"}). " +
						"With -cas the write only happens if the current version matches."},
				{name: "delete", aliases: []string{"rm"}, summary: "delete a repository", run: cmdReposDelete,
					args: []arg{{"NAME", "the repository's name"}},
					desc: "Delete repository NAME. Services that name it fail their runs until it is defined again."},
			}},
	)
}

func cmdReposList(args []string, stdout, stderr io.Writer) error {
	c := newClientFlags("repositories list").withCluster()
	if _, err := c.parse(args); err != nil {
		return err
	}
	var repos []map[string]any
	if _, err := c.do("GET", "/v1/repositories", nil, nil, nil, &repos); err != nil {
		return err
	}
	if c.format == "json" {
		return printJSON(stdout, repos)
	}
	rows := make([][]string, 0, len(repos))
	for _, r := range repos {
		secret := ""
		if cr, ok := r["credentials"].(map[string]any); ok {
			secret = str(cr["secret"])
		}
		poll := str(r["poll"])
		if poll == "" {
			poll = "10s"
		}
		rows = append(rows, []string{str(r["name"]), str(r["version"]), str(r["url"]), str(r["ref"]), poll, secret})
	}
	return table(stdout, []string{"NAME", "VERSION", "URL", "REF", "POLL", "CREDENTIALS"}, rows)
}

func cmdReposGet(args []string, stdout, stderr io.Writer) error {
	c := newClientFlags("repositories get").withCluster()
	pos, err := c.parse(args, "NAME")
	if err != nil {
		return err
	}
	var r map[string]any
	if _, err := c.do("GET", "/v1/repositories/"+url.PathEscape(pos[0]), nil, nil, nil, &r); err != nil {
		return err
	}
	return printJSON(stdout, r)
}

func cmdReposPut(args []string, stdout, stderr io.Writer) error {
	c := newClientFlags("repositories put").withCluster()
	file := c.fs.String("f", "", "repository definition file (JSON); - for stdin (required)")
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
		return fmt.Errorf("repository definition %s is not JSON: %w", *file, err)
	}
	if def.Name == "" {
		return fmt.Errorf("repository definition %s: field \"name\" is missing or empty", *file)
	}
	var out map[string]any
	if _, err := c.do("PUT", "/v1/repositories/"+url.PathEscape(def.Name), q, bytes.NewReader(data), nil, &out); err != nil {
		return err
	}
	if c.format == "json" {
		return printJSON(stdout, out)
	}
	fmt.Fprintf(stdout, "repository %s written, version %v\n", def.Name, out["version"])
	return nil
}

func cmdReposDelete(args []string, stdout, stderr io.Writer) error {
	c := newClientFlags("repositories delete").withCluster()
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
	if _, err := c.do("DELETE", "/v1/repositories/"+url.PathEscape(pos[0]), q, nil, nil, nil); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "repository %s deleted\n", pos[0])
	return nil
}
