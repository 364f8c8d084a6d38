package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"time"
)

func init() {
	extraCommandList = append(extraCommandList,
		command{name: "export", summary: "print the cluster's configuration as JSON (no secret values)", run: cmdExport,
			desc: "Print the configuration of the node's cluster as one JSON document on stdout: " +
				"{\"format\": 1, \"services\": [...], \"schedules\": [...], ...}, each item as it would be " +
				"written, without versions or write times. Secret values are never exported. " +
				"meshgw import -f FILE reads it back."},
		command{name: "import", summary: "apply a configuration file: validate, diff, write all or nothing", run: cmdImport,
			desc: "Validate every item of FILE (an export) first, each problem naming the item and " +
				"field; show what would change (create, update, and with -prune delete what the " +
				"file's kinds do not list); then apply all of it in one atomic write, by " +
				"compare-and-set on every key it writes or deletes and only if nothing changed since " +
				"the diff was shown, or nothing at all. A kind absent from the file is left alone. " +
				"-dry-run stops after the diff."},
	)
}

func cmdExport(args []string, stdout, stderr io.Writer) error {
	c := newClientFlags("export")
	if _, err := c.parse(args); err != nil {
		return err
	}
	var out json.RawMessage
	if _, err := c.do("GET", "/v1/export", nil, nil, nil, &out); err != nil {
		return err
	}
	var v any
	dec := json.NewDecoder(bytes.NewReader(out))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return fmt.Errorf("decode the export: %w", err)
	}
	return printJSON(stdout, v)
}

type importResult struct {
	DryRun  bool `json:"dry_run"`
	Applied bool `json:"applied"`
	Changes []struct {
		Kind    string `json:"kind"`
		Name    string `json:"name"`
		Action  string `json:"action"`
		Version uint64 `json:"version"`
	} `json:"changes"`
	Unchanged int    `json:"unchanged"`
	Kept      int    `json:"kept"`
	Plan      string `json:"plan"`
}

func cmdImport(args []string, stdout, stderr io.Writer) error {
	c := newClientFlags("import")
	file := c.fs.String("f", "", "configuration file written by meshgw export; - for stdin (required)")
	dry := c.fs.Bool("dry-run", false, "show what would change and change nothing")
	prune := c.fs.Bool("prune", false, "delete the items of the file's kinds that the file does not list")
	if _, err := c.parse(args); err != nil {
		return err
	}
	if *file == "" {
		return usageErr("-f FILE is required")
	}
	data, err := readInput(*file)
	if err != nil {
		return err
	}
	q := url.Values{"dry_run": {"true"}}
	if *prune {
		q.Set("prune", "true")
	}
	var diff importResult
	if err := postImport(c, q, data, &diff); err != nil {
		return err
	}
	if c.format == "json" && *dry {
		return printJSON(stdout, diff)
	}
	if c.format != "json" {
		printDiff(stdout, diff)
	}
	if *dry || len(diff.Changes) == 0 {
		return nil
	}
	q.Del("dry_run")
	q.Set("plan", diff.Plan)
	var res importResult
	if err := postImport(c, q, data, &res); err != nil {
		return err
	}
	if c.format == "json" {
		return printJSON(stdout, res)
	}
	fmt.Fprintf(stdout, "applied %d change(s) in one write\n", len(res.Changes))
	return nil
}

func printDiff(w io.Writer, d importResult) {
	rows := make([][]string, 0, len(d.Changes))
	for _, ch := range d.Changes {
		v := "-"
		if ch.Version != 0 {
			v = strconv.FormatUint(ch.Version, 10)
		}
		rows = append(rows, []string{ch.Action, ch.Kind, ch.Name, v})
	}
	if len(rows) > 0 {
		_ = table(w, []string{"ACTION", "KIND", "NAME", "VERSION"}, rows)
	}
	kept := ""
	if d.Kept > 0 {
		kept = fmt.Sprintf(", %d in the cluster but not in the file kept (-prune deletes them)", d.Kept)
	}
	fmt.Fprintf(w, "%d to change, %d unchanged%s\n", len(d.Changes), d.Unchanged, kept)
}

// postImport sends the file to /v1/import; a refused file's error lists
// every problem, one a line.
func postImport(c *clientFlags, q url.Values, data []byte, out *importResult) error {
	ctx, cancel := contextTimeout(c)
	defer cancel()
	resp, err := c.send(ctx, "POST", "/v1/import", q, bytes.NewReader(data), nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("read response: %w", err)
	}
	if resp.StatusCode >= 400 {
		var p struct {
			Problems []struct {
				Error string `json:"error"`
			} `json:"problems"`
		}
		if json.Unmarshal(body, &p) == nil && len(p.Problems) > 0 {
			lines := make([]string, 0, len(p.Problems))
			for _, x := range p.Problems {
				lines = append(lines, "  "+x.Error)
			}
			return fmt.Errorf("the file was refused, nothing was changed (%d problem(s)):\n%s", len(lines), strings.Join(lines, "\n"))
		}
		return decodeAPIError(c.current(), resp.StatusCode, body)
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("the answer of %s is not the JSON expected: %w", c.current(), err)
	}
	return nil
}

func cmdServicesHistory(args []string, stdout, stderr io.Writer) error {
	c := newClientFlags("services history").withCluster()
	pos, err := c.parse(args, "NAME")
	if err != nil {
		return err
	}
	var h struct {
		Revisions []struct {
			Revision   uint64          `json:"revision"`
			WrittenAt  time.Time       `json:"written_at"`
			Current    bool            `json:"current"`
			Definition json.RawMessage `json:"definition"`
		} `json:"revisions"`
	}
	var raw json.RawMessage
	if _, err := c.do("GET", "/v1/services/"+url.PathEscape(pos[0])+"/history", nil, nil, nil, &raw); err != nil {
		return err
	}
	if c.format == "json" {
		var v any
		if err := json.Unmarshal(raw, &v); err != nil {
			return err
		}
		return printJSON(stdout, v)
	}
	if err := json.Unmarshal(raw, &h); err != nil {
		return fmt.Errorf("decode history: %w", err)
	}
	rows := make([][]string, 0, len(h.Revisions))
	for _, r := range h.Revisions {
		cur := ""
		if r.Current {
			cur = "*"
		}
		def := string(r.Definition)
		if len(def) > 72 {
			def = def[:69] + "..."
		}
		rows = append(rows, []string{strconv.FormatUint(r.Revision, 10), cur, r.WrittenAt.UTC().Format(time.RFC3339), def})
	}
	return table(stdout, []string{"REVISION", "CURRENT", "WRITTEN", "DEFINITION"}, rows)
}

func cmdServicesRevert(args []string, stdout, stderr io.Writer) error {
	c := newClientFlags("services revert").withCluster()
	pos, err := c.parse(args, "NAME", "REVISION")
	if err != nil {
		return err
	}
	if _, err := strconv.ParseUint(pos[1], 10, 64); err != nil {
		return usageErr("REVISION %q: want a revision number from meshgw services history %s", pos[1], pos[0])
	}
	var out map[string]any
	if _, err := c.do("POST", "/v1/services/"+url.PathEscape(pos[0])+"/revert", url.Values{"revision": {pos[1]}}, nil, nil, &out); err != nil {
		return err
	}
	if c.format == "json" {
		return printJSON(stdout, out)
	}
	fmt.Fprintf(stdout, "service %s reverted to revision %s: written again, version %v\n", pos[0], pos[1], str(out["version"]))
	return nil
}
