package main

import (
	"bytes"
	"fmt"
	"io"
	"net/url"
	"strings"
)

func init() {
	extraCommandList = append(extraCommandList,
		command{name: "decorators", summary: "decorators put NAME -f FILE | list | get NAME | delete NAME",
			desc: "Manage a cluster's shared decorators: JSON Schemas defined once that services " +
				"use with \"decorator\": \"NAME\". A change applies to the next run of every service " +
				"using it; one in use cannot be deleted.",
			subs: []command{
				{name: "put", summary: "create or replace a shared decorator from a JSON Schema file", run: cmdDecoratorsPut,
					args: []arg{{"NAME", "the decorator's name"}},
					desc: "Store the JSON Schema in -f FILE (- for stdin) as shared decorator NAME. The " +
						"schema must compile and be self-contained (no $ref to files or URLs)."},
				{name: "list", aliases: []string{"ls"}, summary: "list the shared decorators of a cluster", run: cmdDecoratorsList,
					desc: "List the shared decorators with their version and the services using them."},
				{name: "get", summary: "print a shared decorator", run: cmdDecoratorsGet,
					args: []arg{{"NAME", "the decorator's name"}},
					desc: "Print shared decorator NAME as JSON: its schema, version and users."},
				{name: "delete", aliases: []string{"rm"}, summary: "delete a shared decorator", run: cmdDecoratorsDelete,
					args: []arg{{"NAME", "the decorator's name"}},
					desc: "Delete shared decorator NAME; refused (409, naming one) while a service uses it."},
			}},
	)
}

func cmdDecoratorsPut(args []string, stdout, stderr io.Writer) error {
	c := newClientFlags("decorators put").withCluster()
	file := c.fs.String("f", "", "JSON Schema file; - for stdin (required)")
	cas := c.fs.String("cas", "", "only write if the current version is this (0: only if new)")
	pos, err := c.parse(args, "NAME")
	if err != nil {
		return err
	}
	if *file == "" {
		return usageErr("-f FILE is required")
	}
	data, err := readInput(*file)
	if err != nil {
		return err
	}
	q := url.Values{}
	if *cas != "" {
		q.Set("cas", *cas)
	}
	var out map[string]any
	if _, err := c.do("PUT", "/v1/decorators/"+url.PathEscape(pos[0]), q, bytes.NewReader(data), nil, &out); err != nil {
		return err
	}
	if c.format == "json" {
		return printJSON(stdout, out)
	}
	fmt.Fprintf(stdout, "decorator %s written, version %v\n", pos[0], out["version"])
	return nil
}

func cmdDecoratorsList(args []string, stdout, stderr io.Writer) error {
	c := newClientFlags("decorators list").withCluster()
	if _, err := c.parse(args); err != nil {
		return err
	}
	var ds []map[string]any
	if _, err := c.do("GET", "/v1/decorators", nil, nil, nil, &ds); err != nil {
		return err
	}
	if c.format == "json" {
		return printJSON(stdout, ds)
	}
	rows := make([][]string, 0, len(ds))
	for _, d := range ds {
		var users []string
		if u, ok := d["used_by"].([]any); ok {
			for _, x := range u {
				users = append(users, fmt.Sprint(x))
			}
		}
		rows = append(rows, []string{str(d["name"]), str(d["version"]), strings.Join(users, ",")})
	}
	return table(stdout, []string{"NAME", "VERSION", "USED BY"}, rows)
}

func cmdDecoratorsGet(args []string, stdout, stderr io.Writer) error {
	c := newClientFlags("decorators get").withCluster()
	pos, err := c.parse(args, "NAME")
	if err != nil {
		return err
	}
	var d map[string]any
	if _, err := c.do("GET", "/v1/decorators/"+url.PathEscape(pos[0]), nil, nil, nil, &d); err != nil {
		return err
	}
	return printJSON(stdout, d)
}

func cmdDecoratorsDelete(args []string, stdout, stderr io.Writer) error {
	c := newClientFlags("decorators delete").withCluster()
	cas := c.fs.String("cas", "", "only delete if the current version is this")
	pos, err := c.parse(args, "NAME")
	if err != nil {
		return err
	}
	q := url.Values{}
	if *cas != "" {
		q.Set("cas", *cas)
	}
	if _, err := c.do("DELETE", "/v1/decorators/"+url.PathEscape(pos[0]), q, nil, nil, nil); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "decorator %s deleted\n", pos[0])
	return nil
}
