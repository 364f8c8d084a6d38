package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

// command is one CLI command: a leaf that runs, or a group of subcommands.
type command struct {
	name    string
	aliases []string
	summary string // one line, for the parent's list
	desc    string // one paragraph, for -h
	args    []arg  // positional arguments, for -h (the leaf's parse checks them)
	subs    []command
	run     func(args []string, stdout, stderr io.Writer) error
}

// arg is a positional argument; a name in brackets is optional.
type arg struct{ name, desc string }

// exitError carries a specific exit code (e.g. a run that failed).
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit %d", e.code)
	}
	return e.err.Error()
}

// helpRequest is what a leaf returns for -h: the runner prints the help of
// the command with the leaf's flags, on stdout, and exits 0.
type helpRequest struct {
	fs    *flag.FlagSet   // the leaf's flags, if any
	flags func(io.Writer) // prints flags another way (meshgw agent)
}

func (h *helpRequest) Error() string { return "help requested" }

// usageErr is a usage mistake: exit 2, with a pointer to -h.
func usageErr(format string, args ...any) error {
	return &exitError{code: 2, err: fmt.Errorf(format, args...)}
}

func commands() []command {
	return []command{
		{name: "agent", summary: "run an agent (a peer of the mesh)", run: runAgent,
			desc: "Run an agent: a peer of the gossip mesh that serves the HTTP API, hosts Raft " +
				"replicas of its cluster's shared state and runs services. Every flag is also " +
				"MESHGW_<FLAG> and a key of the -config JSON file; flags win over the environment, " +
				"which wins over the file. -dev starts a self-contained single node."},
		{name: "members", summary: "list the members of the mesh", run: cmdMembers,
			desc: "List the members of the whole mesh as gossip sees them from the node asked, " +
				"with their status (alive, suspect, failed, left), cluster, roles and tags."},
		{name: "runners", summary: "list the live runners of a cluster (alias: get runners)", run: cmdRunners,
			desc: "List the runners of one cluster (default the node's own): the members an " +
				"execution of that cluster may run on."},
		{name: "get", summary: "get runners: same as runners", subs: []command{
			{name: "runners", summary: "list the live runners of a cluster", run: cmdRunners,
				desc: "Same as meshgw runners: list the runners of one cluster (default the node's own)."},
		}, desc: "Kept for the command people know from the gateway meshgw replaces."},
		{name: "leave", summary: "make the agent leave the mesh gracefully and stop", run: cmdLeave,
			desc: "Ask the agent to leave the mesh gracefully and stop: its Raft replica is handed " +
				"over first. Refused (409) when that would take its group below quorum, unless -force."},
		{name: "status", summary: "show this node and its Raft groups", run: cmdStatus,
			desc: "Print the node's name and cluster and, for each Raft group it knows, the leader, " +
				"term, applied index and replicas, as JSON (64-bit numbers exact)."},
		{name: "roles", summary: "show the singleton roles of a cluster: the active node and standbys", run: cmdRoles,
			desc: "Show the singleton roles of a cluster (default the node's own): for each, its state " +
				"(active, starting, none), the active node, its fence (the Raft term) and since when it " +
				"runs, and the standbys (the group's other voters). Any node answers."},
		{name: "wait", summary: "wait until the node can serve writes for its cluster (/v1/ready)", run: cmdWait,
			desc: "Block until the node answers /v1/ready with 200 (its cluster's group exists and " +
				"has a reachable leader). Says on stderr what the node waits for whenever that changes; " +
				"exits 1 with the last reason after -timeout."},
		{name: "version", summary: "print the version", run: cmdVersion,
			desc: "Print the version of this binary."},
	}
}

// extraCommandList is the hook the state, dispatch and security commands add
// themselves through (see their files).
var extraCommandList []command

func allCommands() []command {
	return append(commands(), extraCommandList...)
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	root := command{name: "meshgw", subs: allCommands(),
		desc: "meshgw " + version + ": a masterless gateway for distributed service execution. " +
			"Client commands reach a node through -http-addr or MESHGW_HTTP_ADDR " +
			"(default 127.0.0.1:7480; a comma-separated list is tried in turn)."}
	if len(args) > 0 && args[0] == "help" {
		args = append(args[1:], "-h")
	}
	return dispatch(&root, "meshgw", args, stdout, stderr)
}

func isHelp(a string) bool {
	return a == "-h" || a == "-help" || a == "--help"
}

// dispatch runs cmd (named path, e.g. "meshgw services get") with args.
func dispatch(cmd *command, path string, args []string, stdout, stderr io.Writer) int {
	if cmd.subs != nil {
		if len(args) == 0 {
			groupUsage(stderr, cmd, path)
			return 2
		}
		if isHelp(args[0]) {
			groupUsage(stdout, cmd, path)
			return 0
		}
		for i := range cmd.subs {
			if sub := &cmd.subs[i]; sub.name == args[0] || contains(sub.aliases, args[0]) {
				return dispatch(sub, path+" "+sub.name, args[1:], stdout, stderr)
			}
		}
		what := "subcommand"
		if path == "meshgw" {
			what = "command"
		}
		fmt.Fprintf(stderr, "%s: unknown %s %q (see %s -h)\n", path, what, args[0], path)
		return 2
	}
	err := cmd.run(args, stdout, stderr)
	if err == nil {
		return 0
	}
	var hr *helpRequest
	if errors.As(err, &hr) {
		leafHelp(stdout, cmd, path, hr)
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil {
			msg := oneLine(ee.err)
			if ee.code == 2 {
				msg += fmt.Sprintf(" (see %s -h)", path)
			}
			fmt.Fprintf(stderr, "%s: %s\n", path, msg)
		}
		return ee.code
	}
	fmt.Fprintf(stderr, "%s: %s\n", path, oneLine(err))
	return 1
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// synopsis is the usage line of a leaf.
func synopsis(cmd *command, path string) string {
	s := "Usage: " + path + " [flags]"
	for _, a := range cmd.args {
		s += " " + a.name
	}
	return s
}

func groupUsage(w io.Writer, cmd *command, path string) {
	what := "COMMAND"
	if path != "meshgw" {
		what = "SUBCOMMAND"
	}
	fmt.Fprintf(w, "Usage: %s %s [flags] [arguments]\n\n", path, what)
	if cmd.desc != "" {
		fmt.Fprintf(w, "%s\n\n", wrap(cmd.desc, 80))
	}
	fmt.Fprintln(w, "Commands:")
	for _, c := range cmd.subs {
		name := c.name
		if len(c.aliases) > 0 {
			name += " (" + strings.Join(c.aliases, ", ") + ")"
		}
		fmt.Fprintf(w, "  %-14s %s\n", name, c.summary)
	}
	fmt.Fprintf(w, "\nRun %s %s -h for its arguments and flags.\n", path, what)
}

func leafHelp(w io.Writer, cmd *command, path string, hr *helpRequest) {
	fmt.Fprintf(w, "%s\n\n", synopsis(cmd, path))
	desc := cmd.desc
	if desc == "" {
		desc = cmd.summary
	}
	fmt.Fprintf(w, "%s\n", wrap(desc, 80))
	if len(cmd.args) > 0 {
		fmt.Fprintln(w, "\nArguments:")
		width := 0
		for _, a := range cmd.args {
			width = max(width, len(a.name))
		}
		for _, a := range cmd.args {
			fmt.Fprintf(w, "  %-*s  %s\n", width, a.name, a.desc)
		}
	}
	switch {
	case hr.flags != nil:
		fmt.Fprintln(w, "\nFlags:")
		hr.flags(w)
	case hr.fs != nil && hasFlags(hr.fs):
		fmt.Fprintln(w, "\nFlags:")
		hr.fs.SetOutput(w)
		hr.fs.PrintDefaults()
		hr.fs.SetOutput(io.Discard)
	default:
		fmt.Fprintln(w, "\nFlags: none")
	}
}

func hasFlags(fs *flag.FlagSet) bool {
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	return n > 0
}

// wrap breaks s into lines of at most width columns.
func wrap(s string, width int) string {
	var b strings.Builder
	col := 0
	for _, word := range strings.Fields(s) {
		if col > 0 && col+1+len(word) > width {
			b.WriteByte('\n')
			col = 0
		} else if col > 0 {
			b.WriteByte(' ')
			col++
		}
		b.WriteString(word)
		col += len(word)
	}
	return b.String()
}

// newFlags is a flag set that prints nothing itself: -h and errors are
// reported by dispatch, once.
func newFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("meshgw "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// parseArgs parses flags and positional arguments in any order ("get NAME
// -format json" as well as "get -format json NAME") and checks the
// positionals against names: NAME is required, [NAME] optional (returned
// as ""). Extra arguments are an error that names the first of them.
func parseArgs(fs *flag.FlagSet, args []string, names ...string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, &helpRequest{fs: fs}
			}
			return nil, &exitError{code: 2, err: errors.New(oneLine(err))}
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		// flag stops at "--" too: what follows it is positional as it is.
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			pos = append(pos, rest...)
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	required := 0
	for _, n := range names {
		if !strings.HasPrefix(n, "[") {
			required++
		}
	}
	if len(pos) > len(names) {
		takes := "takes no arguments"
		if len(names) > 0 {
			takes = "takes only " + strings.Join(names, " ")
		}
		return nil, usageErr("unexpected argument %q: the command %s", pos[len(names)], takes)
	}
	if len(pos) < required {
		return nil, usageErr("missing argument %s", names[len(pos)])
	}
	for len(pos) < len(names) {
		pos = append(pos, "")
	}
	return pos, nil
}

func oneLine(err error) string {
	return strings.ReplaceAll(strings.TrimSpace(err.Error()), "\n", "; ")
}

func cmdVersion(args []string, stdout, stderr io.Writer) error {
	if _, err := parseArgs(newFlags("version"), args); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "meshgw %s\n", version)
	return nil
}
