package main

import (
	"bufio"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

func init() {
	extraCommandList = append(extraCommandList,
		command{"keyring", "keyring -list | -install KEY | -use KEY | -remove KEY: rotate gossip keys across the mesh", cmdKeyring},
		command{"acl", "acl bootstrap | acl token create -policy P... | acl token list | acl token revoke ID", cmdACL},
		command{"login", "login [-token SECRET]: save a token for later client commands (mode 0600)", cmdLogin},
	)
}

func cmdKeyring(args []string, stdout, stderr io.Writer) error {
	c := newClientFlags("keyring", stderr)
	list := c.fs.Bool("list", false, "list the keys installed across the mesh")
	install := c.fs.String("install", "", "install KEY on every live node")
	use := c.fs.String("use", "", "make KEY the primary (encrypting) key everywhere")
	remove := c.fs.String("remove", "", "remove KEY everywhere")
	if err := c.parse(args); err != nil {
		return err
	}
	n := 0
	for _, set := range []bool{*list, *install != "", *use != "", *remove != ""} {
		if set {
			n++
		}
	}
	if n != 1 {
		return usageErr("give exactly one of -list, -install KEY, -use KEY, -remove KEY")
	}
	var out map[string]any
	var err error
	switch {
	case *list:
		_, err = c.do("GET", "/v1/keyring", nil, nil, nil, &out)
	case *install != "":
		_, err = c.do("POST", "/v1/keyring/install", nil, jsonBody(map[string]string{"key": *install}), nil, &out)
	case *use != "":
		_, err = c.do("POST", "/v1/keyring/use", nil, jsonBody(map[string]string{"key": *use}), nil, &out)
	default:
		_, err = c.do("POST", "/v1/keyring/remove", nil, jsonBody(map[string]string{"key": *remove}), nil, &out)
	}
	if err != nil {
		return err
	}
	if c.format == "json" {
		return printJSON(stdout, out)
	}
	fmt.Fprintf(stdout, "nodes: %v, responses: %v, errors: %v\n", out["num_nodes"], out["num_resp"], out["num_err"])
	if msgs, ok := out["messages"].(map[string]any); ok {
		for node, m := range msgs {
			fmt.Fprintf(stdout, "  %s: %v\n", node, m)
		}
	}
	if keys, ok := out["keys"].(map[string]any); ok && len(keys) > 0 {
		primary, _ := out["primary"].(map[string]any)
		names := make([]string, 0, len(keys))
		for k := range keys {
			names = append(names, k)
		}
		sort.Strings(names)
		rows := [][]string{}
		for _, k := range names {
			p := ""
			if primary[k] != nil {
				p = fmt.Sprintf("primary on %v", primary[k])
			}
			rows = append(rows, []string{k, fmt.Sprintf("%v", keys[k]), p})
		}
		table(stdout, []string{"KEY", "NODES", ""}, rows)
	}
	if e, ok := out["error"].(string); ok {
		return fmt.Errorf("%s", e)
	}
	return nil
}

func cmdACL(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageErr("usage: meshgw acl bootstrap | acl token create|list|revoke")
	}
	if args[0] == "bootstrap" {
		c := newClientFlags("acl bootstrap", stderr)
		if err := c.parse(args[1:]); err != nil {
			return err
		}
		var out map[string]any
		if _, err := c.do("POST", "/v1/acl/bootstrap", nil, nil, nil, &out); err != nil {
			return err
		}
		if c.format == "json" {
			return printJSON(stdout, out)
		}
		fmt.Fprintf(stdout, "accessor_id: %v\nsecret_id:   %v\nkeep the secret safe; it is shown only once (meshgw login -token SECRET)\n", out["accessor_id"], out["secret_id"])
		return nil
	}
	if args[0] != "token" || len(args) < 2 {
		return usageErr("usage: meshgw acl bootstrap | acl token create|list|revoke")
	}
	sub := args[1]
	c := newClientFlags("acl token "+sub, stderr)
	switch sub {
	case "create":
		var policies multiFlag
		c.fs.Var(&policies, "policy", "read, write, manage, run or run:PATTERN (repeatable)")
		desc := c.fs.String("description", "", "what the token is for")
		if err := c.parse(args[2:]); err != nil {
			return err
		}
		var out map[string]any
		if _, err := c.do("POST", "/v1/acl/tokens", nil, jsonBody(map[string]any{"description": *desc, "policies": []string(policies)}), nil, &out); err != nil {
			return err
		}
		return printJSON(stdout, out)
	case "list":
		if err := c.parse(args[2:]); err != nil {
			return err
		}
		var ts []map[string]any
		if _, err := c.do("GET", "/v1/acl/tokens", nil, nil, nil, &ts); err != nil {
			return err
		}
		if c.format == "json" {
			return printJSON(stdout, ts)
		}
		rows := [][]string{}
		for _, t := range ts {
			ps, _ := t["policies"].([]any)
			var p []string
			for _, x := range ps {
				p = append(p, fmt.Sprint(x))
			}
			rows = append(rows, []string{str(t["accessor_id"]), strings.Join(p, ","), str(t["description"])})
		}
		return table(stdout, []string{"ACCESSOR", "POLICIES", "DESCRIPTION"}, rows)
	case "revoke":
		id, rest := firstArg(args[2:])
		if err := c.parse(rest); err != nil {
			return err
		}
		if id == "" {
			return usageErr("usage: meshgw acl token revoke ACCESSOR_ID")
		}
		if _, err := c.do("DELETE", "/v1/acl/tokens/"+url.PathEscape(id), nil, nil, nil, nil); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "token %s revoked on every node\n", id)
		return nil
	}
	return usageErr("unknown acl token subcommand %q (create, list, revoke)", sub)
}

// cmdLogin checks a token against the agent and saves it with mode 0600.
func cmdLogin(args []string, stdout, stderr io.Writer) error {
	c := newClientFlags("login", stderr)
	if err := c.parse(args); err != nil {
		return err
	}
	if c.token == "" {
		fmt.Fprint(stderr, "token: ")
		line, err := bufio.NewReader(os.Stdin).ReadString('\n')
		if err != nil && line == "" {
			return fmt.Errorf("read token: %w", err)
		}
		c.token = strings.TrimSpace(line)
	}
	if c.token == "" {
		return usageErr("no token given")
	}
	var who map[string]any
	if _, err := c.do("GET", "/v1/acl/whoami", nil, nil, nil, &who); err != nil {
		return fmt.Errorf("token refused: %w", err)
	}
	p, err := tokenPath()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(p, []byte(c.token+"\n"), 0o600); err != nil {
		return err
	}
	if err := os.Chmod(p, 0o600); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "logged in as %v (policies %v); token saved to %s\n", who["accessor_id"], who["policies"], p)
	return nil
}
