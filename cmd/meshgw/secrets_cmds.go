package main

import (
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
)

func init() {
	extraCommandList = append(extraCommandList,
		command{name: "secrets", summary: "secrets put NAME | list | get NAME | delete NAME | rewrap | keygen",
			desc: "Manage a cluster's secrets: values encrypted at rest that exec services receive " +
				"in their environment or in files (the service's \"secrets\" field). No command " +
				"ever shows a value back. Needs a token with the secrets policy under ACLs.",
			subs: []command{
				{name: "put", summary: "create or replace a secret", run: cmdSecretsPut,
					args: []arg{{"NAME", "the secret's name"}},
					desc: "Store the value of secret NAME, from -value or else from stdin (one trailing " +
						"newline is dropped). Prefer stdin: a -value shows in the shell history and the " +
						"process list."},
				{name: "list", aliases: []string{"ls"}, summary: "list the secrets of a cluster", run: cmdSecretsList,
					desc: "List the secrets of a cluster with their version, times and the services that use them."},
				{name: "get", summary: "show a secret's metadata (never its value)", run: cmdSecretsGet,
					args: []arg{{"NAME", "the secret's name"}},
					desc: "Print the metadata of secret NAME as JSON: version, created, updated, the key " +
						"it is sealed with and the services that use it. The value is never returned."},
				{name: "delete", aliases: []string{"rm"}, summary: "delete a secret", run: cmdSecretsDelete,
					args: []arg{{"NAME", "the secret's name"}},
					desc: "Delete secret NAME. Runs of services that still reference it fail, naming it."},
				{name: "rewrap", summary: "seal every secret again with the current key", run: cmdSecretsRewrap,
					desc: "After a key rotation (a new first line of -secrets-key-file, or a new primary " +
						"gossip key), seal every secret sealed with an older key again with the current " +
						"one, so the old key can be dropped. Lists the secrets no node key opens any more."},
				{name: "keygen", summary: "print a new key for -secrets-key-file", run: cmdKeygen,
					desc: "Print a new random 32-byte key, base64: a line of a -secrets-key-file."},
			}},
	)
}

func cmdSecretsPut(args []string, stdout, stderr io.Writer) error {
	c := newClientFlags("secrets put").withCluster()
	value := c.fs.String("value", "", "the value (default: read from stdin)")
	cas := c.fs.String("cas", "", "only write if the current version is this (0: only if new)")
	pos, err := c.parse(args, "NAME")
	if err != nil {
		return err
	}
	v := *value
	if v == "" {
		data, err := io.ReadAll(io.LimitReader(os.Stdin, 1<<20))
		if err != nil {
			return fmt.Errorf("read the value from stdin: %w", err)
		}
		v = strings.TrimSuffix(strings.TrimSuffix(string(data), "\n"), "\r")
	}
	if v == "" {
		return usageErr("no value: give -value V or pipe it on stdin")
	}
	q := url.Values{}
	if *cas != "" {
		q.Set("cas", *cas)
	}
	var out map[string]any
	if _, err := c.do("PUT", "/v1/secrets/"+url.PathEscape(pos[0]), q, jsonBody(map[string]string{"value": v}), nil, &out); err != nil {
		return err
	}
	if c.format == "json" {
		return printJSON(stdout, out)
	}
	fmt.Fprintf(stdout, "secret %s written, version %v\n", pos[0], out["version"])
	return nil
}

func cmdSecretsRewrap(args []string, stdout, stderr io.Writer) error {
	c := newClientFlags("secrets rewrap").withCluster()
	if _, err := c.parse(args); err != nil {
		return err
	}
	var rep struct {
		KeyID     string   `json:"key_id"`
		Rewrapped []string `json:"rewrapped"`
		Current   int      `json:"current"`
		Failed    []string `json:"failed"`
	}
	if _, err := c.do("POST", "/v1/secrets/rewrap", nil, nil, nil, &rep); err != nil {
		return err
	}
	if c.format == "json" {
		return printJSON(stdout, rep)
	}
	fmt.Fprintf(stdout, "current key %s: %d secret(s) sealed again, %d already current\n", rep.KeyID, len(rep.Rewrapped), rep.Current)
	if len(rep.Failed) > 0 {
		return fmt.Errorf("%d secret(s) cannot be opened with this node's keys (their key is gone): %s; put them again",
			len(rep.Failed), strings.Join(rep.Failed, ", "))
	}
	return nil
}

func cmdSecretsList(args []string, stdout, stderr io.Writer) error {
	c := newClientFlags("secrets list").withCluster()
	if _, err := c.parse(args); err != nil {
		return err
	}
	var ms []map[string]any
	if _, err := c.do("GET", "/v1/secrets", nil, nil, nil, &ms); err != nil {
		return err
	}
	if c.format == "json" {
		return printJSON(stdout, ms)
	}
	rows := make([][]string, 0, len(ms))
	for _, m := range ms {
		var users []string
		if u, ok := m["used_by"].([]any); ok {
			for _, x := range u {
				users = append(users, fmt.Sprint(x))
			}
		}
		rows = append(rows, []string{str(m["name"]), str(m["version"]), str(m["updated"]), strings.Join(users, ",")})
	}
	return table(stdout, []string{"NAME", "VERSION", "UPDATED", "USED BY"}, rows)
}

func cmdSecretsGet(args []string, stdout, stderr io.Writer) error {
	c := newClientFlags("secrets get").withCluster()
	pos, err := c.parse(args, "NAME")
	if err != nil {
		return err
	}
	var m map[string]any
	if _, err := c.do("GET", "/v1/secrets/"+url.PathEscape(pos[0]), nil, nil, nil, &m); err != nil {
		return err
	}
	return printJSON(stdout, m)
}

func cmdSecretsDelete(args []string, stdout, stderr io.Writer) error {
	c := newClientFlags("secrets delete").withCluster()
	cas := c.fs.String("cas", "", "only delete if the current version is this")
	pos, err := c.parse(args, "NAME")
	if err != nil {
		return err
	}
	q := url.Values{}
	if *cas != "" {
		q.Set("cas", *cas)
	}
	if _, err := c.do("DELETE", "/v1/secrets/"+url.PathEscape(pos[0]), q, nil, nil, nil); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "secret %s deleted\n", pos[0])
	return nil
}
