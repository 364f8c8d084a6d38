package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

// command is one CLI subcommand.
type command struct {
	name    string
	summary string
	run     func(args []string, stdout, stderr io.Writer) error
}

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

func commands() []command {
	return []command{
		{"agent", "run an agent (a peer of the mesh)", runAgent},
		{"members", "list the members of the mesh", cmdMembers},
		{"runners", "list the live runners of a cluster (alias: get runners)", cmdRunners},
		{"get", "get runners: same as runners", cmdGet},
		{"leave", "make the agent leave the mesh gracefully and stop", cmdLeave},
		{"status", "show this node and its Raft groups", cmdStatus},
		{"roles", "show the singleton roles of a cluster: the active node and standbys", cmdRoles},
		{"wait", "wait until the node can serve writes for its cluster (/v1/ready)", cmdWait},
		{"version", "print the version", cmdVersion},
	}
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	cmds := extraCommands(commands())
	if len(args) == 0 || args[0] == "-h" || args[0] == "-help" || args[0] == "--help" || args[0] == "help" {
		usage(stderr, cmds)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range cmds {
		if c.name == args[0] {
			err := c.run(args[1:], stdout, stderr)
			if err == nil {
				return 0
			}
			var ee *exitError
			if errors.As(err, &ee) {
				if ee.err != nil {
					fmt.Fprintf(stderr, "meshgw %s: %v\n", c.name, ee.err)
				}
				return ee.code
			}
			fmt.Fprintf(stderr, "meshgw %s: %v\n", c.name, oneLine(err))
			return 1
		}
	}
	fmt.Fprintf(stderr, "meshgw: unknown command %q (see meshgw -h)\n", args[0])
	return 2
}

// extraCommands is the hook the state, dispatch and security commands add
// themselves through (see their files).
var extraCommandList []command

func extraCommands(base []command) []command {
	out := append(base, extraCommandList...)
	sort.SliceStable(out, func(i, j int) bool { return out[i].name == "agent" && out[j].name != "agent" })
	return out
}

func usage(w io.Writer, cmds []command) {
	fmt.Fprintf(w, "meshgw %s: a masterless gateway for distributed service execution\n\nUsage: meshgw COMMAND [flags]\n\n", version)
	for _, c := range cmds {
		fmt.Fprintf(w, "  %-12s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nClient commands reach a node through -http-addr or MESHGW_HTTP_ADDR (default 127.0.0.1:7480).")
}

func oneLine(err error) string {
	return strings.ReplaceAll(strings.TrimSpace(err.Error()), "\n", "; ")
}

func cmdVersion(args []string, stdout, stderr io.Writer) error {
	fmt.Fprintf(stdout, "meshgw %s\n", version)
	return nil
}
