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
		command{name: "keyring", summary: "keyring -list | -install KEY | -use KEY | -remove KEY: rotate gossip keys",
			run: cmdKeyring,
			desc: "Rotate the gossip encryption keys of the whole mesh: -install a new key (meshgw " +
				"keygen) on every live node, -use it as the primary key, then -remove the old one. " +
				"Give exactly one of the four flags."},
		command{name: "acl", summary: "acl bootstrap | acl token create|list|revoke", subs: []command{
			{name: "bootstrap", summary: "create the first management token (once)", run: cmdACLBootstrap,
				desc: "Create the first management token of an agent started with -acl. Works once per " +
					"mesh; the secret is shown only once."},
			{name: "token", summary: "token create | list | revoke", subs: []command{
				{name: "create", summary: "create a token with policies", run: cmdACLTokenCreate,
					desc: "Create a token with the given policies and print its accessor and secret as JSON."},
				{name: "list", summary: "list the tokens (accessors only)", run: cmdACLTokenList,
					desc: "List the tokens of the mesh: accessor ID, policies and description; never secrets."},
				{name: "revoke", summary: "revoke a token everywhere", run: cmdACLTokenRevoke,
					args: []arg{{"ACCESSOR_ID", "the accessor ID of the token (meshgw acl token list)"}},
					desc: "Revoke the token with accessor ACCESSOR_ID on every node."},
			}, desc: "Manage API tokens."},
		}, desc: "Access control of the HTTP API (agents started with -acl)."},
		command{name: "login", summary: "login [-token SECRET]: save a token for later client commands (mode 0600)",
			run: cmdLogin,
			desc: "Check a token against the agent and save it (mode 0600, MESHGW_TOKEN_FILE or the " +
				"user config dir) for later client commands. Without -token, reads it from stdin."},
	)
}

func cmdKeyring(args []string, stdout, stderr io.Writer) error {
	c := newClientFlags("keyring")
	list := c.fs.Bool("list", false, "list the keys installed across the mesh")
	install := c.fs.String("install", "", "install KEY on every live node")
	use := c.fs.String("use", "", "make KEY the primary (encrypting) key everywhere")
	remove := c.fs.String("remove", "", "remove KEY everywhere")
	if _, err := c.parse(args); err != nil {
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

func cmdACLBootstrap(args []string, stdout, stderr io.Writer) error {
	c := newClientFlags("acl bootstrap")
	if _, err := c.parse(args); err != nil {
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

func cmdACLTokenCreate(args []string, stdout, stderr io.Writer) error {
	c := newClientFlags("acl token create")
	var policies multiFlag
	c.fs.Var(&policies, "policy", "read, write, manage, run or run:PATTERN (repeatable, at least one)")
	desc := c.fs.String("description", "", "what the token is for")
	if _, err := c.parse(args); err != nil {
		return err
	}
	if len(policies) == 0 {
		return usageErr("-policy is required (read, write, manage, run or run:PATTERN)")
	}
	var out map[string]any
	if _, err := c.do("POST", "/v1/acl/tokens", nil, jsonBody(map[string]any{"description": *desc, "policies": []string(policies)}), nil, &out); err != nil {
		return err
	}
	return printJSON(stdout, out)
}

func cmdACLTokenList(args []string, stdout, stderr io.Writer) error {
	c := newClientFlags("acl token list")
	if _, err := c.parse(args); err != nil {
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
}

func cmdACLTokenRevoke(args []string, stdout, stderr io.Writer) error {
	c := newClientFlags("acl token revoke")
	pos, err := c.parse(args, "ACCESSOR_ID")
	if err != nil {
		return err
	}
	if _, err := c.do("DELETE", "/v1/acl/tokens/"+url.PathEscape(pos[0]), nil, nil, nil, nil); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "token %s revoked on every node\n", pos[0])
	return nil
}

// cmdLogin checks a token against the agent and saves it with mode 0600.
func cmdLogin(args []string, stdout, stderr io.Writer) error {
	c := newClientFlags("login")
	if _, err := c.parse(args); err != nil {
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
